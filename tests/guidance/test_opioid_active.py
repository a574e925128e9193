"""opioid-active: an active opioid prescription in a cohort patient gets a taper warning."""

from __future__ import annotations

import pytest

from cds_service.guidance.rules import opioid_active
from cds_service.guidance.rules.opioid_active import RULE, evaluate
from tests.api.test_core_rules import assert_conformant
from tests.builders import (
    ICD10CM,
    SNOMED,
    cohort_conditions,
    condition,
    medication_request,
    patient,
)


def cohort(*extra):
    return [patient("p1"), *cohort_conditions("p1"), *extra]


def active(rid, *, text=None, code=None, authored="2026-03-15", status="active"):
    order = medication_request("p1", rid, text=text, code=code, status=status)
    if authored:
        order["authoredOn"] = authored
    return order


@pytest.fixture
def run(make_facts, make_ctx):
    def evaluate_for(resources):
        return evaluate(make_facts(resources), make_ctx("patient-view"))

    return evaluate_for


def test_active_opioid_in_cohort_gets_a_taper_warning(run):
    card = run(cohort(active("oxy", text="oxyCODONE 5 mg oral tablet")))
    assert card is not None
    body = card.to_json()
    assert_conformant(body)
    assert body["indicator"] == "warning"
    assert body["source"]["topic"]["code"] == "opioid-active"
    assert "oxyCODONE 5 mg oral tablet" in body["summary"]
    assert "taper" in body["summary"].lower()
    detail = body["detail"]
    assert "oxyCODONE 5 mg oral tablet, authored 2026-03-15" in detail
    assert "Q79.62" in detail  # cohort evidence comes first
    assert "do not stop abruptly" in detail.lower()
    assert "suggestions" not in body  # none required: a taper is a plan, not an order
    cdc = "https://www.cdc.gov/mmwr/volumes/71/rr/rr7103a1.htm"
    assert body["source"]["url"] == cdc
    assert cdc in [link["url"] for link in body["links"]]
    assert "Hyperlaxity" in detail  # the source guidance is cited beside CDC


def test_does_not_repeat_the_non_opioid_medicine_list(run):
    detail = run(cohort(active("oxy", text="oxycodone 5 mg tablet"))).detail.lower()
    for medicine in ("acetaminophen", "paracetamol", "nsaid", "duloxetine", "gabapentin"):
        assert medicine not in detail


def test_every_active_opioid_is_named_with_its_date(run):
    card = run(
        cohort(
            active("tr", text="traMADol 50 mg tab", authored="2025-12-01"),
            active("mo", text="morphine 15 mg ER tablet", authored=None),
        )
    )
    assert "traMADol 50 mg tab, authored 2025-12-01" in card.detail
    assert "morphine 15 mg ER tablet, no authored date" in card.detail
    assert "traMADol" in card.summary and "morphine" in card.summary


def test_recognised_by_cdc_product_code(run):
    # 1049621: oxycodone hydrochloride 5 MG Oral Tablet, in the CDC opioid value set.
    card = run(cohort(active("rx", code="1049621")))
    assert card is not None
    assert "RxNorm 1049621" in card.detail


def test_long_names_keep_the_summary_short(run):
    long_name = "hydrocodone bitartrate 10 mg / acetaminophen 325 mg oral tablet, as needed"
    card = run(cohort(*(active(f"h{i}", text=long_name) for i in range(3))))
    assert len(card.summary) < 140
    assert card.summary.endswith("...")


@pytest.mark.parametrize("status", ["stopped", "completed", "draft", "on-hold", "cancelled"])
def test_only_active_prescriptions_count(run, status):
    assert run(cohort(active("oxy", text="oxycodone 5 mg tablet", status=status))) is None


def test_an_order_not_to_give_an_opioid_is_no_prescription(run):
    """doNotPerform: the record says oxycodone must not be given; the card told the clinician
    to plan a taper of it."""
    refusal = active("oxy", text="oxycodone 5 mg tablet")
    refusal["doNotPerform"] = True
    assert run(cohort(refusal)) is None
    refusal["doNotPerform"] = False
    assert run(cohort(refusal)) is not None


def test_non_opioid_is_not_flagged(run):
    assert run(cohort(active("apap", code="161", text="acetaminophen 500 mg tablet"))) is None


def test_naloxone_alone_is_not_flagged(run):
    assert run(cohort(active("nx", text="naloxone 4 mg nasal spray"))) is None


def test_outside_cohort_gets_nothing(run):
    only_pain = [patient("p1"), condition("p1", "lbp", SNOMED, "278860009")]
    assert run([*only_pain, active("oxy", text="oxycodone 5 mg tablet")]) is None


def test_exempt_patient_is_not_flagged(run):
    cancer = condition("p1", "ca", ICD10CM, "C50.911")
    assert run(cohort(cancer, active("oxy", text="oxycodone 5 mg tablet"))) is None


LOCAL = {"system": "urn:oid:1.2.3.4", "code": "A"}


def with_local_status_first(resource, member="clinicalStatus"):
    """A local coding before HL7's in a status, as a translation may be (FHIR allows it)."""
    resource[member]["coding"].insert(0, dict(LOCAL))
    return resource


def test_a_status_is_read_in_its_own_code_system_not_from_the_first_coding(run):
    """The first coding's code was read as the status, whatever its system: a local "A" beside
    HL7's "active" made an active cancer inactive (no exemption) and hEDS inactive (no
    cohort); a local code beside HL7's "refuted" kept a refuted diagnosis."""
    oxy = active("oxy", text="oxycodone 5 mg tablet")
    cancer = with_local_status_first(condition("p1", "ca", ICD10CM, "C50.911"))
    assert run(cohort(cancer, oxy)) is None
    heds, lbp, hip = cohort_conditions("p1")
    assert run([patient("p1"), with_local_status_first(heds), lbp, hip, oxy]) is not None
    refuted = condition("p1", "heds", ICD10CM, "Q79.62", verification="refuted")
    with_local_status_first(refuted, "verificationStatus")
    assert run([patient("p1"), refuted, lbp, hip, oxy]) is None


def test_a_local_code_spelled_like_a_status_is_not_read_as_one(run):
    """A local system's "inactive" may mean anything; beside a system-less "active" it decided
    the status once the fix above read codes of any system (found by review)."""
    heds, lbp, hip = cohort_conditions("p1")
    heds["clinicalStatus"]["coding"] = [{"system": "http://ehr.example/cs/x", "code": "inactive"}]
    oxy = active("oxy", text="oxycodone 5 mg tablet")
    assert run([patient("p1"), heds, lbp, hip, oxy]) is not None  # no status read: active


def test_a_status_without_a_system_is_read_as_the_bound_one(run):
    cancer = condition("p1", "ca", ICD10CM, "C50.911")
    del cancer["clinicalStatus"]["coding"][0]["system"]
    assert run(cohort(cancer, active("oxy", text="oxycodone 5 mg tablet"))) is None
    # An unread status counts as active too, so "active" alone could not show it is read
    # (found by review): a system-less "inactive" must end the exemption.
    cancer["clinicalStatus"]["coding"][0]["code"] = "inactive"
    assert run(cohort(cancer, active("oxy", text="oxycodone 5 mg tablet"))) is not None


@pytest.mark.parametrize("system", [
    "http://hl7.org/fhir/condition-clinical",  # STU3's system, still sent by older servers
    None,
])
def test_a_status_code_of_the_bound_system_counts_under_its_stu3_name_or_none(run, system):
    """A review of the first fix: "resolved" named with the STU3 system was ignored, so it read as
    no status, that is active: a resolved cancer exempted the patient from every opioid card."""
    oxy = active("oxy", text="oxycodone 5 mg tablet")
    cancer = condition("p1", "ca", ICD10CM, "C50.911", clinical="resolved")
    coding = cancer["clinicalStatus"]["coding"][0]
    coding.pop("system")
    if system:
        coding["system"] = system
    assert run(cohort(cancer, oxy)) is not None  # resolved: no exemption
    refuted = condition("p1", "heds", ICD10CM, "Q79.62", verification="entered-in-error")
    refuted["verificationStatus"]["coding"][0].pop("system")
    if system:
        refuted["verificationStatus"]["coding"][0]["system"] = system.replace("clinical",
                                                                               "ver-status")
    heds, lbp, hip = cohort_conditions("p1")
    assert run([patient("p1"), refuted, lbp, hip, oxy]) is None  # not a diagnosis


@pytest.mark.parametrize("status, exempt", [("completed", True), ("not-done", False)])
def test_a_hospice_admission_exempts_only_if_it_happened(run, status, exempt):
    hospice = {"resourceType": "Procedure", "id": "hosp", "status": status,
               "subject": {"reference": "Patient/p1"}, "performedDateTime": "2026-10-01",
               "code": {"coding": [{"system": SNOMED, "code": "305336008"}]}}
    card = run(cohort(hospice, active("oxy", text="oxycodone 5 mg tablet")))
    assert (card is None) is exempt


def test_buprenorphine_naloxone_is_never_flagged(run):
    moud = active("bup", text="buprenorphine 8 mg / naloxone 2 mg sublingual film")
    assert run(cohort(moud)) is None


def test_methadone_is_moud_only_with_opioid_use_disorder(run):
    methadone = active("mtd", text="methadone 10 mg tablet")
    oud = condition("p1", "oud", ICD10CM, "F11.20")
    assert run(cohort(oud, methadone)) is None
    assert run(cohort(methadone)) is not None  # prescribed for pain: an opioid like any other


def test_moud_beside_a_pain_opioid_names_only_the_pain_opioid(run):
    card = run(
        cohort(
            active("bup", text="buprenorphine 8 mg / naloxone 2 mg sublingual film"),
            active("oxy", text="oxycodone 5 mg tablet"),
        )
    )
    assert "oxycodone" in card.detail
    assert "buprenorphine" not in card.detail


def test_rule_metadata(knowledge):
    assert RULE.hooks == frozenset({"patient-view"})
    assert RULE.indicator == "warning"
    assert RULE.evaluate is opioid_active.evaluate
    assert "cdc-opioids-2022" in RULE.sources


@pytest.mark.parametrize(
    "reference",
    [
        "Medication/m1",
        "Medication/m1/_history/4",
        "https://ehr.example.org/fhir/Medication/m1/_history/4",
    ],
)
def test_an_opioid_in_a_referenced_medication_counts_whatever_version_is_named(run, reference):
    order = active("oxy")
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": reference}
    medication = {"resourceType": "Medication", "id": "m1",
                  "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                       "code": "1049621"}]}}
    assert run(cohort(order, medication)) is not None


@pytest.mark.parametrize("clinical, exempt", [("remission", True), ("active", True),
                                              ("resolved", False)])
def test_methadone_is_moud_with_opioid_use_disorder_in_remission(run, clinical, exempt):
    """rules.md's F11.1x/F11.2x take in the "in remission" codes; a patient on maintenance
    methadone is typically in remission, and got "plan a taper" for it (found by a clinical
    review)."""
    methadone = active("mtd", text="methadone 10 mg tablet")
    oud = condition("p1", "oud", ICD10CM, "F11.21", clinical=clinical)
    assert (run(cohort(oud, methadone)) is None) is exempt


@pytest.mark.parametrize("intent, prescribed", [
    ("order", True), ("original-order", True), ("reflex-order", True), ("filler-order", True),
    ("instance-order", True),
    ("proposal", False), ("plan", False), ("directive", False), ("option", False),
])
def test_only_an_order_is_a_prescription(run, intent, prescribed):
    """rules.md says "an active opioid MedicationRequest"; the project reads it as a drug the
    patient takes. A MedicationRequest's intent says whether it was prescribed (FHIR R4): a
    proposal, a plan, a directive or an option in a protocol is no order to dispense, and nobody
    takes that drug because of it (the CDC opioid IG reads intent=order)."""
    order = active("oxy", text="oxyCODONE 5 mg oral tablet")
    order["intent"] = intent
    assert (run(cohort(order)) is not None) is prescribed
