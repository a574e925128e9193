"""opioid-order: medications for opioid use disorder (MOUD) typed as free text are not flagged.

rules.md "MOUD": (a) buprenorphine with naloxone in any form, sublingual buprenorphine and
extended-release injectable buprenorphine are never flagged; (b) methadone and other buprenorphine
forms only when the patient has an active opioid use disorder diagnosis.
"""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.guidance.rules.opioid_order import evaluate
from tests.builders import ICD10CM, cohort_conditions, condition, medication_request, patient

COHORT = [patient("p1"), *cohort_conditions("p1")]
OUD = condition("p1", "oud", ICD10CM, "F11.20")


def draft(text: str, *, route: str | None = None) -> dict[str, Any]:
    order = medication_request("p1", "m1", text=text)
    if route:
        order["dosageInstruction"] = [{"route": {"text": route}}]
    return order


@pytest.fixture
def run(make_facts, make_ctx):
    def evaluate_for(order, *, resources=COHORT):
        facts = make_facts(resources, [order])
        [medication] = facts.draft_medications
        return evaluate(facts, make_ctx("order-sign")), medication

    return evaluate_for


@pytest.mark.parametrize(
    "text",
    [
        "Suboxone (buprenorphine) 8 mg film",  # brand of buprenorphine/naloxone
        "buprenorphine ER 100 mg/0.5 mL subcutaneous solution (Sublocade)",  # monthly ER injection
        "Zubsolv (buprenorphine) 5.7 mg tablet",
        "Bunavail buprenorphine 4.2 mg buccal film",  # with naloxone: any form counts
        "buprenorphine 2 mg SL tab",  # SL: sublingual
        "buprenorphine 8 mg sl tablet",
    ],
)
def test_moud_named_by_brand_or_sl_is_never_flagged(run, text):
    card, medication = run(draft(text))
    assert card is None
    assert medication.moud == "a buprenorphine product used only for opioid use disorder"
    assert medication.opioid is None


@pytest.mark.parametrize(
    "text,route",
    [
        ("buprenorphine 8 mg / naloxone 2 mg sublingual film", None),
        ("buprenorphine-naloxone 8-2 mg film", None),
        ("buprenorphine 300 mg extended-release injection", None),
        # Extended-release and injection apart, abbreviated, or the route or device saying it:
        ("buprenorphine extended-release 300 mg/1.5 mL subcutaneous injection", None),
        ("buprenorphine ER 100 mg/0.5 mL injection", None),
        ("buprenorphine XR injectable 300 mg", None),
        ("buprenorphine 300 mg/1.5 mL prefilled syringe", None),
        ("buprenorphine 300 mg/1.5 mL solution", "Subcutaneous"),
        ("buprenorphine 100 mg/0.5 mL SC injection", None),
        ("buprenorphine 8 mg tablet", "Sublingual"),  # the route says it
        ("buprenorphine 8 mg tablet", "SL"),
    ],
)
def test_moud_named_by_ingredient_and_form_is_never_flagged(run, text, route):
    card, medication = run(draft(text, route=route))
    assert card is None and medication.moud is not None


@pytest.mark.parametrize(
    "text",
    [
        "buprenorphine 0.3 mg/mL injection",  # Buprenex: an analgesic
        "buprenorphine 10 mcg/hr transdermal patch",
        "Belbuca (buprenorphine) 300 mcg buccal film",
        "buprenorphine 0.3 mg slow IV injection",  # "slow" is not "SL"
        "buprenorphine ER 10 mcg/hr transdermal patch",  # extended-release, not injected
        "buprenorphine 0.3 mg/mL injection, 1 mL IM",  # injected, not extended-release
    ],
)
def test_buprenorphine_for_pain_is_an_opioid_without_opioid_use_disorder(run, text):
    card, medication = run(draft(text))
    assert medication.moud is None
    assert card is not None


@pytest.mark.parametrize(
    "text, instructions",
    [
        ("Butrans (buprenorphine) 10 mcg/hr extended-release transdermal patch",
         "Keep naloxone injection (Zimhi) at home."),
        ("buprenorphine 10 mcg/hr transdermal system",
         "ER visit if breathing slows; naloxone injection kit at home"),
        ("Buprenex (buprenorphine) 0.3 mg/mL injection", "0.3 mg IM q6h prn, given in the ER"),
    ],
)
def test_extended_release_and_injection_words_in_instructions_do_not_make_moud(
    run, text, instructions
):
    """Instructions may mention a naloxone injection or the emergency room (ER): only the
    drug's name, coded form and routes say it is the extended-release injection."""
    order = draft(text)
    order["dosageInstruction"] = [{"text": instructions}]
    card, medication = run(order)
    assert medication.moud is None and card is not None


def test_naloxone_in_the_dosage_instructions_does_not_make_an_opioid_moud(run):
    """Naloxone is advised beside any opioid: instructions that mention it say nothing of the
    drug ordered, which stays an opioid (it was taken for buprenorphine with naloxone)."""
    order = draft("buprenorphine 10 mcg/hr transdermal patch")
    order["dosageInstruction"] = [{"text": "Apply weekly. Keep a naloxone kit at home."}]
    card, medication = run(order)
    assert medication.moud is None and card is not None


def test_other_buprenorphine_and_methadone_are_moud_only_with_opioid_use_disorder(run):
    for text in ("methadone 10 mg tablet", "buprenorphine 10 mcg/hr transdermal patch"):
        card, medication = run(draft(text), resources=[*COHORT, OUD])
        assert card is None
        assert medication.moud == (
            "buprenorphine or methadone for a patient with opioid use disorder"
        )
        card, medication = run(draft(text))
        assert card is not None and medication.moud is None


def test_a_draft_not_to_give_an_opioid_is_not_flagged(make_facts, make_ctx):
    """A doNotPerform draft being signed records that the drug must not be given: suggesting
    to remove it, and to give acetaminophen instead, was wrong."""
    order = draft("oxycodone 5 mg tablet")
    order["doNotPerform"] = True
    facts = make_facts(COHORT, [order])
    assert facts.draft_medications == ()
    assert evaluate(facts, make_ctx("order-sign")) is None


@pytest.mark.parametrize("code", ["6813", "1819"])  # RxNorm ingredients methadone, buprenorphine
def test_moud_coded_at_ingredient_level_is_moud_with_opioid_use_disorder(run, code):
    """rules.md recognises a medication by RxNorm code at ingredient level too: methadone coded
    6813 for a patient with opioid use disorder drew "avoid opioids, remove it"."""
    order = medication_request("p1", "m1", code=code)
    card, medication = run(order, resources=[*COHORT, OUD])
    assert card is None and medication.moud == (
        "buprenorphine or methadone for a patient with opioid use disorder"
    )
    card, medication = run(order)
    assert card is not None and medication.moud is None  # for pain: an opioid


def test_buprenorphine_coded_at_ingredient_level_is_moud_when_sublingual(run):
    order = medication_request("p1", "m1", code="1819")
    order["dosageInstruction"] = [{"route": {"text": "Sublingual"}}]
    card, medication = run(order)
    assert card is None
    assert medication.moud == "a buprenorphine product used only for opioid use disorder"


def test_a_replacement_lists_the_new_drug_before_the_removal(run):
    """CDS Hooks applies a suggestion's actions together (deletes first, like a FHIR
    transaction), but the CDS Hooks sandbox applies only the first it can: with the delete
    first, "Replace with acetaminophen" only cleared its order form. The removal-only
    suggestion is unchanged."""
    card, _ = run(draft("oxycodone 5 mg tablet"))
    replace_with_acetaminophen, replace_with_nsaid, remove = card.suggestions
    for suggestion in (replace_with_acetaminophen, replace_with_nsaid):
        assert [a.type for a in suggestion.actions] == ["create", "delete"]
        assert suggestion.actions[0].resource["medicationCodeableConcept"]["text"]
    assert [a.type for a in remove.actions] == ["delete"]


def test_buprenorphine_with_a_subcutaneous_route_coded_without_display_is_moud(run):
    order = medication_request("p1", "m1", text="buprenorphine 300 mg")
    order["dosageInstruction"] = [{"route": {"coding": [
        {"system": "http://snomed.info/sct", "code": "34206005"}]}}]
    card, medication = run(order)
    assert card is None
    assert medication.moud == "a buprenorphine product used only for opioid use disorder"


def test_a_renewal_for_a_patient_already_on_an_opioid_advises_a_taper(run):
    """A draft renewing a 2.5-year oxycodone prescription was answered "replace with
    acetaminophen" as the recommended step: stopping at once, against the CDC guidance the card
    cites (found by a clinical review). The prescription is named, a gradual taper advised,
    and no replacement recommended."""
    on_record = medication_request("p1", "old", text="oxycodone 5 mg tablet", status="active")
    on_record["authoredOn"] = "2024-05-01"
    card, _ = run(draft("oxycodone 5 mg tablet"), resources=[*COHORT, on_record])
    assert card is not None
    assert "Active opioid prescription: oxycodone 5 mg tablet, authored 2024-05-01" in card.detail
    assert "do not stop it abruptly" in card.detail and "gradual taper" in card.detail
    assert not any(s.isRecommended for s in card.suggestions)
    # The override reason is named as the clinician sees it in the card's list (review).
    taper = next(r for r in card.overrideReasons if r.code == "supervised-taper")
    assert f"'{taper.display}'" in card.detail
    fresh, _ = run(draft("oxycodone 5 mg tablet"))  # no opioid on record: as before
    assert fresh.suggestions[0].isRecommended is True and "abruptly" not in fresh.detail


def test_a_different_opioid_on_record_leaves_a_new_drugs_draft_as_it_is(run):
    """A review of the renewal fix: tramadol on record made an oxycodone draft a "renewal",
    with taper advice and no recommended alternative, though removing the draft stops nothing
    the patient takes. Coded drafts are matched by ingredient too."""
    tramadol = medication_request("p1", "tr", text="traMADol 50 mg tablet", status="active")
    card, _ = run(draft("oxycodone 10 mg tablet"), resources=[*COHORT, tramadol])
    assert card.suggestions[0].isRecommended is True and "abruptly" not in card.detail
    coded = medication_request("p1", "old", code="1049621", status="active")  # oxycodone product
    card, _ = run(draft("oxycodone 5 mg tablet"), resources=[*COHORT, coded])
    assert "do not stop it abruptly" in card.detail


@pytest.mark.parametrize("code", ["2103192", "864826"])  # sufentanil, methadone solution
def test_a_renewal_whose_ingredient_is_not_known_is_still_read_as_one(run, code):
    """A review of the ingredient match: products whose ingredient the knowledge files do not
    name gave empty sets on both sides, so an identical renewal was "a new drug" and
    acetaminophen was recommended. In doubt, a renewal."""
    on_record = medication_request("p1", "old", code=code, status="active")
    card, _ = run(medication_request("p1", "m1", code=code), resources=[*COHORT, on_record])
    assert card is not None and "do not stop it abruptly" in card.detail
    assert not any(s.isRecommended for s in card.suggestions)


@pytest.mark.parametrize(
    "code",
    [
        "864714",  # methadone hydrochloride 10 MG/ML Injectable Solution (CDC MOUD value set)
        "238129",  # 1 ML buprenorphine 0.3 MG/ML Injection (CDC MOUD value set)
        "1724276",  # 1 ML hydromorphone hydrochloride 2 MG/ML Injection (OMTK only)
        "904415",  # nalbuphine hydrochloride 10 MG/ML Injectable Solution (OMTK only)
        "991486",  # codeine phosphate 2 MG/ML / promethazine ... Oral Solution (OMTK only)
    ],
)
def test_an_opioid_product_outside_the_analgesic_value_set_is_an_opioid_by_code(run, code):
    """rules.md "Opioid": any dose form, an injectable the value set leaves out included. Coded
    without a display or text, as EHRs may send a draft, these injectables and sprays were no
    opioid at all: the CDC analgesic value set leaves them out, and no name was there to read.
    The OMTK table (every product, with its opioid ingredient) knows them."""
    card, medication = run(medication_request("p1", "m1", code=code))
    assert medication.opioid == f"RxNorm {code}" and medication.moud is None
    assert card is not None


def test_a_replacement_says_its_dose_is_left_to_the_prescriber(run):
    """The drafted acetaminophen and ibuprofen name the drug only (no verified product-level
    code is bundled): a card review found nothing told the clinician that dose, form and
    route are still to be chosen before signing."""
    card, _ = run(draft("oxycodone 5 mg tablet"))
    creates = [a for s in card.suggestions for a in s.actions if a.type == "create"]
    assert len(creates) == 2
    assert all("dose, form and route to complete" in a.description for a in creates)
