"""Fetching what prefetch lacks from the EHR's FHIR server (mocked with `responses`)."""

from __future__ import annotations

import re
import uuid

import pytest
import responses

from cds_service import pipeline as pipeline_module
from tests.builders import bundle, cohort_conditions, patient

FHIR = "https://fhir.example.org/r4"
PV = "/cds-services/hypermobility-pain-patient-view"
KEYS = ("patient", "conditions", "observations", "medications", "servicerequests",
        "diagnosticreports", "procedures")
TOKEN = "opaque-access-token-123"


def call(**members):
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": FHIR,
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
    }
    body.update(members)
    return body


def authorization():
    return {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
            "scope": "patient/*.read", "subject": "hypermobility-cds"}


def serve_chart(rsps, conditions=None, **condition_response):
    rsps.get(f"{FHIR}/Patient/p1", json=patient("p1"))
    if not condition_response:
        chosen = conditions if conditions is not None else cohort_conditions("p1")
        condition_response = {"json": bundle(*chosen)}
    rsps.get(re.compile(rf"{re.escape(FHIR)}/Condition\?patient=p1.*"), **condition_response)
    for resource_type in ("Observation", "MedicationRequest", "ServiceRequest",
                          "DiagnosticReport", "Procedure"):
        rsps.get(re.compile(rf"{re.escape(FHIR)}/{resource_type}\?patient=p1.*"), json=bundle())


def rule_ids(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return {c["source"]["topic"]["code"] for c in response.get_json()["cards"]}


@responses.activate
def test_everything_fetched_with_the_bearer_token(client):
    serve_chart(responses)
    response = client.post(PV, json=call(fhirAuthorization=authorization()))
    assert "rehab-referral" in rule_ids(response)
    assert len(responses.calls) == len(KEYS)
    for sent in responses.calls:
        assert sent.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "application/fhir+json" in sent.request.headers["Accept"]


@responses.activate
def test_open_server_is_called_without_authorization(client):
    serve_chart(responses)
    assert "rehab-referral" in rule_ids(client.post(PV, json=call()))
    assert all("Authorization" not in c.request.headers for c in responses.calls)


@responses.activate
def test_only_missing_keys_are_fetched(client):
    serve_chart(responses)
    prefetch = {k: bundle() for k in KEYS if k != "conditions"}
    prefetch["patient"] = patient("p1")
    response = client.post(PV, json=call(prefetch=prefetch))
    assert "rehab-referral" in rule_ids(response)
    assert [c.request.url.split("?")[0] for c in responses.calls] == [f"{FHIR}/Condition"]


@responses.activate
def test_operation_outcome_in_prefetch_is_refetched(client):
    serve_chart(responses)
    prefetch = {k: bundle() for k in KEYS}
    prefetch["patient"] = patient("p1")
    prefetch["conditions"] = {"resourceType": "OperationOutcome",
                              "issue": [{"severity": "error", "code": "timeout"}]}
    assert "rehab-referral" in rule_ids(client.post(PV, json=call(prefetch=prefetch)))
    assert len(responses.calls) == 1


@responses.activate
def test_null_prefetch_means_no_data_and_no_fetch(client):
    prefetch = {k: None for k in KEYS}
    assert rule_ids(client.post(PV, json=call(prefetch=prefetch))) == set()
    assert len(responses.calls) == 0


@responses.activate
def test_paginated_prefetch_bundle_is_followed(client):
    heds, lbp, hip = cohort_conditions("p1")
    first = bundle(heds)
    first["link"] = [{"relation": "next", "url": f"{FHIR}/Condition?patient=p1&page=2"}]
    responses.get(f"{FHIR}/Condition?patient=p1&page=2", json=bundle(lbp, hip))
    prefetch = {k: bundle() for k in KEYS}
    prefetch["patient"] = patient("p1")
    prefetch["conditions"] = first
    assert "rehab-referral" in rule_ids(client.post(PV, json=call(prefetch=prefetch)))
    assert len(responses.calls) == 1


@responses.activate
def test_server_off_the_allowlist_is_412_without_any_connection(client):
    response = client.post(PV, json=call(fhirServer="https://evil.example.com/fhir",
                                         fhirAuthorization=authorization()))
    assert response.status_code == 412
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert len(responses.calls) == 0


@responses.activate
def test_plain_http_is_refused_in_production(client):
    response = client.post(PV, json=call(fhirServer="http://fhir.example.org/r4"))
    assert response.status_code == 412
    assert len(responses.calls) == 0


@responses.activate
def test_redirect_to_another_host_is_not_followed(client):
    serve_chart(responses)
    responses.replace(responses.GET, f"{FHIR}/Patient/p1", status=302,
                      headers={"Location": "https://attacker.example.net/Patient/p1"})
    response = client.post(PV, json=call(fhirAuthorization=authorization()))
    assert response.status_code == 412
    assert "patient" in response.get_data(as_text=True)
    assert all("attacker" not in c.request.url for c in responses.calls)


@pytest.mark.parametrize("status", [401, 500, 503])
@responses.activate
def test_upstream_errors_are_412(client, status):
    serve_chart(responses, status=status,
                json={"resourceType": "OperationOutcome", "issue": []})
    response = client.post(PV, json=call())
    assert response.status_code == 412
    assert "conditions" in response.get_data(as_text=True)


@responses.activate
def test_html_from_upstream_is_412(client):
    serve_chart(responses, body="<html>login</html>", content_type="text/html")
    assert client.post(PV, json=call()).status_code == 412


@responses.activate
def test_one_invalid_resource_is_skipped_not_fatal(client):
    broken = {"resourceType": "Condition", "id": "bad", "subject": {"reference": "Patient/p1"},
              "code": {"coding": [{"system": "http://snomed.info/sct", "code": "49218002"}]},
              "onsetDateTime": "not-a-date"}
    serve_chart(responses, conditions=[*cohort_conditions("p1"), broken])
    assert "rehab-referral" in rule_ids(client.post(PV, json=call()))


@responses.activate
def test_resources_of_another_patient_are_ignored(client):
    serve_chart(responses, conditions=cohort_conditions("someone-else"))
    assert rule_ids(client.post(PV, json=call())) == set()


@responses.activate
def test_fetched_resources_no_rule_reads_are_dropped_but_counted(client, log_lines, monkeypatch):
    """The relevance filter runs on each fetched page; the log still counts the whole chart."""
    noise = [{"resourceType": "Observation", "id": f"hr{i}", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
              "subject": {"reference": "Patient/p1"}} for i in range(30)]
    serve_chart(responses)
    responses.replace(responses.GET, re.compile(rf"{re.escape(FHIR)}/Observation\?patient=p1.*"),
                      json=bundle(*noise))
    handed_over: list[int] = []
    original = pipeline_module.build_record

    def build_record(resources, *args, **kwargs):
        resources = list(resources)
        handed_over.append(len(resources))
        return original(resources, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "build_record", build_record)
    assert "rehab-referral" in rule_ids(client.post(PV, json=call()))
    relevant = 1 + len(cohort_conditions("p1"))  # the patient and the cohort's conditions
    assert handed_over == [relevant]  # the noise never reached the record
    answered = [x for x in log_lines() if x["message"] == "hook answered"][-1]
    assert answered["resources"] == relevant + len(noise)
