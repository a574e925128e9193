"""Checks every rule shares: its hooks as rules.md lists them, known concepts and sources, and
card wording of our own (no run of 8 words copied from the source guidance)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from cds_service.devtools.scenarios import list_scenarios, load_scenario
from cds_service.facts.build import build_facts
from cds_service.fhir.record import build_record, validate
from cds_service.guidance.engine import evaluate
from cds_service.guidance.rule import RuleContext
from cds_service.guidance.rules import ALL
from cds_service.guidance.settings import ALL_RULES, GuidanceSettings
from tests.conftest import SHARED

ORDER = {"order-select", "order-sign"}
# The hooks column of the rules.md table.
HOOKS = {
    "rehab-referral": {"patient-view"},
    "opioid-active": {"patient-view"},
    "opioid-order": ORDER,
    "corticosteroid-order": ORDER,
    "passive-modality-order": ORDER,
    "rehab-intensity": ORDER,
    "imaging-radiograph-first": {"patient-view"} | ORDER,
    "imaging-mri-hip": {"patient-view"},
    "assessment-gaps": {"patient-view"},
    "pots-management": {"patient-view"},
    "possible-hypermobility": {"patient-view"},
}


def test_catalogue_order_and_ids():
    assert tuple(rule.id for rule in ALL) == ALL_RULES
    assert set(HOOKS) == set(ALL_RULES)


@pytest.mark.parametrize("rule", ALL, ids=lambda r: r.id)
def test_rule_metadata(rule, knowledge):
    assert rule.hooks == HOOKS[rule.id]
    assert rule.title and rule.when and rule.then
    assert all(concept in knowledge for concept in rule.concepts)
    assert rule.sources and set(rule.sources) <= knowledge.source_keys()
    module_doc = rule.evaluate.__module__
    assert __import__(module_doc, fromlist=["_"]).__doc__.startswith(rule.id)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@pytest.mark.skipif(not (SHARED / "clinical" / "source-guidance.txt").exists(),
                    reason="../shared/clinical/source-guidance.txt not available")
def test_no_card_copies_the_source_text(knowledge):
    source = _runs(_words((SHARED / "clinical" / "source-guidance.txt").read_text()), 8)
    settings = GuidanceSettings()
    seen: set[str] = set()
    for name in list_scenarios():
        scenario = load_scenario(name)
        record = build_record(scenario.resources, scenario.patient_id, knowledge)
        facts = build_facts(
            patient_id=scenario.patient_id,
            record=record,
            draft_orders=[validate(r) for r in scenario.draft_orders],
            selected=set(scenario.selections) if scenario.hook == "order-select" else None,
            now=datetime.now(UTC),
            settings=settings,
            knowledge=knowledge,
        )
        for card in evaluate(facts, RuleContext(scenario.hook, settings, knowledge)).cards:
            seen.add(card.rule_id)
            advice = (card.detail or "").split("**Source:**")[0]
            ours = " ".join([card.summary, advice, *(s.label for s in card.suggestions)])
            copied = _runs(_words(ours), 8) & source
            assert not copied, (card.rule_id, sorted(copied)[:3])
    assert seen == set(ALL_RULES)
