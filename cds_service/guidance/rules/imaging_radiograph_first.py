"""imaging-radiograph-first (patient-view; order-select, order-sign).

When (patient-view): the patient is in cohort, has chronic hip pain (the hip pain condition itself
meets the chronic definition), and no pelvis/hip radiograph is on record.
When (order hooks): the patient is in cohort and a draft hip MRI order in focus has no pelvis/hip
radiograph on record (a radiograph drafted in the same order set counts).
Then: an info card saying radiographs of the pelvis and hip are the first imaging test (and, for
an MRI order, that MRI follows only if they are negative or equivocal). Suggestions: draft the
radiographs (patient-view); replace the MRI with radiographs (order hooks).
"""

from __future__ import annotations

from cds_service.facts.laterality import together
from cds_service.facts.model import ClinicalFacts, PainFact, ServiceOrder, Side
from cds_service.guidance.cards import Action, Card, Suggestion
from cds_service.guidance.compose import (
    cohort_evidence,
    create,
    draft_service_request,
    make_card,
    remove_drafts,
    replacement,
)
from cds_service.guidance.rule import ORDER_HOOKS, PATIENT_VIEW, Rule, RuleContext


def radiograph_on_record(facts: ClinicalFacts) -> ServiceOrder | None:
    """Exclusion: any pelvis/hip radiograph not cancelled, revoked or entered in error."""
    return next((s for s in facts.services_with("radiograph-pelvis-hip") if s.on_record), None)


def hip_mri_drafts(facts: ClinicalFacts) -> list[ServiceOrder]:
    """Inclusion (order hooks): draft hip MRI orders in focus."""
    return [s for s in facts.services_with("mri-hip") if s.draft and s.selected]


def chronic_hip_pain(facts: ClinicalFacts) -> list[PainFact]:
    """Inclusion (patient-view): the hip pain condition itself meets the chronic definition."""
    return [p for p in facts.chronic_pain if p.site == "hip"]


# The radiographs the card drafts: (LOINC code, order text); the hip's by the side the
# evidence names (terminology.md D2), none when it names none.
PELVIS_RADIOGRAPH = ("28561-9", "X-ray of the pelvis")
HIP_RADIOGRAPHS: dict[Side | None, tuple[str, str]] = {
    None: ("24762-7", "X-ray of the hip"),
    "left": ("26131-3", "X-ray of the left hip"),
    "right": ("26132-1", "X-ray of the right hip"),
    "both": ("26130-5", "X-ray of both hips"),
}


def draft_radiographs(
    facts: ClinicalFacts, ctx: RuleContext, side: Side | None
) -> tuple[Action, ...]:
    """Create actions for draft pelvis and hip radiograph orders."""
    return tuple(
        create(
            draft_service_request(
                facts, [ctx.knowledge.coding("radiograph-pelvis-hip", code)], text
            ),
            f"Draft an order: {text}",
        )
        for code, text in (PELVIS_RADIOGRAPH, HIP_RADIOGRAPHS[side])
    )


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort or radiograph_on_record(facts):
        return None
    if ctx.hook == PATIENT_VIEW:
        return _patient_view(facts, ctx)
    return _mri_order(facts, ctx)


def _patient_view(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    pain = chronic_hip_pain(facts)
    if not pain:
        return None
    creates = draft_radiographs(facts, ctx, together(p.condition.side for p in pain))
    return make_card(
        RULE,
        ctx,
        summary="Chronic hip pain: radiographs of the pelvis and hip are the first imaging test",
        evidence=cohort_evidence(facts) + ["No pelvis or hip radiograph on record"],
        advice="Order plain radiographs of the pelvis and the hip first. MRI of the hip without "
        "IV contrast comes next only if they are negative or equivocal and an extra-articular "
        "soft-tissue problem (such as tendinitis or bursitis) is suspected.",
        suggestions=[Suggestion(label="Order pelvis and hip radiographs", isRecommended=True,
                                actions=creates)],
        selection="at-most-one",
    )


def _mri_order(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    mris = hip_mri_drafts(facts)
    if not mris:
        return None
    removals = remove_drafts(mris)
    creates = draft_radiographs(facts, ctx, together(m.side for m in mris))
    suggestions = []
    if removals:
        suggestions.append(Suggestion(label="Replace the MRI with pelvis and hip radiographs",
                                      isRecommended=True, actions=replacement(removals, *creates)))
    suggestions.append(Suggestion(label="Add pelvis and hip radiographs, keep the MRI",
                                  actions=creates))
    return make_card(
        RULE,
        ctx,
        summary="Hip MRI ordered without radiographs: order pelvis and hip X-rays first",
        evidence=cohort_evidence(facts)
        + [f"Draft order: {m.name}" for m in mris]
        + ["No pelvis or hip radiograph on record or in this order set"],
        advice="Plain radiographs of the pelvis and hip are the first imaging test. MRI of the "
        "hip without IV contrast follows only if the radiographs are negative or equivocal and "
        "an extra-articular soft-tissue problem is suspected.",
        suggestions=suggestions,
        selection="at-most-one",
    )


RULE = Rule(
    id="imaging-radiograph-first",
    title="Radiographs first for chronic hip pain",
    hooks=frozenset({PATIENT_VIEW}) | ORDER_HOOKS,
    indicator="info",
    when="patient-view: patient in cohort with chronic hip pain and no pelvis/hip radiograph on "
    "record. Order hooks: a draft hip MRI with no pelvis/hip radiograph on record or drafted "
    "alongside.",
    then="Says pelvis and hip radiographs come first and MRI only if they are negative or "
    "equivocal; suggests drafting the radiographs (the hip's on the side the hip pain or the "
    "drafted MRI names), or replacing the MRI with them.",
    evaluate=evaluate,
    concepts=(
        "radiograph-pelvis-hip",
        "mri-hip",
        "mri-lower-extremity-joint-cpt",
        "hip-pain",
        "side-left",
        "side-right",
        "side-both",
    ),
    sources=("source-guidance", "acr-chronic-hip-pain"),
)
