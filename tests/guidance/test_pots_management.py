"""pots-management: the order of POTS treatment, for a patient in cohort with active POTS."""

from __future__ import annotations

import pytest

from cds_service.guidance.rules.pots_management import RULE, evaluate
from tests.api.test_core_rules import assert_conformant
from tests.builders import ICD10CM, SNOMED, cohort_conditions, condition, patient


@pytest.fixture
def run(make_facts, make_ctx):
    def go(resources):
        return evaluate(make_facts(resources, strict=True), make_ctx())

    return go


def chart(*extra):
    return [patient("p1"), *cohort_conditions("p1"), *extra]


@pytest.mark.parametrize("system, code", [(ICD10CM, "G90.A"), (SNOMED, "371073003")])
def test_fires_for_active_pots(run, system, code, knowledge):
    card = run(chart(condition("p1", "pots", system, code)))
    assert card is not None
    assert card.rule_id == "pots-management"
    assert card.indicator == "info"
    assert "POTS" in card.summary
    display = knowledge.coding("pots", code).display
    assert f"Active POTS: {display} ({code})" in card.detail
    assert not card.suggestions
    assert_conformant(card.to_json())


def test_advice_puts_lifestyle_first_and_pyridostigmine_after_the_others(run):
    detail = run(chart(condition("p1", "pots", ICD10CM, "G90.A"))).detail
    lowered = detail.lower()
    for measure in ("fluid and salt", "compression", "counter-pressure", "exercise training"):
        assert measure in lowered
    lifestyle = lowered.index("fluid and salt")
    pyridostigmine = lowered.index("pyridostigmine")
    for drug in ("fludrocortisone", "midodrine", "droxidopa"):
        assert lifestyle < lowered.index(drug) < pyridostigmine
    assert "second-line" in lowered
    assert "supine hypertension" in lowered
    assert "Pyridostigmine in Dysautonomia" in detail


def test_dotless_icd10_code_counts(run):
    assert run(chart(condition("p1", "pots", ICD10CM, "G90A"))) is not None


@pytest.mark.parametrize("clinical", ["resolved", "inactive", "remission"])
def test_silent_when_pots_not_active(run, clinical):
    assert run(chart(condition("p1", "pots", ICD10CM, "G90.A", clinical=clinical))) is None


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
def test_silent_when_pots_refuted_or_in_error(run, verification):
    pots = condition("p1", "pots", ICD10CM, "G90.A", verification=verification)
    assert run(chart(pots)) is None


def test_silent_without_pots(run):
    assert run(chart()) is None


def test_silent_out_of_cohort(run):
    # POTS and hip pain, but no hypermobility diagnosis or Beighton score.
    resources = [patient("p1"), condition("p1", "hip", ICD10CM, "M25.551"),
                 condition("p1", "pots", ICD10CM, "G90.A")]
    assert run(resources) is None


def test_silent_in_hypermobility_without_chronic_pain(run):
    resources = [patient("p1"), condition("p1", "heds", ICD10CM, "Q79.62"),
                 condition("p1", "pots", ICD10CM, "G90.A")]
    assert run(resources) is None


def test_rule_metadata(knowledge):
    assert RULE.id == "pots-management"
    assert RULE.hooks == frozenset({"patient-view"})
