"""Turn raw FHIR R4 JSON into the typed record the facts are built from.

Two things happen here, in this order, for speed and for safety:

1. A cheap look at each resource's codes and text decides whether any rule could read it.
   Charts hold thousands of vital signs and routine labs; validating them all with full FHIR
   models would cost most of a hook call's budget for nothing.
2. The resources that matter are validated into the slim models of
   :mod:`cds_service.fhir.models` (every element the rules read, checked as FHIR R4 defines it).
   One invalid resource is skipped and counted; it never sinks the request. Resources about
   another patient are skipped too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cds_service.fhir.models import (
    DRAFT_MODELS,
    MODELS,
    Condition,
    DeviceRequest,
    DiagnosticReport,
    Medication,
    MedicationRequest,
    Observation,
    Patient,
    Procedure,
    Resource,
    ServiceRequest,
    unversioned,
)
from cds_service.knowledge import Knowledge

# Where each resource type keeps the concept the rules classify it by.
CODE_FIELDS: dict[str, tuple[str, ...]] = {
    "Condition": ("code",),
    "Observation": ("code",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "ServiceRequest": ("code",),
    "DeviceRequest": ("codeCodeableConcept",),
    "DiagnosticReport": ("code",),
    "Procedure": ("code",),
    "Medication": ("code",),
}

# Concepts also recognised in the codes of an Observation's components, for the assessments
# (rules.md "Assessments"): EHRs send orthostatic vitals as one panel whose components carry the
# positional heart rates. Only codes: a component's text is not searched.
COMPONENT_CONCEPTS = frozenset(
    {
        "psych-screen",
        "heart-rate-lying-or-sitting",
        "heart-rate-standing",
        "tilt-table-test",
        "pelvic-floor-workup",
    }
)

# Passive modalities; each is also recognised by words, as is a multidisciplinary programme.
# The facts (cds_service.facts.services) classify orders by these same words.
PASSIVE_MODALITIES = ("lumbar-orthosis", "low-level-laser", "interferential-therapy")
ORDER_TEXT_CONCEPTS = ("multidisciplinary-programme", *PASSIVE_MODALITIES)

# Concepts recognised by words in free text (an order typed without codes).
TEXT_CONCEPTS: dict[str, tuple[str, ...]] = {
    "Observation": ("beighton-score",),
    "MedicationRequest": ("opioid-ingredient", "systemic-corticosteroid-ingredient"),
    "Medication": ("opioid-ingredient", "systemic-corticosteroid-ingredient"),
    "ServiceRequest": ORDER_TEXT_CONCEPTS,
    "DeviceRequest": PASSIVE_MODALITIES,
}


@dataclass
class PatientRecord:
    """The patient's resources that some rule reads, as validated models."""

    patient: Patient | None = None
    conditions: list[Condition] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    medication_requests: list[MedicationRequest] = field(default_factory=list)
    service_requests: list[ServiceRequest] = field(default_factory=list)
    diagnostic_reports: list[DiagnosticReport] = field(default_factory=list)
    procedures: list[Procedure] = field(default_factory=list)
    device_requests: list[DeviceRequest] = field(default_factory=list)
    medications: dict[str, Medication] = field(default_factory=dict)  # "Medication/id" -> it
    skipped_invalid: int = 0
    skipped_irrelevant: int = 0  # here only: long prefetches and fetched pages drop their own
    skipped_other_patient: int = 0

    _LISTS = {
        "Condition": "conditions",
        "Observation": "observations",
        "MedicationRequest": "medication_requests",
        "ServiceRequest": "service_requests",
        "DiagnosticReport": "diagnostic_reports",
        "Procedure": "procedures",
        "DeviceRequest": "device_requests",
    }

    def add(self, model: Resource) -> None:
        resource_type = model.get_resource_type()
        if resource_type == "Patient":
            self.patient = model
        elif resource_type == "Medication":
            if model.id:
                self.medications[f"Medication/{model.id}"] = model
        else:
            getattr(self, self._LISTS[resource_type]).append(model)


def is_relevant(resource: dict[str, Any], knowledge: Knowledge) -> bool:
    """Could any rule read this resource? Decided from codes and text only, before validation.

    This runs on every resource of every chart (most of them vital signs no rule reads), so it
    touches the JSON directly: one memoised dict lookup per coding, one regex search in all.
    Values of the wrong JSON type are passed over here; if the resource is kept for another
    reason, validation rejects it.
    """
    resource_type = resource.get("resourceType")
    if type(resource_type) is not str:
        return False
    if resource_type in ("Patient", "Medication"):
        return True
    fields = CODE_FIELDS.get(resource_type)
    if fields is None:
        return False
    if resource_type == "MedicationRequest" and (
        resource.get("medicationReference") or resource.get("contained")
    ):
        return True  # the drug is named elsewhere; classify after validation
    concepts_of = knowledge.concepts_of
    text_concepts = TEXT_CONCEPTS.get(resource_type)
    texts: list[str] = []
    named = resource.get("codeReference") if resource_type == "DeviceRequest" else None
    if type(named) is dict and type(display := named.get("display")) is str:
        texts.append(display)  # the device named by its reference (facts.device_request)
    for name in fields:
        concept = resource.get(name)
        if type(concept) is not dict:
            continue
        codings = concept.get("coding")
        if type(codings) is list:
            for coding in codings:
                if type(coding) is not dict:
                    continue
                system, code = coding.get("system"), coding.get("code")
                if type(system) is str and type(code) is str and concepts_of(system, code):
                    return True
                if text_concepts and type(display := coding.get("display")) is str:
                    texts.append(display)
        if text_concepts and type(text := concept.get("text")) is str:
            texts.append(text)
    if resource_type == "Observation" and type(components := resource.get("component")) is list:
        for component in components:
            if type(component) is not dict or type(concept := component.get("code")) is not dict:
                continue
            if type(codings := concept.get("coding")) is not list:
                continue
            for coding in codings:
                if type(coding) is not dict:
                    continue
                system, code = coding.get("system"), coding.get("code")
                if (
                    type(system) is str
                    and type(code) is str
                    and not COMPONENT_CONCEPTS.isdisjoint(concepts_of(system, code))
                ):
                    return True
    # One search over every text at once; "|" cannot join words of a term (see
    # knowledge.terms), so no match spans two texts.
    return bool(texts) and knowledge.text_matches_any(text_concepts, "|".join(texts))


def belongs_to(resource: dict[str, Any], patient_id: str) -> bool:
    """True unless the resource names a different patient as its subject."""
    if resource.get("resourceType") in ("Patient",):
        return resource.get("id") == patient_id
    ref = resource.get("subject") or resource.get("patient")
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return True  # Medication has no subject; unreferenced resources are taken as given
    reference = unversioned(ref["reference"])
    return reference == f"Patient/{patient_id}" or reference.endswith(f"/Patient/{patient_id}")


def validate(resource: dict[str, Any], *, draft: bool = False) -> Resource | None:
    """A model of the resource (see :mod:`cds_service.fhir.models`), or None when the JSON is not
    a valid resource of a type the rules read. ``draft``: an order from context.draftOrders
    (see :data:`~cds_service.fhir.models.DRAFT_MODELS`)."""
    resource_type = resource.get("resourceType")
    models = DRAFT_MODELS if draft else MODELS
    model_class = models.get(resource_type) if isinstance(resource_type, str) else None
    if model_class is None:
        return None
    try:
        return model_class.model_validate(resource)
    except ValidationError:
        return None


def build_record(
    resources: Iterable[dict[str, Any]],
    patient_id: str,
    knowledge: Knowledge,
    into: PatientRecord | None = None,
) -> PatientRecord:
    """Filter, validate and sort resources into a :class:`PatientRecord` (``into``, to add to
    one already built)."""
    record = PatientRecord() if into is None else into
    for resource in resources:
        if not isinstance(resource, dict) or not is_relevant(resource, knowledge):
            record.skipped_irrelevant += 1
            continue
        if not belongs_to(resource, patient_id):
            record.skipped_other_patient += 1
            continue
        model = validate(resource)
        if model is None:
            record.skipped_invalid += 1
            continue
        record.add(model)
    return record
