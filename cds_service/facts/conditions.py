"""Conditions: which are active, which are hypermobility, which are chronic back or hip pain.

Implements the rules.md definitions "Active condition", "Hypermobility diagnosis" and "Chronic
back or hip pain" (the 12-week threshold is ``GuidanceSettings.chronic_pain_days``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from cds_service.facts.fhirpath import code_list, codings, first_date, period_start, status_code
from cds_service.facts.model import ConditionFact, PainFact
from cds_service.facts.naming import name_of
from cds_service.knowledge import Knowledge

ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
NOT_REAL = frozenset({"refuted", "entered-in-error"})


def is_recorded(condition: Any) -> bool:
    """Not refuted and not entered in error: the condition is on the record at all."""
    return status_code(condition.verificationStatus) not in NOT_REAL


def is_active(condition: Any) -> bool:
    """rules.md "Active condition": clinical status active/recurrence/relapse or absent."""
    clinical = status_code(condition.clinicalStatus)
    return is_recorded(condition) and (clinical is None or clinical in ACTIVE_CLINICAL)


def condition_fact(condition: Any, knowledge: Knowledge) -> ConditionFact:
    concepts: set[str] = set()
    for system, code in codings(condition.code):
        concepts |= knowledge.concepts_of(system, code)
    onset = first_date(condition.onsetDateTime, period_start(condition.onsetPeriod))
    return ConditionFact(
        id=condition.id,
        name=name_of(knowledge, condition.code, "unnamed condition"),
        codes=code_list(condition.code),
        concepts=frozenset(concepts),
        active=is_active(condition),
        onset=onset,
        recorded=first_date(condition.recordedDate),
    )


def recorded_facts(conditions: Iterable[Any], knowledge: Knowledge) -> list[ConditionFact]:
    """Facts for every condition that is not refuted or entered in error."""
    return [condition_fact(c, knowledge) for c in conditions if is_recorded(c)]


def chronic_pain(
    facts: list[ConditionFact], today: date, chronic_days: int
) -> tuple[PainFact, ...]:
    """Active back/hip pain conditions that meet the chronic definition, each with its reason."""
    marker = next(
        (f for f in facts if f.active and "chronic-pain-unlocated" in f.concepts), None
    )
    found: list[PainFact] = []
    for fact in facts:
        if not fact.active:
            continue
        sites = [s for s in ("back", "hip") if f"{s}-pain" in fact.concepts]
        if not sites:
            continue
        reason = _chronic_because(fact, today, chronic_days, marker)
        if reason:
            found.extend(PainFact(condition=fact, site=s, chronic_because=reason) for s in sites)
    return tuple(found)


def _chronic_because(
    fact: ConditionFact, today: date, chronic_days: int, marker: ConditionFact | None
) -> str | None:
    weeks = chronic_days // 7
    if "pain-coded-chronic" in fact.concepts:
        return "coded as chronic"
    if marker is not None:
        return f"recorded beside {marker.evidence()}"
    # The onset decides when there is one; the recorded date only in its absence.
    for what, when in (("onset", fact.onset), ("recorded", fact.recorded)):
        if when is not None:
            if (today - when).days >= chronic_days:
                return f"{what} {when.isoformat()}, at least {weeks} weeks ago"
            return None
    return "no onset or recorded date, so counted as chronic"
