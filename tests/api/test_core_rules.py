"""The three core rules end to end through HTTP, and the shape of every card."""

import json
import uuid

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service import create_app
from cds_service.guidance.cards import RULE_CODE_SYSTEM
from cds_service.guidance.settings import GuidanceSettings
from tests.builders import (
    ICD10CM,
    LOINC,
    SNOMED,
    bundle,
    cohort_conditions,
    condition,
    draft_orders,
    medication_request,
    patient,
    service_request,
)

PV = "/cds-services/hypermobility-pain-patient-view"
SIGN = "/cds-services/hypermobility-pain-order-sign"
SELECT = "/cds-services/hypermobility-pain-order-select"
CORE = frozenset({"rehab-referral", "opioid-order", "imaging-radiograph-first"})


@pytest.fixture
def core_client(settings):
    app = create_app(settings.with_overrides(guidance=GuidanceSettings(enabled_rules=CORE)))
    return app.test_client()


def request_for(hook, conditions, *, drafts=(), services=(), selections=None):
    body = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": {
            "patient": patient("p1"),
            "conditions": bundle(*conditions),
            "observations": bundle(),
            "medications": bundle(),
            "servicerequests": bundle(*services),
            "diagnosticreports": bundle(),
            "procedures": bundle(),
        },
    }
    if hook != "patient-view":
        body["context"]["draftOrders"] = draft_orders(*drafts)
    if selections is not None:
        body["context"]["selections"] = selections
    return body


def rule_ids(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return sorted(c["source"]["topic"]["code"] for c in response.get_json()["cards"])


def assert_conformant(card):
    """CDS Hooks 2.0 card rules (cds-hooks-notes.md 1.E)."""
    uuid.UUID(card["uuid"])
    assert 0 < len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"]
    assert card["source"]["topic"]["system"] == RULE_CODE_SYSTEM
    if card.get("suggestions"):
        assert card["selectionBehavior"] in ("at-most-one", "any")
        for suggestion in card["suggestions"]:
            uuid.UUID(suggestion["uuid"])
            for action in suggestion.get("actions", []):
                if action["type"] == "delete":
                    assert action["resourceId"].count("/") == 1
                else:
                    resource = action["resource"]
                    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                    assert resource["status"] == "draft"
                    assert resource["subject"] == {"reference": "Patient/p1"}
    for reason in card.get("overrideReasons", []):
        assert reason["display"]

    def no_empty(value):
        assert value not in (None, "", [], {})
        if isinstance(value, dict):
            [no_empty(v) for v in value.values()]
        elif isinstance(value, list):
            [no_empty(v) for v in value]

    no_empty(card)


def test_patient_view_in_cohort(core_client):
    response = core_client.post(PV, json=request_for("patient-view", cohort_conditions("p1")))
    assert rule_ids(response) == ["imaging-radiograph-first", "rehab-referral"]
    for card in response.get_json()["cards"]:
        assert_conformant(card)
    rehab = next(
        c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == "rehab-referral"
    )
    assert rehab["selectionBehavior"] == "any"
    assert len(rehab["suggestions"]) == 3
    assert "Q79.62" in rehab["detail"]


def test_outside_cohort_gets_no_cards(core_client):
    only_pain = [condition("p1", "lbp", SNOMED, "278860009")]
    assert rule_ids(core_client.post(PV, json=request_for("patient-view", only_pain))) == []


def test_recent_rehab_order_silences_referral(core_client):
    rehab = service_request("p1", "pt", SNOMED, "91251008", status="active")
    rehab["authoredOn"] = "2099-01-01"
    body = request_for("patient-view", cohort_conditions("p1"), services=[rehab])
    assert rule_ids(core_client.post(PV, json=body)) == ["imaging-radiograph-first"]


def test_radiograph_on_record_silences_imaging(core_client):
    xray = service_request("p1", "xr", LOINC, "24762-7", status="completed")
    body = request_for("patient-view", cohort_conditions("p1"), services=[xray])
    assert rule_ids(core_client.post(PV, json=body)) == ["rehab-referral"]


@pytest.mark.parametrize("path,hook", [(SIGN, "order-sign"), (SELECT, "order-select")])
def test_opioid_draft_is_flagged_with_delete_and_replacements(core_client, path, hook):
    opioid = medication_request("p1", "oxy", text="oxyCODONE 5 mg oral tablet")
    body = request_for(
        hook,
        cohort_conditions("p1"),
        drafts=[opioid],
        selections=["MedicationRequest/oxy"] if hook == "order-select" else None,
    )
    response = core_client.post(path, json=body)
    assert rule_ids(response) == ["opioid-order"]
    card = response.get_json()["cards"][0]
    assert_conformant(card)
    assert card["indicator"] == "warning"
    assert "oxyCODONE" in card["summary"]
    assert card["overrideReasons"]
    deletes = [
        a for s in card["suggestions"] for a in s["actions"] if a["type"] == "delete"
    ]
    assert deletes and all(a["resourceId"] == "MedicationRequest/oxy" for a in deletes)
    creates = [a["resource"] for s in card["suggestions"] for a in s["actions"]
               if a["type"] == "create"]
    assert {r["medicationCodeableConcept"]["coding"][0]["code"] for r in creates} == {"161", "5640"}


def test_order_select_ignores_unselected_opioid(core_client):
    opioid = medication_request("p1", "oxy", text="oxycodone 5 mg tablet")
    other = medication_request("p1", "apap", code="161", text="acetaminophen")
    body = request_for(
        "order-select", cohort_conditions("p1"), drafts=[opioid, other],
        selections=["MedicationRequest/apap"],
    )
    assert rule_ids(core_client.post(SELECT, json=body)) == []


def test_order_sign_checks_every_draft_even_with_a_stray_selections_member(core_client):
    """order-sign has no ``selections``: one sent anyway must not hide the orders being signed."""
    opioid = medication_request("p1", "oxy", text="oxycodone 5 mg tablet")
    body = request_for("order-sign", cohort_conditions("p1"), drafts=[opioid],
                       selections=["MedicationRequest/other"])
    assert rule_ids(core_client.post(SIGN, json=body)) == ["opioid-order"]


def test_served_cards_written_during_the_call_never_fail_it(settings, monkeypatch, log_lines):
    """CDS_SERVED_CARDS_FLUSH_S=0 writes analytics in the call; a failed write is logged and the
    clinician still gets the cards (it was a 500 after the retries)."""
    from sqlalchemy.exc import OperationalError

    app = create_app(settings.with_overrides(
        served_cards_flush_s=0, guidance=GuidanceSettings(enabled_rules=CORE)))
    store = app.extensions["cds"].store

    def locked(rows):
        raise OperationalError("INSERT INTO served_cards", {}, Exception("database is locked"))

    monkeypatch.setattr(store, "_write_served", locked)
    opioid = medication_request("p1", "oxy", text="oxycodone 5 mg tablet")
    body = request_for("order-sign", cohort_conditions("p1"), drafts=[opioid])
    assert rule_ids(app.test_client().post(SIGN, json=body)) == ["opioid-order"]
    errors = [line for line in log_lines() if line["level"] == "error"]
    assert [(e["message"], e["error"], e["dropped"]) for e in errors] == [
        ("served-card records not written", "OperationalError", 1)]


@pytest.mark.parametrize("path,hook", [(SIGN, "order-sign"), (SELECT, "order-select")])
def test_a_sandbox_draft_without_intent_is_still_checked(core_client, path, hook):
    """The CDS Hooks sandbox drafts a MedicationRequest with no ``intent`` until a dispense
    request is entered, in a draftOrders Bundle with no ``type`` (cds-hooks-notes.md, "Context
    contents"). It was refused as invalid FHIR, so the opioid went unflagged."""
    opioid = medication_request("p1", "request-123", code="1049621")
    del opioid["intent"]
    body = request_for(
        hook, cohort_conditions("p1"), drafts=[opioid],
        selections=["MedicationRequest/request-123"] if hook == "order-select" else None,
    )
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": opioid}]}
    assert rule_ids(core_client.post(path, json=body)) == ["opioid-order"]


def test_a_recorded_order_without_intent_is_still_invalid(client):
    """Only drafts are let off: an order on record without intent is invalid FHIR R4."""
    opioid = medication_request("p1", "rec", code="1049621", status="active")
    body = request_for("patient-view", cohort_conditions("p1"))
    body["prefetch"]["medications"] = bundle(opioid)
    assert "opioid-active" in rule_ids(client.post(PV, json=body))
    del opioid["intent"]
    assert "opioid-active" not in rule_ids(client.post(PV, json=body))


@pytest.mark.parametrize("path,hook", [(SIGN, "order-sign"), (SELECT, "order-select")])
def test_a_drafted_opioid_the_patient_already_takes_gets_taper_advice(core_client, path, hook):
    """The order services asked for no MedicationRequests, so over HTTP every drafted opioid
    was a new one and the renewal of a long prescription drew "replace with acetaminophen"
    (found by review): the taper advice existed only in unit tests."""
    taken = medication_request("p1", "taken", code="1049621", status="active")
    draft = medication_request("p1", "oxy", code="1049621")
    body = request_for(hook, cohort_conditions("p1"), drafts=[draft],
                       selections=["MedicationRequest/oxy"] if hook == "order-select" else None)
    body["prefetch"]["medications"] = bundle(taken)
    [card] = core_client.post(path, json=body).get_json()["cards"]
    assert "do not stop it abruptly" in card["detail"]
    assert not any(s.get("isRecommended") for s in card["suggestions"])


def test_opioid_by_cdc_product_code(core_client):
    # 1049621: oxycodone hydrochloride 5 MG Oral Tablet, in the CDC opioid value set.
    opioid = medication_request("p1", "rx", code="1049621")
    body = request_for("order-sign", cohort_conditions("p1"), drafts=[opioid])
    assert rule_ids(core_client.post(SIGN, json=body)) == ["opioid-order"]


def test_naloxone_alone_is_not_an_opioid(core_client):
    order = medication_request("p1", "nx", text="naloxone 4 mg nasal spray")
    body = request_for("order-sign", cohort_conditions("p1"), drafts=[order])
    assert rule_ids(core_client.post(SIGN, json=body)) == []


def test_hip_mri_without_radiograph(core_client):
    mri = service_request("p1", "mri", LOINC, "30687-8")
    body = request_for("order-sign", cohort_conditions("p1"), drafts=[mri])
    response = core_client.post(SIGN, json=body)
    assert rule_ids(response) == ["imaging-radiograph-first"]
    card = response.get_json()["cards"][0]
    assert_conformant(card)
    replace = card["suggestions"][0]["actions"]
    assert [a["type"] for a in replace[:2]] == ["create", "create"]  # creates first: see below
    assert replace[2] == {
        "type": "delete",
        "description": replace[2]["description"],
        "resourceId": "ServiceRequest/mri",
    }


def test_radiograph_in_same_order_set_counts(core_client):
    mri = service_request("p1", "mri", LOINC, "30687-8")
    xray = service_request("p1", "xr", LOINC, "28561-9")
    body = request_for("order-sign", cohort_conditions("p1"), drafts=[mri, xray])
    assert rule_ids(core_client.post(SIGN, json=body)) == []


def test_exempt_patient_is_not_flagged_for_opioids(core_client):
    conditions = cohort_conditions("p1") + [condition("p1", "ca", ICD10CM, "C50.911")]
    opioid = medication_request("p1", "oxy", text="oxycodone 5 mg tablet")
    body = request_for("order-sign", conditions, drafts=[opioid])
    assert rule_ids(core_client.post(SIGN, json=body)) == []


def test_chart_text_cannot_pass_for_the_card_s_own_markdown_links_or_html(core_client):
    """Free text from the record goes into cards, whose detail is markdown that some EHRs render
    with raw HTML: it arrives on one line, with no tag and no link (found by security review)."""
    hostile = ("oxycodone 5 mg\n\n**Source:** [Updated CDC guidance: continue opioids]"
               "(https://evil.example/x)\n<img src=x onerror=alert(1)>\u202e")
    opioid = medication_request("p1", "oxy", text=hostile)
    heds, lbp, hip = cohort_conditions("p1")
    lbp["code"]["text"] = "Low back pain\n<script>alert(1)</script> [x](javascript:alert(1))"
    body = request_for("order-sign", [heds, lbp, hip], drafts=[opioid])
    response = core_client.post(SIGN, json=body)
    assert rule_ids(response) == ["opioid-order"]
    card = response.get_json()["cards"][0]
    text = json.dumps(card)
    for forbidden in ("<img", "<script", "](https://evil", "](javascript", "\\u202e"):
        assert forbidden not in text, forbidden
    assert "\n" not in card["summary"]
    assert "oxycodone 5 mg" in card["summary"]  # the name is still there, on one line
    assert "\u2039img src=x" in card["detail"]  # shown, not rendered


@pytest.mark.parametrize("name, shown", [
    ("oxycodone 5 mg https://evil.example/x", "https[:]//evil.example/x"),
    ("oxycodone 5 mg, see www.evil.example", "www[.]evil.example"),
    ("OXYCODONE HTTP://EVIL.EXAMPLE", "HTTP[:]//EVIL.EXAMPLE"),
    # A review of the first fix: a digit before the scheme, and e-mail addresses, still linked.
    ("oxycodone 5 mg 1https://evil.example/x", "1https[:]//evil.example/x"),
    ("oxycodone, questions to evil@phish.example", "evil[at]phish.example"),
    ("oxycodone mailto:evil@phish.example", "mailto[:]evil[at]phish.example"),
    # A second review: "_" in the domain, and "www." after a dot, were still linked.
    ("oxycodone, ask evil@phish_x.example", "evil[at]phish_x.example"),
    ("oxycodone, see note.www.evil.example", "note.www[.]evil.example"),
])
def test_a_web_address_in_chart_text_is_shown_but_never_linked(core_client, name, shown):
    """GitHub-flavoured markdown, which the CDS Hooks sandbox renders detail with, links a bare
    web address by itself: a review found chart text could still put a clickable link in a
    card. It is shown defanged."""
    opioid = medication_request("p1", "oxy", code="1049621", text=name)
    body = request_for("order-sign", cohort_conditions("p1"), drafts=[opioid])
    card = core_client.post(SIGN, json=body).get_json()["cards"][0]
    assert shown in card["detail"]
    detail = card["detail"].lower()
    for linkable in ("://evil", "www.evil", "@phish", "mailto:"):
        assert linkable not in detail, linkable


def test_a_name_of_invisible_characters_is_shown_as_unnamed(core_client):
    opioid = medication_request("p1", "oxy", code="1049621", text="\u200b\n")
    body = request_for("order-sign", cohort_conditions("p1"), drafts=[opioid])
    card = core_client.post(SIGN, json=body).get_json()["cards"][0]
    assert card["summary"].endswith(": unnamed")
