"""Build :class:`ClinicalFacts` from a patient record, the draft orders, and the evaluation time.

This is the only place that knows how FHIR maps onto the guidance's vocabulary. The evaluation
time is an argument (never the clock), so the same inputs always give the same facts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from cds_service.facts.assessments import find_assessments
from cds_service.facts.beighton import most_recent_beighton
from cds_service.facts.conditions import chronic_pain, recorded_facts
from cds_service.facts.fhirpath import age_on, to_date
from cds_service.facts.medications import medication_order
from cds_service.facts.model import ClinicalFacts, ConditionFact
from cds_service.facts.services import (
    device_request,
    diagnostic_report,
    procedure,
    service_request,
)
from cds_service.fhir.record import PatientRecord
from cds_service.guidance.settings import GuidanceSettings
from cds_service.knowledge import Knowledge

EXEMPTION_CONCEPTS: dict[str, str] = {
    "malignant-cancer": "malignant cancer",
    "sickle-cell-disease": "sickle cell disease",
    "likely-terminal-condition": "a condition likely to be terminal",
    "hospice-finding": "hospice care",
    "hospice-procedure": "hospice care",
    "end-of-life-therapy": "end-of-life care",
}


# MedicationRequest.intent (FHIR R4) values that make a record a prescription. rules.md says "an
# active opioid MedicationRequest"; this project reads a proposal, a plan or an option in a
# protocol as no prescription, since nobody takes a drug because of one (the CDC opioid IG reads
# intent = order). Draft orders are read whatever their intent says.
PRESCRIPTION_INTENTS = frozenset(
    {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
)


def ordered(requests: Iterable[Any]) -> list[Any]:
    """The requests that ask for something to be done. A MedicationRequest or ServiceRequest
    with ``doNotPerform`` says the drug or service must *not* be given (FHIR R4): it is no
    prescription, referral or imaging order, so no rule reads it as one."""
    return [r for r in requests if not getattr(r, "doNotPerform", None)]


def prescriptions(requests: Iterable[Any]) -> list[Any]:
    """The MedicationRequests on record that are prescriptions the patient has now: active,
    ordered (:func:`ordered`), and with an intent that makes them an order
    (:data:`PRESCRIPTION_INTENTS`)."""
    return [
        r for r in ordered(requests)
        if r.status == "active" and r.intent in PRESCRIPTION_INTENTS
    ]


def _hypermobility_diagnoses(conditions: Iterable[ConditionFact]) -> tuple:
    """rules.md "Hypermobility diagnosis". Classical, vascular and other EDS types are none;
    with one of them active on record, an EDS left unspecified (a second, less precise entry
    of the same disorder) is none either: only hypermobility-specific diagnoses still count.
    One Condition coded with both (398114001 beside Q79.63) is read the same way: it is itself
    the active other type."""
    found = _with(conditions, "hypermobility-diagnosis")
    if _with(conditions, "eds-other-type"):
        found = tuple(c for c in found if "hypermobility-specific-diagnosis" in c.concepts)
    return found


def _with(facts: Iterable[ConditionFact], concept: str, *, active: bool = True) -> tuple:
    return tuple(f for f in facts if concept in f.concepts and (f.active or not active))


def build_facts(
    *,
    patient_id: str,
    record: PatientRecord,
    draft_orders: Iterable[Any],
    selected: Collection[str] | None,
    now: datetime,
    settings: GuidanceSettings,
    knowledge: Knowledge,
) -> ClinicalFacts:
    """Summarise one patient for the rules.

    ``selected`` holds "Type/id" references of the orders an order-select call is about;
    ``None`` means every draft order is in focus (order-sign).
    """
    today = now.date()
    birth = record.patient.birthDate if record.patient is not None else None
    born = to_date(birth)
    age = age_on(born, today)

    conditions = recorded_facts(record.conditions, knowledge, born)
    # rules.md MOUD (b): an active OUD diagnosis, F11.1x/F11.2x, which take in the "in remission"
    # codes (F11.11, F11.21): a patient on maintenance methadone or buprenorphine is typically
    # in remission, so that status counts too, or their treatment would be called an opioid.
    has_oud = any(
        "opioid-use-disorder" in c.concepts and (c.active or c.remission) for c in conditions
    )
    adrenal = bool(_with(conditions, "adrenal-insufficiency"))

    services = [service_request(r, knowledge) for r in ordered(record.service_requests)]
    services += [device_request(r, knowledge) for r in record.device_requests]
    services += [procedure(p, knowledge) for p in record.procedures]
    services += [diagnostic_report(r, knowledge) for r in record.diagnostic_reports]

    def in_focus(resource: Any) -> bool:
        ref = f"{resource.get_resource_type()}/{resource.id}"
        return selected is None or ref in selected

    draft_medications = []
    for order in ordered(draft_orders):
        kind = order.get_resource_type()
        if kind == "MedicationRequest":
            draft_medications.append(
                medication_order(
                    order,
                    record.medications,
                    knowledge,
                    selected=in_focus(order),
                    has_oud=has_oud,
                    adrenal_insufficiency=adrenal,
                )
            )
        elif kind == "ServiceRequest":
            services.append(service_request(order, knowledge, draft=True, selected=in_focus(order)))
        elif kind == "DeviceRequest":
            services.append(device_request(order, knowledge, draft=True, selected=in_focus(order)))

    active_medications = tuple(
        medication_order(
            order,
            record.medications,
            knowledge,
            selected=False,
            has_oud=has_oud,
            adrenal_insufficiency=adrenal,
        )
        for order in prescriptions(record.medication_requests)
    )

    beighton = most_recent_beighton(record.observations, knowledge, born, today, settings)
    exemptions = sorted(
        {
            label
            for concept, label in EXEMPTION_CONCEPTS.items()
            if _with(conditions, concept)
            or any(concept in s.concepts and s.on_record for s in services)
        }
    )
    return ClinicalFacts(
        now=now,
        patient_id=patient_id,
        age=age,
        hypermobility_diagnoses=_hypermobility_diagnoses(conditions),
        has_any_eds_or_hypermobility_diagnosis=bool(
            _with(conditions, "eds-or-hypermobility-any-type", active=False)
        ),
        beighton=beighton,
        chronic_pain=chronic_pain(conditions, now, settings.chronic_pain_days),
        opioid_exemptions=tuple(exemptions),
        has_opioid_use_disorder=has_oud,
        pots=_with(conditions, "pots"),
        hip_soft_tissue=_with(conditions, "hip-soft-tissue"),
        draft_medications=tuple(draft_medications),
        active_medications=active_medications,
        services=tuple(services),
        assessments=find_assessments(
            knowledge,
            today=today,
            psych_lookback_days=settings.psych_screen_lookback_days,
            observations=record.observations,
            conditions=conditions,
            services=services,
            any_beighton=beighton,
        ),
    )
