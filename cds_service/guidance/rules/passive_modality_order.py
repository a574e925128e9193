"""passive-modality-order (order-select, order-sign).

When: the patient is in cohort and a draft ServiceRequest or DeviceRequest in focus is a passive
modality: a lumbar support or brace, interferential therapy, or low-level laser therapy.
Then: an info card saying these treatments show little or inconsistent benefit on their own and
that active rehabilitation should come first. Suggestions (at-most-one): replace the order with
a physical therapy referral for structured, progressive exercise (recommended), or with an
intensive multidisciplinary programme. Override reason: an adjunct to active rehabilitation.

Why physical therapy is the recommended replacement: a brace or a laser course is a single,
small order, and the closest active substitute the orderer can sign now is an exercise-based
physical therapy referral. The intensive programme (the source's first choice) is offered too,
planned at the programme threshold so that it never trips rehab-intensity itself. When active
rehabilitation is already ordered (drafted alongside, or active on record), a new referral would
duplicate it, so the card only offers to remove the passive order.
"""

from __future__ import annotations

from datetime import timedelta

from cds_service.facts.model import ClinicalFacts, ServiceOrder
from cds_service.guidance.cards import Card, Suggestion
from cds_service.guidance.compose import (
    cohort_evidence,
    create,
    fit,
    make_card,
    ongoing_rehabilitation,
    override_reasons,
    physical_therapy_request,
    programme_request,
    remove_drafts,
    replacement,
)
from cds_service.guidance.rule import ORDER_HOOKS, Rule, RuleContext

# The knowledge concepts that make an order passive, and how the card names each.
MODALITIES = {
    "lumbar-orthosis": "lumbar support or brace",
    "interferential-therapy": "interferential therapy",
    "low-level-laser": "low-level laser therapy",
}


def passive_orders(facts: ClinicalFacts) -> list[ServiceOrder]:
    """Inclusion: draft passive-modality ServiceRequests/DeviceRequests in focus."""
    return [
        s
        for s in facts.services_with("passive-modality")
        if s.draft and s.selected and s.resource_type in ("ServiceRequest", "DeviceRequest")
    ]


def rehabilitation_in_place(facts: ClinicalFacts, lookback_days: int) -> ServiceOrder | None:
    """Changes the suggestion: a rehabilitation order drafted alongside, or under way on record
    as rehab-referral counts it (compose.ongoing_rehabilitation: an "active" order from years
    ago, or a paused one, is not rehabilitation under way; a Procedure in progress is)."""
    since = facts.today - timedelta(days=lookback_days)
    for order in facts.services_with("rehabilitation-order"):
        if "passive-modality" in order.concepts:
            continue
        if order.draft or ongoing_rehabilitation(order, since):
            return order
    return None


def kinds(order: ServiceOrder) -> str:
    return ", ".join(label for concept, label in MODALITIES.items() if concept in order.concepts)


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort:
        return None
    orders = passive_orders(facts)
    if not orders:
        return None
    existing = rehabilitation_in_place(facts, ctx.settings.rehab_lookback_days)
    evidence = cohort_evidence(facts) + [f"Draft order: {o.name} ({kinds(o)})" for o in orders]
    if existing is not None:
        verb = "performed" if existing.resource_type == "Procedure" else "authored"
        dated = f", {verb} {existing.on.isoformat()}" if existing.on else ""
        where = "in this order set" if existing.draft else f"on record ({existing.status}{dated})"
        evidence.append(f"Active rehabilitation already ordered: {existing.name}, {where}")
    advice = (
        "Lumbar supports, interferential therapy and low-level laser therapy have shown little "
        "or inconsistent benefit when used on their own. Put active rehabilitation first: "
        "structured, progressive exercise, ideally within an intensive multidisciplinary "
        "programme with cognitive behavioural therapy. A passive treatment may still serve as "
        "an adjunct to active rehabilitation (give that as the override reason)."
    )
    return make_card(
        RULE,
        ctx,
        summary=_summary(orders),
        evidence=evidence,
        advice=advice,
        suggestions=_suggestions(facts, ctx, orders, existing),
        selection="at-most-one",
        override_reasons=override_reasons(ctx, "override-passive-modality"),
    )


def _suggestions(
    facts: ClinicalFacts,
    ctx: RuleContext,
    orders: list[ServiceOrder],
    existing: ServiceOrder | None,
) -> list[Suggestion]:
    removals = remove_drafts(orders, name=lambda o: f"{o.name} ({kinds(o)})")
    if not removals:
        return []
    if existing is not None:
        return [
            Suggestion(
                label="Remove the passive treatment (rehabilitation is already ordered)",
                isRecommended=True,
                actions=removals,
            )
        ]
    physio = physical_therapy_request(facts, ctx)
    programme = programme_request(facts, ctx)
    return [
        Suggestion(
            label="Replace with physical therapy (structured exercise)",
            isRecommended=True,
            actions=replacement(removals, create(physio, "Draft a physical therapy referral")),
        ),
        Suggestion(
            label="Replace with an intensive multidisciplinary programme",
            actions=replacement(
                removals, create(programme, "Draft a multidisciplinary programme referral")
            ),
        ),
    ]


def _summary(orders: list[ServiceOrder]) -> str:
    """Names the kind of treatment, not the order: coded-only orders are named by their code."""
    found = [
        label for concept, label in MODALITIES.items() if any(concept in o.concepts for o in orders)
    ]
    summary = f"Little benefit from {', '.join(found)} alone: prefer active rehabilitation"
    return fit(summary)


RULE = Rule(
    id="passive-modality-order",
    title="Active rehabilitation over passive treatment",
    hooks=ORDER_HOOKS,
    indicator="info",
    when="Patient in cohort with a draft order for a lumbar support or brace, interferential "
    "therapy or low-level laser therapy (ServiceRequest or DeviceRequest).",
    then="Says passive treatments alone show little or inconsistent benefit and active "
    "rehabilitation comes first; suggests replacing the order with physical therapy or an "
    "intensive multidisciplinary programme (or only removing it when rehabilitation is already "
    "ordered); offers an 'adjunct to active rehabilitation' override reason.",
    evaluate=evaluate,
    concepts=(
        "lumbar-orthosis",
        "interferential-therapy",
        "low-level-laser",
        "rehabilitation-order",
        "physical-therapy",
        "multidisciplinary-programme",
        "override-passive-modality",
    ),
    sources=("source-guidance",),
)
