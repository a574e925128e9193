"""A full run's logs carry counts, ids of rules and timings, never patient data or tokens."""

from __future__ import annotations

import re
import uuid

import responses

from tests.builders import bundle, cohort_conditions, draft_orders, medication_request

FHIR = "https://fhir.example.org/r4"
PATIENT_ID = "zq-patient-7781"
NAME = "Quintessa Marblefoot"
TOKEN = "tok-SECRET-9f8e7d"


@responses.activate
def test_full_run_logs_no_phi(client, log_lines):
    patient = {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1980-02-03",
               "name": [{"text": NAME}]}
    responses.get(f"{FHIR}/Patient/{PATIENT_ID}", json=patient)
    responses.get(re.compile(rf"{re.escape(FHIR)}/Condition\?.*"),
                  json=bundle(*cohort_conditions(PATIENT_ID)))
    for kind in ("Observation", "ServiceRequest", "DiagnosticReport", "Procedure"):
        responses.get(re.compile(rf"{re.escape(FHIR)}/{kind}\?.*"), json=bundle())
    hook_instance = str(uuid.uuid4())
    body = {
        "hook": "order-sign",
        "hookInstance": hook_instance,
        "fhirServer": FHIR,
        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 60,
                              "scope": "patient/*.read", "subject": "cds", "patient": PATIENT_ID},
        "context": {
            "userId": "Practitioner/dr-1",
            "patientId": PATIENT_ID,
            "draftOrders": draft_orders(
                medication_request(PATIENT_ID, "ord-1", text="oxycodone 5 mg tablet")
            ),
        },
    }
    response = client.post("/cds-services/hypermobility-pain-order-sign", json=body)
    assert response.status_code == 200
    assert response.get_json()["cards"]
    bad = client.post("/cds-services/hypermobility-pain-order-sign",
                      json={**body, "hookInstance": str(uuid.uuid4()), "fhirServer":
                            "https://elsewhere.example.com"})
    assert bad.status_code == 412

    text = log_lines.text()
    lines = log_lines()
    answered = [line for line in lines if line["message"] == "hook answered"]
    assert answered and answered[0]["hookInstance"] == hook_instance
    assert answered[0]["rules"] == ["opioid-order"]
    assert answered[0]["service"] == "hypermobility-pain-order-sign"
    assert "duration_ms" in answered[0]
    for secret in (PATIENT_ID, NAME, TOKEN, "oxycodone", "Q79.62", "1980-02-03", "dr-1"):
        assert secret not in text, secret
