"""Medication orders: is this an opioid, a medication for opioid use disorder, a systemic steroid?

Implements rules.md "Opioid", "Medication for opioid use disorder (MOUD)" and "Systemic
corticosteroid". A drug is recognised by RxNorm code first (product or ingredient level), and
failing that by ingredient name in its text or displays, including a contained or referenced
Medication, because orders typed as free text ("traMADol 50 mg tab") are common.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_service.facts.fhirpath import codings, first_date, texts
from cds_service.facts.model import MedicationOrder
from cds_service.facts.naming import name_of
from cds_service.knowledge import Knowledge


@dataclass(frozen=True)
class DrugDescription:
    """Everything an order says about its drug: codes, names, dose form and route words."""

    name: str
    codings: tuple[tuple[str | None, str | None], ...]
    names: tuple[str, ...]
    form_words: tuple[str, ...]


def describe(
    order: Any, medications: Mapping[str, Any], knowledge: Knowledge
) -> DrugDescription:
    """Collect the drug's codes and names from the order and any Medication it points to."""
    concept = order.medicationCodeableConcept
    pairs = list(codings(concept))
    names = list(texts(concept))
    form_words: list[str] = []
    medication = _referenced_medication(order, medications)
    if medication is not None:
        pairs += codings(medication.code)
        names += texts(medication.code)
        for ingredient in medication.ingredient or []:
            pairs += codings(ingredient.itemCodeableConcept)
            names += texts(ingredient.itemCodeableConcept)
        form_words += texts(medication.form)
        concept = concept or medication.code
    if order.medicationReference is not None and order.medicationReference.display:
        names.append(order.medicationReference.display)
    for dosage in order.dosageInstruction or []:
        form_words += texts(dosage.route)
        if dosage.text:
            form_words.append(dosage.text)
    name = name_of(knowledge, concept, names[0] if names else "unnamed medication")
    return DrugDescription(name, tuple(pairs), tuple(names), tuple(form_words))


def _referenced_medication(order: Any, medications: Mapping[str, Any]) -> Any | None:
    reference = order.medicationReference.reference if order.medicationReference else None
    if not reference:
        return None
    if reference.startswith("#"):
        for contained in order.contained or []:  # the contained Medications
            if contained.id == reference[1:]:
                return contained
        return None
    key = "Medication/" + reference.rsplit("Medication/", 1)[-1]
    return medications.get(key)


def _code_or_name(
    knowledge: Knowledge, drug: DrugDescription, concepts: tuple[str, ...], name_concept: str
) -> str | None:
    """How the drug matches: 'RxNorm <code>' for a code, 'name "<word>"' for a text match."""
    for system, code in drug.codings:
        if any(c in knowledge.concepts_of(system, code) for c in concepts):
            return f"RxNorm {code}"
    for text in drug.names:
        word = knowledge.text_matches(name_concept, text)
        if word:
            return f'name "{word}"'
    return None


def moud_reason(knowledge: Knowledge, drug: DrugDescription, has_oud: bool) -> str | None:
    """Why this order is a medication for opioid use disorder (never flagged), or None."""
    if knowledge.matches("moud-always", drug.codings):
        return "a buprenorphine product used only for opioid use disorder"
    text = " ".join(drug.names + drug.form_words).lower()
    if "buprenorphine" in text and (
        "naloxone" in text or "sublingual" in text or "extended-release injection" in text
    ):
        return "a buprenorphine product used only for opioid use disorder"
    if has_oud:
        if knowledge.matches("moud-if-oud", drug.codings):
            return "buprenorphine or methadone for a patient with opioid use disorder"
        if "buprenorphine" in text or "methadone" in text:
            return "buprenorphine or methadone for a patient with opioid use disorder"
    return None


def opioid_reason(knowledge: Knowledge, drug: DrugDescription) -> str | None:
    return _code_or_name(
        knowledge, drug, ("opioid-product", "opioid-ingredient"), "opioid-ingredient"
    )


def corticosteroid_classification(
    knowledge: Knowledge, drug: DrugDescription, adrenal_insufficiency: bool
) -> tuple[str | None, str | None]:
    """(why systemic, why not flagged) for a corticosteroid order; (None, None) for other drugs."""
    if knowledge.matches("fludrocortisone", drug.codings) or any(
        knowledge.text_matches("fludrocortisone", t) for t in drug.names
    ):
        return None, None  # a mineralocorticoid: not a systemic glucocorticoid for this service
    found = _code_or_name(
        knowledge,
        drug,
        ("systemic-corticosteroid-ingredient",),
        "systemic-corticosteroid-ingredient",
    )
    if not found:
        return None, None
    words = drug.names + drug.form_words
    local = next(
        (w for t in words if (w := knowledge.text_matches("dose-form-not-systemic", t))), None
    )
    if local:
        return None, f'not systemic ("{local}")'
    is_hydrocortisone = knowledge.matches("hydrocortisone", drug.codings) or any(
        knowledge.text_matches("hydrocortisone", t) for t in drug.names
    )
    if is_hydrocortisone and adrenal_insufficiency:
        return None, "hydrocortisone replacement for adrenal insufficiency"
    systemic = next(
        (w for t in words if (w := knowledge.text_matches("dose-form-systemic", t))), None
    )
    if systemic:
        return f'{found}, systemic form ("{systemic}")', None
    return f"{found}; no topical, inhaled or local form stated, so taken as systemic", None


def medication_order(
    order: Any,
    medications: Mapping[str, Any],
    knowledge: Knowledge,
    *,
    selected: bool,
    has_oud: bool,
    adrenal_insufficiency: bool,
) -> MedicationOrder:
    drug = describe(order, medications, knowledge)
    moud = moud_reason(knowledge, drug, has_oud)
    opioid = None if moud else opioid_reason(knowledge, drug)
    systemic, not_flagged = corticosteroid_classification(knowledge, drug, adrenal_insufficiency)
    return MedicationOrder(
        resource_type="MedicationRequest",
        id=order.id,
        name=drug.name,
        status=order.status,
        authored=first_date(order.authoredOn),
        selected=selected,
        opioid=opioid,
        moud=moud,
        systemic_corticosteroid=systemic,
        corticosteroid_not_flagged=not_flagged,
    )
