"""rehab-referral: which rehabilitation orders on record keep the referral card quiet."""

from __future__ import annotations

import pytest

from cds_service.guidance.rules.rehab_referral import evaluate
from tests.builders import SNOMED, cohort_conditions, patient, service_request

COHORT = [patient("p1"), *cohort_conditions("p1")]


def physio(status: str, authored: str = "2026-08-01"):
    order = service_request("p1", "pt", SNOMED, "91251008", status=status)
    order["authoredOn"] = authored
    return order


def physio_procedure(status: str, performed: str = "2026-08-01"):
    return {
        "resourceType": "Procedure",
        "id": "pt-proc",
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": SNOMED, "code": "91251008"}]},
        "performedDateTime": performed,
    }


@pytest.fixture
def run(make_facts, make_ctx):
    def evaluate_for(resources):
        return evaluate(make_facts(resources, strict=True), make_ctx("patient-view"))

    return evaluate_for


def test_no_rehabilitation_on_record_gets_the_referral(run):
    assert run(COHORT) is not None


@pytest.mark.parametrize("status", ["active", "completed"])
def test_active_or_completed_order_authored_this_year_silences_it(run, status):
    assert run([*COHORT, physio(status)]) is None


def test_an_order_not_to_refer_does_not_silence_it(run):
    """doNotPerform: a request that physiotherapy must not be given is no rehabilitation."""
    refusal = physio("active")
    refusal["doNotPerform"] = True
    assert run([*COHORT, refusal]) is not None


def test_on_hold_order_does_not_silence_it(run):
    """rules.md: only an active or completed rehabilitation order counts; a paused one is not
    rehabilitation happening, so the recommendation still stands."""
    card = run([*COHORT, physio("on-hold")])
    assert card is not None
    # The card says so, rather than "no order" (found by a clinical review).
    assert ("Not counted: Physical therapy procedure (regime/therapy), on-hold, authored "
            "2026-08-01") in card.detail


@pytest.mark.parametrize("status", ["in-progress", "completed"])
def test_procedure_under_way_or_done_silences_it(run, status):
    assert run([*COHORT, physio_procedure(status)]) is None


def test_on_hold_procedure_does_not_silence_it(run):
    assert run([*COHORT, physio_procedure("on-hold")]) is not None


def test_completed_order_older_than_the_look_back_does_not_silence_it(run):
    assert run([*COHORT, physio("completed", authored="2025-06-01")]) is not None


def typed_order(text: str):
    """An order typed as text only, completed two months ago."""
    return {"resourceType": "ServiceRequest", "id": "typed", "status": "completed",
            "intent": "order", "subject": {"reference": "Patient/p1"},
            "authoredOn": "2026-09-01", "code": {"text": text}}


@pytest.mark.parametrize("text", ["Multidisciplinary team meeting (tumour board)",
                                  "Interdisciplinary pain MDT",
                                  "Interdisciplinary care conference",
                                  "Interdisciplinary care conference: chronic pain",
                                  "Multidisciplinary team meeting re pain plan"])
def test_multidisciplinary_alone_does_not_make_an_order_rehabilitation(make_facts, make_ctx,
                                                                       text):
    facts = make_facts([*COHORT, typed_order(text)])
    assert evaluate(facts, make_ctx("patient-view")) is not None


@pytest.mark.parametrize("text", ["Multidisciplinary pain programme",
                                  "Interdisciplinary rehabilitation, 4 weeks",
                                  "Interdisciplinary functional restoration program",
                                  "Multidisciplinary back school",
                                  "Multidisciplinary spine programme",
                                  "Multidisciplinary physio programme",
                                  "Multidisciplinary (MDT) pain rehabilitation programme"])
def test_a_typed_multidisciplinary_rehabilitation_order_silences_it(run, text):
    assert run([*COHORT, typed_order(text)]) is None


def test_years_of_old_orders_show_the_latest_three_and_a_count(run):
    """One line per rehabilitation order ever recorded filled the card (found by review)."""
    old = []
    for year in range(2015, 2021):  # six "active" orders, all outside the look-back
        order = physio("active")
        order["id"] = f"pt-{year}"
        order["authoredOn"] = f"{year}-03-01"
        old.append(order)
    card = run([*COHORT, *old])
    lines = [line for line in card.detail.splitlines() if "Not counted" in line]
    assert [line.rsplit(" ", 1)[-1] for line in lines[:3]] == [
        "2020-03-01", "2019-03-01", "2018-03-01"]
    assert lines[3] == "- Not counted either: 3 older such orders"
    assert len(lines) == 4


def test_the_medicines_advice_never_reads_as_stop_the_opioid_taken(run):
    """Beside opioid-active's "taper gradually, do not stop abruptly", the referral's bare
    "Avoid opioids." could read as "stop it" (found by a card review): it is about starting."""
    from tests.builders import medication_request

    taken = medication_request("p1", "tram", text="tramadol 50 mg tablet", status="active")
    card = run([*COHORT, taken])
    assert "Avoid starting opioids." in card.detail
    assert "Avoid opioids." not in card.detail
