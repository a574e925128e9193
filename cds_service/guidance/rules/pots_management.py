"""pots-management (patient-view).

When: the patient is in cohort and has an active postural orthostatic tachycardia syndrome
condition (ICD-10-CM G90.A, which includes chronic orthostatic intolerance; SNOMED CT
371073003). A resolved, refuted or entered-in-error POTS condition does not count.
Then: an info card on the order of treatment: lifestyle measures first (fluids and salt,
compression, counter-pressure manoeuvres, exercise training); then fludrocortisone, midodrine or
droxidopa; pyridostigmine after those, as a second-line or add-on drug that does not cause
supine hypertension. No suggestions: the right drug and dose are a specialist decision.

Why here: POTS often comes with hypermobility, and it changes how exercise-based rehabilitation
has to be paced, so the clinician should see its management beside the pain guidance.
"""

from __future__ import annotations

from cds_service.facts.model import ClinicalFacts, ConditionFact
from cds_service.guidance.cards import Card
from cds_service.guidance.compose import cohort_evidence, make_card
from cds_service.guidance.rule import PATIENT_VIEW, Rule, RuleContext

# The source guidance's own reference for its POTS advice (reference 4 of source-guidance.txt).
POTS_REFERENCE = "'Pyridostigmine in Dysautonomia' (Praxis Medical Insights practice summary, 2025)"


def active_pots(facts: ClinicalFacts) -> tuple[ConditionFact, ...]:
    """Inclusion: active POTS conditions (facts keep only active ones)."""
    return facts.pots


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort:
        return None
    pots = active_pots(facts)
    if not pots:
        return None
    advice = (
        "**Non-drug measures come first:** more fluid and salt, compression garments, physical "
        "counter-pressure manoeuvres and exercise training.\n\n"
        "**If medicines are needed:** try fludrocortisone, midodrine or droxidopa first. "
        "Pyridostigmine is second-line, or an add-on when symptoms persist despite other "
        "treatment; one advantage is that it does not cause supine hypertension.\n\n"
        f"The source guidance bases this advice on {POTS_REFERENCE}."
    )
    return make_card(
        RULE,
        ctx,
        summary="POTS: lifestyle measures first; fludrocortisone, midodrine or droxidopa before "
        "pyridostigmine",
        evidence=cohort_evidence(facts) + [f"Active POTS: {c.evidence()}" for c in pots],
        advice=advice,
    )


RULE = Rule(
    id="pots-management",
    title="Managing POTS alongside hypermobility",
    hooks=frozenset({PATIENT_VIEW}),
    indicator="info",
    when="Patient in cohort with an active POTS condition (ICD-10-CM G90.A or SNOMED CT "
    "371073003).",
    then="Advises lifestyle measures first (fluids and salt, compression, counter-pressure "
    "manoeuvres, exercise training), then fludrocortisone, midodrine or droxidopa, with "
    "pyridostigmine as second-line or add-on therapy that does not cause supine hypertension. "
    "No suggestions.",
    evaluate=evaluate,
    concepts=("pots",),
    sources=("source-guidance",),
)
