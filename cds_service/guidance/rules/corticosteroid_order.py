"""corticosteroid-order (order-select, order-sign).

When: the patient is in cohort and a draft order in focus is a systemic corticosteroid (oral or
parenteral glucocorticoid; fludrocortisone, topical, inhaled, nasal, ophthalmic,
intra-articular and epidural products, and hydrocortisone replacement for adrenal insufficiency
are not).
Then: a warning that systemic corticosteroids work no better than placebo for low back pain, with
or without radicular symptoms. Suggestion: remove the draft order (not recommended when a systemic
corticosteroid is already prescribed: the draft may renew it). Override reason: prescribed for
another indication.

The facts decide what is systemic (``MedicationOrder.systemic_corticosteroid``); this rule only
chooses which of those orders the clinician is looking at, so the classification stays in one
place.
"""

from __future__ import annotations

from cds_service.facts.model import ClinicalFacts, MedicationOrder
from cds_service.guidance.cards import Card, Suggestion
from cds_service.guidance.compose import (
    cohort_evidence,
    fit,
    make_card,
    override_reasons,
    prescription_evidence,
    remove_drafts,
)
from cds_service.guidance.rule import ORDER_HOOKS, Rule, RuleContext


def systemic_corticosteroid_orders(facts: ClinicalFacts) -> list[MedicationOrder]:
    """Inclusion: draft orders in focus that the facts classify as systemic corticosteroids."""
    return [m for m in facts.draft_medications if m.selected and m.systemic_corticosteroid]


def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort:
        return None
    orders = systemic_corticosteroid_orders(facts)
    if not orders:
        return None
    names = ", ".join(o.name for o in orders)
    # A systemic corticosteroid already prescribed, the same drug or another (a switch between
    # corticosteroids is common): the draft may renew or replace a course started for another
    # reason, which nobody should end with one click from a back-pain card.
    taking = [m for m in facts.active_medications if m.systemic_corticosteroid]
    evidence = cohort_evidence(facts) + [
        f"Draft order: {o.name} (recognised by {o.systemic_corticosteroid})" for o in orders
    ] + [prescription_evidence(m, "corticosteroid", m.systemic_corticosteroid) for m in taking]
    paragraphs = [
        "Oral, intramuscular or intravenous corticosteroids have not relieved low back pain "
        "better than placebo, whether or not the pain radiates down the leg, and they add the "
        "harms of systemic steroid exposure. If this course is for another condition, keep it "
        "and give that as the override reason."
    ]
    if taking:
        paragraphs.append(
            "**A systemic corticosteroid is already prescribed** (above): this draft may renew "
            "or replace that course, so review it before removing anything."
        )
    paragraphs.append(
        "Not flagged: fludrocortisone; topical, inhaled, nasal, eye, intra-articular and "
        "epidural products; hydrocortisone replacement for adrenal insufficiency."
    )
    advice = "\n\n".join(paragraphs)
    removals = remove_drafts(orders)
    suggestions = (
        [
            Suggestion(
                label=fit(f"Remove {names}", 80),
                isRecommended=None if taking else True,
                actions=removals,
            )
        ]
        if removals
        else []
    )
    return make_card(
        RULE,
        ctx,
        summary=fit(f"Systemic corticosteroid for back pain is no better than placebo: {names}"),
        evidence=evidence,
        advice=advice,
        suggestions=suggestions,
        selection="at-most-one",
        override_reasons=override_reasons(ctx, "override-corticosteroid-order"),
    )


RULE = Rule(
    id="corticosteroid-order",
    title="Avoid systemic corticosteroids for low back pain",
    hooks=ORDER_HOOKS,
    indicator="warning",
    when="Patient in cohort with a draft order for a systemic (oral or parenteral) "
    "corticosteroid; not fludrocortisone, topical, inhaled, nasal, ophthalmic, intra-articular "
    "or epidural products, nor hydrocortisone for adrenal insufficiency.",
    then="Warns that systemic corticosteroids are no better than placebo for low back pain with "
    "or without radicular symptoms and names the drug; suggests removing the order (not as the "
    "recommended step when a systemic corticosteroid is already prescribed, which it names: "
    "the draft may renew that course); offers an 'another indication' override reason.",
    evaluate=evaluate,
    concepts=(
        "systemic-corticosteroid-ingredient",
        "fludrocortisone",
        "hydrocortisone",
        "adrenal-insufficiency",
        "dose-form-systemic",
        "injection-form",
        "dose-form-not-systemic",
        "dose-form-spinal-injection",
        "administration-route",
        "override-corticosteroid-order",
    ),
    sources=("source-guidance", "acp-low-back-pain-2017"),
)
