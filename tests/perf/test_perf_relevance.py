"""The fast relevance filter and the knowledge memos answer exactly as the plain versions did.

The filter decides which resources the rules ever see, so a speed-up there must not change a
single decision. The oracle below is the filter as first written (codes via ``concepts_of`` on
every coding, then each text against each concept's own pattern), kept here as the reference.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.charts import ORDER_SIGN_SCENARIO, PATIENT_VIEW_SCENARIO, build_chart
from cds_service.devtools.scenarios import (
    list_patients,
    list_scenarios,
    load_patient,
    load_scenario,
)
from cds_service.fhir.record import (
    CODE_FIELDS,
    COMPONENT_CONCEPTS,
    TEXT_CONCEPTS,
    build_record,
    is_relevant,
)
from cds_service.knowledge import DEFAULT_DATA_DIR, load_knowledge
from cds_service.knowledge import store as store_module
from cds_service.knowledge.store import Knowledge
from cds_service.knowledge.terms import TermScreen


def reference_is_relevant(resource: dict[str, Any], knowledge: Knowledge) -> bool:
    """The original, unoptimised filter (for well-typed JSON, where it never raised)."""
    resource_type = resource.get("resourceType")
    if resource_type in ("Patient", "Medication"):
        return True
    if resource_type not in CODE_FIELDS:
        return False
    if resource_type == "MedicationRequest" and (
        resource.get("medicationReference") or resource.get("contained")
    ):
        return True
    pairs, texts = [], []
    for name in CODE_FIELDS[resource_type]:
        concept = resource.get(name)
        if isinstance(concept, dict):
            if isinstance(concept.get("text"), str):
                texts.append(concept["text"])
            for coding in concept.get("coding") or ():
                if isinstance(coding, dict):
                    pairs.append((coding.get("system"), coding.get("code")))
                    if isinstance(coding.get("display"), str):
                        texts.append(coding["display"])
    if any(knowledge.concepts_of(system, code) for system, code in pairs):
        return True
    if resource_type == "Observation":  # components: codes of the assessment concepts only
        for component in resource.get("component") or ():
            concept = component.get("code") if isinstance(component, dict) else None
            for coding in (concept or {}).get("coding") or ():
                if isinstance(coding, dict) and COMPONENT_CONCEPTS & knowledge.concepts_of(
                    coding.get("system"), coding.get("code")
                ):
                    return True
    return any(
        knowledge.text_matches(concept, text)
        for concept in TEXT_CONCEPTS.get(resource_type, ())
        for text in texts
    )


def every_fixture_resource() -> list[dict[str, Any]]:
    resources = [r for pid in list_patients() for r in load_patient(pid)]
    for name in list_scenarios():
        resources += load_scenario(name).draft_orders
    return resources


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return load_knowledge()


def test_same_decision_as_the_reference_on_every_fixture_and_chart_resource(knowledge):
    resources = every_fixture_resource()
    resources += build_chart(PATIENT_VIEW_SCENARIO, 1_000).scenario.resources
    resources += build_chart(ORDER_SIGN_SCENARIO, 1_000).scenario.resources
    decisions = [(is_relevant(r, knowledge), reference_is_relevant(r, knowledge))
                 for r in resources]
    assert all(fast == slow for fast, slow in decisions)
    # Both kinds occur, so the comparison covers both answers.
    assert {fast for fast, _ in decisions} == {True, False}


def test_text_only_orders_are_still_recognised(knowledge):
    order = {
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {"text": "traMADol 50 mg oral tablet"},
    }
    brace = {"resourceType": "DeviceRequest", "codeCodeableConcept": {"text": "Lumbar support"}}
    assert is_relevant(order, knowledge) == reference_is_relevant(order, knowledge)
    assert is_relevant(brace, knowledge) == reference_is_relevant(brace, knowledge)
    assert is_relevant(order, knowledge)
    assert not is_relevant(
        {"resourceType": "MedicationRequest",
         "medicationCodeableConcept": {"text": "ibuprofen 400 mg oral tablet"}},
        knowledge,
    )


def _panel(*codings: dict[str, Any], text: str = "Orthostatic vital signs") -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": text},
            "component": [{"code": {"coding": [c]}} for c in codings]}


LOINC = "http://loinc.org"


@pytest.mark.parametrize(
    ("resource", "relevant"),
    [
        (_panel({"system": LOINC, "code": "68999-2"}, {"system": LOINC, "code": "69001-6"}),
         True),
        (_panel({"system": LOINC, "code": "8867-4"}, {"system": LOINC, "code": "69001-6"}), True),
        (_panel({"system": LOINC, "code": "44261-6"}, text="PHQ-9"), True),
        # Components whose codes no assessment reads (a blood pressure panel), or broken ones.
        (_panel({"system": LOINC, "code": "8480-6"}, {"system": LOINC, "code": "8462-4"}),
         False),
        ({**_panel(), "component": [{"code": {"text": "Heart rate --standing"}}]}, False),
        ({**_panel(), "component": "68999-2"}, False),
        ({**_panel(), "component": [None, {"code": []}, {"code": {"coding": {"code": "x"}}}]},
         False),
        # Only an Observation's components are looked at.
        ({"resourceType": "Condition", "code": {"text": "x"},
          "component": [{"code": {"coding": [{"system": LOINC, "code": "69001-6"}]}}]}, False),
    ],
)
def test_observation_components_with_assessment_codes_are_kept(knowledge, resource, relevant):
    assert knowledge.concept_ids() >= COMPONENT_CONCEPTS
    assert is_relevant(resource, knowledge) is relevant
    assert reference_is_relevant(resource, knowledge) is relevant


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": ["Condition"]},
        {"resourceType": {"x": 1}},
        {"resourceType": "Condition", "code": {"coding": [{"system": ["x"], "code": "M35.7"}]}},
        {"resourceType": "Condition",
         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": 357}]}},
        {"resourceType": "Condition",
         "code": {"coding": [{"system": {"a": 1}, "code": {"b": 2}}]}},
        {"resourceType": "Observation", "code": {"coding": "nope", "text": 5}},
        {"resourceType": "Observation", "code": {"coding": [{"display": ["Beighton"]}]}},
    ],
)
def test_wrongly_typed_json_is_passed_over_not_a_crash(knowledge, resource):
    assert is_relevant(resource, knowledge) is False
    record = build_record([resource], "p1", knowledge)
    assert record.skipped_irrelevant == 1


def test_a_wrongly_typed_coding_does_not_hide_a_valid_one(knowledge):
    resource = {
        "resourceType": "Condition",
        "code": {"coding": [
            {"system": ["x"], "code": 1},
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M35.7"},
        ]},
    }
    assert is_relevant(resource, knowledge)


def test_text_matches_any_agrees_with_each_concept_alone(knowledge):
    concept_sets = {tuple(c) for c in TEXT_CONCEPTS.values()}
    concept_sets.add(("hip-site",))
    terms = [t for concepts in concept_sets for c in concepts
             for t in knowledge.concept(c).terms]
    texts = terms + [f"{t} 5 mg" for t in terms] + [f"x{t}" for t in terms] + [
        "", "Heart rate", "fludrocortisone 0.1 mg", "low-level laser", "LOW LEVEL LASER",
        "tramadol/APAP", "oxycodone-acetaminophen", "codeinex", "Beighton hypermobility score",
    ]
    assert terms
    for concepts, text in itertools.product(sorted(concept_sets), texts):
        expected = any(knowledge.text_matches(c, text) for c in concepts)
        assert knowledge.text_matches_any(concepts, text) == expected, (concepts, text)


def test_text_matches_any_rejects_unknown_concepts(knowledge):
    with pytest.raises(KeyError):
        knowledge.text_matches_any(("no-such-concept",), "anything")


def test_concepts_of_memo_gives_the_same_answers_and_stays_bounded(monkeypatch):
    monkeypatch.setattr(store_module, "_MEMO_MAX", 16)
    knowledge = Knowledge(DEFAULT_DATA_DIR)
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    first = knowledge.concepts_of(icd, "M35.7")
    assert "hypermobility-diagnosis" in first
    for n in range(100):  # far more distinct codes than the memo holds
        assert knowledge.concepts_of(icd, f"Z{n:02d}.9") == frozenset()
        assert len(knowledge._code_memo) <= 16
    assert knowledge.concepts_of(icd, "M35.7") == first
    assert knowledge.concepts_of(icd, "M357") == first
    assert knowledge.concepts_of(None, "M35.7") == frozenset()
    assert knowledge.concepts_of(icd, "") == frozenset()


def test_a_client_s_very_long_code_is_looked_up_but_never_remembered():
    """A request may carry a megabyte-long "code"; remembering it would keep it in the process
    for good (300 such requests took a worker from 88 to 415 MiB)."""
    knowledge = Knowledge(DEFAULT_DATA_DIR)
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    assert knowledge.concepts_of(icd, "M35.7" + "0" * 500_000) == frozenset()
    assert knowledge.concepts_of("x" * 100_000, "M35.7") == frozenset()
    assert knowledge.concepts_of(icd, "M35.7")  # short ones still are, and still match
    assert max(len(code) + len(system or "") for system, code in knowledge._code_memo) < 300


@pytest.mark.parametrize(
    "text,display,relevant",
    [
        ("lumbar", "support", False),  # the term's words in two texts are not the term
        ("back", "brace", False),
        ("knee brace", "lumbar support", True),
        ("elastic bandage", "Back-brace", True),
    ],
)
def test_a_term_is_found_within_one_text_never_across_two(knowledge, text, display, relevant):
    request = {
        "resourceType": "DeviceRequest",
        "codeCodeableConcept": {"text": text, "coding": [{"display": display}]},
    }
    assert is_relevant(request, knowledge) is relevant
    assert reference_is_relevant(request, knowledge) is relevant


# Texts built from pieces of the real terms, their case and separator variants, and characters
# whose Unicode case folding meets ASCII letters (Kelvin sign, long s, dotted capital I).
def _term_pieces() -> list[str]:
    knowledge = load_knowledge()
    return sorted({
        piece
        for concepts in TEXT_CONCEPTS.values() for concept in concepts
        for term in knowledge.concept(concept).terms
        for piece in (term, term.upper(), term.title(), term[:4], term[2:],
                      term.replace(" ", "-"), term.replace("s", "\u017f").replace("k", "\u212a"))
    })


_TEXTS = st.lists(
    st.one_of(
        st.deferred(lambda: st.sampled_from(_term_pieces())),  # knowledge loaded when drawn
        st.sampled_from([" ", "-", "_", "/", "|", "x", "5", "\u212a", "\u017f", "\u0130", "é"]),
        st.text(max_size=4),
    ),
    max_size=6,
).map("".join)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS)
def test_the_screen_before_the_term_regex_never_changes_an_answer(knowledge, text):
    for concepts in {tuple(c) for c in TEXT_CONCEPTS.values()}:
        expected = any(knowledge.text_matches(c, text) for c in concepts)
        assert knowledge.text_matches_any(concepts, text) == expected, (concepts, text)


def test_the_screen_passes_every_text_it_cannot_rule_out():
    screen = TermScreen(["Beighton", "low level laser"])
    assert not screen.may_match("Heart rate")  # ASCII without either first word: no regex
    assert screen.may_match("BEIGHTON score")
    assert screen.may_match("LOW-level")  # the first word is enough to ask the regex
    assert screen.may_match("\u212a")  # not ASCII: always the regex
    assert TermScreen(["caf\u00e9"]).may_match("Heart rate")  # a term not ASCII: always
