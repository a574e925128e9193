"""An opioid named only in a referenced Medication, end to end through the HTTP API.

rules.md: a medication is recognised "in a contained or referenced Medication resource". The
patient-view medications template asks for those Medications
(``_include=MedicationRequest:medication``); they must reach the rules whether they come in the
prefetch Bundle, in the pages of a paginated prefetch Bundle the service follows, or from the
service's own search of ``fhirServer`` (here the in-memory FHIR server, over real HTTP).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cds_service import create_app
from cds_service.api.services import SERVICES
from cds_service.devtools import memory_fhir
from cds_service.fhir.prefetch import render
from tests.builders import RXNORM, cohort_conditions, patient

SERVICE = SERVICES["hypermobility-pain-patient-view"]
PV = f"/cds-services/{SERVICE.id}"
CONTEXT = {"userId": "Practitioner/1", "patientId": "p1"}


def oxycodone_by_reference() -> list[dict[str, Any]]:
    """An active order whose drug is only in the Medication it references."""
    order = {
        "resourceType": "MedicationRequest",
        "id": "oxy-order",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": "Medication/oxy"},
        "authoredOn": "2026-03-15",
    }
    medication = {
        "resourceType": "Medication",
        "id": "oxy",
        # 1049621: oxycodone hydrochloride 5 MG Oral Tablet, in the CDC opioid value set.
        "code": {"coding": [{"system": RXNORM, "code": "1049621"}],
                 "text": "oxyCODONE 5 mg oral tablet"},
    }
    return [order, medication]


def chart(*, with_medication: bool = True) -> list[dict[str, Any]]:
    order, medication = oxycodone_by_reference()
    extra = [order, medication] if with_medication else [order]
    # A second active order for the same Medication, so that paged answers repeat it.
    again = {**order, "id": "oxy-order-2", "authoredOn": "2026-04-15"}
    return [patient("p1"), *cohort_conditions("p1"), *extra, again]


def prefetch_for(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Every prefetch key answered the way an EHR would, by running its template."""
    return {
        key: memory_fhir.search(resources, render(template, CONTEXT))
        for key, template in SERVICE.prefetch.items()
    }


def call(**members: Any) -> dict[str, Any]:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": CONTEXT,
            **members}


def rule_ids(response) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {card["source"]["topic"]["code"] for card in response.get_json()["cards"]}


def opioid_card(response) -> dict[str, Any]:
    return next(c for c in response.get_json()["cards"]
                if c["source"]["topic"]["code"] == "opioid-active")


@pytest.fixture
def fhir_server() -> Iterator[tuple[list[dict[str, Any]], str]]:
    """The chart on the in-memory FHIR server, one resource per page (so pages repeat the
    included Medication)."""
    resources = chart()
    httpd, base = memory_fhir.serve(resources, page_size=1)
    try:
        yield resources, base
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def loopback_client(settings, fhir_server):
    _, base = fhir_server
    app = create_app(settings.with_overrides(
        fhir_server_allowlist=(base,), allow_loopback_http=True,
        fhir_timeout_s=10, fhir_deadline_s=20,
    ))
    return app.test_client()


def test_referenced_medication_in_the_prefetch_bundle(client):
    prefetch = prefetch_for(chart())
    modes = [(e["search"]["mode"], e["resource"]["resourceType"])
             for e in prefetch["medications"]["entry"]]
    assert modes == [("match", "MedicationRequest"), ("match", "MedicationRequest"),
                     ("include", "Medication")]
    response = client.post(PV, json=call(prefetch=prefetch))
    assert "opioid-active" in rule_ids(response)
    assert "oxyCODONE 5 mg oral tablet" in opioid_card(response)["summary"]


def test_without_the_medication_the_order_names_no_drug(client):
    """The control: the card above comes from the referenced Medication, nothing else."""
    response = client.post(PV, json=call(prefetch=prefetch_for(chart(with_medication=False))))
    assert "opioid-active" not in rule_ids(response)


def test_referenced_medication_fetched_from_the_fhir_server(loopback_client, fhir_server):
    _, base = fhir_server
    response = loopback_client.post(PV, json=call(fhirServer=base))
    assert "opioid-active" in rule_ids(response)
    assert "oxyCODONE 5 mg oral tablet" in opioid_card(response)["summary"]


def test_referenced_medication_on_the_pages_of_a_paginated_prefetch(
    loopback_client, fhir_server
):
    resources, base = fhir_server
    prefetch = prefetch_for(resources)
    query = render(SERVICE.prefetch["medications"], CONTEXT)
    first_page = requests.get(f"{base}/{query}", timeout=5).json()
    assert [link["relation"] for link in first_page["link"]] == ["self", "next"]
    prefetch["medications"] = first_page
    response = loopback_client.post(PV, json=call(fhirServer=base, prefetch=prefetch))
    assert "opioid-active" in rule_ids(response)
    assert "oxyCODONE 5 mg oral tablet" in opioid_card(response)["summary"]
