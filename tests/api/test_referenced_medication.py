"""An opioid named only in a referenced Medication (rules.md "Orders"): found in the prefetch
Bundle, or read from fhirServer (a CDS Hooks 2.0 prefetch template cannot _include it)."""

from __future__ import annotations

import uuid

import responses

from tests.builders import RXNORM, bundle, cohort_conditions, patient

FHIR = "https://fhir.example.org/r4"  # on the test settings' allowlist
PV = "/cds-services/hypermobility-pain-patient-view"
OXYCODONE = {"resourceType": "Medication", "id": "oxy",
             "code": {"coding": [{"system": RXNORM, "code": "1049621"}]}}


def active_order_of(reference: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": "mr1", "status": "active",
            "intent": "order", "subject": {"reference": "Patient/p1"},
            "medicationReference": {"reference": reference}}


def call(medications: dict, **members) -> dict:
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": {
            "patient": patient("p1"), "conditions": bundle(*cohort_conditions("p1")),
            "observations": bundle(), "medications": medications,
            "servicerequests": bundle(), "diagnosticreports": bundle(), "procedures": bundle(),
        },
    }
    body.update(members)
    return body


def rules(response) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {c["source"]["topic"]["code"] for c in response.get_json()["cards"]}


def hook_line(log_lines) -> dict:
    return next(line for line in log_lines() if line["message"] == "hook answered")


@responses.activate
def test_a_medication_in_the_prefetch_bundle_is_used_and_nothing_is_read(client, log_lines):
    body = call(bundle(active_order_of("Medication/oxy"), OXYCODONE), fhirServer=FHIR)
    assert "opioid-active" in rules(client.post(PV, json=body))
    assert len(responses.calls) == 0
    line = hook_line(log_lines)
    assert (line["medications_read"], line["unresolved_medications"]) == (0, 0)


@responses.activate
def test_a_missing_medication_is_read_from_fhir_server(client, log_lines):
    responses.get(f"{FHIR}/Medication/oxy", json=OXYCODONE)
    body = call(bundle(active_order_of("Medication/oxy")), fhirServer=FHIR)
    assert "opioid-active" in rules(client.post(PV, json=body))
    assert [c.request.url for c in responses.calls] == [f"{FHIR}/Medication/oxy"]
    line = hook_line(log_lines)
    assert (line["medications_read"], line["unresolved_medications"]) == (1, 0)


@responses.activate
def test_a_medication_the_server_does_not_hold_or_cannot_be_asked_for_leaves_the_call_answering(
    client, log_lines
):
    responses.get(f"{FHIR}/Medication/oxy", status=404)
    for body in (call(bundle(active_order_of("Medication/oxy")), fhirServer=FHIR),
                 call(bundle(active_order_of("Medication/oxy")))):  # no fhirServer at all
        assert "opioid-active" not in rules(client.post(PV, json=body))
    assert [line["unresolved_medications"] for line in log_lines()
            if line["message"] == "hook answered"] == [1, 1]
    assert "oxy" not in log_lines.text()  # ids are patient data: only counts are logged


@responses.activate
def test_a_failed_read_is_a_412_like_any_data_that_cannot_be_had(client):
    """CDS Hooks 2.0: data the service needs that it can get neither from prefetch nor from
    fhirServer SHALL be a 412, not an answer silently missing the opioid card."""
    responses.get(f"{FHIR}/Medication/oxy", status=503)
    body = call(bundle(active_order_of("Medication/oxy")), fhirServer=FHIR)
    response = client.post(PV, json=body)
    assert response.status_code == 412, response.get_data(as_text=True)
    issues = [i["diagnostics"] for i in response.get_json()["issue"]]
    assert issues == ["referenced-medications: 1 Medication(s) that orders name could not be "
                      "read from fhirServer (http-503)"]


@responses.activate
def test_a_do_not_perform_order_s_medication_is_not_read(client):
    """Found by review: a request that the drug must not be given is no order the rules read,
    yet its Medication was fetched, and a failed fetch made the whole call a 412."""
    responses.get(f"{FHIR}/Medication/oxy", status=503)
    refusal = {**active_order_of("Medication/oxy"), "doNotPerform": True}
    response = client.post(PV, json=call(bundle(refusal), fhirServer=FHIR))
    assert "opioid-active" not in rules(response)
    assert len(responses.calls) == 0


@responses.activate
def test_a_draft_order_s_referenced_medication_is_read_too(client):
    from tests.builders import draft_orders

    responses.get(f"{FHIR}/Medication/oxy", json=OXYCODONE)
    draft = {**active_order_of("Medication/oxy"), "id": "draft-1", "status": "draft"}
    body = call(bundle(), hook="order-sign", fhirServer=FHIR)
    body["context"]["draftOrders"] = draft_orders(draft)
    response = client.post("/cds-services/hypermobility-pain-order-sign", json=body)
    assert "opioid-order" in rules(response)
    assert [c.request.url for c in responses.calls] == [f"{FHIR}/Medication/oxy"]


@responses.activate
def test_a_plan_s_medication_is_not_read(client):
    """Found by review: a MedicationRequest whose intent is a plan or proposal is no
    prescription the rules read (facts.build.prescriptions), yet its Medication was fetched,
    and a failed fetch made the whole call a 412."""
    responses.get(f"{FHIR}/Medication/oxy", status=503)
    plan = {**active_order_of("Medication/oxy"), "intent": "plan"}
    response = client.post(PV, json=call(bundle(plan), fhirServer=FHIR))
    assert "opioid-active" not in rules(response)
    assert len(responses.calls) == 0


@responses.activate
def test_an_order_with_no_drug_drafted_reads_no_medication_on_record(client):
    """Found by review: once the order services prefetched the prescriptions on record, an
    order-sign for a lumbar brace read an unrelated prescription's Medication, and a failed
    read made it a 412. The order services read them only to tell a drafted drug's renewal."""
    from tests.builders import draft_orders

    responses.get(f"{FHIR}/Medication/oxy", status=503)
    brace = {"resourceType": "DeviceRequest", "id": "brace", "status": "draft",
             "intent": "order", "subject": {"reference": "Patient/p1"},
             "codeCodeableConcept": {"text": "Lumbar support"}}
    body = call(bundle(active_order_of("Medication/oxy")), hook="order-sign", fhirServer=FHIR)
    body["context"]["draftOrders"] = draft_orders(brace)
    response = client.post("/cds-services/hypermobility-pain-order-sign", json=body)
    assert rules(response) == {"passive-modality-order"}
    assert len(responses.calls) == 0
