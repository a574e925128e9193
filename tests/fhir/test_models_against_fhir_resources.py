"""The slim models accept and refuse what fhir.resources (the reference validator) does.

For every resource in the fixtures of a type the rules read, and for broken variants of it
(each mutation touches an element the slim models read or one FHIR makes mandatory), both
validators must agree. Elements no rule reads are ignored by design; that difference has its
own test.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cds_service.devtools import scenarios as sc
from cds_service.fhir.models import MODELS
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


RESOURCES = [r for r in _fixture_resources() if r["resourceType"] in MODELS]

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
    "largest integer": _set("valueInteger", 2**31 - 1),
    "second value": _add("Observation", "valueInteger", 1),
    "coding not a list": _set("code.coding", {"code": "x"}),
    "empty text": _set("code.text", ""),
    "code with spaces": _set("code.coding.0.code", "a  b"),
    "system with space": _set("code.coding.0.system", "http://a b"),
    "dosage text a list": _set("dosageInstruction.0.text", ["oral"]),
    "subject a string": _set("subject", "Patient/x"),
    "second medication": _add(
        "MedicationRequest", "medicationReference", {"reference": "Medication/m"}
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
    for name, model in MODELS.items():
        assert model.get_resource_type() == name
