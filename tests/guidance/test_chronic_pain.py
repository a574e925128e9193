"""Chronic back or hip pain (rules.md "Words used below"): every form of ``onset[x]`` decides.

"`onset` at least 12 weeks (84 days) before the evaluation time; `recordedDate` is used only when
there is no onset. A back/hip pain condition with neither date counts." The evaluation time of
these tests is 2026-11-01 (tests/guidance/conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import ICD10CM, condition, patient

UCUM = "http://unitsofmeasure.org"


def age(value: float, code: str = "a") -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def hip_pain(recorded: str | None = "2026-10-20", **onset: Any) -> dict[str, Any]:
    """Hip pain (M25.551, not chronic by code) recorded recently, with the onset given."""
    hip = condition("p1", "hip", ICD10CM, "M25.551", onset=None)
    if recorded:
        hip["recordedDate"] = recorded
    hip.update(onset)
    return hip


def chart(hip: dict[str, Any], birth_date: str | None = "1980-01-01") -> list[dict[str, Any]]:
    heds = condition("p1", "heds", ICD10CM, "Q79.62")
    people = [patient("p1", birth_date)] if birth_date else []
    return [*people, heds, hip]


def reason(facts) -> str | None:
    """Why the hip pain counts as chronic, or None when it does not."""
    return next((p.chronic_because for p in facts.chronic_pain), None)


def test_onset_age_is_dated_from_the_birth_date_and_wins_over_the_recorded_date(make_facts):
    facts = make_facts(chart(hip_pain(onsetAge=age(30))), strict=True)
    assert facts.in_cohort
    assert reason(facts) == "onset 2010-01-01 (age 30 years), at least 12 weeks ago"


def test_a_recent_onset_age_is_not_chronic_even_with_an_old_recorded_date(make_facts):
    # Born 1980-09-01: age 46 is 2026-09-01, 61 days before the evaluation time.
    hip = hip_pain(recorded="2020-01-01", onsetAge=age(46))
    facts = make_facts(chart(hip, birth_date="1980-09-01"), strict=True)
    assert reason(facts) is None
    assert not facts.in_cohort


@pytest.mark.parametrize(
    ("value", "code", "chronic"),
    [
        (7, "mo", "onset 2026-08-01 (age 7 months), at least 12 weeks ago"),  # 92 days
        (8, "mo", None),  # 2026-09-01: 61 days
        (30, "wk", "onset 2026-07-30 (age 30 weeks), at least 12 weeks ago"),
        (33, "wk", None),  # 2026-08-20: 73 days
        (220, "d", "onset 2026-08-09 (age 220 days), at least 12 weeks ago"),  # exactly 84
        (221, "d", None),  # 83 days
        (0.5, "a", "onset 2026-07-01 (age 0.5 years), at least 12 weeks ago"),
    ],
)
def test_onset_age_in_every_ucum_unit_of_time(make_facts, value, code, chronic):
    hip = hip_pain(recorded="2020-01-01", onsetAge=age(value, code))
    facts = make_facts(chart(hip, birth_date="2026-01-01"), strict=True)
    assert reason(facts) == chronic


def test_onset_range_is_dated_from_its_low_age(make_facts):
    old = hip_pain(onsetRange={"low": age(30), "high": age(35)})
    assert reason(make_facts(chart(old), strict=True)) == (
        "onset 2010-01-01 (age range from 30 years), at least 12 weeks ago"
    )
    recent = hip_pain(recorded="2020-01-01", onsetRange={"low": age(46), "high": age(47)})
    assert reason(make_facts(chart(recent, birth_date="1980-09-01"), strict=True)) is None


@pytest.mark.parametrize(
    ("onset", "birth_date", "expected"),
    [
        ({"onsetString": "since her teens"}, "1980-01-01",
         "onset given as text, not a date, so counted as chronic"),
        ({"onsetAge": age(30)}, None,
         "onset given as age 30 years but with no birth date on record, so counted as chronic"),
        ({"onsetRange": {"low": age(30)}}, None,
         "onset given as age range from 30 years but with no birth date on record, so counted "
         "as chronic"),
        ({"onsetRange": {"high": age(35)}}, "1980-01-01",
         "onset given as an age range without a lower age, so counted as chronic"),
        ({"onsetPeriod": {"end": "2026-10-25"}}, "1980-01-01",
         "onset given as a period without a start, so counted as chronic"),
        ({"onsetAge": {"value": 30, "unit": "years"}}, "1980-01-01",
         "onset given as an age that cannot be dated, so counted as chronic"),
        ({"onsetAge": {**age(30), "value": 1e300}}, "1980-01-01",
         "onset given as age 1e+300 years, which is no calendar date, so counted as chronic"),
        ({"onsetAge": {**age(30), "value": 2.5}}, None,
         "onset given as age 2.5 years but with no birth date on record, so counted as chronic"),
    ],
)
def test_an_onset_that_is_not_a_date_counts_and_the_recorded_date_is_not_used(
    make_facts, onset, birth_date, expected
):
    # Recorded 12 days before the evaluation time: judged by it, the pain would not be chronic.
    facts = make_facts(chart(hip_pain(**onset), birth_date=birth_date), strict=True)
    assert facts.in_cohort
    assert reason(facts) == expected


def test_the_recorded_date_still_decides_when_there_is_no_onset(make_facts):
    assert reason(make_facts(chart(hip_pain()), strict=True)) is None
    assert reason(make_facts(chart(hip_pain(recorded="2026-01-01")), strict=True)) == (
        "recorded 2026-01-01, at least 12 weeks ago"
    )
    assert reason(make_facts(chart(hip_pain(recorded=None)), strict=True)) == (
        "no onset or recorded date, so counted as chronic"
    )


def test_the_reason_is_on_the_card(make_facts, make_ctx):
    from cds_service.guidance.engine import evaluate

    facts = make_facts(chart(hip_pain(onsetString="since her teens")), strict=True)
    cards = evaluate(facts, make_ctx()).cards
    assert cards
    line = next(line for line in cards[0].detail.splitlines() if "Chronic hip pain" in line)
    assert line == (
        "- Chronic hip pain: M25.551, onset given as text, not a date, so counted as chronic"
    )


@pytest.mark.parametrize("status", [None, "active"])
def test_an_abated_pain_condition_is_not_pain_whatever_its_status_says(make_facts, status):
    """rules.md counts a Condition without clinicalStatus as active; one with an abatement is
    not (FHIR R4 invariant con-4 asks such a Condition for an inactive, resolved or remission
    status), so it is not active pain, though still on the record."""
    hip = hip_pain(onsetDateTime="2020-01-01")
    hip["abatementDateTime"] = "2024-03-01"
    if status is None:
        del hip["clinicalStatus"]
    else:
        hip["clinicalStatus"]["coding"][0]["code"] = status
    facts = make_facts(chart(hip), strict=True)  # valid, and read
    assert not facts.chronic_pain and not facts.in_cohort
    # The same Condition without its abatement is chronic hip pain: the abatement decided.
    del hip["abatementDateTime"]
    assert make_facts(chart(hip), strict=True).in_cohort


@pytest.mark.parametrize(
    ("onset", "chronic"),
    [
        ("2026-08-09T20:00:00-10:00", False),  # 06:00Z on 10 Aug: 83 days 6 h before 1 Nov 12:00Z
        ("2026-08-08T20:00:00-10:00", True),  # 84 days 6 h
        ("2026-08-09", True),  # a date alone: 84 calendar days
        ("2026-08-10", False),
    ],
)
def test_the_84_days_count_from_the_onset_moment_when_it_has_a_time(make_facts, onset, chronic):
    """rules.md: onset "at least 12 weeks (84 days) before the evaluation time" (the tests'
    evaluation time is 2026-11-01T12:00Z); the local calendar date of a timed onset made one
    83 days old count (found by clinical review)."""
    facts = make_facts(chart(hip_pain(onsetDateTime=onset)), strict=True)
    assert bool(facts.chronic_pain) is chronic
