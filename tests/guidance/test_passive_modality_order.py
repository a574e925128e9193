"""passive-modality-order: braces, interferential and low-level laser point to active rehab."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.guidance.rules import rehab_intensity
from cds_service.guidance.rules.passive_modality_order import RULE, evaluate
from cds_service.guidance.settings import GuidanceSettings
from tests.api.test_core_rules import assert_conformant
from tests.builders import SNOMED, cohort_conditions, condition, patient, service_request

HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CPT = "http://www.ama-assn.org/go/cpt"
COHORT = [patient("p1"), *cohort_conditions("p1")]


def device(rid: str, *, code: str | None = None, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code:
        concept["coding"] = [{"system": HCPCS, "code": code}]
    if text:
        concept["text"] = text
    return {
        "resourceType": "DeviceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "codeCodeableConcept": concept,
    }


def text_only(rid: str, text: str) -> dict[str, Any]:
    """A ServiceRequest typed as free text, with no coding at all."""
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": {"text": text},
    }


@pytest.fixture
def run(make_facts, make_ctx):
    def evaluate_for(drafts, *, resources=COHORT, hook="order-sign", selected=None, settings=None):
        facts = make_facts(resources, drafts, selected=selected, settings=settings)
        return evaluate(facts, make_ctx(hook, settings=settings))

    return evaluate_for


def actions(card) -> list[list[tuple[str, str]]]:
    """Each suggestion's actions as (type, target) pairs; a create's target is its code."""
    return [
        [
            (a.type, a.resourceId or a.resource["code"]["coding"][0]["code"])
            for a in suggestion.actions
        ]
        for suggestion in card.suggestions
    ]


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_brace_by_hcpcs_code_is_replaced_by_rehabilitation(run, hook):
    selected = {"DeviceRequest/br"} if hook == "order-select" else None
    card = run([device("br", code="L0625")], hook=hook, selected=selected)
    assert card is not None
    body = card.to_json()
    assert_conformant(body)  # also validates each created resource with fhir.resources R4B
    assert body["indicator"] == "info"
    assert body["source"]["topic"]["code"] == "passive-modality-order"
    assert body["summary"] == (
        "Little benefit from lumbar support or brace alone: prefer active rehabilitation"
    )
    # A code-only order is named from the knowledge files, not shown as a bare code.
    assert (
        "Draft order: Lumbar orthosis, flexible, prefabricated off-the-shelf "
        "(lumbar support or brace)" in body["detail"]
    )
    assert body["selectionBehavior"] == "at-most-one"
    assert actions(card) == [
        [("create", "91251008"), ("delete", "DeviceRequest/br")],
        [("create", "52052004"), ("delete", "DeviceRequest/br")],
    ]
    assert [s.isRecommended for s in card.suggestions] == [True, None]
    assert card.suggestions[0].actions[-1].description == (
        "Remove the draft order for Lumbar orthosis, flexible, prefabricated off-the-shelf "
        "(lumbar support or brace)"
    )
    assert [r["code"] for r in body["overrideReasons"]] == ["adjunct-to-active-rehab"]


def test_created_referrals_are_complete_draft_service_requests(run):
    card = run([device("br", code="L0625")])
    created = [a.resource for s in card.suggestions for a in s.actions if a.type == "create"]
    physio, programme = (ServiceRequest.model_validate(r) for r in created)
    assert physio.status == programme.status == "draft"
    assert physio.intent == "order"
    assert physio.subject.reference == "Patient/p1"
    assert physio.code.coding[0].system == SNOMED and physio.code.text
    assert float(programme.quantityQuantity.value) == 100
    assert programme.quantityQuantity.code == "h"


def test_suggested_programme_never_trips_rehab_intensity(run, make_facts, make_ctx):
    card = run([device("br", code="L0625")])
    programme = card.suggestions[1].actions[0].resource
    facts = make_facts(COHORT, [programme])
    assert facts.services_with("multidisciplinary-programme")[0].planned_hours == 100
    assert rehab_intensity.evaluate(facts, make_ctx("order-sign")) is None


def test_programme_suggestion_follows_the_hours_setting(run):
    settings = GuidanceSettings(programme_min_hours=150)
    card = run([device("br", code="L0625")], settings=settings)
    programme = card.suggestions[1].actions[0].resource
    assert programme["quantityQuantity"]["value"] == 150
    assert "150 hours" in programme["note"][0]["text"]


@pytest.mark.parametrize(
    "order,kind",
    [
        (device("ls", text="Lumbar support belt, elastic"), "lumbar support or brace"),
        (service_request("p1", "las", HCPCS, "S8948"), "low-level laser therapy"),
        (
            service_request("p1", "ift", CPT, "97014", text="Interferential current therapy"),
            "interferential therapy",
        ),
        (text_only("llt", "Low level laser to lumbar spine"), "low-level laser therapy"),
        (text_only("bb", "Back brace fitting"), "lumbar support or brace"),
    ],
)
def test_each_passive_modality_is_recognised(run, order, kind):
    card = run([order])
    assert card is not None
    assert f"({kind})" in card.detail
    reference = f"{order['resourceType']}/{order['id']}"
    assert all(s.actions[-1].resourceId == reference for s in card.suggestions)


@pytest.mark.parametrize(
    "text",
    [
        "Lumbar-sacral orthosis, flexible, prefabricated",
        "Lumbar sacral orthosis",
        "Lumbosacral orthosis",
        "Lumbar supports",
        "LUMBAR ORTHOSES, custom fitted",
        "Back braces x2",
        "Lumbar brace, prefabricated",  # a back brace by another name: it drew no card
        "Lumbosacral brace",
        "Lumbar-sacral brace, custom",
        "Lumbosacral support",  # a lumbar support by its lumbar-sacral name: no card before
        "Lumbar-sacral support belt",
        "Lumbar-sacral braces",
    ],
)
def test_lumbar_sacral_and_plural_brace_texts_are_recognised(run, text):
    """rules.md: a lumbar / lumbar-sacral orthosis, or text naming a lumbar support, back brace
    or lumbar orthosis, is a passive modality; EHR device names use these spellings."""
    card = run([device("lso", text=text)])
    assert card is not None
    assert "(lumbar support or brace)" in card.detail


@pytest.mark.parametrize(
    "text",
    [
        "Lumbar puncture",
        "MRI lumbar spine without contrast",
        "Lumbosacral spine radiograph",
        "Sacral pressure ulcer dressing",
        "Knee brace, hinged",
        "Physical therapy for lumbar-sacral pain",
    ],
)
def test_unrelated_lumbar_or_brace_texts_are_not_flagged(run, text):
    assert run([text_only("x", text)]) is None


def test_active_treatment_is_not_flagged(run):
    assert run([service_request("p1", "pt", SNOMED, "91251008", text="Physical therapy")]) is None


def test_order_select_only_looks_at_the_selected_order(run):
    drafts = [device("br", code="L0625"), service_request("p1", "pt", SNOMED, "91251008")]
    assert run(drafts, hook="order-select", selected={"ServiceRequest/pt"}) is None
    assert run(drafts, hook="order-select", selected={"DeviceRequest/br"}) is not None


def test_rehabilitation_in_the_same_order_set_means_remove_only(run):
    physio = service_request("p1", "pt", SNOMED, "91251008", text="Physical therapy")
    card = run(
        [device("br", code="L0625"), physio], hook="order-select", selected={"DeviceRequest/br"}
    )
    assert actions(card) == [[("delete", "DeviceRequest/br")]]
    assert "Physical therapy, in this order set" in card.detail
    assert_conformant(card.to_json())


def test_active_rehabilitation_on_record_means_remove_only(run):
    ongoing = service_request("p1", "pt", SNOMED, "91251008", status="active")
    card = run([device("br", code="L0625")], resources=[*COHORT, ongoing])
    assert actions(card) == [[("delete", "DeviceRequest/br")]]


def test_completed_rehabilitation_still_gets_a_new_referral(run):
    done = service_request("p1", "pt", SNOMED, "91251008", status="completed")
    card = run([device("br", code="L0625")], resources=[*COHORT, done])
    assert len(card.suggestions) == 2


def test_several_passive_orders_are_removed_together(run):
    card = run([device("br", code="L0625"), service_request("p1", "las", HCPCS, "S8948")])
    assert "lumbar support or brace, low-level laser therapy alone" in card.summary
    first = actions(card)[0]
    assert first == [
        ("create", "91251008"),
        ("delete", "DeviceRequest/br"),
        ("delete", "ServiceRequest/las"),
    ]


def test_order_without_id_still_advises_but_offers_no_replacement(run):
    order = device("br", code="L0625")
    del order["id"]
    card = run([order])
    assert card is not None and card.suggestions == ()
    assert_conformant(card.to_json())


def test_outside_cohort_gets_nothing(run):
    only_pain = [patient("p1"), condition("p1", "lbp", SNOMED, "278860009")]
    assert run([device("br", code="L0625")], resources=only_pain) is None


def test_rule_metadata(knowledge):
    assert RULE.hooks == frozenset({"order-select", "order-sign"})
    assert RULE.indicator == "info"


def test_a_device_named_by_reference_is_read(run, make_facts):
    """code[x] may be a Reference to a Device (R4): a brace named only by the reference's
    display drew no card (found by a clinical review). On record, it is kept by the relevance
    filter too."""
    brace = device("br")
    del brace["codeCodeableConcept"]
    brace["codeReference"] = {"display": "Lumbar support brace, flexible (L0625)"}
    card = run([brace])
    assert card is not None and "Lumbar support brace" in card.detail
    on_record = {**brace, "status": "active"}
    [service] = make_facts([*COHORT, on_record]).services_with("lumbar-orthosis")
    assert service.name == "Lumbar support brace, flexible (L0625)"


def physio_order(status: str, authored: str) -> dict[str, Any]:
    order = service_request("p1", "pt", SNOMED, "91251008", status=status)
    order["authoredOn"] = authored
    return order


def test_rehabilitation_under_way_changes_the_suggestion_to_removal_only(run):
    card = run([device("br", code="L0625")],
               resources=[*COHORT, physio_order("active", "2026-09-01")])
    assert [s.label for s in card.suggestions] == [
        "Remove the passive treatment (rehabilitation is already ordered)"]
    assert ("Active rehabilitation already ordered: Physical therapy procedure "
            "(regime/therapy), on record (active, authored 2026-09-01)") in card.detail


def test_an_active_rehabilitation_order_from_years_ago_is_not_rehabilitation_under_way(run):
    """Found by a clinical review: an "active" physiotherapy order from 2019 took the
    replacement suggestions away and was shown as current, while rehab-referral on the same
    chart said there was no rehabilitation in the last 12 months."""
    card = run([device("br", code="L0625")],
               resources=[*COHORT, physio_order("active", "2019-03-01")])
    assert [s.label for s in card.suggestions][:2] == [
        "Replace with physical therapy (structured exercise)",
        "Replace with an intensive multidisciplinary programme"]
    assert "already ordered" not in card.detail


def test_a_paused_rehabilitation_order_is_not_rehabilitation_under_way(run):
    """One test with rehab-referral (compose.ongoing_rehabilitation): an on-hold order counted
    here as under way, while rehab-referral on the same chart did not count it."""
    card = run([device("br", code="L0625")],
               resources=[*COHORT, physio_order("on-hold", "2026-09-01")])
    assert [s.label for s in card.suggestions][:2] == [
        "Replace with physical therapy (structured exercise)",
        "Replace with an intensive multidisciplinary programme"]


def test_a_rehabilitation_procedure_in_progress_is_rehabilitation_under_way(run):
    """Found by review: rehab-referral counted an in-progress physiotherapy Procedure as
    rehabilitation under way (and stayed silent), while this rule, reading ServiceRequests only,
    still offered to replace the brace with physical therapy on the same chart."""
    therapy = {
        "resourceType": "Procedure", "id": "pt-course", "status": "in-progress",
        "subject": {"reference": "Patient/p1"}, "performedDateTime": "2026-09-01",
        "code": {"coding": [{"system": SNOMED, "code": "91251008"}]},
    }
    card = run([device("br", code="L0625")], resources=[*COHORT, therapy])
    assert [s.label for s in card.suggestions] == [
        "Remove the passive treatment (rehabilitation is already ordered)"]
    assert "on record (in-progress, performed 2026-09-01)" in card.detail
