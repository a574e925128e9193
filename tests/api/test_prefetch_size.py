"""A chart the service's own prefetch templates ask for is answered, however ordinary and long.

Discovery asks for every Observation of the patient (no code filter: see ``api.services``), so an
EHR that does what it is told sends years of vital signs. The body cap must admit what the FHIR
fallback admits for the same chart, or the EHR that prefetches is refused (413) where the one
that lets the service fetch is answered.
"""

from __future__ import annotations

import json

from cds_service.devtools.scenarios import load_scenario
from cds_service.fhir.client import FetchLimits
from cds_service.settings import Settings

SCENARIO = "pv-rehab-referral"


def blood_pressure(pid: str, n: int) -> dict:
    """A blood-pressure panel as an EHR files one (LOINC 85354-9, 8480-6, 8462-4)."""
    def component(code: str, value: int) -> dict:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        }
    return {
        "resourceType": "Observation", "id": f"bp-{n}", "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}],
                 "text": "Blood pressure"},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-01-01T10:00:00Z",
        "component": [component("8480-6", 120), component("8462-4", 80)],
    }


def test_body_cap_admits_what_the_fhir_fallback_admits():
    assert Settings().max_body_bytes >= FetchLimits().max_call_bytes


def test_long_prefetched_chart_is_answered_with_the_default_cap(client):
    scenario = load_scenario(SCENARIO)
    body = scenario.hook_request(dict(scenario.service.prefetch))
    observations = body["prefetch"]["observations"]
    observations.setdefault("entry", []).extend(
        {"resource": blood_pressure(scenario.patient_id, n)} for n in range(5_000)
    )
    raw = json.dumps(body)
    assert len(raw) > 2 * 1024 * 1024  # over the old 1 MiB cap, and nginx's old 2 MiB
    response = client.post(f"/cds-services/{scenario.service.id}", data=raw,
                           content_type="application/json")
    assert response.status_code == 200, response.get_json()
    rules = {card["source"]["topic"]["code"] for card in response.get_json()["cards"]}
    assert rules == set(scenario.expected_cards)
