"""rehab-intensity (order-select, order-sign).

When: the patient is in cohort and a draft multidisciplinary programme order in focus (coded
rehabilitation therapy or pain management, or saying multidisciplinary / interdisciplinary) has
planned hours below the programme threshold (default 100). A programme whose request states no
hours says nothing about its intensity and is not flagged; a single physical therapy referral is
not a programme and is not checked.
Then: an info card saying programmes under the threshold do no better than usual care, stating
the planned hours and the threshold, and advising a more intensive plan. No suggestion.

Why no "raise the hours" update action: CDS Hooks replaces the whole resource on update, and the
facts keep only a summary of the draft (name, hours), not the resource itself. An update rebuilt
from that summary would silently drop the orderer's other details (performer, timing, notes,
reasons), and hours may come from ``occurrenceTiming`` rather than ``quantityQuantity``, so a
quantity change alone could contradict the timing. Changing the plan is left to the orderer.
"""

from __future__ import annotations

from cds_service.facts.model import ClinicalFacts, ServiceOrder
from cds_service.guidance.cards import Card
from cds_service.guidance.compose import cohort_evidence, make_card
from cds_service.guidance.rule import ORDER_HOOKS, Rule, RuleContext


def programme_drafts(facts: ClinicalFacts) -> list[ServiceOrder]:
    """Inclusion: draft multidisciplinary programme ServiceRequests in focus."""
    return [
        s
        for s in facts.services_with("multidisciplinary-programme")
        if s.draft and s.selected and s.resource_type == "ServiceRequest"
    ]


def under_threshold(order: ServiceOrder, min_hours: float) -> bool:
    """Inclusion: planned hours stated and below the threshold (no hours: not flagged)."""
    return order.planned_hours is not None and order.planned_hours < min_hours


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort:
        return None
    min_hours = ctx.settings.programme_min_hours
    short = [o for o in programme_drafts(facts) if under_threshold(o, min_hours)]
    if not short:
        return None
    evidence = cohort_evidence(facts) + [
        f"Draft order: {o.name}, planned total {_hours(o.planned_hours)} hours" for o in short
    ]
    evidence.append(f"Threshold applied: at least {min_hours:g} hours of programme time")
    advice = (
        f"Multidisciplinary programmes planned at under {min_hours:g} hours have done no better "
        "than usual care. The benefit seen in trials came from intensive programmes (over "
        f"{min_hours:g} hours, in daily sessions) that combine structured, progressive exercise "
        "with cognitive behavioural therapy. Plan a more intensive programme, or refer to a "
        "service that offers one."
    )
    first = short[0]
    summary = (
        f"Programme planned at {_hours(first.planned_hours)} h: under {min_hours:g} h is no "
        "better than usual care; plan more hours"
    )
    return make_card(RULE, ctx, summary=summary, evidence=evidence, advice=advice)


def _hours(value: float) -> str:
    """Planned hours as people write them (40, 7.5), never rounded up to the threshold.

    Only flagged orders are shown, and under_threshold() flags none without hours.
    """
    return f"{value:g}"


RULE = Rule(
    id="rehab-intensity",
    title="Intensive enough multidisciplinary rehabilitation",
    hooks=ORDER_HOOKS,
    indicator="info",
    when="Patient in cohort with a draft multidisciplinary programme order (rehabilitation "
    "therapy or pain management, or described as multidisciplinary / interdisciplinary) whose "
    "planned hours are stated and below the programme threshold (default 100).",
    then="Says programmes under the threshold are no better than usual care, states the planned "
    "hours and the threshold, and advises a more intensive programme; no suggestions.",
    evaluate=evaluate,
    concepts=(
        "multidisciplinary-programme",
        "rehabilitation-words",
        "meeting-words",
        "team-words",
        "programme-words",
        "rehabilitation-order",
    ),
    sources=("source-guidance", "acp-low-back-pain-2017"),
)
