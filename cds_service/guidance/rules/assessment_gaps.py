"""assessment-gaps (patient-view).

When: the patient is in cohort and at least one of the five assessments that the guidance says
belong to the work-up of hypermobility with back or hip pain has no record (rules.md
"Assessments"): a Beighton score; a distress screen (PHQ-9, PHQ-2 or GAD-7) in the look-back
window or an active depression/anxiety diagnosis; an autonomic check (orthostatic heart rates,
tilt table test, or a POTS diagnosis); a pelvic floor diagnosis or work-up; a mast cell
activation diagnosis.
Then: ONE info card listing only the missing assessments, each with why it matters for this
patient and what record would close the gap. No suggestions: each gap is a question to ask or a
measurement to take, not an order the service could draft sensibly.

Why one card: five separate cards would bury the rest of the guidance (rules.md, "Few cards").
"""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.facts.model import ASSESSMENT_IDS, AssessmentId, ClinicalFacts
from cds_service.guidance.cards import Card
from cds_service.guidance.compose import cohort_evidence, make_card
from cds_service.guidance.rule import PATIENT_VIEW, Rule, RuleContext


@dataclass(frozen=True)
class Gap:
    title: str  # bold heading in the card; unique per assessment
    short: str  # name used in the summary
    why: str
    how: str  # what record would satisfy the assessment; {months}: the psych look-back


# What each assessment is for and what closes it. Built once: only the psych look-back (a
# setting) varies, and it is filled in when the card is written.
GAPS: dict[AssessmentId, Gap] = {
    "hypermobility": Gap(
        title="Generalised joint hypermobility (Beighton score)",
        short="Beighton score",
        why="the score documents how widespread the joint laxity is; it anchors the "
        "diagnosis and the threshold this service applies.",
        how="examine and record a Beighton score (0 to 9).",
    ),
    "psychological-distress": Gap(
        title="Psychological distress",
        short="distress screen",
        why="anxiety and distress are more frequent with hypermobility, partly through "
        "autonomic symptoms, and they change what rehabilitation must include.",
        how="a PHQ-9, PHQ-2 or GAD-7 result within the last {months} months (or record an "
        "active depression or anxiety diagnosis if there is one).",
    ),
    "autonomic": Gap(
        title="Autonomic dysfunction (POTS)",
        short="autonomic check",
        why="postural tachycardia often accompanies hypermobility and has its own "
        "treatment.",
        how="heart rates lying (or sitting) and then standing, or a tilt table test; a POTS "
        "diagnosis also counts.",
    ),
    "pelvic-floor": Gap(
        title="Pelvic floor dysfunction",
        short="pelvic floor",
        why="pelvic floor problems, including reduced rectal sensation, are common in "
        "hypermobile patients and can add to low back symptoms.",
        how="ask about pelvic floor symptoms (bowel emptying, straining, continence); "
        "consider anorectal manometry, a balloon expulsion test or defecography.",
    ),
    "mast-cell": Gap(
        title="Mast cell activation",
        short="mast cell activation",
        why="mast cell activation turns up alongside hypermobility more often than "
        "expected and is managed in its own right.",
        how="ask about flushing, urticaria (hives) and gastrointestinal symptoms; record a "
        "mast cell activation diagnosis if one is made (there is no standard screening "
        "code).",
    ),
}


def missing_assessments(facts: ClinicalFacts) -> tuple[AssessmentId, ...]:
    """Inclusion: the assessments with no satisfying record, in catalogue order."""
    return facts.missing_assessments


def _summary(missing: list[Gap]) -> str:
    base = f"{len(missing)} of {len(ASSESSMENT_IDS)} key hypermobility assessments not on record"
    listed = f"{base}: {', '.join(g.short for g in missing)}"
    return listed if len(listed) < 140 else base


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort:
        return None
    missing_ids = missing_assessments(facts)
    if not missing_ids:
        return None
    months = round(ctx.settings.psych_screen_lookback_days / 30.4)
    missing = [GAPS[a] for a in missing_ids]
    advice = "\n".join(
        f"- **{g.title}**: {g.why} *To close the gap:* {g.how.format(months=months)}"
        for g in missing
    )
    return make_card(
        RULE,
        ctx,
        summary=_summary(missing),
        evidence=cohort_evidence(facts)
        + [f"Nothing on record for: {', '.join(g.short for g in missing)}"],
        advice="**Assessments to complete**\n\n" + advice,
    )


RULE = Rule(
    id="assessment-gaps",
    title="Missing hypermobility assessments",
    hooks=frozenset({PATIENT_VIEW}),
    indicator="info",
    when="Patient in cohort with no record for at least one of five assessments: Beighton "
    "score; PHQ-9/PHQ-2/GAD-7 within the look-back or a depression/anxiety diagnosis; "
    "orthostatic heart rates, tilt table test or POTS; pelvic floor diagnosis or work-up; mast "
    "cell activation diagnosis.",
    then="One card listing only the missing assessments, why each matters, and what record "
    "would satisfy it. No suggestions.",
    evaluate=evaluate,
    concepts=(
        "beighton-score",
        "psych-screen",
        "depression-or-anxiety",
        "heart-rate-lying-or-sitting",
        "heart-rate-standing",
        "tilt-table-test",
        "pots",
        "pelvic-floor-diagnosis",
        "pelvic-floor-workup",
        "mast-cell-activation",
    ),
    sources=("source-guidance", "eds-classification-2017"),
)
