"""Conditions: which are active, which are hypermobility, which are chronic back or hip pain.

Implements the rules.md definitions "Active condition", "Hypermobility diagnosis" and "Chronic
back or hip pain" (the 12-week threshold is ``GuidanceSettings.chronic_pain_days``).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from cds_service.facts.fhirpath import (
    StatusBinding,
    code_list,
    codings,
    first_date,
    status_code,
    texts,
    to_date,
    to_instant,
)
from cds_service.facts.laterality import side_of
from cds_service.facts.model import ConditionFact, PainFact
from cds_service.facts.naming import card_text, name_of
from cds_service.knowledge import Knowledge

# The code systems FHIR R4 binds Condition.clinicalStatus and verificationStatus to (required),
# the URL STU3 gave each (still sent by older servers), and every code of each
# (https://hl7.org/fhir/R4/valueset-condition-clinical.html, valueset-condition-ver-status.html).
CLINICAL_STATUS = StatusBinding(
    "http://terminology.hl7.org/CodeSystem/condition-clinical",
    frozenset({"http://hl7.org/fhir/condition-clinical"}),
    frozenset({"active", "recurrence", "relapse", "inactive", "remission", "resolved"}),
)
VERIFICATION_STATUS = StatusBinding(
    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    frozenset({"http://hl7.org/fhir/condition-ver-status"}),
    frozenset(
        {"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}
    ),
)
ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
NOT_REAL = frozenset({"refuted", "entered-in-error"})


def is_recorded(condition: Any) -> bool:
    """Not refuted and not entered in error: the condition is on the record at all."""
    return status_code(condition.verificationStatus, VERIFICATION_STATUS) not in NOT_REAL


def in_remission(condition: Any) -> bool:
    """Clinical status "remission" (and on the record): for opioid use disorder, the usual state
    of a patient on maintenance treatment (see build.has_oud)."""
    clinical = status_code(condition.clinicalStatus, CLINICAL_STATUS)
    return clinical == "remission" and is_recorded(condition)


def is_active(condition: Any) -> bool:
    """rules.md "Active condition": clinical status active/recurrence/relapse or absent.

    An abated condition (``abatement[x]`` given) is not active, whatever its status says:
    FHIR R4 (invariant con-4) gives an abated Condition an inactive, resolved or remission
    status, so an absent status there does not mean active, and an active one contradicts the
    abatement. It stays on the record (``is_recorded``): a resolved diagnosis is still one.
    """
    clinical = status_code(condition.clinicalStatus, CLINICAL_STATUS)
    return (
        is_recorded(condition)
        and (clinical is None or clinical in ACTIVE_CLINICAL)
        and not condition.abated
    )


UCUM = "http://unitsofmeasure.org"
# The UCUM units of time an onset age is dated from: (name, months per unit, days per unit).
AGE_UNITS: dict[str, tuple[str, int, int]] = {
    "a": ("year", 12, 0),
    "mo": ("month", 1, 0),
    "wk": ("week", 0, 7),
    "d": ("day", 0, 1),
}
DAYS_PER_MONTH = Decimal("30.4375")  # only for the fraction of a month left after whole ones


class Onset(NamedTuple):
    """A condition's ``onset[x]`` read as rules.md needs it: a date, and how it was given."""

    when: date | None = None  # the onset as a date, when one can be worked out
    age: str | None = None  # the age the date came from ("age 30 years")
    undated: str | None = None  # how an onset that is there but is not a date was given


def read_onset(condition: Any, birth_date: date | None) -> Onset:
    """The onset of a Condition, whichever of ``onset[x]`` carries it.

    An age (``onsetAge``, or the low end of ``onsetRange``) in UCUM years, months, weeks or days
    is dated from the patient's birth date: the earliest day that age denotes, as a partial date
    is read from its start. An onset that is present but cannot be dated is reported as such
    (``undated``), never replaced by another date.
    """
    if condition.onsetDateTime is not None:
        return Onset(to_date(condition.onsetDateTime))
    if condition.onsetPeriod is not None:
        start = to_date(condition.onsetPeriod.start)
        return Onset(start) if start else Onset(undated="given as a period without a start")
    if condition.onsetAge is not None:
        return _onset_at_age(condition.onsetAge, birth_date, "an age", "age")
    if condition.onsetRange is not None:
        low = condition.onsetRange.low
        if low is None:
            return Onset(undated="given as an age range without a lower age")
        return _onset_at_age(low, birth_date, "an age range", "age range from")
    if condition.onsetString is not None:
        return Onset(undated="given as text, not a date")
    return Onset()


def _onset_at_age(age: Any, birth_date: date | None, kind: str, prefix: str) -> Onset:
    unit = AGE_UNITS.get(age.code) if age.system in (None, UCUM) else None
    if unit is None or age.value is None or age.value < 0:
        return Onset(undated=f"given as {kind} that cannot be dated")
    name, months_per_unit, days_per_unit = unit
    value = age.value.normalize()  # "30", "2.5"; an absurd age as "1e+300", not 300 digits
    shown = f"{value:f}" if value.adjusted() < 6 else f"{value:.3g}"
    words = f"{prefix} {shown} {name}{'' if age.value == 1 else 's'}"
    if birth_date is None:
        return Onset(undated=f"given as {words} but with no birth date on record")
    try:
        when = _add_age(birth_date, age.value, months_per_unit, days_per_unit)
    except (OverflowError, ValueError):  # past the calendar's last day
        return Onset(undated=f"given as {words}, which is no calendar date")
    return Onset(when, age=words)


def _add_age(born: date, value: Decimal, months_per_unit: int, days_per_unit: int) -> date:
    """``born`` plus the age: whole calendar months first (a 30th birthday is the same day of
    the month), then whole days; fractions of a day are dropped."""
    months = value * months_per_unit
    whole = int(months)
    days = int((months - whole) * DAYS_PER_MONTH + value * days_per_unit)
    year, month = divmod(born.month - 1 + whole, 12)
    year += born.year
    day = min(born.day, calendar.monthrange(year, month + 1)[1])
    return date(year, month + 1, day) + timedelta(days=days)


def condition_fact(
    condition: Any, knowledge: Knowledge, birth_date: date | None = None
) -> ConditionFact:
    concepts: set[str] = set()
    for system, code in codings(condition.code):
        concepts |= knowledge.concepts_of(system, code)
    onset = read_onset(condition, birth_date)
    name = name_of(knowledge, condition.code, "unnamed condition")
    return ConditionFact(
        id=condition.id,
        name=name,
        codes=card_text(code_list(condition.code)),
        concepts=frozenset(concepts),
        active=is_active(condition),
        remission=in_remission(condition),
        side=side_of(knowledge, [*texts(condition.code), name]),
        onset=onset.when,
        recorded=first_date(condition.recordedDate),
        onset_age=onset.age,
        onset_undated=onset.undated,
        onset_at=_timed(condition.onsetDateTime),
        recorded_at=_timed(condition.recordedDate),
    )


def _timed(value: str | None) -> datetime | None:
    """The moment a dateTime names, when it gives a time of day (else None: a date alone)."""
    return to_instant(value) if value is not None and "T" in value else None


def recorded_facts(
    conditions: Iterable[Any], knowledge: Knowledge, birth_date: date | None = None
) -> list[ConditionFact]:
    """Facts for every condition that is not refuted or entered in error (``birth_date``, the
    patient's, dates an onset given as an age)."""
    return [condition_fact(c, knowledge, birth_date) for c in conditions if is_recorded(c)]


def chronic_pain(
    facts: list[ConditionFact], now: datetime, chronic_days: int
) -> tuple[PainFact, ...]:
    """Active back/hip pain conditions that meet the chronic definition (at the evaluation time
    ``now``), each with its reason."""
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
        reason = _chronic_because(fact, now, chronic_days, marker)
        if reason:
            found.extend(PainFact(condition=fact, site=s, chronic_because=reason) for s in sites)
    return tuple(found)


def _chronic_because(
    fact: ConditionFact, now: datetime, chronic_days: int, marker: ConditionFact | None
) -> str | None:
    weeks = chronic_days // 7
    if "pain-coded-chronic" in fact.concepts:
        return "coded as chronic"
    if marker is not None:
        return f"recorded beside {marker.evidence()}"
    # rules.md: the onset decides when there is one, the recorded date only in its absence,
    # and a condition with neither date counts. An onset that is there but cannot be dated
    # (text, an age with no birth date) is the project's reading of those two lines, as rules.md
    # does not name it: it is an onset, so the recorded date does not replace it, and having no
    # date it counts like a condition with none, which is safer than missing the guidance.
    if fact.onset_undated is not None:
        return f"onset {fact.onset_undated}, so counted as chronic"
    age = f" ({fact.onset_age})" if fact.onset_age else ""
    for what, when, at, how in (
        ("onset", fact.onset, fact.onset_at, age),
        ("recorded", fact.recorded, fact.recorded_at, ""),
    ):
        if when is not None:
            # rules.md: "at least 12 weeks (84 days) before the evaluation time": from the
            # moment when a time of day is given, else from the calendar date.
            elapsed = now - at if at is not None else timedelta(days=(now.date() - when).days)
            if elapsed >= timedelta(days=chronic_days):
                return f"{what} {when.isoformat()}{how}, at least {weeks} weeks ago"
            return None
    return "no onset or recorded date, so counted as chronic"
