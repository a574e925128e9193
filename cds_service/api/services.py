"""The three CDS services this server offers, as listed by discovery.

Prefetch templates use only CDS Hooks 2.0 tokens (``{{context.patientId}}``; no ``today()``,
which is a 3.0 ballot feature) and plain FHIR search that real servers accept. They ask only for
what the rules read: the Patient (age, for the Beighton age bands), Conditions, Observations,
active MedicationRequests (opioids taken: flagged in patient-view, and a drafted opioid the
patient already takes is a renewal, for which opioid-order advises a taper), ServiceRequests,
DiagnosticReports and Procedures (rehabilitation, imaging, hospice care, assessments).
Observations are not filtered by code because EHRs file the Beighton score under local codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

_COMMON = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
    "servicerequests": "ServiceRequest?patient={{context.patientId}}",
    "diagnosticreports": "DiagnosticReport?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
}


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    prefetch: MappingProxyType

    def discovery(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": dict(self.prefetch),
        }


def _service(id_: str, hook: str, title: str, description: str, **extra: str) -> ServiceDefinition:
    return ServiceDefinition(id_, hook, title, description, MappingProxyType({**_COMMON, **extra}))


SERVICES: dict[str, ServiceDefinition] = {
    s.id: s
    for s in (
        _service(
            "hypermobility-pain-patient-view",
            "patient-view",
            "Hypermobility: chronic back and hip pain guidance",
            "For patients with joint hypermobility (hypermobility spectrum disorder or hypermobile "
            "Ehlers-Danlos syndrome) and chronic low back or hip pain: recommends intensive "
            "multidisciplinary rehabilitation, flags active opioid prescriptions, suggests "
            "radiographs before MRI, and lists assessments that are often missed.",
        ),
        _service(
            "hypermobility-pain-order-select",
            "order-select",
            "Hypermobility: order checks while selecting",
            "Checks newly selected orders for patients with joint hypermobility and chronic back "
            "or hip pain: opioids, systemic corticosteroids, passive modalities, short "
            "rehabilitation programmes, and hip MRI without radiographs first.",
        ),
        _service(
            "hypermobility-pain-order-sign",
            "order-sign",
            "Hypermobility: order checks before signing",
            "Checks the orders about to be signed for patients with joint hypermobility and "
            "chronic back or hip pain: opioids, systemic corticosteroids, passive modalities, "
            "short rehabilitation programmes, and hip MRI without radiographs first.",
        ),
    )
}
