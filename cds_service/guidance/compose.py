"""Building blocks the rules share: cohort evidence, cards, draft FHIR resources, actions.

Keeping these in one place is what makes every card look alike: evidence first (why this card
fired for this patient), then the advice, then where the advice comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any

from cds_service.facts.model import ClinicalFacts, MedicationOrder, ServiceOrder
from cds_service.guidance.cards import (
    RULE_CODE_SYSTEM,
    Action,
    Card,
    Coding,
    Link,
    Source,
    Suggestion,
)
from cds_service.guidance.rule import Rule, RuleContext
from cds_service.knowledge import Coding as KnowledgeCoding


def cohort_evidence(facts: ClinicalFacts) -> list[str]:
    """Markdown bullet lines saying why the patient is in the guidance's cohort."""
    lines = []
    if facts.hypermobility_diagnoses:
        names = "; ".join(c.evidence() for c in facts.hypermobility_diagnoses)
        lines.append(f"Hypermobility diagnosis: {names}")
    if facts.beighton is not None:
        b = facts.beighton
        verdict = "meets" if b.meets_threshold else "is below"
        lines.append(f"{b.evidence()}, which {verdict} the {b.threshold_basis}")
    for pain in facts.chronic_pain:
        lines.append(
            f"Chronic {pain.site} pain: {pain.condition.evidence()}, {pain.chronic_because}"
        )
    return lines


# rules.md counts a rehabilitation order that is "active or completed". The records read are
# ServiceRequests ("active": the order stands and the therapy is under way) and Procedures
# ("in-progress": the same, recorded as a procedure). Not "on-hold" (either resource): a paused
# order is not rehabilitation happening.
REHAB_ONGOING = frozenset({"active", "in-progress"})


def ongoing_rehabilitation(order: ServiceOrder, since: date) -> bool:
    """A rehabilitation order on record that is under way and was authored on or after
    ``since`` (the look-back; an undated one counts): what rehab-referral and
    passive-modality-order both take as rehabilitation happening."""
    return (
        not order.draft
        and order.status in REHAB_ONGOING
        and (order.on is None or order.on >= since)
    )


def active_opioids(facts: ClinicalFacts) -> list[MedicationOrder]:
    """Active opioid prescriptions on record (MOUD is never one; the facts decide): what
    opioid-active warns about, and what makes opioid-order's draft a likely renewal."""
    return [m for m in facts.active_medications if m.opioid]


def prescription_evidence(order: MedicationOrder, kind: str, recognised_by: str | None) -> str:
    """An evidence line naming a prescription on record: ``kind`` is "opioid", say."""
    when = f"authored {order.authored.isoformat()}" if order.authored else "no authored date"
    return f"Active {kind} prescription: {order.name}, {when} (recognised by {recognised_by})"


def bullets(lines: Iterable[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def detail(*, evidence: Sequence[str], advice: str, sources: Sequence[str]) -> str:
    """Card detail in GitHub-flavoured markdown: evidence, advice, sources."""
    parts = [f"**Why this card**\n\n{bullets(evidence)}", advice.strip()]
    if sources:
        parts.append("**Source:** " + "; ".join(s.rstrip(".") for s in sources) + ".")
    return "\n\n".join(parts)


def make_card(
    rule: Rule,
    ctx: RuleContext,
    *,
    summary: str,
    evidence: Sequence[str],
    advice: str,
    suggestions: Sequence[Suggestion] = (),
    selection: str = "any",
    override_reasons: Sequence[Coding] = (),
) -> Card:
    """A card carrying the rule id in source.topic and its guideline sources as links."""
    sources = [ctx.knowledge.source(key) for key in rule.sources]
    primary = sources[0]
    return Card(
        summary=summary,
        indicator=ctx.settings.indicator(rule.id, rule.indicator),
        source=Source(
            label=primary.label,
            url=primary.url,
            topic=Coding(system=RULE_CODE_SYSTEM, code=rule.id, display=rule.title),
        ),
        detail=detail(
            evidence=evidence, advice=advice, sources=[s.citation for s in sources]
        ),
        suggestions=tuple(suggestions),
        selectionBehavior=selection if suggestions else None,
        overrideReasons=tuple(override_reasons),
        links=tuple(
            Link(label=s.label, url=s.url, type="absolute") for s in sources if s.url
        ),
    )


def codeable(codings: Iterable[KnowledgeCoding], text: str) -> dict[str, Any]:
    return {
        "coding": [
            {k: v for k, v in (("system", c.system), ("code", c.code), ("display", c.display)) if v}
            for c in codings
        ],
        "text": text,
    }


def draft_service_request(
    facts: ClinicalFacts,
    codings: Iterable[KnowledgeCoding],
    text: str,
    *,
    note: str | None = None,
    planned_hours: float | None = None,
) -> dict[str, Any]:
    """A complete, signable R4 ServiceRequest in draft status for this patient."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": codeable(codings, text),
        "subject": {"reference": f"Patient/{facts.patient_id}"},
    }
    if planned_hours is not None:
        resource["quantityQuantity"] = {
            "value": planned_hours,
            "unit": "hours",
            "system": "http://unitsofmeasure.org",
            "code": "h",
        }
    if note:
        resource["note"] = [{"text": note}]
    return resource


def programme_request(facts: ClinicalFacts, ctx: RuleContext) -> dict[str, Any]:
    """The service's own programme suggestion: it states the minimum planned hours, so it never
    trips rehab-intensity itself."""
    hours = ctx.settings.programme_min_hours
    return draft_service_request(
        facts,
        [ctx.knowledge.coding("multidisciplinary-programme", "52052004")],
        "Intensive multidisciplinary rehabilitation programme (exercise with CBT)",
        note=f"Planned total of at least {hours:g} hours, in daily sessions.",
        planned_hours=hours,
    )


def physical_therapy_request(facts: ClinicalFacts, ctx: RuleContext) -> dict[str, Any]:
    return draft_service_request(
        facts,
        [ctx.knowledge.coding("physical-therapy", "91251008")],
        "Physical therapy: structured, progressive exercise programme",
    )


def draft_medication_request(
    facts: ClinicalFacts, coding: KnowledgeCoding, text: str, *, note: str | None = None
) -> dict[str, Any]:
    """A draft R4 MedicationRequest naming the drug; dose is left to the prescriber."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": codeable([coding], text),
        "subject": {"reference": f"Patient/{facts.patient_id}"},
    }
    if note:
        resource["note"] = [{"text": note}]
    return resource


def fit(text: str, limit: int = 139) -> str:
    """Shorten text to ``limit`` characters (card summaries must stay under 140)."""
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def remove_drafts(
    orders: Iterable[Any], name: Callable[[Any], str] = lambda order: order.name
) -> tuple[Action, ...]:
    """Delete actions for draft orders (those with an id; the EHR needs ``Type/id``).

    ``name`` says how each order is named in its action's description (by default, its name).
    """
    return tuple(
        delete(o.reference, f"Remove the draft order for {name(o)}") for o in orders if o.reference
    )


def replacement(removals: Sequence[Action], *creates: Action) -> tuple[Action, ...]:
    """The actions of a "replace with" suggestion: the new orders first, then the removals.

    CDS Hooks applies a suggestion's actions together, like a FHIR transaction (deletes first),
    so for a conformant EHR the order changes nothing. The CDS Hooks sandbox applies only the
    first action it can: a delete first cleared its order form and the replacement never
    arrived, while a create first puts the new drug in the form (shared notes, "Applying
    suggestions").
    """
    return (*creates, *removals)


def create(resource: dict[str, Any], description: str) -> Action:
    return Action(type="create", description=description, resource=resource)


def delete(reference: str, description: str) -> Action:
    return Action(type="delete", description=description, resourceId=reference)


def override_reasons(ctx: RuleContext, concept: str) -> tuple[Coding, ...]:
    """The project's override reason codes for a rule (declared in the knowledge files)."""
    return tuple(
        Coding(system=entry.system, code=entry.code, display=entry.display)
        for entry in ctx.knowledge.codes(concept)
    )
