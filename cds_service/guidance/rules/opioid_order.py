"""opioid-order (order-select, order-sign).

When: the patient is in cohort, is not opioid-exempt (cancer, sickle cell disease, palliative or
hospice care), and a draft order in focus is an opioid (medications for opioid use disorder are
never flagged).
Then: a warning to avoid opioids for this patient's musculoskeletal pain, naming the drug.
Suggestions (at-most-one): remove the draft order; replace it with acetaminophen; replace it with
an NSAID. Override reasons: acute injury or surgery, palliative intent, supervised taper,
alternatives tried and failed. When the patient already takes the opioid a draft names (the
draft is likely a renewal), the card names that prescription, advises a gradual taper rather
than an abrupt stop (CDC 2022), and recommends no replacement.
"""

from __future__ import annotations

from cds_service.facts.model import ClinicalFacts, MedicationOrder
from cds_service.guidance.cards import Card, Suggestion
from cds_service.guidance.compose import (
    active_opioids,
    cohort_evidence,
    create,
    draft_medication_request,
    fit,
    make_card,
    override_reasons,
    prescription_evidence,
    remove_drafts,
    replacement,
)
from cds_service.guidance.rule import ORDER_HOOKS, Rule, RuleContext


def opioid_orders(facts: ClinicalFacts) -> list[MedicationOrder]:
    """Inclusion: draft opioid orders in focus (MOUD is never one; the facts decide)."""
    return [m for m in facts.draft_medications if m.selected and m.opioid]


def may_renew(draft: MedicationOrder, active: MedicationOrder) -> bool:
    """The draft may renew the active prescription: they share an opioid ingredient, or either
    names none the knowledge files know (in doubt, a renewal: the safer reading, which never
    recommends stopping at once)."""
    if not draft.opioid_ingredients or not active.opioid_ingredients:
        return True
    return not draft.opioid_ingredients.isdisjoint(active.opioid_ingredients)


def exempt(facts: ClinicalFacts) -> bool:
    """Exclusion: cancer, sickle cell disease, likely terminal illness, hospice or end of life."""
    return facts.opioid_exempt


# The drafted replacements name the drug only (no verified product-level code is bundled).
TO_COMPLETE = "dose, form and route to complete"

def evaluate(facts: ClinicalFacts, ctx: RuleContext) -> Card | None:
    if not facts.in_cohort or exempt(facts):
        return None
    orders = opioid_orders(facts)
    if not orders:
        return None
    kb = ctx.knowledge
    names = ", ".join(o.name for o in orders)
    # Already taking the opioid a draft names (the draft is likely a renewal): stopping it at
    # once risks withdrawal and a turn to illicit opioids, so no replacement is recommended; a
    # taper is. A different opioid on record leaves a new drug's draft as it is.
    taking = [m for m in active_opioids(facts) if any(may_renew(o, m) for o in orders)]
    evidence = cohort_evidence(facts) + [
        f"Draft order: {o.name} (recognised by {o.opioid})" for o in orders
    ] + [prescription_evidence(o, "opioid", o.opioid) for o in taking]
    advice = (
        "Opioids should be avoided for musculoskeletal pain in hypermobility disorders; they "
        "are not a treatment for it. Prefer acetaminophen (paracetamol) or an NSAID, with "
        "duloxetine or a tricyclic for chronic pain, alongside active rehabilitation "
        "(structured exercise with cognitive behavioural therapy).\n\n"
    )
    if taking:
        # The reason as the clinician sees it in the list (its display), not its code.
        taper_reason = kb.coding("override-opioid-order", "supervised-taper").display
        advice += (
            "**This patient already takes an opioid: do not stop it abruptly.** Stopping "
            "suddenly risks withdrawal, rebound pain and a turn to illicit opioids (CDC 2022); "
            "agree a gradual taper with the patient instead, and give the override reason "
            f"'{taper_reason}' for an order that is part of one.\n\n"
        )
    advice += (
        "Not flagged: medications for opioid use disorder, and patients with cancer, sickle "
        "cell disease, or in palliative or hospice care."
    )
    removals = remove_drafts(orders)
    suggestions = []
    if removals:
        acetaminophen = draft_medication_request(
            facts, kb.coding("acetaminophen", "161"), "Acetaminophen (paracetamol)"
        )
        nsaid = draft_medication_request(facts, kb.coding("nsaid", "5640"), "Ibuprofen")
        suggestions = [
            Suggestion(
                label="Replace with acetaminophen (paracetamol)",
                isRecommended=None if taking else True,
                actions=replacement(
                    removals, create(acetaminophen, f"Draft an acetaminophen order ({TO_COMPLETE})")
                ),
            ),
            Suggestion(
                label="Replace with an NSAID (ibuprofen)",
                actions=replacement(
                    removals, create(nsaid, f"Draft an ibuprofen order ({TO_COMPLETE})")
                ),
            ),
            Suggestion(label=f"Remove {names}", actions=removals),
        ]
    return make_card(
        RULE,
        ctx,
        summary=fit(f"Avoid opioids for musculoskeletal pain in hypermobility: {names}"),
        evidence=evidence,
        advice=advice,
        suggestions=suggestions,
        selection="at-most-one",
        override_reasons=override_reasons(ctx, "override-opioid-order"),
    )


RULE = Rule(
    id="opioid-order",
    title="Avoid opioids for pain in hypermobility",
    hooks=ORDER_HOOKS,
    indicator="warning",
    when="Patient in cohort, not opioid-exempt, with a draft opioid order (not a medication for "
    "opioid use disorder).",
    then="Warns against opioids for this patient's musculoskeletal pain and names the drug; "
    "suggests removing the order or replacing it with acetaminophen or an NSAID; offers "
    "override reasons. When the patient already takes the opioid drafted, names that "
    "prescription and advises a gradual taper, recommending no replacement.",
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
        "acetaminophen",
        "nsaid",
        "override-opioid-order",
    ),
    sources=("source-guidance", "cdc-opioids-2022"),
)
