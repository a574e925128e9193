"""possible-hypermobility: a high Beighton score with chronic pain and no EDS/HSD diagnosis."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.guidance.rules.possible_hypermobility import RULE, evaluate
from cds_service.guidance.settings import GuidanceSettings
from tests.api.test_core_rules import assert_conformant
from tests.builders import ICD10CM, SNOMED, condition, patient

AGE_BANDS = GuidanceSettings(beighton_threshold_mode="age-bands")


def beighton(score: int, *, rid: str = "beighton", when: str = "2026-06-15",
             status: str = "final") -> dict[str, Any]:
    """A Beighton score filed under an EHR flowsheet code, recognised by its text."""
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "urn:oid:1.2.3.4", "code": "FS-77",
                             "display": "Beighton score"}]},
        "effectiveDateTime": when,
        "valueInteger": score,
    }


LOW_BACK_PAIN = condition("p1", "lbp", SNOMED, "278860009")  # chronic by code


def chart(*extra: dict[str, Any], birth_date: str = "1990-05-01") -> list[dict[str, Any]]:
    """Age 36 at the evaluation time (2026-11-01), chronic low back pain, no diagnosis."""
    return [patient("p1", birth_date), LOW_BACK_PAIN, *extra]


@pytest.fixture
def run(make_facts, make_ctx):
    def go(resources, settings: GuidanceSettings | None = None):
        facts = make_facts(resources, settings=settings, strict=True)
        return evaluate(facts, make_ctx(settings=settings))

    return go


def test_fires_for_beighton_5_without_diagnosis(run):
    card = run(chart(beighton(5)))
    assert card is not None
    assert card.rule_id == "possible-hypermobility"
    assert card.indicator == "info"
    assert "Beighton 5/9" in card.summary
    # Score, date and the threshold basis are stated.
    assert "Beighton score 5/9 on 2026-06-15" in card.detail
    assert "threshold 4/9 (the source guidance's cut-off)" in card.detail
    assert "No Ehlers-Danlos or hypermobility diagnosis" in card.detail
    for term in ("hypermobility spectrum disorder", "hypermobile Ehlers-Danlos syndrome",
                 "2 to 3 years"):
        assert term in card.detail
    assert not card.suggestions
    assert card.links
    assert_conformant(card.to_json())


@pytest.mark.parametrize("display", ["BeightonScore", "Beighton9", "Beightons score",
                                     "HYPERMOBILITY-BEIGHTON"])
def test_beighton_anywhere_in_a_display_makes_a_score(run, display):
    """rules.md: a display that *contains* "Beighton" (EHR flowsheet names run words
    together); only whole words counted."""
    score = beighton(6)
    score["code"]["coding"][0]["display"] = display
    assert run(chart(score)) is not None


def test_score_of_exactly_the_threshold_fires(run):
    assert run(chart(beighton(4))) is not None


def test_beighton_3_is_silent(run):
    assert run(chart(beighton(3))) is None


@pytest.mark.parametrize("system, code", [
    (ICD10CM, "M35.7"),     # hypermobility syndrome / HSD
    (ICD10CM, "Q79.62"),    # hypermobile EDS
    (ICD10CM, "Q79.61"),    # classical EDS: a different disorder, but still "any type"
    (ICD10CM, "Q79.63"),    # vascular EDS
    (SNOMED, "398114001"),  # Ehlers-Danlos syndrome
    (SNOMED, "83470009"),   # EDS type 1
    # The VSAC EDS value set's codes that terminology.md leaves at "...": the card called a
    # patient with a diagnosed EDS "possibly hypermobile, undiagnosed".
    (SNOMED, "25606004"),   # EDS, hydroxylysine-deficient
    (SNOMED, "86667008"),   # EDS, dominant type 4
    (SNOMED, "59399004"),   # X-linked cutis laxa (once EDS type 9)
])
def test_silent_with_any_eds_or_hypermobility_diagnosis(run, system, code):
    assert run(chart(beighton(6), condition("p1", "dx", system, code))) is None


def test_resolved_diagnosis_still_counts_as_diagnosed(run):
    old = condition("p1", "dx", ICD10CM, "M35.7", clinical="resolved")
    assert run(chart(beighton(6), old)) is None


@pytest.mark.parametrize("clinical", [None, "active", "resolved"])
def test_an_abated_diagnosis_still_counts_as_diagnosed(run, clinical):
    """An abated diagnosis is not active (FHIR con-4), but it is a diagnosis of some type all
    the same, whatever its status says, or without one."""
    old = condition("p1", "dx", ICD10CM, "Q79.62", clinical=clinical or "active")
    old["abatementDateTime"] = "2024-03-01"
    if clinical is None:
        del old["clinicalStatus"]
    assert run(chart(beighton(6), old)) is None


def test_diagnosis_entered_in_error_does_not_count(run):
    wrong = condition("p1", "dx", ICD10CM, "M35.7", verification="entered-in-error")
    assert run(chart(beighton(6), wrong)) is not None


def test_most_recent_score_wins(run):
    older_high = beighton(7, rid="b-old", when="2024-01-10")
    newer_low = beighton(2, rid="b-new", when="2026-05-01")
    assert run(chart(older_high, newer_low)) is None
    older_low = beighton(2, rid="b-old", when="2024-01-10")
    newer_high = beighton(6, rid="b-new", when="2026-05-01")
    card = run(chart(older_low, newer_high))
    assert "Beighton score 6/9 on 2026-05-01" in card.detail


def test_most_recent_is_by_the_moment_not_the_calendar_day(run):
    """23:00 at UTC-5 on 1 June is 04:00Z on 2 June: later than 01:00Z on 2 June."""
    later = beighton(6, rid="b6", when="2026-06-01T23:00:00-05:00")
    earlier = beighton(2, rid="b2", when="2026-06-02T01:00:00Z")
    assert run(chart(later, earlier)) is not None
    assert run(chart(earlier, later)) is not None


def test_two_scores_on_one_day_are_ordered_by_time_whatever_the_bundle_order(run):
    morning = beighton(3, rid="b3", when="2026-06-02T09:00:00Z")
    afternoon = beighton(6, rid="b6", when="2026-06-02T15:00:00Z")
    assert run(chart(morning, afternoon)) is not None
    assert run(chart(afternoon, morning)) is not None
    assert run(chart(beighton(6, rid="b6", when="2026-06-02T09:00:00Z"),
                     beighton(3, rid="b3", when="2026-06-02T15:00:00Z"))) is None


def test_a_score_dated_by_its_day_alone_is_not_taken_as_earlier_than_that_day(run):
    """A date alone may be any time that day: 2 June is not before 23:00 on 1 June at UTC-5
    (04:00Z on 2 June), so the 2 June score of 2 wins (found by review)."""
    timed = beighton(6, rid="b6", when="2026-06-01T23:00:00-05:00")
    dated = beighton(2, rid="b2", when="2026-06-02")
    assert run(chart(timed, dated)) is None
    assert run(chart(dated, timed)) is None


@pytest.mark.parametrize("when", ["2026-06-30T23:59:60Z", "0001-01-01T00:30:00+01:00",
                                  "9999-12-31T23:00:00-05:00"])
def test_odd_but_valid_times_are_read_not_fatal(run, when):
    """A leap second and the calendar's edges are valid FHIR: they crashed the call with a 500
    once scores were ordered by moment (found by review)."""
    assert run(chart(beighton(6, when=when))) is not None


def test_preliminary_score_does_not_count(run):
    assert run(chart(beighton(7, status="preliminary"))) is None


def test_silent_without_chronic_pain(run):
    recent = condition("p1", "hip", ICD10CM, "M25.551", onset="2026-10-01")  # 31 days old
    assert run([patient("p1"), recent, beighton(7)]) is None
    assert run([patient("p1"), beighton(7)]) is None


def test_chronic_hip_pain_also_qualifies(run):
    hip = condition("p1", "hip", ICD10CM, "M25.552", onset="2025-01-01")
    assert run([patient("p1"), hip, beighton(5)]) is not None


def test_age_band_setting_changes_the_outcome(run):
    # Age 36: the fixed threshold is 4, the 2017 age band (puberty to 50) is 5.
    assert run(chart(beighton(4))) is not None
    assert run(chart(beighton(4)), settings=AGE_BANDS) is None
    card = run(chart(beighton(5)), settings=AGE_BANDS)
    assert card is not None
    assert "threshold 5/9 (2017 criteria age band for age 36)" in card.detail


def test_age_bands_for_older_and_younger_patients(run):
    # Over 50: threshold 4. Under 18: threshold 6.
    over_50 = run(chart(beighton(4), birth_date="1960-01-01"), settings=AGE_BANDS)
    assert over_50 is not None
    assert "threshold 4/9 (2017 criteria age band for age 66)" in over_50.detail
    assert run(chart(beighton(5), birth_date="2010-01-01"), settings=AGE_BANDS) is None
    assert run(chart(beighton(6), birth_date="2010-01-01"), settings=AGE_BANDS) is not None


def test_a_score_with_a_reason_for_an_absent_value_is_in_doubt(run):
    """FHIR's obs-6 forbids a value beside a dataAbsentReason; such a Beighton score counted
    while such a PHQ-9 did not (found by review): neither counts now."""
    odd = beighton(6)
    odd["dataAbsentReason"] = {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
        "code": "unknown"}]}
    assert run(chart(odd)) is None
    assert run(chart(beighton(6))) is not None


def test_a_score_dated_before_birth_takes_the_age_band_of_today(run):
    """A date error: the score of 4 "taken" the day before birth fell through every band to the
    fixed threshold 4 (found by review); today's age (14: band 6) decides instead."""
    early = beighton(4, when="2011-12-31")
    assert run(chart(early, birth_date="2012-01-01"), settings=AGE_BANDS) is None


def test_the_age_band_is_the_one_at_the_examination(run):
    """A score of 5 taken at 17 (band: 6) met "the band for age 19", the age today (found by a
    clinical review); at 18 it meets band 5."""
    at_17 = beighton(5, when="2024-06-01")
    assert run(chart(at_17, birth_date="2007-01-01"), settings=AGE_BANDS) is None
    at_18 = beighton(5, when="2025-06-01")
    card = run(chart(at_18, birth_date="2007-01-01"), settings=AGE_BANDS)
    assert card is not None
    assert "threshold 5/9 (2017 criteria age band for age 18)" in card.detail


def test_rule_metadata(knowledge):
    assert RULE.id == "possible-hypermobility"
    assert RULE.hooks == frozenset({"patient-view"})
