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
from cds_service.facts.naming import known_display, name_of
from cds_service.fhir.models import unversioned
from cds_service.knowledge import Knowledge


@dataclass(frozen=True)
class DrugDescription:
    """Everything an order says about its drug: codes, names, its coded dose form and routes
    (``form_words``), and the free text of its dosage instructions (``instructions``)."""

    name: str
    codings: tuple[tuple[str | None, str | None], ...]
    names: tuple[str, ...]
    form_words: tuple[str, ...]
    instructions: tuple[str, ...] = ()


def describe(
    order: Any, medications: Mapping[str, Any], knowledge: Knowledge
) -> DrugDescription:
    """Collect the drug's codes and names from the order and any Medication it points to."""
    concept = order.medicationCodeableConcept
    pairs = list(codings(concept))
    names = list(texts(concept))
    form_words: list[str] = []
    instructions: list[str] = []
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
        form_words += _route_names(knowledge, dosage.route)
        if dosage.text:
            instructions.append(dosage.text)
    name = name_of(knowledge, concept, names[0] if names else "unnamed medication")
    return DrugDescription(
        name, tuple(pairs), tuple(names), tuple(form_words), tuple(instructions)
    )


def _route_names(knowledge: Knowledge, route: Any) -> list[str]:
    """The knowledge files' names of a route's codes (administration-route), so that a route
    coded without a display ("12130007", intra-articular) still speaks; the record's own
    display, when there is one, is read as well."""
    return [
        display
        for system, code in codings(route)
        if code
        and "administration-route" in knowledge.concepts_of(system, code)
        and (display := known_display(knowledge, system, code))
    ]


def _referenced_medication(order: Any, medications: Mapping[str, Any]) -> Any | None:
    reference = order.medicationReference.reference if order.medicationReference else None
    if not reference:
        return None
    if reference.startswith("#"):
        for contained in order.contained or []:  # the contained Medications
            if contained.id == reference[1:]:
                return contained
        return None
    # Relative or absolute, and without a version: the record keys Medications "Medication/<id>".
    key = "Medication/" + unversioned(reference).rsplit("Medication/", 1)[-1]
    return medications.get(key)


def _code_or_name(
    knowledge: Knowledge, drug: DrugDescription, concepts: tuple[str, ...], name_concept: str
) -> str | None:
    """How the drug matches: 'RxNorm <code>' for a code, 'name "<word>"' for a text match."""
    for system, code in drug.codings:
        if any(c in knowledge.concepts_of(system, code) for c in concepts):
            return f"RxNorm {code}"
    word = _first_term(knowledge, name_concept, drug.names)
    return f'name "{word}"' if word else None


def _first_term(knowledge: Knowledge, concept: str, texts: tuple[str, ...]) -> str | None:
    """The concept's term found in the first text that has one, else None."""
    return next((w for t in texts if (w := knowledge.text_matches(concept, t))), None)


def _is(knowledge: Knowledge, drug: DrugDescription, concept: str) -> bool:
    """The drug belongs to the concept by one of its codes or by a name."""
    return knowledge.matches(concept, drug.codings) or bool(
        _first_term(knowledge, concept, drug.names)
    )


MOUD_ALWAYS = "a buprenorphine product used only for opioid use disorder"
MOUD_WITH_OUD = "buprenorphine or methadone for a patient with opioid use disorder"


def moud_reason(knowledge: Knowledge, drug: DrugDescription, has_oud: bool) -> str | None:
    """Why this order is a medication for opioid use disorder (never flagged), or None.

    rules.md "MOUD": (a) always, by a moud-always code or brand name, or by the buprenorphine
    name beside naloxone or a sublingual, subcutaneous or extended-release injectable form;
    (b) with an opioid use disorder diagnosis, any product of the buprenorphine/methadone value
    set, by code, or buprenorphine or methadone by its ingredient code or name.
    """
    # What the drug is comes from its names only: dosage instructions may name another drug
    # ("keep a naloxone kit at home", advised beside any opioid). Its form and route may also
    # come from the dosage (a "Sublingual" route).
    names = drug.names
    if knowledge.matches("moud-always", drug.codings) or _first_term(
        knowledge, "moud-always", names
    ):
        return MOUD_ALWAYS
    buprenorphine = _is(knowledge, drug, "buprenorphine-ingredient")
    stated = names + drug.form_words  # the name, the coded form and the routes
    if buprenorphine and (
        _first_term(knowledge, "naloxone", names)
        or _first_term(knowledge, "buprenorphine-moud-form", stated + drug.instructions)
        # Not from the instructions: they may mention a naloxone injection, or the ER.
        or (
            _first_term(knowledge, "extended-release-form", stated)
            and _first_term(knowledge, "injection-form", stated)
        )
    ):
        return MOUD_ALWAYS
    if has_oud:
        if knowledge.matches("moud-if-oud", drug.codings):
            return MOUD_WITH_OUD
        if buprenorphine or _is(knowledge, drug, "methadone-ingredient"):
            return MOUD_WITH_OUD
    return None


def opioid_ingredients(knowledge: Knowledge, drug: DrugDescription) -> frozenset[str]:
    """The opioid ingredients the drug names, lower case: by the OMTK ingredient of a coded
    product, the display of a coded ingredient, and the ingredient names in its text."""
    found = set()
    for _system, code in drug.codings:
        ingredient = knowledge.opioid_ingredient(code) if code else None  # product or itself
        if ingredient is not None and ingredient.display:
            found.add(ingredient.display.lower())
    for text in drug.names:
        word = knowledge.text_matches("opioid-ingredient", text)
        if word:
            found.add(word.lower())
    return frozenset(found)


def opioid_reason(knowledge: Knowledge, drug: DrugDescription) -> str | None:
    return _code_or_name(
        knowledge,
        drug,
        ("opioid-product", "opioid-product-omtk", "opioid-ingredient"),
        "opioid-ingredient",
    )


def corticosteroid_classification(
    knowledge: Knowledge, drug: DrugDescription, adrenal_insufficiency: bool
) -> tuple[str | None, str | None]:
    """(why systemic, why not flagged) for a corticosteroid order; (None, None) for other drugs."""
    if _is(knowledge, drug, "fludrocortisone"):
        return None, None  # a mineralocorticoid: not a systemic glucocorticoid for this service
    found = _code_or_name(
        knowledge,
        drug,
        ("systemic-corticosteroid-ingredient",),
        "systemic-corticosteroid-ingredient",
    )
    if not found:
        return None, None
    local, systemic = _dose_form(knowledge, drug)
    if local:
        return None, f'not systemic ("{local}")'
    if adrenal_insufficiency and _is(knowledge, drug, "hydrocortisone"):
        return None, "hydrocortisone replacement for adrenal insufficiency"
    if systemic:
        return f'{found}, systemic form ("{systemic}")', None
    return f"{found}; no topical, inhaled or local form stated, so taken as systemic", None


def _dose_form(knowledge: Knowledge, drug: DrugDescription) -> tuple[str | None, str | None]:
    """(local word, systemic word) that decides rules.md's "dose form in the text"; at most one
    is given, and neither when nothing says.

    The drug's name and its coded form and routes speak first: a local word there (cream,
    intra-articular) makes it local, and an oral, intravenous or intramuscular word systemic.
    Only when they say nothing, the dosage instructions, which may mention other things either
    way ("keep using the diclofenac gel", "continue oral naproxen"): a local word there makes it
    local, as it always did, else a systemic word systemic; a spinal injection word counts only
    in the name, form and routes ("epidural injection if no better" may follow an oral course).
    An injection word alone is systemic last of all, since a joint injection is one too and its
    route or instructions say so.
    """
    stated = drug.names + drug.form_words
    local = ("dose-form-not-systemic", "dose-form-spinal-injection")
    for texts_, local_concepts in ((stated, local), (drug.instructions, local[:1])):
        for concept in (*local_concepts, "dose-form-systemic"):
            word = _first_term(knowledge, concept, texts_)
            if word:
                return (None, word) if concept == "dose-form-systemic" else (word, None)
    injection = _first_term(knowledge, "injection-form", stated + drug.instructions)
    return None, injection


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
    ingredients = opioid_ingredients(knowledge, drug) if opioid else frozenset()
    return MedicationOrder(
        resource_type="MedicationRequest",
        id=order.id,
        name=drug.name,
        status=order.status,
        authored=first_date(order.authoredOn),
        selected=selected,
        opioid=opioid,
        opioid_ingredients=ingredients,
        moud=moud,
        systemic_corticosteroid=systemic,
        corticosteroid_not_flagged=not_flagged,
    )
