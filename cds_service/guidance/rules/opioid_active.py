"""opioid-active (patient-view).

When: the patient is in cohort, is not opioid-exempt (cancer, sickle cell disease, palliative or
hospice care), and has an active opioid MedicationRequest on record whose intent makes it a
prescription (an order, not a proposal or plan: facts.build.PRESCRIPTION_INTENTS; medications
for opioid use disorder are never flagged).
Then: a warning that opioids should not be used for musculoskeletal pain in hypermobility, and
that the plan should be to taper and stop, gradually (stopping abruptly harms patients, CDC
2022). No suggestions; the card links to its sources.

Why CDC 2022 is the card's primary source: the action the card asks for (a gradual taper, never
an abrupt stop) is CDC's, and it has a public page; the source guidance is cited beside it.
Why no medicine alternatives here: the rehab-referral card of the same patient-view response
already lists the non-opioid medicines, and a response must not repeat advice. Why no
suggestion: a taper is a plan agreed with the patient, not an order a button could draft.
"""

from __future__ import annotations

from cds_service.facts.model import ClinicalFacts
from cds_service.guidance.cards import Card
from cds_service.guidance.compose import (
    active_opioids,
    cohort_evidence,
    fit,
    make_card,
    prescription_evidence,
)
from cds_service.guidance.rule import PATIENT_VIEW, Rule, RuleContext


def exempt(facts: ClinicalFacts) -> bool:
    """Exclusion: cancer, sickle cell disease, likely terminal illness, hospice or end of life."""
    return facts.opioid_exempt


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort or exempt(facts):
        return None
    opioids = active_opioids(facts)
    if not opioids:
        return None
    advice = (
        "Opioids are not a treatment for musculoskeletal pain in hypermobility disorders. "
        "Review this prescription with the patient and agree a plan to taper it and stop.\n\n"
        "**Taper gradually; do not stop abruptly.** Stopping suddenly risks withdrawal, "
        "rebound pain and a turn to illicit opioids (CDC 2022). After a year or more of use, "
        "reducing by about 10% of the dose a month, or slower, is usually better tolerated; "
        "after shorter use, about 10% a week may suit. Slow or pause the taper when needed and "
        "follow up often. If there are signs of opioid use disorder, offer or arrange treatment "
        "for it rather than a taper alone.\n\n"
        "Not flagged: medications for opioid use disorder, and patients with cancer, sickle "
        "cell disease, or in palliative or hospice care."
    )
    return make_card(
        RULE,
        ctx,
        summary=fit(
            "Opioids do not treat hypermobility pain: plan a gradual taper of "
            + ", ".join(o.name for o in opioids)
        ),
        evidence=cohort_evidence(facts)
        + [prescription_evidence(o, "opioid", o.opioid) for o in opioids],
        advice=advice,
    )


RULE = Rule(
    id="opioid-active",
    title="Taper opioids for pain in hypermobility",
    hooks=frozenset({PATIENT_VIEW}),
    indicator="warning",
    when="Patient in cohort, not opioid-exempt, with an active opioid prescription on record: a "
    "MedicationRequest whose intent is an order, not a proposal or plan (not a medication for "
    "opioid use disorder).",
    then="Warns that opioids should not be used for this patient's musculoskeletal pain and "
    "advises a gradual taper to stop (never abruptly); names each drug and when it was "
    "prescribed; links to the sources, no suggestions.",
    evaluate=evaluate,
    concepts=(
        "opioid-product",
        "opioid-product-omtk",
        "opioid-ingredient",
        "moud-always",
        "moud-if-oud",
        "buprenorphine-ingredient",
        "methadone-ingredient",
        "buprenorphine-moud-form",
        "administration-route",
        "extended-release-form",
        "injection-form",
        "naloxone",
        "opioid-use-disorder",
        "malignant-cancer",
        "sickle-cell-disease",
        "likely-terminal-condition",
        "hospice-finding",
        "hospice-procedure",
        "end-of-life-therapy",
    ),
    sources=("cdc-opioids-2022", "source-guidance"),
)
