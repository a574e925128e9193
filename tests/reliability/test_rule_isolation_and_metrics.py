"""A failing rule is isolated, logged (rule id, hookInstance, no patient data) and counted; a
failure outside the rules is a logged 500 OperationOutcome; /metrics counts what happened."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace

import responses
from prometheus_client.parser import text_string_to_metric_families

from cds_service.guidance.rules import ALL
from tests.reliability.support import assert_operation_outcome, known_call, rule_ids

FHIR = "https://fhir.example.org/r4"


def samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    out = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def _raising(message: str):
    def evaluate(facts, ctx):
        # A message quoting patient data, as a careless bug might: it must not reach the logs.
        raise ValueError(message + facts.patient_id)

    return evaluate


def _with_failing(app, *rule_ids_to_break: str) -> None:
    pipeline = app.extensions["cds"].pipeline
    pipeline.rules = tuple(
        replace(rule, evaluate=_raising("cannot read data of patient "))
        if rule.id in rule_ids_to_break
        else rule
        for rule in ALL
    )


def test_a_failing_rule_leaves_the_other_cards(app, client, log_lines):
    call = known_call("pv-many-findings")
    assert "assessment-gaps" in call.expected and len(call.expected) >= 3
    _with_failing(app, "assessment-gaps")
    response = client.post(call.path, json=call.body)
    assert response.status_code == 200
    assert rule_ids(response.get_json()) == set(call.expected) - {"assessment-gaps"}

    failures = [line for line in log_lines() if line["message"] == "rule failed"]
    assert len(failures) == 1
    assert failures[0]["rule"] == "assessment-gaps"
    assert failures[0]["error"] == "ValueError"
    assert failures[0]["hookInstance"] == call.body["hookInstance"]
    assert failures[0]["level"] == "error"
    answered = [line for line in log_lines() if line["message"] == "hook answered"]
    assert answered[0]["failed_rules"] == ["assessment-gaps"]
    patient_id = call.body["context"]["patientId"]
    assert patient_id not in log_lines.text()
    assert "cannot read data" not in log_lines.text()

    metrics = samples(client)
    assert value(metrics, "cds_rule_failures_total", rule="assessment-gaps") == 1
    for rule in set(call.expected) - {"assessment-gaps"}:
        assert value(metrics, "cds_cards_total", rule=rule) == 1
    assert value(metrics, "cds_cards_total", rule="assessment-gaps") == 0


def test_every_rule_failing_is_not_silent(app, client, log_lines):
    call = known_call("pv-many-findings")
    _with_failing(app, *call.expected)
    response = client.post(call.path, json=call.body)
    assert response.status_code == 200 and response.get_json() == {"cards": []}
    failed = {line["rule"] for line in log_lines() if line["message"] == "rule failed"}
    assert failed == set(call.expected)
    metrics = samples(client)
    assert sum(value(metrics, "cds_rule_failures_total", rule=r) for r in failed) == len(failed)


def test_a_failure_outside_the_rules_is_a_logged_500(app, client, log_lines, monkeypatch):
    call = known_call("pv-many-findings")
    secret = call.body["context"]["patientId"]

    def broken(service, request, **_):
        raise KeyError(f"no such thing for {secret}")

    monkeypatch.setattr(app.extensions["cds"].pipeline, "run", broken)
    response = client.post(call.path, json=call.body)
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    outcome = assert_operation_outcome(500, text)
    assert outcome["issue"][0]["code"] == "exception"
    assert secret not in text and "KeyError" not in text and "pipeline" not in text
    errors = [line for line in log_lines() if line["message"] == "unhandled error"]
    assert errors and errors[0]["error"] == "KeyError"
    assert errors[0]["hookInstance"] == call.body["hookInstance"]
    assert secret not in log_lines.text()
    metrics = samples(client)
    service = call.path.rsplit("/", 1)[1]
    labels = {"endpoint": "cds_hooks.call_service", "service": service}
    assert value(metrics, "cds_http_requests_total", **labels, status="500") == 1


def test_request_counts_and_latencies_per_service(client):
    calls = [known_call(name) for name in ("pv-many-findings", "sign-opioid-steroid-brace")]
    for call in calls:
        for _ in range(3):
            body = {**call.body, "hookInstance": str(uuid.uuid4())}
            assert client.post(call.path, json=body).status_code == 200
    assert client.post("/cds-services/no-such-service", json={}).status_code == 404
    assert client.post("/cds-services/another-random-id", json={}).status_code == 404
    metrics = samples(client)
    for call in calls:
        service = call.path.rsplit("/", 1)[1]
        labels = {"endpoint": "cds_hooks.call_service", "service": service}
        assert value(metrics, "cds_http_requests_total", **labels, status="200") == 3
        assert value(metrics, "cds_http_request_duration_seconds_count", **labels) == 3
        assert value(metrics, "cds_http_request_duration_seconds_sum", **labels) > 0
        assert value(metrics, "cds_http_request_duration_seconds_bucket", **labels, le="+Inf") == 3
    for rule in calls[0].expected | calls[1].expected:
        expected = 3 * sum(rule in call.expected for call in calls)
        assert value(metrics, "cds_cards_total", rule=rule) == expected
    # Unknown ids share one label value: random paths cannot grow the series without bound.
    unknown = {"endpoint": "cds_hooks.call_service", "service": "unknown", "status": "404"}
    assert value(metrics, "cds_http_requests_total", **unknown) == 2
    assert not any("no-such-service" in str(key) for key in metrics)
    assert value(metrics, "process_resident_memory_bytes") > 0


@responses.activate
def test_fhir_fetch_errors_are_counted_by_reason(client, make_request):
    responses.get(re.compile(re.escape(FHIR) + r"/Patient/.*"), status=503, body="<html/>")
    responses.get(re.compile(re.escape(FHIR) + r"/Condition\?.*"), status=401)
    responses.get(
        re.compile(re.escape(FHIR) + r"/Observation\?.*"), body="<html>", status=200,
        content_type="text/html",
    )
    prefetch = {k: None for k in ("servicerequests", "diagnosticreports", "procedures",
                                  "medications")}
    body = make_request(prefetch=prefetch, fhirServer=FHIR)
    response = client.post("/cds-services/hypermobility-pain-patient-view", json=body)
    assert response.status_code == 412
    outcome = assert_operation_outcome(412, response.get_data())
    named = {issue["diagnostics"].split(":")[0] for issue in outcome["issue"]}
    assert named == {"patient", "conditions", "observations"}
    metrics = samples(client)
    assert value(metrics, "cds_fhir_fetch_errors_total", reason="http-503") == 1
    assert value(metrics, "cds_fhir_fetch_errors_total", reason="unauthorized") == 1
    assert value(metrics, "cds_fhir_fetch_errors_total", reason="not-json") == 1


def test_feedback_entries_new_and_duplicate(client):
    entry = {
        "card": str(uuid.uuid4()),
        "outcome": "accepted",
        "outcomeTimestamp": "2026-01-02T03:04:05Z",
        "acceptedSuggestions": [{"id": str(uuid.uuid4())}],
    }
    path = "/cds-services/hypermobility-pain-order-sign/feedback"
    assert client.post(path, json={"feedback": [entry]}).status_code == 200
    assert client.post(path, json={"feedback": [entry]}).status_code == 200
    metrics = samples(client)
    assert value(metrics, "cds_feedback_entries_total", result="new") == 1
    assert value(metrics, "cds_feedback_entries_total", result="duplicate") == 1
