"""Slim FHIR R4 models: exactly the elements the facts read, with their FHIR types checked.

Why not the full ``fhir.resources`` models here: they validate every element of a resource with
Python-level checks, about 50 to 90 microseconds for even a small Condition, and a long chart
sends hundreds of resources that some rule reads. These models let pydantic-core do the same
checks for the elements we use in about a tenth of that time:

* every element the facts (or the patient check, ``subject``) read, with its FHIR type: ids,
  codes, dates, dateTimes and instants match the same regular expressions as in fhir.resources,
  and full dates must be real calendar days; strings are not empty;
* every element FHIR makes mandatory (1..1) on these resources, even where no rule reads it
  (``status``, ``intent``...), and at most one value per choice element we read.

Where they differ from fhir.resources, on purpose:

* what no rule reads is not checked: other members, the other variants of a choice element,
  contained resources other than Medications (only their type).
  A malformed ``note`` or a vendor extension does not hide an opioid order from the rules;
* JSON types are exact: integers and decimals must be JSON numbers (6.0 is the integer 6, as
  there), and strings, codes and dates JSON strings (fhir.resources turns "5" into 5, and a
  number into a date);
* ``null`` is not accepted for a mandatory element (fhir.resources lets it pass).

``fhir.resources`` stays the reference: the tests check that these models accept and refuse
the same resources it does, apart from those three differences, for every resource in
``fhir_fixtures/``, for broken variants of them and for generated values in every element the
models read (``tests/fhir/test_models_against_fhir_resources.py``); every resource our cards
create is valid to it.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

# FHIR R4 primitive types (https://hl7.org/fhir/R4/datatypes.html), with the patterns
# fhir.resources checks.
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"

ID_CHARACTERS = r"[A-Za-z0-9\-.]{1,64}"
FHIR_ID = rf"^{ID_CHARACTERS}$"
Id = Annotated[str, Field(pattern=FHIR_ID)]
Code = Annotated[str, Field(pattern=r"^[^\s]+(\s[^\s]+)*$")]
Uri = str  # R4's pattern is \S*; fhir.resources checks none, and no rule needs one
String = Annotated[str, Field(min_length=1)]


def _real_calendar_day(value: str) -> str:
    """A full date must exist: the patterns allow 2024-02-30, fhir.resources refuses it."""
    if len(value) >= 10:
        date.fromisoformat(value[:10])  # ValueError: pydantic reports it
    return value


Date = Annotated[
    str, Field(pattern=rf"^{_YEAR}(-{_MONTH}(-{_DAY})?)?$"), AfterValidator(_real_calendar_day)
]
DateTime = Annotated[
    str,
    Field(pattern=rf"^{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?$"),
    AfterValidator(_real_calendar_day),
]
Instant = Annotated[
    str,
    Field(pattern=rf"^{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}$"),
    AfterValidator(_real_calendar_day),
]


def _whole_number(value: Any) -> Any:
    """FHIR integers are JSON numbers without a fraction: 6.0 is the integer 6 (as fhir.resources
    reads it); 6.5, "6" and true are not integers."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# A signed 32-bit integer.
Integer = Annotated[StrictInt, BeforeValidator(_whole_number), Field(ge=-(2**31), le=2**31 - 1)]
PositiveInt = Annotated[StrictInt, BeforeValidator(_whole_number), Field(gt=0, le=2**31 - 1)]


def _json_number(value: Any) -> Any:
    """FHIR decimals are JSON numbers: refuse strings and booleans before pydantic converts."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("a FHIR decimal must be a JSON number")
    return value


FhirDecimal = Annotated[Decimal, BeforeValidator(_json_number)]
Boolean = StrictBool  # JSON true or false only


class Element(BaseModel):
    """A FHIR element: immutable, and elements no rule reads are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Coding(Element):
    system: Uri | None = None
    code: Code | None = None
    display: String | None = None


class CodeableConcept(Element):
    coding: list[Coding] | None = None
    text: String | None = None


class Reference(Element):
    reference: String | None = None
    display: String | None = None


_VERSION = re.compile(rf"/_history/{ID_CHARACTERS}$")


def unversioned(reference: str) -> str:
    """``reference`` without a version ("Patient/p1/_history/2" -> "Patient/p1"): FHIR R4
    version-specific references name the same resource, and the rules read resources by id."""
    return _VERSION.sub("", reference)


class Period(Element):
    start: DateTime | None = None


class Quantity(Element):
    """A Quantity, or an Age (a Quantity of time: ``Condition.onsetAge``)."""

    value: FhirDecimal | None = None
    unit: String | None = None
    system: Uri | None = None
    code: Code | None = None


class Range(Element):
    """A Range: only its low end is read (``Condition.onsetRange``, an age range)."""

    low: Quantity | None = None


class TimingRepeat(Element):
    count: PositiveInt | None = None
    duration: FhirDecimal | None = None
    durationUnit: Code | None = None


class Timing(Element):
    repeat: TimingRepeat | None = None


class Dosage(Element):
    text: String | None = None
    route: CodeableConcept | None = None


class Choice(NamedTuple):
    """A choice element (``onset[x]``) by the variants the model declares: at most one may be
    given, and exactly one when the element is required."""

    name: str
    variants: tuple[str, ...]
    required: bool = False


class _WithChoices(Element):
    """An element or resource with choice elements: ``choices`` lists them, checked here."""

    choices: ClassVar[tuple[Choice, ...]] = ()

    @model_validator(mode="after")
    def _one_per_choice(self) -> _WithChoices:
        for choice in self.choices:
            present = [name for name in choice.variants if getattr(self, name) is not None]
            if choice.required and not present:
                raise ValueError(f"{choice.name} is required")
            if len(present) > 1:
                raise ValueError(f"only one of {', '.join(present)} may be given")
        return self


class Resource(_WithChoices):
    """A FHIR resource; its type is its class name, and ``get_resource_type()`` answers as
    fhir.resources models do."""

    id: Id | None = None

    @classmethod
    def get_resource_type(cls) -> str:
        return cls.__name__


class Patient(Resource):
    resourceType: Literal["Patient"]
    birthDate: Date | None = None


# Condition.abatement[x]: when it is given, the condition has resolved or gone into remission.
ABATEMENT = (
    "abatementDateTime",
    "abatementAge",
    "abatementPeriod",
    "abatementRange",
    "abatementString",
)


class Condition(Resource):
    resourceType: Literal["Condition"]
    clinicalStatus: CodeableConcept | None = None
    verificationStatus: CodeableConcept | None = None
    code: CodeableConcept | None = None
    subject: Reference
    onsetDateTime: DateTime | None = None
    onsetAge: Quantity | None = None
    onsetPeriod: Period | None = None
    onsetRange: Range | None = None
    onsetString: String | None = None
    abatementDateTime: DateTime | None = None
    abatementAge: Quantity | None = None
    abatementPeriod: Period | None = None
    abatementRange: Range | None = None
    abatementString: String | None = None
    recordedDate: DateTime | None = None

    choices = (
        Choice(
            "onset[x]",
            ("onsetDateTime", "onsetAge", "onsetPeriod", "onsetRange", "onsetString"),
        ),
        Choice("abatement[x]", ABATEMENT),
    )

    @property
    def abated(self) -> bool:
        """An ``abatement[x]`` is given: the condition has resolved or is in remission."""
        return any(getattr(self, name) is not None for name in ABATEMENT)


class ObservationComponent(Element):
    """One component of an Observation (a panel's parts, e.g. supine and standing heart
    rates): its code, for the assessments, and why its value is missing, if it is."""

    code: CodeableConcept
    dataAbsentReason: CodeableConcept | None = None


class Observation(Resource):
    resourceType: Literal["Observation"]
    status: Code
    code: CodeableConcept
    subject: Reference | None = None
    effectiveDateTime: DateTime | None = None
    effectivePeriod: Period | None = None
    effectiveInstant: Instant | None = None
    issued: Instant | None = None
    valueInteger: Integer | None = None
    valueQuantity: Quantity | None = None
    # FHIR R4 obs-6: only when there is no value (declined, not performed, unknown...).
    dataAbsentReason: CodeableConcept | None = None
    component: list[ObservationComponent] | None = None

    choices = (
        Choice("effective[x]", ("effectiveDateTime", "effectivePeriod", "effectiveInstant")),
        Choice("value[x]", ("valueInteger", "valueQuantity")),
    )


class MedicationIngredient(_WithChoices):
    itemCodeableConcept: CodeableConcept | None = None
    itemReference: Reference | None = None

    choices = (Choice("item[x]", ("itemCodeableConcept", "itemReference"), required=True),)


class Medication(Resource):
    resourceType: Literal["Medication"]
    code: CodeableConcept | None = None
    form: CodeableConcept | None = None
    ingredient: list[MedicationIngredient] | None = None


class _ContainedResource(Element):
    """Any contained resource: only its type is checked; the rules read contained Medications."""

    resourceType: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z]+$")]


def _contained(value: Any) -> Any:
    """The contained Medications as models; every other contained resource is checked, then
    left out (no rule reads it)."""
    if not isinstance(value, list):
        return value  # refused as "not a list" by the field's type
    medications = []
    for item in value:
        if isinstance(item, dict) and item.get("resourceType") == "Medication":
            medications.append(Medication.model_validate(item))
        else:
            _ContainedResource.model_validate(item)
    return medications


class MedicationRequest(Resource):
    resourceType: Literal["MedicationRequest"]
    contained: Annotated[list[Medication] | None, BeforeValidator(_contained)] = None
    status: Code
    intent: Code
    doNotPerform: Boolean | None = None
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    subject: Reference
    authoredOn: DateTime | None = None
    dosageInstruction: list[Dosage] | None = None

    choices = (
        Choice(
            "medication[x]", ("medicationCodeableConcept", "medicationReference"), required=True
        ),
    )


class DraftMedicationRequest(MedicationRequest):
    """A MedicationRequest drafted in the EHR (context.draftOrders), whose ``intent`` may be
    missing: the CDS Hooks sandbox sets it only once a dispense request is entered
    (shared/spec/cds-hooks-notes.md, "Context contents" and pitfall 19). No rule reads it, and
    refusing the draft would hide the very order being signed from the opioid check."""

    intent: Code | None = None  # type: ignore[assignment]

    @classmethod
    def get_resource_type(cls) -> str:
        return "MedicationRequest"


class ServiceRequest(Resource):
    resourceType: Literal["ServiceRequest"]
    status: Code
    intent: Code
    doNotPerform: Boolean | None = None
    code: CodeableConcept | None = None
    subject: Reference
    quantityQuantity: Quantity | None = None
    occurrenceDateTime: DateTime | None = None
    occurrencePeriod: Period | None = None
    occurrenceTiming: Timing | None = None
    authoredOn: DateTime | None = None
    bodySite: list[CodeableConcept] | None = None

    choices = (
        Choice("occurrence[x]", ("occurrenceDateTime", "occurrencePeriod", "occurrenceTiming")),
    )


class DeviceRequest(Resource):
    resourceType: Literal["DeviceRequest"]
    status: Code | None = None
    intent: Code
    codeCodeableConcept: CodeableConcept | None = None
    codeReference: Reference | None = None
    subject: Reference
    occurrenceDateTime: DateTime | None = None
    authoredOn: DateTime | None = None

    choices = (
        Choice("code[x]", ("codeCodeableConcept", "codeReference"), required=True),
    )


class DiagnosticReport(Resource):
    resourceType: Literal["DiagnosticReport"]
    status: Code
    code: CodeableConcept
    subject: Reference | None = None
    effectiveDateTime: DateTime | None = None
    effectivePeriod: Period | None = None
    issued: Instant | None = None
    conclusion: String | None = None
    conclusionCode: list[CodeableConcept] | None = None

    choices = (Choice("effective[x]", ("effectiveDateTime", "effectivePeriod")),)


class Procedure(Resource):
    resourceType: Literal["Procedure"]
    status: Code
    code: CodeableConcept | None = None
    subject: Reference
    performedDateTime: DateTime | None = None
    performedPeriod: Period | None = None
    bodySite: list[CodeableConcept] | None = None

    choices = (Choice("performed[x]", ("performedDateTime", "performedPeriod")),)


MODELS: dict[str, type[Resource]] = {
    model.get_resource_type(): model
    for model in (
        Patient,
        Condition,
        Observation,
        Medication,
        MedicationRequest,
        ServiceRequest,
        DeviceRequest,
        DiagnosticReport,
        Procedure,
    )
}
# Draft orders as EHRs send them: as MODELS, but a drafted MedicationRequest may lack intent.
DRAFT_MODELS: dict[str, type[Resource]] = {**MODELS, "MedicationRequest": DraftMedicationRequest}
