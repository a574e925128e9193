"""After the fuzzing (this file runs last in tests/fuzz): the same app still answers the known
scenarios correctly, stores feedback, and its own metrics saw no 5xx; the budget was met."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from tests.fuzz.fuzz_app import APP, MIN_REQUESTS, TALLY
from tests.reliability.support import KNOWN_SCENARIOS, assert_conforms, known_call, rule_ids


def test_known_scenarios_still_answered_correctly():
    TALLY.source = "afterwards"
    client = APP.test_client()
    for name in KNOWN_SCENARIOS:
        call = known_call(name)
        response = client.post(call.path, json=call.body)
        assert response.status_code == 200, name
        assert_conforms("CdsServiceResponse", response.get_json())
        assert rule_ids(response.get_json()) == set(call.expected), name


def test_feedback_still_stored():
    TALLY.source = "afterwards"
    store = APP.extensions["cds"].store
    before = store.count_feedback()
    entry = {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-01-02T03:04:05Z",
        "overrideReason": {"userComment": "checked after fuzzing"},
    }
    path = "/cds-services/hypermobility-pain-patient-view/feedback"
    assert APP.test_client().post(path, json={"feedback": [entry]}).status_code == 200
    assert store.count_feedback() == before + 1


def test_no_server_error_and_budget_met():
    TALLY.source = "afterwards"
    summary = TALLY.summary()
    assert summary["server_errors"] == 0, summary
    assert summary["requests"] >= MIN_REQUESTS, summary
    text = APP.test_client().get("/metrics").get_data(as_text=True)
    counted = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "cds_http_requests":
            for sample in family.samples:
                assert not sample.labels["status"].startswith("5"), sample
                counted += sample.value
    # The app's own counters agree with the middleware (the /metrics call itself not yet).
    assert counted == TALLY.total - 1
