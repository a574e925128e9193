"""Small, forgiving readers for the parts of FHIR models the rules look at.

Real EHR data is uneven: partial dates ("2025-03"), text-only codes, displays without codes.
These helpers turn the validated models (:mod:`cds_service.fhir.models`) into the plain values
the facts need, so the clinical code never has to guard against ``None`` chains itself.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple


def codings(concept: Any) -> list[tuple[str | None, str | None]]:
    """(system, code) pairs of a CodeableConcept (or of several)."""
    if concept is None:
        return []
    if isinstance(concept, list | tuple):
        return [pair for item in concept for pair in codings(item)]
    return [(c.system, c.code) for c in (concept.coding or [])]


def texts(concept: Any) -> list[str]:
    """Every human-readable string of a CodeableConcept: its text, then each coding display."""
    if concept is None:
        return []
    if isinstance(concept, list | tuple):
        return [t for item in concept for t in texts(item)]
    found = [concept.text] if concept.text else []
    found.extend(c.display for c in (concept.coding or []) if c.display)
    return found


def label(
    concept: Any,
    fallback: str = "unnamed",
    known: Callable[[str | None, str], str | None] | None = None,
) -> str:
    """The best single name for a CodeableConcept, for card text.

    Its text, else a coding's display, else the display our knowledge files give the code
    (``known``), else the bare code: clinicians read "Lumbar orthosis", not "L0625".
    """
    if concept is None:
        return fallback
    if concept.text:
        return concept.text
    for coding in concept.coding or []:
        if coding.display:
            return coding.display
    for coding in concept.coding or []:
        if coding.code and known is not None and (display := known(coding.system, coding.code)):
            return display
    for coding in concept.coding or []:
        if coding.code:
            return coding.code
    return fallback


def code_list(concept: Any) -> str:
    """"M35.7, 278860009" style list of the codes carried, for evidence lines."""
    return ", ".join(code for _, code in codings(concept) if code)


def to_date(value: str | None) -> date | None:
    """The date of a FHIR date/dateTime/instant, taking the start of a partial date.

    Values come from the models, which have already checked the pattern and the calendar day.
    """
    if value is None:
        return None
    year, month, day = (value[:10].split("-") + ["1", "1"])[:3]
    return date(int(year), int(month), int(day))


def to_instant(value: str | None) -> datetime | None:
    """The moment a FHIR date/dateTime/instant names, in UTC, to order values by time.

    A dateTime with its time and offset is exact. A date alone (or a partial one) says only the
    day, so it stands for the end of that day in UTC: it is not known to come before anything
    else that day. A leap second (":60", which FHIR allows) counts as the second before it, and
    a moment beyond what Python can hold (year 1 with a positive offset) as its day's end.
    """
    if value is None:
        return None
    day = to_date(value)
    end_of_day = datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)
    if "T" not in value:
        return end_of_day
    try:
        moment = datetime.fromisoformat(_LEAP_SECOND.sub(":59", value.replace("Z", "+00:00")))
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return end_of_day


_LEAP_SECOND = re.compile(r"(?<=T\d\d:\d\d):60")

# The widest offsets from UTC in use: a date without a time may be any moment of its day
# somewhere from UTC+14 to UTC-12.
_EARLIEST_OFFSET, _LATEST_OFFSET = timedelta(hours=14), timedelta(hours=12)
# The first and last moments Python can hold (an undated value sorts first as EARLIEST).
EARLIEST, LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def moment_span(value: str | None) -> tuple[datetime, datetime] | None:
    """The earliest and latest UTC moments a FHIR date/dateTime/instant can name: one moment for
    a dateTime with its time; for a date alone (or a month, or a year), all of it, in any
    time zone. None for no value."""
    if value is None:
        return None
    if "T" in value:
        moment = to_instant(value)
        return moment, moment
    first = to_date(value)
    if len(value) >= 10:
        last = first
    elif len(value) == 7:
        last = date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])
    else:
        last = date(first.year, 12, 31)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, 23, 59, 59, tzinfo=UTC)
    # Each end as wide as Python allows at the calendar's edges (year 1, year 9999).
    start = start - _EARLIEST_OFFSET if start - EARLIEST > _EARLIEST_OFFSET else EARLIEST
    end = end + _LATEST_OFFSET if LATEST - end > _LATEST_OFFSET else LATEST
    return start, end


def period_start(period: Any) -> str | None:
    """A Period's start, or None when there is no Period (for :func:`first_date`)."""
    return period.start if period is not None else None


def age_on(birth_date: date | None, day: date) -> int | None:
    """Age in whole years on ``day``, or None without a birth date."""
    if birth_date is None:
        return None
    before_birthday = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - before_birthday


def gives_a_value(element: Any) -> bool:
    """False for an Observation, or a component, that says why its value is absent
    (``dataAbsentReason``: a screen declined, a reading not performed). FHIR's obs-6 allows the
    reason only without a value, so one that has both is in doubt too: it is no result."""
    return element.dataAbsentReason is None


def first_present(*values: str | None) -> str | None:
    """The first value that is present, else None."""
    return next((value for value in values if value is not None), None)


def first_date(*values: str | None) -> date | None:
    """The date of the first value that is present (see :func:`to_date`), else None."""
    return to_date(first_present(*values))


class StatusBinding(NamedTuple):
    """The code system FHIR binds a status element to, the other names it goes by (older
    servers send STU3's URL), and every code it has."""

    system: str
    aliases: frozenset[str]
    codes: frozenset[str]


def status_code(concept: Any, binding: StatusBinding) -> str | None:
    """The code of a status CodeableConcept (Condition.clinicalStatus etc.): its code in the
    bound system; else a code of that system given under one of its aliases or with no system.
    A code of any other system is a translation (a local "A", or a local "inactive" that means
    something else) and is never read as the status."""
    fallback = None
    for coding_system, code in codings(concept):
        if coding_system == binding.system and code:
            return code
        named_so = coding_system is None or coding_system in binding.aliases
        if fallback is None and named_so and code in binding.codes:
            fallback = code
    return fallback

