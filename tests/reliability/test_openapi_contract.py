"""The OpenAPI document: valid OpenAPI 3.1, served without auth, complete, and true to the
real responses (every card of every fixture scenario, errors, feedback, health, metrics)."""

from __future__ import annotations

import uuid

import pytest
from openapi_spec_validator import validate

from cds_service import create_app
from cds_service.api.openapi import openapi_document
from cds_service.api.services import SERVICES
from cds_service.devtools.scenarios import list_scenarios
from cds_service.settings import Settings
from tests.reliability.support import (
    assert_conforms,
    assert_operation_outcome,
    known_call,
    schema_errors,
)

PV = "/cds-services/hypermobility-pain-patient-view"


def test_document_is_valid_openapi_3_1(client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the OpenAPI 3.1 meta-schema
    assert document == openapi_document()


def test_every_route_is_documented_and_every_documented_path_exists(app):
    document = openapi_document()
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if "<service_id>" in rule.rule:
                served |= {(rule.rule.replace("<service_id>", sid), method) for sid in SERVICES}
            else:
                served.add((rule.rule, method))
    assert documented == served
    for sid in SERVICES:
        assert f"/cds-services/{sid}" in document["paths"]
        assert f"/cds-services/{sid}/feedback" in document["paths"]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert path in document["paths"]


def test_document_needs_no_auth_when_hooks_do(tmp_path):
    app = create_app(Settings.development(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    client = app.test_client()
    assert client.get("/cds-services").status_code == 401
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/metrics").status_code == 200
    document = client.get("/openapi.json").get_json()
    assert document["paths"][PV]["post"]["security"] == [{"cdsHooksJwt": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_discovery_conforms(client):
    body = client.get("/cds-services").get_json()
    assert_conforms("Discovery", body)
    assert {s["id"] for s in body["services"]} == set(SERVICES)


def test_every_card_of_every_scenario_conforms(client):
    """All 11 rules' real cards, through HTTP, against the Card schema."""
    seen_rules: set[str] = set()
    for name in list_scenarios():
        call = known_call(name)
        response = client.post(call.path, json=call.body)
        assert response.status_code == 200, name
        body = response.get_json()
        assert_conforms("CdsServiceResponse", body)
        seen_rules |= {c["source"]["topic"]["code"] for c in body["cards"]}
    assert len(seen_rules) == 11


def test_the_card_schema_is_not_vacuous(client):
    call = known_call("pv-many-findings")
    card = client.post(call.path, json=call.body).get_json()["cards"][0]
    assert not schema_errors("Card", card)
    assert schema_errors("Card", {**card, "summary": "x" * 140})
    assert schema_errors("Card", {**card, "indicator": "urgent"})
    assert schema_errors("Card", {**card, "undocumented": 1})
    assert schema_errors("Card", {k: v for k, v in card.items() if k != "source"})


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "{", "content_type": "application/json"}, 400),
        ({"data": '{"a": 1, "a": 2}', "content_type": "application/json"}, 400),
        ({"data": "[" * 200 + "]" * 200, "content_type": "application/json"}, 400),
        ({"json": {"hook": "patient-view"}}, 400),
        ({"data": "hello", "content_type": "text/plain"}, 415),
        ({"data": "x" * (Settings().max_body_bytes + 1), "content_type": "application/json"},
         413),
    ],
)
def test_error_answers_conform(client, kwargs, status):
    response = client.post(PV, **kwargs)
    assert response.status_code == status
    assert_operation_outcome(status, response.get_data())


def test_404_405_412_500_conform(client, app, make_request, monkeypatch):
    not_found = client.post("/cds-services/nope", json=make_request())
    assert not_found.status_code == 404
    assert_operation_outcome(404, not_found.get_data())
    wrong_method = client.get(PV)
    assert wrong_method.status_code == 405
    assert_operation_outcome(405, wrong_method.get_data())
    missing = client.post(PV, json=make_request(prefetch={}))
    assert missing.status_code == 412
    outcome = assert_operation_outcome(412, missing.get_data())
    assert {i["code"] for i in outcome["issue"]} == {"incomplete"}

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["cds"].pipeline, "run", broken)
    failed = client.post(PV, json=make_request())
    assert failed.status_code == 500
    assert_operation_outcome(500, failed.get_data())


def test_feedback_conforms(client):
    entry = {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-01-02T03:04:05Z",
        "overrideReason": {"userComment": "not relevant today"},
    }
    response = client.post(f"{PV}/feedback", json={"feedback": [entry]})
    assert response.status_code == 200
    assert_conforms("FeedbackResponse", response.get_json())


def test_health_and_readiness_conform(client, app, monkeypatch):
    assert_conforms("Health", client.get("/healthz").get_json())
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert_conforms("Readiness", ready.get_json())
    monkeypatch.setattr(app.extensions["cds"].store, "writable", lambda: False)
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert_conforms("Readiness", not_ready.get_json())


def test_metrics_content_type_is_documented(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    documented = openapi_document()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert response.mimetype in documented


def test_the_document_and_the_service_agree_that_an_extension_is_an_object(client):
    """Every CDS Hooks object in a feedback body: a non-object ``extension`` breaks the
    documented schema and gets a 400 (the document once allowed what the service refused)."""
    entry = {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-20T10:00:00Z",
             "acceptedSuggestions": [{"id": "s"}]}
    overridden = {"card": "c", "outcome": "overridden",
                  "outcomeTimestamp": "2026-11-20T10:00:00Z",
                  "overrideReason": {"userComment": "x"}}
    bodies = [
        {"feedback": [entry], "extension": []},
        {"feedback": [{**entry, "extension": []}]},
        {"feedback": [{**entry, "acceptedSuggestions": [{"id": "s", "extension": []}]}]},
        {"feedback": [{**overridden, "overrideReason": {"userComment": "x", "extension": []}}]},
    ]
    assert not schema_errors("FeedbackRequest", {"feedback": [entry], "extension": {"a": 1}})
    for body in bodies:
        assert schema_errors("FeedbackRequest", body), body
        assert client.post(PV + "/feedback", json=body).status_code == 400, body


@pytest.mark.parametrize("token_type, accepted", [("Bearer", True), ("bearer", True),
                                                  ("BEARER", True), ("Basic", False)])
def test_the_document_and_the_service_agree_on_token_type(client, make_request, token_type,
                                                           accepted):
    """RFC 6749: a token type in any case. The service took "bearer" while the document still
    said only "Bearer" would do (found by review)."""
    body = make_request(fhirServer="https://fhir.example.org/r4", fhirAuthorization={
        "access_token": "t", "token_type": token_type, "expires_in": 60,
        "scope": "user/*.read", "subject": "cds"})
    assert (not schema_errors("FhirAuthorization", body["fhirAuthorization"])) is accepted
    assert (client.post(PV, json=body).status_code == 200) is accepted
