"""imaging-mri-hip: MRI hip without contrast after negative radiographs and soft-tissue signs."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service.guidance.rules.imaging_mri_hip import RULE, evaluate
from tests.api.test_core_rules import assert_conformant
from tests.builders import (
    ICD10CM,
    LOINC,
    SNOMED,
    cohort_conditions,
    condition,
    patient,
    service_request,
)

CPT = "http://www.ama-assn.org/go/cpt"


def report(rid: str, *, conclusion: str | None = "No abnormality detected.",
           status: str = "final", when: str = "2026-09-01", system: str = LOINC,
           code: str = "30767-8", display: str = "XR Pelvis and Hip Views") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "effectiveDateTime": when,
    }
    if conclusion is not None:
        resource["conclusion"] = conclusion
    return resource


def mri_request(rid: str, *, status: str = "active", system: str = LOINC,
                code: str = "30687-8", body_site: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
        "authoredOn": "2026-10-01",
    }
    if body_site:
        resource["bodySite"] = [{"text": body_site}]
    return resource


BURSITIS = condition("p1", "bursitis", ICD10CM, "M70.61")


def chart(*extra: dict[str, Any], soft_tissue: bool = True) -> list[dict[str, Any]]:
    base = [patient("p1"), *cohort_conditions("p1"), report("xr1")]
    return base + ([BURSITIS] if soft_tissue else []) + list(extra)


@pytest.fixture
def run(make_facts, make_ctx):
    def go(resources):
        return evaluate(make_facts(resources, strict=True), make_ctx())

    return go


def test_fires_after_negative_radiograph_with_soft_tissue_problem(run):
    card = run(chart())
    assert card is not None
    assert card.rule_id == "imaging-mri-hip"
    assert card.indicator == "info"
    assert "MRI" in card.summary
    # Evidence: the report (name, date, conclusion) and the soft-tissue condition.
    assert "XR Pelvis and Hip Views" in card.detail
    assert "2026-09-01" in card.detail
    assert "No abnormality detected." in card.detail
    assert "M70.61" in card.detail
    assert "without IV contrast" in card.detail
    assert_conformant(card.to_json())


def test_suggestion_is_a_valid_draft_mri_hip_without_contrast(run):
    card = run(chart())
    assert card.selectionBehavior == "at-most-one"
    [suggestion] = card.suggestions
    [action] = suggestion.actions
    assert action.type == "create"
    resource = action.resource
    get_fhir_model_class("ServiceRequest").model_validate(resource)
    assert resource["status"] == "draft"
    assert resource["intent"] == "order"
    assert resource["subject"] == {"reference": "Patient/p1"}
    assert resource["code"]["coding"] == [
        {"system": LOINC, "code": "30687-8", "display": "MR Hip WO contrast"}
    ]
    assert resource["code"]["text"]
    assert resource["reasonReference"] == [{"reference": "Condition/bursitis"}]


def test_silent_out_of_cohort(run):
    # Chronic hip pain but no hypermobility diagnosis and no Beighton score.
    resources = [
        patient("p1"),
        condition("p1", "hip", ICD10CM, "M25.551"),
        report("xr1"),
        BURSITIS,
    ]
    assert run(resources) is None


def test_silent_when_hypermobile_without_chronic_pain(run):
    resources = [patient("p1"), condition("p1", "heds", ICD10CM, "Q79.62"), report("xr1"),
                 BURSITIS]
    assert run(resources) is None


@pytest.mark.parametrize("status", ["preliminary", "registered", "partial", "cancelled",
                                    "entered-in-error"])
def test_report_must_be_final(run, status):
    resources = [patient("p1"), *cohort_conditions("p1"), report("xr1", status=status), BURSITIS]
    assert run(resources) is None


@pytest.mark.parametrize("status", ["final", "amended", "corrected"])
def test_final_amended_or_corrected_report_counts(run, status):
    resources = [patient("p1"), *cohort_conditions("p1"), report("xr1", status=status), BURSITIS]
    assert run(resources) is not None


@pytest.mark.parametrize("conclusion", [
    "Mild osteoarthritis of the right hip.",
    "Normal alignment. Early osteoarthritis of both hips.",
    "Negative for fracture but small joint effusion.",
    "Findings not normal; follow-up advised.",
    "Cam-type dysplasia.",
    "Abnormal sclerosis of the acetabulum.",
    # The same findings in the plural, or as a noun ("in doubt, not normal"): a clinical review
    # found each of these read as normal, and the MRI card fired.
    "Normal alignment. Bilateral hip effusions.",
    "Joint spaces normal. Multiple lytic lesions in the left iliac wing.",
    "Unremarkable hips. Erosions at the pubic symphysis.",
    "Normal bone density. Old healed fractures of the right pubic rami.",
    "Abnormality of the left femoral head; otherwise normal.",
    "No abnormality of the right hip. Abnormality of the left femoral head.",
])
def test_abnormal_wording_silences(run, conclusion):
    resources = [patient("p1"), *cohort_conditions("p1"), report("xr1", conclusion=conclusion),
                 BURSITIS]
    assert run(resources) is None


@pytest.mark.parametrize("conclusion", [
    "No abnormality detected.",
    "No abnormalities. Normal hips.",  # "abnormalities" denied is not a finding
    # Usual ways of denying any abnormality, which read as findings once "abnormality" was an
    # abnormal word (found by review):
    "Normal hips. No acute osseous abnormality.",
    "Normal radiograph; no bony abnormality.",
    "Unremarkable. No significant abnormality.",
    "No evidence of abnormality. Normal.",
    "Unremarkable pelvis and hips.",
    "Equivocal joint space; otherwise normal.",
    "NEGATIVE",
])
def test_normal_negative_or_equivocal_wording_fires(run, make_facts, conclusion):
    resources = [patient("p1"), *cohort_conditions("p1"), report("xr1", conclusion=conclusion),
                 BURSITIS]
    [xray] = make_facts(resources).services_with("radiograph-pelvis-hip")
    assert xray.normal_result is True
    assert run(resources) is not None


def coded(rid: str, *codes: str, conclusion: str | None = None) -> dict[str, Any]:
    """A report whose conclusion is coded (SNOMED CT qualifier values), with no display."""
    resource = report(rid, conclusion=conclusion)
    resource["conclusionCode"] = [{"coding": [{"system": SNOMED, "code": c}]} for c in codes]
    return resource


@pytest.mark.parametrize("code", ["17621005", "260385009", "42425007"])  # normal, neg., equiv.
def test_a_coded_normal_negative_or_equivocal_conclusion_fires(run, code):
    """rules.md: a final report counts when its conclusionCode says so; a coded Normal with no
    display was read as no conclusion at all, and the MRI card stayed silent."""
    resources = [patient("p1"), *cohort_conditions("p1"), coded("xr1", code), BURSITIS]
    assert run(resources) is not None


@pytest.mark.parametrize("codes,conclusion", [
    (("17621005", "263654008"), None),  # normal and abnormal codes: in doubt, not normal
    (("10828004",), None),  # positive
    (("17621005",), "Osteoarthritis of the left hip."),  # an abnormal word beside a normal code
    # A second coded conclusion that is no normal one (any finding coded without a display;
    # here chronic low back pain): in doubt, not normal. A review found it read as normal
    # beside a coded Normal.
    (("17621005", "278860009"), None),
    (("278860009",), "Normal study."),
])
def test_an_abnormal_code_or_word_beside_a_coded_conclusion_silences(run, codes, conclusion):
    resources = [patient("p1"), *cohort_conditions("p1"),
                 coded("xr1", *codes, conclusion=conclusion), BURSITIS]
    assert run(resources) is None


def test_report_without_conclusion_is_not_normal(run):
    resources = [patient("p1"), *cohort_conditions("p1"), report("xr1", conclusion=None),
                 BURSITIS]
    assert run(resources) is None


def test_radiograph_order_without_report_is_not_enough(run):
    order = service_request("p1", "xr-order", CPT, "73502", status="completed")
    resources = [patient("p1"), *cohort_conditions("p1"), order, BURSITIS]
    assert run(resources) is None


@pytest.mark.parametrize("normal_first", [True, False])
def test_the_latest_report_is_found_by_its_moment_not_its_day_or_bundle_order(run,
                                                                               normal_first):
    """Found by a clinical review: two reports on one day were ordered by the Bundle, and a
    report three hours later across a date line lost to an earlier one dated a day later."""
    normal = report("xr-hip", when="2026-06-01T09:00:00Z")
    later = report("xr-pelvis", when="2026-06-01T09:05:00Z", conclusion="Moderate osteoarthritis.")
    pair = [normal, later] if normal_first else [later, normal]
    assert run([patient("p1"), *cohort_conditions("p1"), *pair, BURSITIS]) is None
    east = report("xr-east", when="2026-06-02T08:00:00+10:00")  # 2026-06-01T22:00Z
    west = report("xr-west", when="2026-06-01T20:00:00-05:00",  # 2026-06-02T01:00Z: later
                  conclusion="Osteoarthritis.")
    assert run([patient("p1"), *cohort_conditions("p1"), east, west, BURSITIS]) is None


@pytest.mark.parametrize("abnormal_when", [
    "2026-08-02T06:00:00+10:00", "2026-08-01T15:00:00Z",
    "2026-07-31T12:00:00Z",  # before the UTC day, yet 1 August at UTC+14 (found by review)
])
def test_a_report_dated_by_its_day_may_be_any_moment_of_it(run, abnormal_when):
    """A review of the fix by moment: a normal report dated 2026-08-01 (no time) counted as
    that day's end in UTC, so it beat an abnormal one timed within that day somewhere."""
    normal = report("xr-day", when="2026-08-01")
    abnormal = report("xr-timed", when=abnormal_when, conclusion="Osteoarthritis.")
    assert run([patient("p1"), *cohort_conditions("p1"), normal, abnormal, BURSITIS]) is None
    later = report("xr-later", when="2026-08-03T12:00:00Z")  # clearly after that day: it decides
    card = run([patient("p1"), *cohort_conditions("p1"), abnormal, later, BURSITIS])
    assert card is not None and "2026-08-03" in card.detail


@pytest.mark.parametrize("day, abnormal_when", [("9999-12-31", "9999-12-30T20:00:00Z"),
                                               ("0001-01-01", "0001-01-02T10:00:00Z")])
def test_a_day_at_the_calendars_edge_is_still_any_moment_of_it(run, day, abnormal_when):
    """At year 1 and 9999 one end overflowed, and both ends lost their widening (found by
    review)."""
    if day.startswith("0001"):  # the abnormal report is the day-only one here
        normal = report("xr-timed", when=abnormal_when)
        abnormal = report("xr-day", when=day, conclusion="Osteoarthritis.")
    else:
        normal = report("xr-day", when=day)
        abnormal = report("xr-timed", when=abnormal_when, conclusion="Osteoarthritis.")
    assert run([patient("p1"), *cohort_conditions("p1"), normal, abnormal, BURSITIS]) is None


def test_an_undated_or_simultaneous_report_that_is_not_normal_leaves_it_in_doubt(run):
    undated = report("xr-undated", conclusion="Osteoarthritis.")
    del undated["effectiveDateTime"]
    normal = report("xr-normal", when="2026-08-01")
    assert run([patient("p1"), *cohort_conditions("p1"), normal, undated, BURSITIS]) is None
    twin = report("xr-twin", when="2026-08-01", conclusion="Osteoarthritis.")
    assert run([patient("p1"), *cohort_conditions("p1"), normal, twin, BURSITIS]) is None
    # Both normal: the card fires, naming the dated report.
    card = run([patient("p1"), *cohort_conditions("p1"), normal,
                report("xr-twin", when="2026-08-01"), BURSITIS])
    assert card is not None and "2026-08-01" in card.detail


def test_latest_final_report_decides(run):
    older_normal = report("xr-old", when="2025-01-10")
    newer_abnormal = report("xr-new", when="2026-08-01",
                            conclusion="Moderate osteoarthritis of the left hip.")
    resources = [patient("p1"), *cohort_conditions("p1"), older_normal, newer_abnormal,
                 BURSITIS]
    assert run(resources) is None
    # The other way round, the newer normal report is what counts.
    older_abnormal = report("xr-old", when="2025-01-10", conclusion="Osteoarthritis.")
    newer_normal = report("xr-new", when="2026-08-01", conclusion="Normal study.")
    resources = [patient("p1"), *cohort_conditions("p1"), older_abnormal, newer_normal,
                 BURSITIS]
    card = run(resources)
    assert card is not None
    assert "Normal study." in card.detail
    assert "2026-08-01" in card.detail


def test_silent_without_soft_tissue_problem(run):
    assert run(chart(soft_tissue=False)) is None


def test_resolved_soft_tissue_problem_does_not_count(run):
    resolved = condition("p1", "bursitis", ICD10CM, "M70.61", clinical="resolved")
    assert run(chart(resolved, soft_tissue=False)) is None


@pytest.mark.parametrize("code", ["M70.62", "M70.71", "M76.01", "M76.12"])
def test_each_soft_tissue_family_counts(run, code):
    assert run(chart(condition("p1", "st", ICD10CM, code), soft_tissue=False)) is not None


@pytest.mark.parametrize("mri", [
    mri_request("mri1", status="active"),
    mri_request("mri1", status="completed"),
    mri_request("mri1", status="draft", system=SNOMED, code="432672003"),
    mri_request("mri1", system=CPT, code="73721", body_site="Right hip"),
    report("mri1", code="36490-1", display="MR Hip - right WO contrast",
           conclusion="Gluteus medius tendinopathy."),
])
def test_silent_when_hip_mri_already_ordered_or_reported(run, mri):
    assert run(chart(mri)) is None


@pytest.mark.parametrize("status", ["entered-in-error", "revoked"])
def test_voided_mri_order_does_not_count(run, status):
    card = run(chart(mri_request("mri1", status=status)))
    assert card is not None


def test_knee_mri_does_not_count_as_hip_mri(run):
    assert run(chart(mri_request("mri1", system=CPT, code="73721", body_site="Left knee"))) \
        is not None


def test_rule_metadata(knowledge):
    assert RULE.id == "imaging-mri-hip"
    assert RULE.hooks == frozenset({"patient-view"})
