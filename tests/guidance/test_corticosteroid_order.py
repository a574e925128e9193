"""corticosteroid-order: a draft systemic corticosteroid in a cohort patient gets a warning."""

from __future__ import annotations

import pytest

from cds_service.guidance.rules.corticosteroid_order import RULE, evaluate
from tests.api.test_core_rules import assert_conformant
from tests.builders import (
    ICD10CM,
    SNOMED,
    cohort_conditions,
    condition,
    medication_request,
    patient,
)

COHORT = [patient("p1"), *cohort_conditions("p1")]


def draft(rid, text=None, code=None):
    return medication_request("p1", rid, text=text, code=code)


@pytest.fixture
def run(make_facts, make_ctx):
    def evaluate_for(drafts, *, resources=COHORT, hook="order-sign", selected=None):
        facts = make_facts(resources, drafts, selected=selected)
        return evaluate(facts, make_ctx(hook))

    return evaluate_for


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_oral_prednisone_is_flagged_with_removal(run, hook):
    selected = {"MedicationRequest/pred"} if hook == "order-select" else None
    card = run([draft("pred", "prednisone 20 mg oral tablet")], hook=hook, selected=selected)
    assert card is not None
    body = card.to_json()
    assert_conformant(body)
    assert body["indicator"] == "warning"
    assert body["source"]["topic"]["code"] == "corticosteroid-order"
    assert "prednisone 20 mg oral tablet" in body["summary"]
    assert "placebo" in body["summary"]
    assert "Draft order: prednisone 20 mg oral tablet" in body["detail"]
    assert body["selectionBehavior"] == "at-most-one"
    [suggestion] = body["suggestions"]
    assert suggestion["isRecommended"] is True
    assert suggestion["actions"] == [
        {
            "type": "delete",
            "description": "Remove the draft order for prednisone 20 mg oral tablet",
            "resourceId": "MedicationRequest/pred",
        }
    ]
    assert [(r["code"], r["display"]) for r in body["overrideReasons"]] == [
        ("other-indication", "Prescribed for another indication")
    ]


@pytest.mark.parametrize(
    "order",
    [
        draft("rx", code="8640"),  # prednisone ingredient, no form stated: taken as systemic
        draft("mp", "methylprednisolone 125 mg intravenous injection"),
        draft("dx", "dexamethasone 8 mg intramuscular injection"),
        draft("hc", "hydrocortisone 10 mg tablet"),  # no adrenal insufficiency: a steroid course
    ],
)
def test_other_systemic_forms_are_flagged(run, order):
    card = run([order])
    assert card is not None
    assert card.suggestions[0].actions[0].resourceId == f"MedicationRequest/{order['id']}"


@pytest.mark.parametrize(
    "order",
    [
        draft("top", "hydrocortisone 1% cream"),
        draft("inh", "triamcinolone inhalation aerosol"),
        draft("eye", "dexamethasone 0.1% ophthalmic suspension"),
        draft("ia", "triamcinolone 40 mg intra-articular injection"),
        draft("flu", "fludrocortisone 0.1 mg tablet"),
        draft("apap", "acetaminophen 500 mg tablet", code="161"),
    ],
)
def test_non_systemic_products_are_not_flagged(run, order):
    assert run([order]) is None


@pytest.mark.parametrize(
    "text",
    [
        "ciprofloxacin 0.3% / dexamethasone 0.1% otic suspension",
        "dexamethasone 0.1% eye drops",
        "hydrocortisone acetate 1% ear drops",
        "hydrocortisone 100 mg/60 mL rectal enema",
        "hydrocortisone 25 mg suppository",
        "betamethasone valerate 0.12% foam",
        "triamcinolone 0.1% dental paste",
        "triamcinolone acetonide 0.1% oral paste",  # "oral" here is the mouth lining: paste wins
        "betamethasone dipropionate 0.05% shampoo",
        "triamcinolone 10 mg/mL intralesional injection",  # into a lesion, like intra-articular
        "dexamethasone 0.7 mg intravitreal implant",
        # RxNorm's names of an intravitreal implant and a medicated pad, which name no route:
        # both were flagged as systemic (found by a clinical review).
        "dexamethasone 0.7 MG Drug Implant",
        "hydrocortisone acetate 1 % Medicated Pad",
        # Spinal injections act where given, like a joint injection (found by a card review):
        "methylprednisolone acetate 80 mg/mL injectable suspension, epidural",
        "triamcinolone 40 mg transforaminal injection L4-L5",
        "dexamethasone 10 mg caudal injection",
        "triamcinolone intranasal spray",
    ],
)
def test_other_local_forms_are_not_taken_as_systemic(run, make_facts, text):
    """rules.md: systemic means oral or parenteral; ear, eye, rectal, skin, oromucosal and
    intralesional products act where applied. Without these words the text names no form of
    either list, and an order with no form is taken as systemic."""
    assert run([draft("loc", text)]) is None
    [order] = make_facts(COHORT, [draft("loc", text)]).draft_medications
    assert order.corticosteroid_not_flagged.startswith("not systemic")


def test_hydrocortisone_replacement_for_adrenal_insufficiency_is_not_flagged(run):
    adrenal = condition("p1", "ai", ICD10CM, "E27.1")
    order = draft("hc", "hydrocortisone 10 mg tablet")
    assert run([order], resources=[*COHORT, adrenal]) is None
    assert run([order]) is not None


def test_order_select_only_looks_at_the_selected_order(run):
    drafts = [draft("pred", "prednisone 20 mg tablet"), draft("apap", "acetaminophen 500 mg")]
    assert run(drafts, hook="order-select", selected={"MedicationRequest/apap"}) is None
    assert run(drafts, hook="order-select", selected={"MedicationRequest/pred"}) is not None


def test_only_the_systemic_order_is_named_and_removed(run):
    card = run([draft("pred", "prednisone 20 mg tablet"), draft("top", "hydrocortisone cream")])
    deletes = [a.resourceId for s in card.suggestions for a in s.actions]
    assert deletes == ["MedicationRequest/pred"]
    assert "hydrocortisone cream" not in card.summary
    assert "Draft order: hydrocortisone cream" not in card.detail


def test_order_without_id_still_warns_but_offers_no_removal(run):
    order = draft("x", "prednisone 20 mg tablet")
    del order["id"]
    card = run([order])
    assert card is not None
    assert card.suggestions == ()
    assert_conformant(card.to_json())


def test_outside_cohort_gets_nothing(run):
    only_pain = [patient("p1"), condition("p1", "lbp", SNOMED, "278860009")]
    assert run([draft("pred", "prednisone 20 mg tablet")], resources=only_pain) is None


def test_rule_metadata(knowledge):
    assert RULE.hooks == frozenset({"order-select", "order-sign"})
    assert RULE.indicator == "warning"


def with_instructions(order, text, route=None):
    dosage = {"text": text}
    if route:
        dosage["route"] = {"text": route}
    return {**order, "dosageInstruction": [dosage]}


@pytest.mark.parametrize(
    "order",
    [
        # Instructions naming another product's local form do not make a tablet local.
        with_instructions(draft("pred", "predniSONE 20 MG Oral Tablet", code="312617"),
                          "Take 2 tablets by mouth daily. Keep using the diclofenac gel.",
                          route="Oral"),
        # An injection is systemic when nothing says where it goes.
        draft("mp", "methylprednisolone acetate 40 mg/mL injectable suspension"),
    ],
)
def test_the_drug_s_own_form_decides_before_its_instructions(run, order):
    assert run([order]) is not None


@pytest.mark.parametrize(
    "order",
    [
        # A joint injection: the route, or the instructions, say where the injection goes.
        with_instructions(draft("ia", "triamcinolone acetonide 40 MG/ML Injectable Suspension"),
                          "Inject 1 mL into the left hip joint", route="Intra-articular"),
        with_instructions(draft("ia", "triamcinolone acetonide 40 MG/ML Injectable Suspension"),
                          "1 mL intra-articular injection, left knee"),
        # A cream stays local whatever its instructions say.
        with_instructions(draft("top", "hydrocortisone 1% cream"), "apply twice daily; oral "
                          "antihistamine as needed"),
        # When the name says nothing, a local word in the instructions is taken as this
        # drug's, whatever else they mention (found by review of the first version).
        with_instructions(draft("ia", "methylprednisolone acetate 40 mg/mL"),
                          "Inject 40 mg intra-articular, right hip. Hold oral anticoagulant"),
        with_instructions(draft("ia", "triamcinolone acetonide 40 MG/ML Injectable Suspension"),
                          "40 mg intra-articular injection, left knee; continue oral naproxen"),
        with_instructions(draft("eye", "dexamethasone 0.1%"),
                          "1 drop ophthalmic qid; oral dosing not intended"),
    ],
)
def test_a_local_form_stated_by_route_name_or_instructions_is_not_flagged(run, order):
    assert run([order]) is None


def coded_route(order, code):
    """The order given by a route coded in SNOMED CT with no display, as EHRs may send it."""
    order["dosageInstruction"] = [{"route": {"coding": [{"system": SNOMED, "code": code}]}}]
    return order


@pytest.mark.parametrize("text, route, flagged", [
    ("triamcinolone acetonide 40 MG/ML Injectable Suspension", "12130007", False),  # joint
    ("hydrocortisone 2.5 %", "6064005", False),  # topical
    ("hydrocortisone 100 MG", "37161004", False),  # per rectum (a review of the first fix)
    ("dexamethasone 4 mg", "26643006", True),  # oral
])
def test_a_route_coded_without_a_display_decides_the_form(run, text, route, flagged):
    """A route given only as a code was not read: an intra-articular triamcinolone drew the
    systemic warning "injectable", and a topical hydrocortisone "taken as systemic" (found by a
    clinical review)."""
    card = run([coded_route(draft("s1", text=text), route)])
    assert (card is not None) is flagged


def test_a_steroid_the_patient_already_takes_is_not_recommended_for_removal(run):
    """A review found "Remove predniSONE 20 mg oral tablet" recommended, one click, for the
    renewal of a course on record, with nothing said of that course. Now the prescription on
    record is named and no removal is recommended; a new course still gets the recommendation."""
    taken = medication_request("p1", "pred-old", text="predniSONE 20 mg oral tablet",
                               status="active")
    taken["authoredOn"] = "2026-01-10"
    card = run([draft("pred", "predniSONE 20 mg oral tablet")], resources=[*COHORT, taken])
    assert "Active corticosteroid prescription: predniSONE 20 mg oral tablet, authored " \
        "2026-01-10" in card.detail
    assert "may renew or replace" in card.detail
    assert not any(s.isRecommended for s in card.suggestions)
    card = run([draft("pred", "predniSONE 20 mg oral tablet")])
    assert [s.isRecommended for s in card.suggestions] == [True]


def test_a_spinal_injection_named_in_the_instructions_does_not_make_an_oral_course_local(run):
    """A review of the epidural fix: "predniSONE" with instructions "40 mg by mouth daily for 5
    days; epidural injection if no better" drew no card, the epidural word winning."""
    order = draft("pred", "predniSONE")
    order["dosageInstruction"] = [
        {"text": "40 mg by mouth daily for 5 days; epidural injection if no better"}]
    assert run([order]) is not None


def test_another_systemic_corticosteroid_on_record_also_holds_back_the_removal(run):
    """Switching corticosteroids is common: a review asked that the different-drug case be
    pinned, as only the same drug was tested."""
    taken = medication_request("p1", "hc", text="hydrocortisone 10 mg oral tablet",
                               status="active")
    card = run([draft("dex", "dexamethasone 4 mg oral tablet")], resources=[*COHORT, taken])
    assert "Active corticosteroid prescription: hydrocortisone 10 mg oral tablet" in card.detail
    assert "may renew or replace" in card.detail
    assert not any(s.isRecommended for s in card.suggestions)
