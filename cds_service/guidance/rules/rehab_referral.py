"""rehab-referral (patient-view).

When: the patient is in cohort, and no rehabilitation order (active or completed) was authored
in the last 12 months.
Then: an info card recommending intensive multidisciplinary rehabilitation (more than 100 hours,
daily sessions) that combines structured, progressive exercise with cognitive behavioural therapy;
active over passive treatment; self-management once pain is controlled; non-opioid medicines
alongside. Suggestions (any): a multidisciplinary programme, physical/exercise therapy, CBT.
"""

from __future__ import annotations

from datetime import date, timedelta

from cds_service.facts.model import ClinicalFacts, ServiceOrder
from cds_service.guidance.cards import Card, Suggestion
from cds_service.guidance.compose import (
    cohort_evidence,
    create,
    draft_service_request,
    make_card,
    ongoing_rehabilitation,
    physical_therapy_request,
    programme_request,
)
from cds_service.guidance.rule import PATIENT_VIEW, Rule, RuleContext

DONE = frozenset({"completed"})  # ServiceRequest and Procedure alike


def recent_rehabilitation(facts: ClinicalFacts, lookback_days: int) -> ServiceOrder | None:
    """Exclusion: a rehabilitation order that is ongoing, or completed within the look-back."""
    since = facts.today - timedelta(days=lookback_days)
    for order in facts.services_with("rehabilitation-order"):
        if ongoing_rehabilitation(order, since):
            return order
        if order.draft:
            continue
        if order.status in DONE and order.on is not None and order.on >= since:
            return order
    return None


NOT_COUNTED_SHOWN = 3  # the latest few; years of physiotherapy would fill the card


def not_counted(facts: ClinicalFacts) -> list[str]:
    """Rehabilitation orders on record that do not count (old, paused, ...), latest first: said,
    so that "no order" is not read as "none at all" (found by a clinical review)."""
    orders = sorted(
        (o for o in facts.services_with("rehabilitation-order") if not o.draft and o.on_record),
        key=lambda o: o.on or date.min,
        reverse=True,
    )
    lines = [
        f"Not counted: {o.name}, {o.status}" + (f", authored {o.on.isoformat()}" if o.on else "")
        for o in orders[:NOT_COUNTED_SHOWN]
    ]
    if len(orders) > NOT_COUNTED_SHOWN:
        lines.append(f"Not counted either: {len(orders) - NOT_COUNTED_SHOWN} older such orders")
    return lines


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort:
        return None
    if recent_rehabilitation(facts, ctx.settings.rehab_lookback_days):
        return None
    kb = ctx.knowledge
    hours = ctx.settings.programme_min_hours
    months = round(ctx.settings.rehab_lookback_days / 30.4)
    programme = programme_request(facts, ctx)
    physio = physical_therapy_request(facts, ctx)
    cbt = draft_service_request(
        facts,
        [kb.coding("cognitive-behavioural-therapy", "228557008")],
        "Cognitive behavioural therapy for chronic pain",
    )
    advice = (
        f"**Recommended:** an intensive multidisciplinary rehabilitation programme "
        f"(over {hours:g} hours, daily sessions) built on structured, progressive exercise "
        "together with cognitive behavioural therapy. Favour active treatment over passive "
        "modalities, and teach self-management (exercises, spine protection) once pain is "
        "under control.\n\n"
        "**Medicines alongside, not instead:** acetaminophen (paracetamol) or an NSAID first; "
        "duloxetine or a tricyclic antidepressant for chronic pain; gabapentin or pregabalin "
        "only for neuropathic features. Avoid starting opioids."
    )
    evidence = cohort_evidence(facts) + [
        "No rehabilitation, physical therapy or pain programme order ongoing or completed in the "
        f"last {months} months"
    ] + not_counted(facts)
    return make_card(
        RULE,
        ctx,
        summary="Hypermobility with chronic back/hip pain: refer for intensive "
        "multidisciplinary rehabilitation",
        evidence=evidence,
        advice=advice,
        suggestions=[
            Suggestion(
                label="Order an intensive multidisciplinary rehabilitation programme",
                isRecommended=True,
                actions=(create(programme, "Draft a multidisciplinary programme referral"),),
            ),
            Suggestion(
                label="Order physical therapy (structured exercise)",
                actions=(create(physio, "Draft a physical therapy referral"),),
            ),
            Suggestion(
                label="Order cognitive behavioural therapy",
                actions=(create(cbt, "Draft a cognitive behavioural therapy referral"),),
            ),
        ],
        selection="any",
    )


RULE = Rule(
    id="rehab-referral",
    title="Intensive multidisciplinary rehabilitation",
    hooks=frozenset({PATIENT_VIEW}),
    indicator="info",
    when="Patient in cohort with no rehabilitation, physical therapy or pain programme order "
    "(ongoing, or completed within the look-back window) on record.",
    then="Recommends an intensive (100+ hour, daily) multidisciplinary programme of progressive "
    "exercise with CBT, active over passive care, self-management, and non-opioid medicines; "
    "offers draft referrals for the programme, physical therapy and CBT.",
    evaluate=evaluate,
    concepts=(
        "rehabilitation-order",
        "multidisciplinary-programme",
        "rehabilitation-words",
        "meeting-words",
        "team-words",
        "programme-words",
        "physical-therapy",
        "cognitive-behavioural-therapy",
    ),
    sources=("source-guidance", "acp-low-back-pain-2017"),
)
