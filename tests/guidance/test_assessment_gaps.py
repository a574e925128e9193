"""assessment-gaps: one card listing only the assessments with no record, and how to close them."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.facts.model import ASSESSMENT_IDS
from cds_service.guidance.rules.assessment_gaps import GAPS, RULE, evaluate
from cds_service.guidance.settings import GuidanceSettings
from tests.api.test_core_rules import assert_conformant
from tests.builders import ICD10CM, LOINC, SNOMED, cohort_conditions, condition, patient

CPT = "http://www.ama-assn.org/go/cpt"
TITLES = {key: f"**{gap.title}**" for key, gap in GAPS.items()}


def observation(rid: str, *, system: str | None = LOINC, code: str | None = None,
                text: str | None = None, value: int = 5, when: str = "2026-10-01",
                status: str = "final") -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code:
        concept["coding"] = [{"system": system, "code": code}]
    if text:
        concept["text"] = text
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "code": concept,
        "effectiveDateTime": when,
        "valueInteger": value,
    }


def declined(obs: dict[str, Any], reason: str = "asked-declined") -> dict[str, Any]:
    """The observation with its value absent, and why (FHIR R4 obs-6)."""
    obs = {k: v for k, v in obs.items() if not k.startswith("value")}
    obs["dataAbsentReason"] = {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": reason}]}
    return obs


def declined_component(obs: dict[str, Any], index: int) -> dict[str, Any]:
    component = obs["component"][index]
    component.pop("valueQuantity")
    component["dataAbsentReason"] = {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
        "code": "not-performed"}]}
    return obs


def panel(rid: str, *codes: str, status: str = "final",
          code: dict[str, Any] | None = None) -> dict[str, Any]:
    """One Observation whose components carry the codes (orthostatic vitals as EHRs send them)."""
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "code": code or {"text": "Orthostatic vital signs"},
        "effectiveDateTime": "2026-06-01",
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": c}]},
             "valueQuantity": {"value": 70 + 10 * n, "unit": "/min",
                               "system": "http://unitsofmeasure.org", "code": "/min"}}
            for n, c in enumerate(codes)
        ],
    }


def procedure(rid: str, system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": rid,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
        "performedDateTime": "2024-03-01",
    }


def beighton_local(score: int = 5) -> dict[str, Any]:
    """A Beighton score under an EHR flowsheet code, named only in code.text."""
    return observation("beighton", system="urn:oid:1.2.840.114350.1.13.0.1.7.2.707679",
                       code="FS-3321", text="Beighton hypermobility score", value=score)


def chart(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [patient("p1"), *cohort_conditions("p1"), *extra]


@pytest.fixture
def run(make_facts, make_ctx):
    def go(resources, settings: GuidanceSettings | None = None):
        facts = make_facts(resources, settings=settings, strict=True)
        return evaluate(facts, make_ctx(settings=settings))

    return go


def listed(card) -> set[str]:
    return {key for key, title in TITLES.items() if title in card.detail}


def test_all_five_missing(run):
    card = run(chart())
    assert card is not None
    assert card.rule_id == "assessment-gaps"
    assert card.indicator == "info"
    assert listed(card) == set(ASSESSMENT_IDS)
    assert card.summary.startswith("5 of 5 ")
    assert not card.suggestions
    assert card.links, "the card links to its guideline source"
    assert_conformant(card.to_json())


def test_card_says_what_would_satisfy_each(run):
    detail = run(chart()).detail
    assert "Beighton score (0 to 9)" in detail
    for screen in ("PHQ-9", "GAD-7", "within the last 12 months"):
        assert screen in detail
    assert "standing" in detail and "tilt table test" in detail
    assert "anorectal manometry" in detail and "defecography" in detail
    for symptom in ("flushing", "urticaria", "gastrointestinal"):
        assert symptom in detail
    assert "POTS" in detail


SATISFIED_BY = {
    "Beighton under a local code, named in code.text": (
        [beighton_local()], "hypermobility"),
    "Beighton under the project code": (
        [observation("b2", system="urn:hypermobility-cds:codes", code="beighton-score", value=2)],
        "hypermobility"),
    "GAD-7 last month": (
        [observation("gad7", code="70274-6", when="2026-10-01")], "psychological-distress"),
    "PHQ-9 eleven months ago": (
        [observation("phq9", code="44261-6", when="2025-12-15")], "psychological-distress"),
    "PHQ-2 this year": (
        [observation("phq2", code="55758-7", when="2026-03-01")], "psychological-distress"),
    "active F41.1": (
        [condition("p1", "gad", ICD10CM, "F41.1")], "psychological-distress"),
    "active SNOMED depression": (
        [condition("p1", "dep", SNOMED, "35489007")], "psychological-distress"),
    "supine and standing heart rates": (
        [observation("hr1", code="68999-2", value=70), observation("hr2", code="69001-6",
                                                                    value=105)], "autonomic"),
    "sitting and standing heart rates": (
        [observation("hr1", code="69000-8", value=72), observation("hr2", code="69001-6",
                                                                    value=100)], "autonomic"),
    "supine and standing heart rates as components of one panel": (
        [panel("ortho", "68999-2", "69001-6")], "autonomic"),
    "sitting and standing heart rates as components of one panel": (
        [panel("ortho", "69000-8", "69001-6")], "autonomic"),
    "supine component beside a standing Observation": (
        [panel("ortho", "68999-2"), observation("hr2", code="69001-6", value=100)], "autonomic"),
    "PHQ-9 total as a component": (
        [panel("phq", "44261-6", code={"text": "PHQ-9 questionnaire"})],
        "psychological-distress"),
    "tilt table procedure": ([procedure("tilt", SNOMED, "14769009")], "autonomic"),
    "POTS G90.A": ([condition("p1", "pots", ICD10CM, "G90.A")], "autonomic"),
    "resolved POTS still counts (any time)": (
        [condition("p1", "pots", SNOMED, "371073003", clinical="resolved")], "autonomic"),
    "pelvic floor K59.02": ([condition("p1", "pf", ICD10CM, "K59.02")], "pelvic-floor"),
    "anorectal manometry CPT 91122": ([procedure("arm", CPT, "91122")], "pelvic-floor"),
    "defecography LOINC 72245-4": (
        [observation("defeco", code="72245-4")], "pelvic-floor"),
    "mast cell D89.42": ([condition("p1", "mcas", ICD10CM, "D89.42")], "mast-cell"),
}


@pytest.mark.parametrize("extra, satisfied", SATISFIED_BY.values(), ids=SATISFIED_BY.keys())
def test_each_record_satisfies_its_assessment(run, extra, satisfied):
    card = run(chart(*extra))
    assert card is not None
    assert listed(card) == set(ASSESSMENT_IDS) - {satisfied}
    assert card.summary.startswith("4 of 5 ")


NOT_SATISFIED_BY = {
    "PHQ-9 13 months ago": [observation("phq9", code="44261-6", when="2025-10-01")],
    "resolved anxiety": [condition("p1", "gad", ICD10CM, "F41.1", clinical="resolved")],
    "refuted depression": [condition("p1", "dep", ICD10CM, "F32.9", verification="refuted")],
    "standing heart rate only": [observation("hr2", code="69001-6", value=100)],
    "supine heart rate only": [observation("hr1", code="68999-2", value=70)],
    "panel with the supine heart rate only": [panel("ortho", "68999-2")],
    "panel with the standing heart rate only": [panel("ortho", "69001-6")],
    "panel entered in error": [
        panel("ortho", "68999-2", "69001-6", status="entered-in-error")],
    "entered-in-error GAD-7": [
        observation("gad7", code="70274-6", status="entered-in-error")],
    "invalid Beighton value (12)": [beighton_local(12)],
    "tilt table not done": [{**procedure("tilt", SNOMED, "14769009"), "status": "not-done"}],
    "anorectal manometry not done": [{**procedure("arm", CPT, "91122"), "status": "not-done"}],
    # A value that is absent is no result (found by review: a declined PHQ-9 closed the gap).
    "PHQ-9 declined": [declined(observation("phq9", code="44261-6"))],
    "orthostatic heart rates, the standing one not performed": [
        observation("hr1", code="68999-2", value=70),
        declined(observation("hr2", code="69001-6"), "not-performed")],
    "panel whose standing component was not performed": [
        declined_component(panel("ortho", "68999-2", "69001-6"), 1)],
}


@pytest.mark.parametrize("extra", NOT_SATISFIED_BY.values(), ids=NOT_SATISFIED_BY.keys())
def test_records_that_do_not_satisfy(run, extra):
    card = run(chart(*extra))
    assert listed(card) == set(ASSESSMENT_IDS)


def test_lists_exactly_the_missing_ones(run):
    card = run(chart(beighton_local(), condition("p1", "pots", ICD10CM, "G90.A"),
                     procedure("arm", CPT, "91122")))
    assert listed(card) == {"psychological-distress", "mast-cell"}
    assert card.summary.startswith("2 of 5 ")
    assert "distress screen" in card.summary and "mast cell" in card.summary
    assert "pelvic floor" not in card.summary.lower()


def test_a_single_gap_reads_as_one_of_the_five(run):
    """"1 of 5 key hypermobility assessment not on record: mast cell" read as a slip and named
    no condition (found by a card review)."""
    card = run(chart(beighton_local(), observation("gad7", code="70274-6"),
                     condition("p1", "pots", ICD10CM, "G90.A"),
                     condition("p1", "pf", ICD10CM, "K59.02")))
    assert listed(card) == {"mast-cell"}
    assert card.summary == (
        "1 of 5 key hypermobility assessments not on record: mast cell activation"
    )


def test_silent_when_all_five_are_on_record(run):
    resources = chart(
        beighton_local(),
        observation("gad7", code="70274-6"),
        observation("hr1", code="68999-2", value=70),
        observation("hr2", code="69001-6", value=104),
        procedure("arm", CPT, "91122"),
        condition("p1", "mcas", ICD10CM, "D89.42"),
    )
    assert run(resources) is None


def test_silent_out_of_cohort(run):
    # Chronic back pain, nothing about hypermobility: not this service's patient.
    resources = [patient("p1"), condition("p1", "lbp", SNOMED, "278860009")]
    assert run(resources) is None


def test_silent_with_low_beighton_and_no_diagnosis(run):
    resources = [patient("p1"), condition("p1", "lbp", SNOMED, "278860009"), beighton_local(2)]
    assert run(resources) is None


def test_in_cohort_by_beighton_alone(run):
    resources = [patient("p1"), condition("p1", "lbp", SNOMED, "278860009"), beighton_local(6)]
    card = run(resources)
    assert card is not None
    assert "hypermobility" not in listed(card)


def test_psych_lookback_is_a_setting(run):
    old_phq9 = observation("phq9", code="44261-6", when="2025-10-01")  # 13 months ago
    default = run(chart(old_phq9))
    assert "psychological-distress" in listed(default)
    longer = GuidanceSettings(psych_screen_lookback_days=540)
    card = run(chart(old_phq9), settings=longer)
    assert "psychological-distress" not in listed(card)
    shorter = GuidanceSettings(psych_screen_lookback_days=182)
    assert "within the last 6 months" in run(chart(), settings=shorter).detail


def test_rule_metadata(knowledge):
    assert RULE.id == "assessment-gaps"
    assert RULE.hooks == frozenset({"patient-view"})
