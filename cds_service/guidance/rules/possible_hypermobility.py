"""possible-hypermobility (patient-view).

When: the patient has chronic back or hip pain, the most recent valid Beighton score is at or
above the threshold in force (the source's 4/9 by default, or the 2017 age bands), and no
Ehlers-Danlos or hypermobility diagnosis of *any* type is recorded (hypermobility syndrome / HSD,
any EDS subtype, classical and vascular included, in ICD-10-CM or SNOMED CT). Such patients are in
cohort through their Beighton score.
Then: an info card suggesting an evaluation for hypermobility spectrum disorder or hypermobile
EDS, naming the score, its date and the threshold applied, and noting that the diagnosis is often
made years late. No suggestions: the evaluation is a clinical examination, not an order.

Why any type excludes: a patient already diagnosed with, say, classical EDS has been evaluated;
prompting a hypermobility work-up again would be noise.
"""

from __future__ import annotations

from cds_service.facts.model import BeightonFact, ClinicalFacts
from cds_service.guidance.cards import Card
from cds_service.guidance.compose import cohort_evidence, make_card
from cds_service.guidance.rule import PATIENT_VIEW, Rule, RuleContext


def qualifying_beighton(facts: ClinicalFacts) -> BeightonFact | None:
    """Inclusion: the most recent Beighton score, when it meets the threshold in force."""
    beighton = facts.beighton
    return beighton if beighton is not None and beighton.meets_threshold else None


def has_chronic_back_or_hip_pain(facts: ClinicalFacts) -> bool:
    """Inclusion: an active back or hip pain condition that meets the chronic definition."""
    return bool(facts.chronic_pain)


def already_diagnosed(facts: ClinicalFacts) -> bool:
    """Exclusion: any Ehlers-Danlos or hypermobility diagnosis, of any type, on record."""
    return facts.has_any_eds_or_hypermobility_diagnosis


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    beighton = qualifying_beighton(facts)
    if beighton is None or not has_chronic_back_or_hip_pain(facts) or already_diagnosed(facts):
        return None
    advice = (
        "Consider a formal evaluation for **hypermobility spectrum disorder (HSD)** or "
        "**hypermobile Ehlers-Danlos syndrome (hEDS)** using the 2017 criteria: a high Beighton "
        "score shows generalised joint hypermobility, which is only the first of the hEDS "
        "criteria.\n\n"
        "Recognising it early matters: the diagnosis often comes years after symptoms begin "
        "(2 to 3 years on average, according to the source guidance), and pain control and "
        "daily life suffer in the meantime."
    )
    return make_card(
        RULE,
        ctx,
        summary=f"Beighton {beighton.score}/9 with chronic back/hip pain and no hypermobility "
        "diagnosis: consider evaluating for HSD/hEDS",
        evidence=cohort_evidence(facts)
        + ["No Ehlers-Danlos or hypermobility diagnosis of any type on record"],
        advice=advice,
    )


RULE = Rule(
    id="possible-hypermobility",
    title="Possible undiagnosed hypermobility disorder",
    hooks=frozenset({PATIENT_VIEW}),
    indicator="info",
    when="Chronic back or hip pain, a most recent Beighton score at or above the threshold, and "
    "no Ehlers-Danlos or hypermobility diagnosis of any type (M35.7, Q79.6x, or their SNOMED CT "
    "codes).",
    then="Suggests evaluating for hypermobility spectrum disorder or hypermobile EDS, states the "
    "score, its date and the threshold applied, and notes that diagnosis is often delayed by "
    "years. No suggestions.",
    evaluate=evaluate,
    concepts=("beighton-score", "eds-or-hypermobility-any-type", "back-pain", "hip-pain"),
    sources=("source-guidance", "hsd-terminology-2017", "eds-classification-2017"),
)
