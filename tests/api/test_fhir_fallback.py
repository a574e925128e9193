"""Fetching what prefetch lacks from the EHR's FHIR server (mocked with `responses`)."""

from __future__ import annotations

import json
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


def serve_chart(rsps, conditions=None, observations=None, **condition_response):
    """The cohort chart (or ``conditions``); ``observations``, a callback, answers their
    searches (else none)."""
    rsps.get(f"{FHIR}/Patient/p1", json=patient("p1"))
    if not condition_response:
        chosen = conditions if conditions is not None else cohort_conditions("p1")
        condition_response = {"json": bundle(*chosen)}
    rsps.get(re.compile(rf"{re.escape(FHIR)}/Condition\?patient=p1.*"), **condition_response)
    for resource_type in ("Observation", "MedicationRequest", "ServiceRequest",
                          "DiagnosticReport", "Procedure"):
        searches = re.compile(rf"{re.escape(FHIR)}/{resource_type}\?patient=p1.*")
        if resource_type == "Observation" and observations is not None:
            rsps.add_callback(responses.GET, searches, callback=observations)
        else:
            rsps.get(searches, json=bundle())


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


def vital_signs(count: int) -> list[dict]:
    return [
        {"resourceType": "Observation", "id": f"hr{n}", "status": "final",
         "subject": {"reference": "Patient/p1"},
         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                  "text": "Heart rate"},
         "valueQuantity": {"value": 70, "unit": "/min"}}
        for n in range(count)
    ]


def paged_observations(observations: list[dict], page_size: int, honour_count: bool):
    """A searchset paged ``page_size`` at a time, or by ``_count`` when the server honours it
    (as most do, up to a maximum of their own)."""

    def answer(request):
        query = dict(p.split("=", 1) for p in request.url.split("?", 1)[1].split("&"))
        size = int(query["_count"]) if honour_count and "_count" in query else page_size
        offset = int(query.get("_offset", 0))
        page = bundle(*observations[offset : offset + size])
        if offset + size < len(observations):
            nxt = f"{FHIR}/Observation?patient=p1&_offset={offset + size}&_count={size}"
            page["link"] = [{"relation": "next", "url": nxt}]
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(page)

    return answer


@responses.activate
def test_a_long_chart_on_a_server_paging_by_twenty_is_read_whole(client):
    """250 vital signs at 20 a page (a server that ignores _count): 13 pages, which the old
    limit of 10 pages per query answered with a 412 and no cards."""
    serve_chart(responses, observations=paged_observations(vital_signs(250), 20, False))
    assert "rehab-referral" in rule_ids(client.post(PV, json=call()))
    pages = [c for c in responses.calls if "/Observation?" in c.request.url]
    assert len(pages) == 13


@responses.activate
def test_own_searches_ask_for_large_pages(client, app):
    """Every search the service starts carries _count (the setting), so a server that honours
    it answers a long chart in one page."""
    serve_chart(responses, observations=paged_observations(vital_signs(250), 20, True))
    assert "rehab-referral" in rule_ids(client.post(PV, json=call()))
    size = app.extensions["cds"].settings.fhir_page_size
    searches = [c.request.url for c in responses.calls if "/Patient/" not in c.request.url]
    assert len(searches) == len(KEYS) - 1  # one page each, Observations included
    assert all(url.endswith(f"&_count={size}") and url.count("_count") == 1
               for url in searches), searches
