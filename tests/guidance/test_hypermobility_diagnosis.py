"""Hypermobility diagnosis (rules.md): the codes that qualify, and the EDS types that do not.

"Other EDS types (classical Q79.61, vascular Q79.63, other Q79.69) are not: they are different
disorders and this guidance was not written for them." Problem lists often carry a specific type
beside a generic code that qualifies on its own (SNOMED CT 398114001 "Ehlers-Danlos syndrome"
with ICD-10-CM Q79.63): the specific type says which disorder it is.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import ICD10CM, SNOMED, condition, patient

GENERIC = [(SNOMED, "398114001"), (ICD10CM, "Q79.6"), (ICD10CM, "Q79.60")]


def eds(*codings: tuple[str, str], text: str | None = None) -> dict[str, Any]:
    resource = condition("p1", "eds", *codings[0])
    resource["code"] = {"coding": [{"system": s, "code": c} for s, c in codings]}
    if text:
        resource["code"]["text"] = text
    return resource


def chart(diagnosis: dict[str, Any]) -> list[dict[str, Any]]:
    low_back_pain = condition("p1", "lbp", SNOMED, "278860009")  # chronic low back pain
    return [patient("p1"), diagnosis, low_back_pain]


@pytest.mark.parametrize("generic", GENERIC)
@pytest.mark.parametrize("specific", [
    (ICD10CM, "Q79.61"),  # classical
    (ICD10CM, "Q79.63"),  # vascular
    (ICD10CM, "Q79.69"),  # other
    (SNOMED, "83470009"),  # EDS type 1 (classical)
    (SNOMED, "17025000"),  # EDS type 4 (vascular)
])
def test_a_generic_code_beside_another_eds_type_is_not_a_hypermobility_diagnosis(
    make_facts, generic, specific
):
    facts = make_facts(chart(eds(generic, specific)), strict=True)
    assert facts.hypermobility_diagnoses == ()
    assert not facts.in_cohort
    assert facts.has_any_eds_or_hypermobility_diagnosis  # still an EDS: no "possible" card


@pytest.mark.parametrize("generic", GENERIC)
@pytest.mark.parametrize("beside", [None, (ICD10CM, "Q79.62"), (SNOMED, "30652003")])
def test_a_generic_code_alone_or_beside_hypermobile_eds_is_one(make_facts, generic, beside):
    diagnosis = eds(generic, beside) if beside else eds(generic)
    facts = make_facts(chart(diagnosis), strict=True)
    assert [d.id for d in facts.hypermobility_diagnoses] == ["eds"]
    assert facts.in_cohort


@pytest.mark.parametrize("generic", GENERIC)
def test_a_generic_eds_condition_beside_another_eds_type_on_record_is_not_one(make_facts, generic):
    """The same as one Condition with both codes, but as two entries of the problem list (an
    import often records a disorder twice, once less precisely): found by review."""
    vascular = condition("p1", "veds", ICD10CM, "Q79.63")
    facts = make_facts([*chart(eds(generic)), vascular], strict=True)
    assert facts.hypermobility_diagnoses == ()
    assert not facts.in_cohort


@pytest.mark.parametrize("specific", [(ICD10CM, "M35.7"), (ICD10CM, "Q79.62"),
                                      (SNOMED, "30652003")])
def test_a_hypermobility_specific_diagnosis_counts_beside_another_eds_type(make_facts, specific):
    vascular = condition("p1", "veds", ICD10CM, "Q79.63")
    facts = make_facts([*chart(eds(specific)), vascular], strict=True)
    assert [d.id for d in facts.hypermobility_diagnoses] == ["eds"]


def test_an_inactive_other_eds_type_leaves_a_generic_diagnosis_alone(make_facts):
    vascular = condition("p1", "veds", ICD10CM, "Q79.63")
    vascular["verificationStatus"] = {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
        "code": "refuted"}]}
    facts = make_facts([*chart(eds((SNOMED, "398114001"))), vascular], strict=True)
    assert [d.id for d in facts.hypermobility_diagnoses] == ["eds"]


def test_a_hypermobile_type_beside_another_type_in_one_condition_counts_as_in_two(make_facts):
    """The one-Condition case was decided in two places, which disagreed: hEDS (Q79.62) with
    vascular EDS (Q79.63) on one Condition was no diagnosis, on two Conditions one (review).
    Now one place decides: a hypermobility-specific code counts beside another type."""
    both = eds((ICD10CM, "Q79.62"), (ICD10CM, "Q79.63"))
    facts = make_facts(chart(both), strict=True)
    assert [d.id for d in facts.hypermobility_diagnoses] == ["eds"]
