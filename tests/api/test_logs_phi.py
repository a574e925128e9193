"""A full run's logs carry counts, ids of rules and timings, never patient data or tokens."""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path

import responses

import cds_service
from cds_service.logs import ALLOWED_FIELDS
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
    for kind in ("Observation", "MedicationRequest", "ServiceRequest", "DiagnosticReport",
                 "Procedure"):
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


def test_every_logged_field_is_whitelisted():
    """A field passed with ``extra=`` but missing from the whitelist is silently dropped from
    the log line (the retry and served-card lines once lost their counts that way)."""
    used = set()
    for path in Path(cds_service.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                for keyword in node.keywords:
                    if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                        used |= {k.value for k in keyword.value.keys if isinstance(k, ast.Constant)}
    assert used, "no logger call with extra= found: the scan is broken"
    assert used <= ALLOWED_FIELDS, sorted(used - ALLOWED_FIELDS)


def test_library_warnings_that_quote_request_urls_never_reach_a_handler(app):
    """urllib3 logs "Retrying ... /Condition?patient=<id>" when a FHIR server refuses the
    connection; a deployment that configures the root logger would write it out. (A handler of
    the test's own: pytest's caplog also listens on loggers that do not propagate.)"""
    import logging
    import socket

    from cds_service.fhir.client import FetchLimits, FhirClient

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    root, handler = logging.getLogger(), Keep()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    client = FhirClient(limits=FetchLimits(timeout_s=1.0, deadline_s=3.0))
    try:
        out = client.fetch(f"http://127.0.0.1:{closed}/fhir",
                           {"c": f"Condition?patient={PATIENT_ID}"}, token=TOKEN)
    finally:
        client.close()
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert out["c"].reason == "connection"
    assert not [r.name for r in handler.records if r.name.startswith(("urllib3", "requests"))]
    assert not [r for r in handler.records if PATIENT_ID in r.getMessage()]
