"""imaging-mri-hip (patient-view).

When: the patient is in cohort; the most recent final (or amended/corrected) pelvis/hip
radiograph report reads normal, negative or equivocal; an extra-articular soft-tissue problem of
the hip (trochanteric or other hip bursitis, gluteal or psoas tendinitis) is an active condition;
and no hip MRI has been ordered or reported yet (any status but entered-in-error, revoked or
cancelled).
Then: an info card saying MRI of the hip without IV contrast is the appropriate next test (ACR
chronic hip pain, variant 2). Suggestion: draft an MRI hip without contrast order.

Why the *most recent* final report: a later report that finds osteoarthritis or a fracture
overrides an earlier normal one, and rules.md says that in doubt a report is not normal.
"""

from __future__ import annotations

from typing import Any

from cds_service.facts.laterality import together
from cds_service.facts.model import ClinicalFacts, ConditionFact, ServiceOrder, Side
from cds_service.guidance.cards import Card, Suggestion
from cds_service.guidance.compose import cohort_evidence, create, draft_service_request, make_card
from cds_service.guidance.rule import PATIENT_VIEW, Rule, RuleContext

FINAL_REPORT = frozenset({"final", "amended", "corrected"})
# MR Hip WO contrast, by the side the soft-tissue problems name (terminology.md D2).
MRI_HIP: dict[Side | None, tuple[str, str]] = {
    None: ("30687-8", "MRI of the hip without IV contrast"),
    "left": ("36488-5", "MRI of the left hip without IV contrast"),
    "right": ("36490-1", "MRI of the right hip without IV contrast"),
    "both": ("36486-9", "MRI of both hips without IV contrast"),
}


def latest_final_radiograph_report(facts: ClinicalFacts) -> ServiceOrder | None:
    """The most recent final pelvis/hip radiograph report, by the moments it can name (a date
    alone may be any moment of its day, in any time zone). In doubt, not normal: among the
    reports that may be the latest (those whose latest possible moment is not before the
    latest report's earliest one, and undated ones), one that does not read normal decides,
    whatever the Bundle's order."""
    reports = [
        s
        for s in facts.services_with("radiograph-pelvis-hip")
        if s.resource_type == "DiagnosticReport" and s.status in FINAL_REPORT
    ]
    if not reports:
        return None
    latest_start = max((s.span[0] for s in reports if s.span is not None), default=None)
    contenders = [
        s for s in reports if s.span is None or latest_start is None or s.span[1] >= latest_start
    ]
    # The latest dated report first, so that the card names it when every contender is normal.
    contenders.sort(key=lambda s: (s.span is None, -s.span[0].timestamp() if s.span else 0))
    return next((s for s in contenders if not s.normal_result), contenders[0])


def negative_radiograph(facts: ClinicalFacts) -> ServiceOrder | None:
    """Inclusion: the latest final radiograph report reads normal, negative or equivocal."""
    report = latest_final_radiograph_report(facts)
    return report if report is not None and report.normal_result else None


def soft_tissue_problems(facts: ClinicalFacts) -> tuple[ConditionFact, ...]:
    """Inclusion: active hip bursitis or gluteal/psoas tendinitis (extra-articular)."""
    return facts.hip_soft_tissue


def hip_mri_on_record(facts: ClinicalFacts) -> ServiceOrder | None:
    """Exclusion: a hip MRI ordered or reported, unless entered in error, revoked or cancelled."""
    return next((s for s in facts.services_with("mri-hip") if s.on_record), None)


def mri_request(facts: ClinicalFacts, ctx: RuleContext, reasons: tuple[ConditionFact, ...]
                ) -> dict[str, Any]:
    code, text = MRI_HIP[together(c.side for c in reasons)]
    resource = draft_service_request(
        facts,
        [ctx.knowledge.coding("mri-hip", code)],
        text,
        note="Radiographs negative or equivocal; suspected extra-articular soft-tissue problem.",
    )
    references = [{"reference": f"Condition/{c.id}"} for c in reasons if c.id]
    if references:
        resource["reasonReference"] = references
    return resource


def _report_evidence(report: ServiceOrder) -> str:
    when = f" on {report.on.isoformat()}" if report.on else " (undated)"
    conclusion = f': "{report.conclusion.strip()}"' if report.conclusion else ""
    return f"Radiograph report {report.name}{when}, {report.status}{conclusion}"


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort:
        return None
    report = negative_radiograph(facts)
    soft_tissue = soft_tissue_problems(facts)
    if report is None or not soft_tissue or hip_mri_on_record(facts):
        return None
    request = mri_request(facts, ctx, soft_tissue)
    evidence = (
        cohort_evidence(facts)
        + [_report_evidence(report)]
        + [f"Suspected extra-articular soft-tissue problem: {c.evidence()}" for c in soft_tissue]
        + ["No hip MRI ordered or reported yet"]
    )
    advice = (
        "With negative or equivocal plain films and a suspected soft-tissue cause outside the "
        "joint (bursitis or tendinitis around the hip), the appropriate next imaging test is "
        "MRI of the hip without IV contrast (ACR Appropriateness Criteria, chronic hip pain, "
        "variant 2). The same criteria also rate hip ultrasound as usually appropriate."
    )
    return make_card(
        RULE,
        ctx,
        summary="Negative hip radiographs and suspected soft-tissue problem: MRI hip without "
        "contrast is next",
        evidence=evidence,
        advice=advice,
        suggestions=[
            Suggestion(
                label="Order MRI of the hip without contrast",
                isRecommended=True,
                actions=(create(request, "Draft an order: MRI of the hip without IV contrast"),),
            )
        ],
        selection="at-most-one",
    )


RULE = Rule(
    id="imaging-mri-hip",
    title="MRI hip after negative radiographs",
    hooks=frozenset({PATIENT_VIEW}),
    indicator="info",
    when="Patient in cohort whose latest final pelvis/hip radiograph report is normal, negative "
    "or equivocal, with an active hip bursitis or gluteal/psoas tendinitis, and no hip MRI "
    "ordered or reported (entered-in-error, revoked or cancelled ones do not count).",
    then="Says MRI of the hip without IV contrast is the appropriate next test; suggests drafting "
    "that order, on the side the soft-tissue problems name.",
    evaluate=evaluate,
    concepts=(
        "side-left",
        "side-right",
        "side-both",
        "radiograph-pelvis-hip",
        "report-conclusion-normal",
        "report-conclusion-abnormal",
        "report-normal-wording",
        "report-abnormal-wording",
        "report-abnormality-denied",
        "hip-soft-tissue",
        "mri-hip",
        "mri-lower-extremity-joint-cpt",
        "hip-site",
    ),
    sources=("source-guidance", "acr-chronic-hip-pain"),
)
