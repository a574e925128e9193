"""The imaging a card drafts names the side its evidence names (facts.laterality).

A card review found "XR Hip Views" and "MR Hip WO contrast" drafted, with no side, for
"Pain in right hip" and "Trochanteric bursitis, right hip": a radiology desk sends such orders
back. terminology.md D2 lists the side-specific LOINC codes.
"""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.guidance.rules import imaging_mri_hip, imaging_radiograph_first
from tests.builders import ICD10CM, LOINC, SNOMED, condition, patient
from tests.guidance.test_imaging_mri_hip import report


def named(rid: str, code: str, display: str | None) -> dict[str, Any]:
    resource = condition("p1", rid, ICD10CM, code)
    if display:
        resource["code"]["coding"][0]["display"] = display
    return resource


def cohort(*hips: dict[str, Any]) -> list[dict[str, Any]]:
    return [patient("p1"), condition("p1", "heds", ICD10CM, "Q79.62"),
            condition("p1", "lbp", SNOMED, "278860009"), *hips]


def drafted_codes(card) -> list[str]:
    return [a.resource["code"]["coding"][0]["code"]
            for s in card.suggestions for a in s.actions if a.type == "create"]


@pytest.mark.parametrize("hips, hip_xray", [
    ([named("h", "M25.551", "Pain in right hip")], "26132-1"),
    ([named("h", "M25.552", "Pain in left hip")], "26131-3"),
    ([named("r", "M25.551", "Pain in right hip"), named("l", "M25.552", "Pain in left hip")],
     "26130-5"),
    ([named("h", "M25.551", None)], "24762-7"),  # no words to read: no side
    ([named("r", "M25.551", "Pain in right hip"), named("u", "M25.559", None)], "24762-7"),
])
def test_patient_view_radiographs_name_the_painful_side(make_facts, make_ctx, hips, hip_xray):
    card = imaging_radiograph_first.evaluate(make_facts(cohort(*hips), strict=True), make_ctx())
    assert drafted_codes(card) == ["28561-9", hip_xray]


@pytest.mark.parametrize("mri_code, hip_xray", [("36490-1", "26132-1"), ("36488-5", "26131-3"),
                                                ("30687-8", "24762-7")])
def test_radiographs_replacing_a_drafted_mri_name_its_side(make_facts, make_ctx, mri_code,
                                                            hip_xray):
    displays = {"36490-1": "MR Hip - right WO contrast", "36488-5": "MR Hip - left WO contrast",
                "30687-8": "MR Hip WO contrast"}
    mri = {"resourceType": "ServiceRequest", "id": "mri", "status": "draft", "intent": "order",
           "subject": {"reference": "Patient/p1"},
           "code": {"coding": [{"system": LOINC, "code": mri_code,
                                "display": displays[mri_code]}]}}
    facts = make_facts(cohort(named("h", "M25.551", "Pain in right hip")), [mri], strict=True)
    card = imaging_radiograph_first.evaluate(facts, make_ctx("order-sign"))
    assert drafted_codes(card)[-1] == hip_xray


@pytest.mark.parametrize("display, mri", [("Trochanteric bursitis, right hip", "36490-1"),
                                          ("Trochanteric bursitis, left hip", "36488-5"),
                                          (None, "30687-8")])
def test_the_mri_names_the_side_of_the_soft_tissue_problem(make_facts, make_ctx, display, mri):
    code = {"36490-1": "M70.61", "36488-5": "M70.62", "30687-8": "M70.61"}[mri]
    resources = [*cohort(named("h", "M25.551", None)), named("b", code, display),
                 report("xr1")]
    card = imaging_mri_hip.evaluate(make_facts(resources, strict=True), make_ctx())
    assert drafted_codes(card) == [mri]
