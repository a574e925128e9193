"""Every fixture scenario, three ways: rules on facts, HTTP with prefetch, HTTP with FHIR fetching.

The scenarios' expected outcomes were written from rules.md independently of the rule code, so a
disagreement here is a question about either the rule or the reading of the spec.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import responses

from cds_service.devtools import memory_fhir
from cds_service.devtools.scenarios import list_scenarios, load_scenario
from cds_service.facts.build import build_facts
from cds_service.fhir.record import build_record, validate
from cds_service.guidance.engine import evaluate
from cds_service.guidance.rule import RuleContext
from cds_service.guidance.settings import ALL_RULES, GuidanceSettings
from cds_service.knowledge import load_knowledge

FHIR = "https://fhir.example.org/r4"
SCENARIOS = list_scenarios()


@pytest.fixture
def client(settings):
    """Generous FHIR time budgets: these tests are about correctness, not latency (a loaded CI
    machine must not turn a slow mock into a 412)."""
    from cds_service import create_app

    return create_app(settings.with_overrides(fhir_timeout_s=10, fhir_deadline_s=20)).test_client()


def rule_ids(response) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {card["source"]["topic"]["code"] for card in response.get_json()["cards"]}


def test_there_are_scenarios_for_every_rule():
    fired = set()
    for name in SCENARIOS:
        fired |= load_scenario(name).expected_cards
    assert fired == set(ALL_RULES)


@pytest.mark.parametrize("name", SCENARIOS)
def test_rules_on_facts(name):
    scenario = load_scenario(name)
    knowledge = load_knowledge()
    settings = GuidanceSettings()
    record = build_record(scenario.resources, scenario.patient_id, knowledge)
    drafts = [validate(r, draft=True) for r in scenario.draft_orders]
    assert all(d is not None for d in drafts)
    facts = build_facts(
        patient_id=scenario.patient_id,
        record=record,
        draft_orders=drafts,
        selected=set(scenario.selections) if scenario.hook == "order-select" else None,
        now=datetime.now(UTC),
        settings=settings,
        knowledge=knowledge,
    )
    result = evaluate(facts, RuleContext(scenario.hook, settings, knowledge))
    assert not result.failed_rules
    assert {c.rule_id for c in result.cards} == set(scenario.expected_cards), scenario.notes
    if scenario.expected_missing_assessments is not None:
        assert set(facts.missing_assessments) == set(scenario.expected_missing_assessments)


@pytest.mark.parametrize("name", SCENARIOS)
def test_http_with_prefetch(client, name):
    scenario = load_scenario(name)
    service = scenario.service
    body = scenario.hook_request(dict(service.prefetch))
    response = client.post(f"/cds-services/{service.id}", json=body)
    assert rule_ids(response) == set(scenario.expected_cards), scenario.notes


@pytest.mark.parametrize("name", SCENARIOS)
def test_http_with_fhir_server_fetching(client, name):
    scenario = load_scenario(name)
    service = scenario.service

    def answer(request):
        parts = urlsplit(request.url)
        query = parts.path[len(urlsplit(FHIR).path) + 1 :]
        if parts.query:
            query += "?" + parts.query
        found = memory_fhir.search(scenario.resources, query)
        if found is None:
            return 404, {}, ""
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(found)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.GET, re.compile(re.escape(FHIR) + r"/.*"), callback=answer)
        body = scenario.hook_request(None, fhir_server=FHIR)
        response = client.post(f"/cds-services/{service.id}", json=body)
        assert len(mock.calls) == len(service.prefetch)
    assert rule_ids(response) == set(scenario.expected_cards), scenario.notes
