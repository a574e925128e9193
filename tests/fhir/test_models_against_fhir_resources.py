"""The slim models accept and refuse what fhir.resources (the reference validator) does.

For every resource in the fixtures of a type the rules read, and for broken variants of it
(each mutation touches an element the slim models read or one FHIR makes mandatory), both
validators must agree. Elements no rule reads are ignored by design; that difference has its
own test.
"""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cds_service.devtools import scenarios as sc
from cds_service.fhir.models import ABATEMENT, MODELS
from cds_service.fhir.record import validate

FIXTURES = sc.fixtures_dir()


def _reference_accepts(resource: dict[str, Any]) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (ValidationError, TypeError, ValueError):
        return False
    return True


def _fixture_resources() -> Iterator[dict[str, Any]]:
    for path in sorted((FIXTURES / "patients").glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]:
            yield entry["resource"]
    for path in sorted((FIXTURES / "scenarios").glob("*.json")):
        yield from json.loads(path.read_text(encoding="utf-8")).get("draftOrders", [])


# Elements the rules read that no fixture carries, written here (text only: no codes needed).
SEEDS: list[dict[str, Any]] = [
    {
        "resourceType": "Medication",
        "id": "seed-medication",
        "code": {"text": "tramadol 50 mg oral tablet"},
        "form": {"text": "oral tablet"},
        "ingredient": [{"itemCodeableConcept": {"text": "tramadol"}}],
    },
    {
        "resourceType": "Observation",
        "id": "seed-observation",
        "status": "final",
        "code": {"text": "Beighton score"},
        "subject": {"reference": "Patient/seed"},
        "effectiveInstant": "2024-03-01T09:30:00Z",
        "issued": "2024-03-01T10:00:00Z",
        "valueInteger": 6,
    },
    {
        "resourceType": "Condition",
        "id": "seed-condition",
        "code": {"text": "chronic low back pain"},
        "subject": {"reference": "Patient/seed"},
        "onsetPeriod": {"start": "2023-01-15"},
    },
    {
        "resourceType": "Condition",
        "id": "seed-condition-onset-age",
        "code": {"text": "hip pain"},
        "subject": {"reference": "Patient/seed"},
        "onsetAge": {"value": 30, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
        "recordedDate": "2026-10-20",
    },
    {
        "resourceType": "Condition",
        "id": "seed-condition-onset-range",
        "code": {"text": "hip pain"},
        "subject": {"reference": "Patient/seed"},
        "onsetRange": {
            "low": {"value": 6, "unit": "mo", "system": "http://unitsofmeasure.org", "code": "mo"},
            "high": {"value": 1, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
        },
    },
    {
        "resourceType": "Condition",
        "id": "seed-condition-onset-string",
        "code": {"text": "low back pain"},
        "subject": {"reference": "Patient/seed"},
        "onsetString": "since her teens",
    },
    {
        "resourceType": "Observation",
        "id": "seed-observation-panel",
        "status": "final",
        "code": {"text": "Orthostatic vital signs"},
        "subject": {"reference": "Patient/seed"},
        "effectiveDateTime": "2024-03-01",
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "68999-2"}]},
             "valueQuantity": {"value": 70, "unit": "/min"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "69001-6"}]},
             "valueQuantity": {"value": 112, "unit": "/min"}},
        ],
    },
    {
        "resourceType": "DeviceRequest",
        "id": "seed-device-request",
        "status": "draft",
        "intent": "order",
        "codeReference": {"reference": "Device/brace"},
        "subject": {"reference": "Patient/seed"},
    },
]

RESOURCES = [r for r in _fixture_resources() if r["resourceType"] in MODELS] + SEEDS

# Each mutation breaks (or keeps valid) an element the slim models check; None: not applicable.
Mutation = Callable[[dict[str, Any]], dict[str, Any] | None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(resource: dict[str, Any]) -> dict[str, Any] | None:
        head, _, last = path.rpartition(".")
        node: Any = resource
        for part in filter(None, head.split(".")):
            node = node[int(part)] if isinstance(node, list) else node.get(part)
            if node is None:
                return None
        if last not in node:
            return None
        node[last] = value
        return resource

    return mutate


def _drop(name: str) -> Mutation:
    def mutate(resource: dict[str, Any]) -> dict[str, Any] | None:
        return resource if resource.pop(name, None) is not None else None

    return mutate


def _add(resource_type: str, name: str, value: Any) -> Mutation:
    def mutate(resource: dict[str, Any]) -> dict[str, Any] | None:
        if resource["resourceType"] != resource_type or name in resource:
            return None
        resource[name] = value
        return resource

    return mutate


CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def _abated(status: str | None, **abatement: Any) -> Mutation:
    """A Condition given ``abatement[x]`` (in place of its own) and the clinical status (None:
    none at all)."""

    def mutate(resource: dict[str, Any]) -> dict[str, Any] | None:
        if resource["resourceType"] != "Condition":
            return None
        for name in ("clinicalStatus", *ABATEMENT):
            resource.pop(name, None)
        if status is not None:
            resource["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": status}]}
        return {**resource, **abatement}

    return mutate


MUTATIONS: dict[str, Mutation] = {
    "unchanged": lambda r: r,
    "no status": _drop("status"),
    "no intent": _drop("intent"),
    "no code": _drop("code"),
    "no subject": _drop("subject"),
    "no medication": _drop("medicationCodeableConcept"),
    "bad id": _set("id", "not an id!"),
    "status with spaces": _set("status", " final"),
    "status a number": _set("status", 3),
    "month 13": _set("onsetDateTime", "2020-13-01"),
    "date as words": _set("authoredOn", "yesterday"),
    "time without zone": _set("effectiveDateTime", "2024-01-02T10:00:00"),
    "partial date": _set("effectiveDateTime", "2024-05"),
    "birth date with time": _set("birthDate", "1990-01-01T00:00:00Z"),
    "integer as decimal": _set("valueInteger", 5.5),
    "integer past 32 bits": _set("valueInteger", 2**31),
    "integer as whole float": _set("valueInteger", 6.0),
    "integer as negative zero": _set("valueInteger", -0.0),
    "February 30": _set("onsetDateTime", "2026-02-30"),
    "February 29 of a common year": _set("effectiveDateTime", "2023-02-29T10:00:00Z"),
    "April 31 as a date": _set("birthDate", "1990-04-31"),
    "leap day": _set("authoredOn", "2024-02-29"),
    "largest integer": _set("valueInteger", 2**31 - 1),
    "second value": _add("Observation", "valueInteger", 1),
    "second onset": _add("Condition", "onsetString", "in childhood"),
    "coding not a list": _set("code.coding", {"code": "x"}),
    "empty text": _set("code.text", ""),
    "code with spaces": _set("code.coding.0.code", "a  b"),
    "system with space": _set("code.coding.0.system", "http://a b"),
    "dosage text a list": _set("dosageInstruction.0.text", ["oral"]),
    "subject a string": _set("subject", "Patient/x"),
    "second medication": _add(
        "MedicationRequest", "medicationReference", {"reference": "Medication/m"}
    ),
    "ingredient without item": lambda r: {**r, "ingredient": [{}]} if "ingredient" in r else None,
    "ingredient with two items": lambda r: (
        {**r, "ingredient": [{**r["ingredient"][0], "itemReference": {"reference": "Substance/s"}}]}
        if "ingredient" in r
        else None
    ),
    "no device code": _drop("codeReference"),
    "resolved, with its abatement date": _abated("resolved", abatementDateTime="2024-03-01"),
    "in remission since an age": _abated(
        "remission", abatementAge={"value": 30, "system": "http://unitsofmeasure.org", "code": "a"}
    ),
    "abatement date as words": _abated("resolved", abatementDateTime="last spring"),
    "two abatements": _abated("inactive", abatementDateTime="2024-03-01", abatementString="x"),
    # Against FHIR invariant con-4, which neither validator checks: the facts read an abated
    # Condition as not active whatever its status says (tests/guidance/test_chronic_pain.py).
    "abated with no status": _abated(None, abatementDateTime="2024-03-01"),
    "abated yet active": _abated("active", abatementString="after physiotherapy"),
    "component without a code": (
        lambda r: {**r, "component": [{"valueQuantity": {"value": 1}}]} if "component" in r
        else None
    ),
}

# FHIR JSON writes integers and decimals as JSON numbers; fhir.resources converts "5" and true
# to numbers, the slim models refuse them (a Beighton score of "5" or true is not a score).
STRICTER: dict[str, Mutation] = {
    "integer as text": _set("valueInteger", "5"),
    "integer as boolean": _set("valueInteger", True),
    "decimal as text": _set("valueQuantity.value", "3"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_both_validators_agree(name: str) -> None:
    compared = 0
    disagreements = []
    for original in RESOURCES:
        resource = MUTATIONS[name](copy.deepcopy(original))
        if resource is None:
            continue
        compared += 1
        ours, reference = validate(resource) is not None, _reference_accepts(resource)
        if ours != reference:
            disagreements.append((resource.get("id"), resource["resourceType"], ours, reference))
    assert compared, f"mutation {name!r} applied to no fixture resource"
    assert not disagreements, disagreements[:5]


@pytest.mark.parametrize("name", sorted(STRICTER))
def test_numbers_must_be_json_numbers(name: str) -> None:
    changed = [m for r in RESOURCES if (m := STRICTER[name](copy.deepcopy(r))) is not None]
    assert changed
    for resource in changed:
        assert validate(resource) is None
        assert _reference_accepts(resource)  # the difference is deliberate, and still there


def test_every_type_the_rules_read_is_in_the_fixtures() -> None:
    fixture_types = {r["resourceType"] for r in RESOURCES}
    assert fixture_types >= set(MODELS) - {"Medication", "DeviceRequest"}
    assert {"DeviceRequest"} <= fixture_types


def test_elements_no_rule_reads_are_ignored_not_checked() -> None:
    """By design: a malformed note does not hide an order from the rules (the reference refuses
    it)."""
    order = next(r for r in RESOURCES if r["resourceType"] == "MedicationRequest")
    broken = {**copy.deepcopy(order), "note": "not a list of annotations"}
    assert not _reference_accepts(broken)
    assert validate(broken) is not None


@pytest.mark.parametrize("resource_type", ["NoSuchType", "x" * 200, "", "Bundle", None, {}])
def test_types_the_rules_do_not_read_are_not_validated(resource_type: Any) -> None:
    assert validate({"resourceType": resource_type, "id": "a"}) is None


def test_models_answer_their_resource_type() -> None:
    """The type a model answers (its class name) is the one its resourceType accepts."""
    for name, model in MODELS.items():
        assert model.get_resource_type() == name
        assert typing.get_args(model.model_fields["resourceType"].annotation) == (name,)


# ---------------------------------------------------------------- generated values, same check
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-20, max_value=20).map(float),  # whole numbers written as 6.0
    st.text(max_size=12),
    st.sampled_from(
        ["", " ", "final", "2024-05", "2024-05-06T07:08:09Z", "2024-13-01", "2023-02-29",
         "2024-02-30T10:00:00Z", "a b", "x\ny", " a"]
    ),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.sampled_from(["text", "code", "x"]), st.text(max_size=3), max_size=2),
)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like ``list[Coding] | None``, if any."""
    for arg in typing.get_args(annotation) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation if is_model else None


def _modelled_paths(model: type[BaseModel], value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths, in a resource, to the values the slim model reads (and so checks)."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _modelled_paths(model, item, (*path, index))
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        field = model.model_fields.get(key)
        if field is None or key == "resourceType":
            continue
        yield (*path, key)
        inner = _model_of(field.annotation)
        if inner is not None:
            yield from _modelled_paths(inner, item, (*path, key))


def _replace(resource: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(resource)
    node: Any = changed
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return changed


def _field_at(model: type[BaseModel], path: tuple) -> tuple[Any, type[BaseModel] | None]:
    """The slim model's field at the end of ``path``, and the model of its value, if any."""
    field = None
    for step in path:
        if isinstance(step, str):
            field = model.model_fields[step]
            model = _model_of(field.annotation) or model
    inner = _model_of(field.annotation) if field is not None else None
    return field, inner


def _has_unknown_members(value: Any, model: type[BaseModel] | None) -> bool:
    items = value if isinstance(value, list) else [value]
    return model is not None and any(
        isinstance(item, dict) and set(item) - set(model.model_fields) for item in items
    )


def _deliberate(field: Any, inner: type[BaseModel] | None, value: Any, ours: bool) -> bool:
    """The three differences the module docstring of cds_service.fhir.models states."""
    if ours:  # we accept what the reference refuses: members no rule reads are ignored
        return _has_unknown_members(value, inner)
    if value is None:  # null for a mandatory element
        return field.is_required()
    annotation = str(field.annotation)
    if "int" in annotation.lower() or "Decimal" in annotation:
        return isinstance(value, str | bool)  # integers and decimals must be JSON numbers
    return "str" in annotation and not isinstance(value, str)  # strings must be JSON strings


@given(
    resource=st.sampled_from(RESOURCES),
    pick=st.integers(min_value=0, max_value=10_000),
    value=JSON_VALUES,
)
@settings(max_examples=1500, derandomize=True, database=None, deadline=None)
def test_generated_values_in_read_elements_get_the_same_answer(resource, pick, value):
    model = MODELS[resource["resourceType"]]
    paths = list(_modelled_paths(model, resource))
    path = paths[pick % len(paths)]
    changed = _replace(resource, path, value)
    ours, reference = validate(changed) is not None, _reference_accepts(changed)
    if ours != reference:
        field, inner = _field_at(model, path)
        assert _deliberate(field, inner, value, ours), (resource["resourceType"], path, value)
