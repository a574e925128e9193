"""rehab-intensity: a multidisciplinary programme planned under the hour threshold is flagged."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.guidance.rules.rehab_intensity import RULE, evaluate
from cds_service.guidance.settings import GuidanceSettings
from tests.api.test_core_rules import assert_conformant
from tests.builders import SNOMED, cohort_conditions, condition, patient, service_request

COHORT = [patient("p1"), *cohort_conditions("p1")]


def programme(
    rid: str = "prog",
    hours: float | None = None,
    *,
    code: str = "52052004",
    text: str | None = "Multidisciplinary pain rehabilitation",
) -> dict[str, Any]:
    order = service_request("p1", rid, SNOMED, code, text=text)
    if hours is not None:
        order["quantityQuantity"] = {
            "value": hours,
            "unit": "h",
            "system": "http://unitsofmeasure.org",
            "code": "h",
        }
    return order


@pytest.fixture
def run(make_facts, make_ctx):
    def evaluate_for(drafts, *, resources=COHORT, hook="order-sign", selected=None, settings=None):
        facts = make_facts(resources, drafts, selected=selected, settings=settings)
        return evaluate(facts, make_ctx(hook, settings=settings))

    return evaluate_for


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_forty_hour_programme_is_flagged(run, hook):
    selected = {"ServiceRequest/prog"} if hook == "order-select" else None
    card = run([programme(hours=40)], hook=hook, selected=selected)
    assert card is not None
    body = card.to_json()
    assert_conformant(body)
    assert body["indicator"] == "info"
    assert body["source"]["topic"]["code"] == "rehab-intensity"
    assert "40 h" in body["summary"] and "100 h" in body["summary"]
    assert "Multidisciplinary pain rehabilitation, planned total 40 hours" in body["detail"]
    assert "Threshold applied: at least 100 hours" in body["detail"]
    assert "suggestions" not in body


@pytest.mark.parametrize("hours", [120, 100])
def test_programme_at_or_above_threshold_is_not_flagged(run, hours):
    assert run([programme(hours=hours)]) is None


def test_programme_without_hours_is_not_flagged(run):
    assert run([programme()]) is None


def test_hours_from_occurrence_timing(run):
    order = programme()
    order["occurrenceTiming"] = {"repeat": {"count": 20, "duration": 90, "durationUnit": "min"}}
    card = run([order])
    assert card is not None
    assert "planned total 30 hours" in card.detail


def test_threshold_comes_from_settings(run):
    settings = GuidanceSettings(programme_min_hours=150)
    card = run([programme(hours=120)], settings=settings)
    assert card is not None
    assert "under 150 h" in card.summary
    assert "Threshold applied: at least 150 hours" in card.detail
    assert run([programme(hours=40)], settings=GuidanceSettings(programme_min_hours=30)) is None


@pytest.mark.parametrize(
    "order",
    [
        programme(code="278414003", text=None, hours=24),  # pain management, coded only
        programme(code="91251008", text="Interdisciplinary back pain programme", hours=24),
    ],
)
def test_programme_by_code_or_by_words(run, order):
    assert run([order]) is not None


def test_single_physical_therapy_referral_is_not_a_programme(run):
    assert run([programme(code="91251008", text="Physical therapy", hours=10)]) is None


def test_order_select_only_looks_at_the_selected_order(run):
    drafts = [programme(hours=40), service_request("p1", "pt", SNOMED, "91251008")]
    assert run(drafts, hook="order-select", selected={"ServiceRequest/pt"}) is None
    assert run(drafts, hook="order-select", selected={"ServiceRequest/prog"}) is not None


def test_programme_on_record_is_not_a_draft(run):
    on_record = programme(hours=40)
    on_record["status"] = "active"
    assert run([], resources=[*COHORT, on_record]) is None


def test_outside_cohort_gets_nothing(run):
    only_pain = [patient("p1"), condition("p1", "lbp", SNOMED, "278860009")]
    assert run([programme(hours=40)], resources=only_pain) is None


def test_rule_metadata(knowledge):
    assert RULE.hooks == frozenset({"order-select", "order-sign"})
    assert RULE.indicator == "info"


def test_a_short_interdisciplinary_meeting_is_not_a_programme(run):
    meeting = programme("conf", 1, text="Interdisciplinary care conference")
    del meeting["code"]["coding"]
    assert run([meeting]) is None
    typed = programme("typed", 40, text="Interdisciplinary pain rehabilitation programme")
    del typed["code"]["coding"]
    assert run([typed]) is not None


def test_a_cbt_order_is_no_programme_whatever_its_text_says(run, make_facts, make_ctx):
    """rules.md: CBT alone is not a rehabilitation order. Coded as CBT, its words ("pain",
    "multidisciplinary") made it a programme: a 12 h CBT course drew this card (found by
    review). Words decide only for an order with no known code."""
    cbt = programme("cbt", text="Cognitive behavioural therapy for chronic pain "
                    "(multidisciplinary pain team)", code="228557008")
    cbt["occurrenceTiming"] = {"repeat": {"count": 12, "duration": 60, "durationUnit": "min"}}
    assert run([cbt]) is None


@pytest.mark.parametrize("text", [
    "Multi-disciplinary pain rehabilitation programme",
    "Inter-disciplinary back pain programme",
    # MDT names the team; with "programme" it is one (a review: as a meeting, such an order
    # on record no longer kept rehab-referral silent)
    "Multidisciplinary (MDT) pain rehabilitation programme",
])
def test_common_spellings_of_a_programme_are_read(run, text):
    typed = programme("typed", 40, text=text)
    del typed["code"]["coding"]
    assert run([typed]) is not None


@pytest.mark.parametrize("text", ["Pain MDT meeting", "Back pain MDM, interdisciplinary",
                                  # a review of the first fix, which let MDT alone through:
                                  "Interdisciplinary pain MDT",
                                  "Multidisciplinary back pain MDT case discussion"])
def test_mdt_meetings_are_not_programmes(run, text):
    meeting = programme("mdt", 1, text=text)
    del meeting["code"]["coding"]
    assert run([meeting]) is None


def test_a_quantity_in_minutes_is_a_session_so_the_timing_decides(run):
    """rules.md: planned hours are quantityQuantity in hours, failing that the timing. A quantity
    of 90 min (the session) made an 80-session programme "1.5 h" (found by review)."""
    order = programme()
    order["quantityQuantity"] = {"value": 90, "unit": "min", "system": "http://unitsofmeasure.org",
                                 "code": "min"}
    order["occurrenceTiming"] = {"repeat": {"count": 80, "duration": 90, "durationUnit": "min"}}
    assert run([order]) is None  # 120 h: at or above the threshold
    del order["occurrenceTiming"]
    assert run([order]) is None  # no hours at all: nothing to say
