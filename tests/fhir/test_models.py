"""The slim models on their own: contained resources, choice elements, what a rule reads."""

from __future__ import annotations

from cds_service.facts.medications import medication_order
from cds_service.fhir.models import Medication
from cds_service.fhir.record import validate
from cds_service.knowledge import load_knowledge

SUBJECT = {"reference": "Patient/p1"}


def _order(**members):
    return {
        "resourceType": "MedicationRequest",
        "id": "o1",
        "status": "active",
        "intent": "order",
        "subject": SUBJECT,
        **members,
    }


def test_a_contained_medication_is_read_and_other_contained_resources_are_left_out():
    order = validate(
        _order(
            contained=[
                {"resourceType": "Patient", "id": "someone"},
                {"resourceType": "Medication", "id": "med", "code": {"text": "oxycodone 5 mg"}},
            ],
            medicationReference={"reference": "#med"},
        )
    )
    assert order is not None
    assert [type(m) for m in order.contained] == [Medication]
    fact = medication_order(
        order, {}, load_knowledge(), selected=True, has_oud=False, adrenal_insufficiency=False
    )
    assert fact.opioid == 'name "oxycodone"'


def test_a_broken_contained_resource_makes_the_order_invalid():
    medication = {"reference": "#med"}
    assert validate(_order(contained=[{"resourceType": "Medication", "code": "x"}],
                           medicationReference=medication)) is None
    assert validate(_order(contained=["not a resource"], medicationReference=medication)) is None
    assert validate(_order(contained={"resourceType": "Medication"},
                           medicationReference=medication)) is None


def test_an_order_names_exactly_one_medication():
    concept = {"text": "ibuprofen"}
    assert validate(_order(medicationCodeableConcept=concept)) is not None
    assert validate(_order()) is None
    assert validate(
        _order(medicationCodeableConcept=concept, medicationReference={"reference": "#m"})
    ) is None


def test_a_device_request_names_exactly_one_device():
    request = {"resourceType": "DeviceRequest", "intent": "order", "subject": SUBJECT}
    assert validate({**request, "codeCodeableConcept": {"text": "lumbar brace"}}) is not None
    assert validate({**request, "codeReference": {"reference": "Device/d1"}}) is not None
    assert validate(request) is None
