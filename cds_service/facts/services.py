"""Service orders, procedures and reports, classified by the concepts the rules ask about.

Implements rules.md "Rehabilitation order", "Multidisciplinary programme order", "Planned hours",
"Radiograph" (with the normal/negative/equivocal reading of a report), "Hip MRI" and
"Passive-modality order". Concepts that are recognised by words as well as codes (lumbar support,
interferential therapy, multidisciplinary) are looked up in the text too.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cds_service.facts.fhirpath import (
    codings,
    first_date,
    first_present,
    moment_span,
    period_start,
    texts,
    to_date,
)
from cds_service.facts.laterality import side_of
from cds_service.facts.model import ServiceOrder
from cds_service.facts.naming import card_text, name_of
from cds_service.fhir.record import ORDER_TEXT_CONCEPTS, PASSIVE_MODALITIES
from cds_service.knowledge import Knowledge

FINAL_REPORT = frozenset({"final", "amended", "corrected"})
# rules.md "Planned hours": quantityQuantity in hours, or failing that the timing, whose
# sessions may be given in hours or minutes. A quantity in minutes is a session's length.
HOURS_PER_UNIT = {"h": 1.0, "hour": 1.0, "hours": 1.0, "min": 1 / 60, "minutes": 1 / 60}
QUANTITY_HOURS = frozenset(unit for unit, hours in HOURS_PER_UNIT.items() if hours == 1.0)


def _concepts(knowledge: Knowledge, concept: Any, extra_text: list[str]) -> frozenset[str]:
    found: set[str] = set()
    for system, code in codings(concept):
        found |= knowledge.concepts_of(system, code)
    coded = bool(found)  # the order names something the knowledge files know by code
    words = texts(concept) + extra_text
    for name in ORDER_TEXT_CONCEPTS:
        if any(knowledge.text_matches(name, text) for text in words):
            found.add(name)
    if "multidisciplinary-programme" in found:
        # rules.md: a programme is a rehabilitation order that says multidisciplinary; the word
        # alone ("multidisciplinary team meeting") does not make an order rehabilitation. Words
        # decide only for an order without a known code: one coded as something else (CBT,
        # which alone is no rehabilitation order) stays what its code says.
        if "rehabilitation-order" in found or (
            not coded
            and any(knowledge.text_matches("rehabilitation-words", text) for text in words)
            and not _meeting(knowledge, words)
        ):
            found.add("rehabilitation-order")
        else:
            found.discard("multidisciplinary-programme")
    if "mri-lower-extremity-joint-cpt" in found and any(
        knowledge.text_matches("hip-site", text) for text in words
    ):
        found.add("mri-hip")
    if not found.isdisjoint(PASSIVE_MODALITIES):
        found.add("passive-modality")
    return frozenset(found)


def _meeting(knowledge: Knowledge, words: list[str]) -> bool:
    """A meeting, not a treatment: a meeting word, or the team's name (MDT) without a word
    saying programme."""

    def says(concept: str) -> bool:
        return any(knowledge.text_matches(concept, text) for text in words)

    return says("meeting-words") or (says("team-words") and not says("programme-words"))


def planned_hours(request: Any) -> float | None:
    """Planned total hours: quantity in hours, else timing count x duration (h or min)."""
    quantity = request.quantityQuantity
    if quantity is not None and quantity.value is not None:
        unit = (quantity.code or quantity.unit or "").lower()
        if unit in QUANTITY_HOURS:
            return float(quantity.value)
    timing = request.occurrenceTiming
    repeat = timing.repeat if timing else None
    if repeat and repeat.count and repeat.duration is not None and repeat.durationUnit:
        factor = HOURS_PER_UNIT.get(repeat.durationUnit)
        if factor is not None:
            return float(repeat.count) * float(Decimal(repeat.duration)) * factor
    return None


def service_request(
    request: Any, knowledge: Knowledge, *, draft: bool = False, selected: bool = False
) -> ServiceOrder:
    body_sites = texts(request.bodySite or [])
    name = name_of(knowledge, request.code, "unnamed service request")
    return ServiceOrder(
        resource_type="ServiceRequest",
        id=request.id,
        name=name,
        status=request.status,
        on=first_date(
            request.authoredOn, request.occurrenceDateTime, period_start(request.occurrencePeriod)
        ),
        concepts=_concepts(knowledge, request.code, body_sites),
        draft=draft,
        selected=selected,
        planned_hours=planned_hours(request),
        side=side_of(knowledge, [*texts(request.code), name, *body_sites]),
    )


def device_request(
    request: Any, knowledge: Knowledge, *, draft: bool = False, selected: bool = False
) -> ServiceOrder:
    # code[x] may be a Reference to a Device: its display, when given, names the device.
    named = request.codeReference.display if request.codeReference is not None else None
    return ServiceOrder(
        resource_type="DeviceRequest",
        id=request.id,
        name=name_of(knowledge, request.codeCodeableConcept, named or "unnamed device request"),
        status=request.status,
        on=first_date(request.authoredOn, request.occurrenceDateTime),
        concepts=_concepts(knowledge, request.codeCodeableConcept, [named] if named else []),
        draft=draft,
        selected=selected,
    )


def procedure(proc: Any, knowledge: Knowledge) -> ServiceOrder:
    return ServiceOrder(
        resource_type="Procedure",
        id=proc.id,
        name=name_of(knowledge, proc.code, "unnamed procedure"),
        status=proc.status,
        on=first_date(proc.performedDateTime, period_start(proc.performedPeriod)),
        concepts=_concepts(knowledge, proc.code, texts(proc.bodySite or [])),
    )


def diagnostic_report(report: Any, knowledge: Knowledge) -> ServiceOrder:
    when = first_present(
        report.effectiveDateTime, period_start(report.effectivePeriod), report.issued
    )
    return ServiceOrder(
        resource_type="DiagnosticReport",
        id=report.id,
        name=name_of(knowledge, report.code, "unnamed report"),
        status=report.status,
        on=to_date(when),
        span=moment_span(when),
        concepts=_concepts(knowledge, report.code, []),
        normal_result=report.status in FINAL_REPORT
        and _reads_normal(knowledge, report.conclusion, report.conclusionCode or []),
        conclusion=card_text(report.conclusion) if report.conclusion else None,
    )


def _reads_normal(knowledge: Knowledge, conclusion: str | None, coded: list[Any]) -> bool:
    """rules.md: a normal, negative or equivocal result by the conclusion's words or its
    conclusionCode, and in doubt not. So: no abnormal code or word anywhere (a denial, "no
    abnormality", names no finding, so it is taken out first), and every coded
    conclusion read as normal by a code or a word of its own (a disorder coded without a
    display is one the service cannot read: in doubt), and something that says normal."""
    words = ([conclusion] if conclusion else []) + texts(coded)
    if knowledge.matches("report-conclusion-abnormal", codings(coded)) or any(
        knowledge.text_matches(
            "report-abnormal-wording", knowledge.without_terms("report-abnormality-denied", text)
        )
        for text in words
    ):
        return False

    def says_normal(concept: Any) -> bool:
        return knowledge.matches("report-conclusion-normal", codings(concept)) or any(
            knowledge.text_matches("report-normal-wording", text) for text in texts(concept)
        )

    if coded:
        return all(says_normal(concept) for concept in coded)
    return bool(conclusion and knowledge.text_matches("report-normal-wording", conclusion))
