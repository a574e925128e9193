"""Tiny FHIR resource builders for tests that need a patient without a fixture file."""

from __future__ import annotations

from typing import Any

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"


def condition(pid: str, rid: str, system: str, code: str, *, onset: str | None = "2020-01-01",
              clinical: str = "active", verification: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": system, "code": code}]},
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical,
        }]},
    }
    if verification:
        resource["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": verification,
        }]}
    if onset:
        resource["onsetDateTime"] = onset
    return resource


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r} for r in resources]}


def patient(pid: str, birth_date: str = "1990-05-01") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": birth_date}


def cohort_conditions(pid: str) -> list[dict[str, Any]]:
    """Hypermobile EDS plus chronic low back pain and hip pain (onset years ago)."""
    return [
        condition(pid, f"{pid}-heds", ICD10CM, "Q79.62"),
        condition(pid, f"{pid}-lbp", SNOMED, "278860009"),
        condition(pid, f"{pid}-hip", ICD10CM, "M25.551"),
    ]


def medication_request(pid: str, rid: str, *, code: str | None = None, text: str | None = None,
                       status: str = "draft") -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code}]
    if text:
        concept["text"] = text
    return {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "medicationCodeableConcept": concept}


def service_request(pid: str, rid: str, system: str, code: str, *, text: str | None = None,
                    status: str = "draft") -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text:
        concept["text"] = text
    return {"resourceType": "ServiceRequest", "id": rid, "status": status, "intent": "order",
            "subject": {"reference": f"Patient/{pid}"}, "code": concept}


def draft_orders(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in resources]}
