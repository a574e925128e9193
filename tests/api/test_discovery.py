"""Discovery: three services, distinct ids, CDS Hooks 2.0 prefetch templates only."""

import re

EXPECTED = {
    "hypermobility-pain-patient-view": "patient-view",
    "hypermobility-pain-order-select": "order-select",
    "hypermobility-pain-order-sign": "order-sign",
}
TOKEN = re.compile(r"\{\{(.*?)\}\}")


def test_lists_the_three_services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert {s["id"]: s["hook"] for s in services} == EXPECTED
    for service in services:
        assert service["title"] and service["description"]


def test_prefetch_uses_only_2_0_tokens_and_plain_searches(client):
    for service in client.get("/cds-services").get_json()["services"]:
        prefetch = service["prefetch"]
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        for template in prefetch.values():
            assert "today()" not in template
            assert TOKEN.findall(template) == ["context.patientId"]
            assert re.fullmatch(
                r"[A-Z][A-Za-z]+(/\{\{context\.patientId\}\}|\?patient=\{\{context\.patientId\}\}"
                r"(&status=[a-z,-]+)?)",
                template,
            ), template


def test_every_service_asks_for_the_active_medications(client):
    """patient-view flags active opioids; the order services tell a renewal (a drafted opioid
    the patient already takes: opioid-order advises a taper, not a replacement) from a new
    opioid. They asked for no MedicationRequests, so in production every draft was new."""
    for service in client.get("/cds-services").get_json()["services"]:
        assert service["prefetch"]["medications"] == (
            "MedicationRequest?patient={{context.patientId}}&status=active"
        ), service["id"]


def test_no_empty_values_in_discovery(client):
    def walk(value):
        assert value not in (None, "", [], {})
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(client.get("/cds-services").get_json())
