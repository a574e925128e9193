"""scenarios.py: date shifting, patient/scenario loading, hook request construction."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service.devtools import scenarios as sc

PREFETCH_PATIENT_VIEW = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "medications": "MedicationRequest?patient={{context.patientId}}&status=active",
    "servicerequests": "ServiceRequest?patient={{context.patientId}}",
    "diagnosticreports": "DiagnosticReport?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
}
PREFETCH_ORDERS = dict(PREFETCH_PATIENT_VIEW)  # every service asks for the same data


# ---------------------------------------------------------------- shift_dates


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("2026-11-01", 0, "2026-11-01"),
        ("2026-11-01", 30, "2026-12-01"),
        ("2026-12-31", 1, "2027-01-01"),
        ("2027-01-01", -1, "2026-12-31"),
        ("2028-02-28", 1, "2028-02-29"),  # leap year
        ("2027-02-28", 1, "2027-03-01"),
        ("2026-01-31", 30, "2026-03-02"),
        ("2026-11", 30, "2026-12"),  # month precision kept
        ("2026-12", 31, "2027-01"),
        ("2026-03", -1, "2026-02"),
        ("2026", 365, "2027"),  # year precision kept
        ("2026", 364, "2026"),
        ("2026-07-10T14:30:00Z", 200, "2027-01-26T14:30:00Z"),
        ("2026-08-04T08:00:00+02:00", -4, "2026-07-31T08:00:00+02:00"),
        ("2026-12-31T23:59:59.123-05:00", 1, "2027-01-01T23:59:59.123-05:00"),
        ("2026-10-01T10:00:00", 1, "2026-10-02T10:00:00"),
    ],
)
def test_shift_date_value_keeps_precision(value: str, days: int, expected: str) -> None:
    assert sc.shift_date_value(value, days) == expected


@pytest.mark.parametrize("value", ["8640", "not a date", "2026-13-01", "44261-6", ""])
def test_shift_date_value_leaves_non_dates_alone(value: str) -> None:
    assert sc.shift_date_value(value, 10) == value


def test_shift_dates_walks_every_date_element_and_nothing_else() -> None:
    resource = {
        "resourceType": "ServiceRequest",
        "id": "2026",
        "status": "draft",
        "authoredOn": "2026-11-01",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "2026"}], "text": "2026"},
        "occurrencePeriod": {"start": "2026-11-01", "end": "2026-12-31T10:00:00Z"},
        "occurrenceTiming": {"event": ["2026-11-02", "2026-11-03"], "repeat": {"count": 2026}},
        "meta": {"lastUpdated": "2026-11-01T00:00:00Z"},
        "extension": [{"url": "http://example.org/x", "valueDateTime": "2026-11"}],
        "contained": [{"resourceType": "Patient", "id": "p", "birthDate": "1990"}],
        "note": [{"text": "seen 2026-11-01", "time": "2026-11-01"}],
    }
    shifted = sc.shift_dates(resource, 61)
    assert resource["authoredOn"] == "2026-11-01"  # deep copy, original untouched
    assert shifted["authoredOn"] == "2027-01-01"
    assert shifted["occurrencePeriod"] == {"start": "2027-01-01", "end": "2027-03-02T10:00:00Z"}
    assert shifted["occurrenceTiming"]["event"] == ["2027-01-02", "2027-01-03"]
    assert shifted["occurrenceTiming"]["repeat"]["count"] == 2026
    assert shifted["meta"]["lastUpdated"] == "2027-01-01T00:00:00Z"
    assert shifted["extension"][0]["valueDateTime"] == "2027-01"
    assert shifted["contained"][0]["birthDate"] == "1990"  # Jan 1 + 61 days is still 1990
    assert shifted["id"] == "2026"
    assert shifted["code"] == resource["code"]
    assert shifted["note"][0] == {"text": "seen 2026-11-01", "time": "2027-01-01"}


def test_load_patient_shifts_relative_to_today() -> None:
    at_anchor = sc.load_patient("onset-84-days", today=sc.FIXTURE_ANCHOR)
    later = date(2027, 3, 15)
    shifted = sc.load_patient("onset-84-days", today=later)
    assert at_anchor[0]["resourceType"] == "Patient"

    def onset(resources: list[dict]) -> str:
        cond = next(r for r in resources if r["id"] == "onset-84-days-low-back-pain")
        return cond["onsetDateTime"]

    assert onset(at_anchor) == "2026-08-09"
    assert date.fromisoformat(onset(shifted)) == later - timedelta(days=84)


def test_load_patient_defaults_to_the_real_today() -> None:
    resources = sc.load_patient("onset-83-days")
    cond = next(r for r in resources if r["id"] == "onset-83-days-low-back-pain")
    assert date.fromisoformat(cond["onsetDateTime"]) == date.today() - timedelta(days=83)


def test_load_patient_rejects_bad_ids() -> None:
    with pytest.raises(sc.ScenarioError):
        sc.load_patient("../etc/passwd")
    with pytest.raises(sc.ScenarioError):
        sc.load_patient("no-such-patient")


def test_fixtures_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "patients").mkdir()
    (tmp_path / "scenarios").mkdir()
    monkeypatch.setenv("CDS_FIXTURES_DIR", str(tmp_path))
    assert sc.fixtures_dir() == tmp_path
    assert sc.list_scenarios() == []
    monkeypatch.delenv("CDS_FIXTURES_DIR")
    assert sc.fixtures_dir().name == "fhir_fixtures"
    assert "pv-rehab-referral" in sc.list_scenarios()


# ---------------------------------------------------------------- scenarios


def test_load_scenario_patient_view() -> None:
    s = sc.load_scenario("pv-many-findings", today=sc.FIXTURE_ANCHOR)
    assert s.hook == "patient-view" and s.patient_id == "many-findings"
    assert s.expected_cards == {
        "rehab-referral",
        "opioid-active",
        "imaging-radiograph-first",
        "assessment-gaps",
        "pots-management",
    }
    assert s.expected_missing_assessments == {"hypermobility", "pelvic-floor", "mast-cell"}
    assert s.draft_orders == [] and s.selections == []
    assert s.patient["id"] == "many-findings"
    assert s.context() == {"userId": "Practitioner/example", "patientId": "many-findings"}


def test_load_scenario_order_select_defaults_selections_to_all_drafts() -> None:
    s = sc.load_scenario("select-opioid-steroid-brace", today=date(2027, 1, 1))
    assert s.selections == [
        "MedicationRequest/draft-oxycodone",
        "MedicationRequest/draft-prednisone",
        "DeviceRequest/draft-lumbar-orthosis",
    ]
    ctx = s.context()
    assert ctx["selections"] == s.selections
    assert ctx["draftOrders"]["resourceType"] == "Bundle"
    assert ctx["draftOrders"]["type"] == "collection"
    drafts = [e["resource"] for e in ctx["draftOrders"]["entry"]]
    assert [d["id"] for d in drafts] == [
        "draft-oxycodone",
        "draft-prednisone",
        "draft-lumbar-orthosis",
    ]
    # draft dates are shifted like the record: authored "today"
    assert {d["authoredOn"] for d in drafts} == {"2027-01-01"}
    get_fhir_model_class("Bundle").model_validate(ctx["draftOrders"])


def test_order_sign_context_has_no_selections() -> None:
    s = sc.load_scenario("sign-opioid-text-only")
    ctx = s.context()
    assert "selections" not in ctx
    assert ctx["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"] == {
        "text": "traMADol 50 mg tablet"
    }


def _write_scenario(root: Path, name: str, body: dict) -> None:
    (root / "scenarios").mkdir(exist_ok=True)
    (root / "scenarios" / f"{name}.json").write_text(json.dumps(body))


@pytest.mark.parametrize(
    "body",
    [
        {"patient": "cohort-back-pain", "hook": "patient-vue", "expect": {"cards": []}},
        {"patient": "cohort-back-pain", "hook": "patient-view", "expect": {"cards": ["nope"]}},
        {"patient": "nobody-here", "hook": "patient-view", "expect": {"cards": []}},
        {"patient": "cohort-back-pain", "hook": "order-sign", "expect": {"cards": []}},
        {
            "patient": "cohort-back-pain",
            "hook": "order-select",
            "draftOrders": [
                {
                    "resourceType": "ServiceRequest",
                    "id": "a",
                    "status": "draft",
                    "intent": "order",
                    "subject": {"reference": "Patient/cohort-back-pain"},
                }
            ],
            "selections": ["ServiceRequest/b"],
            "expect": {"cards": []},
        },
        {
            "patient": "cohort-back-pain",
            "hook": "patient-view",
            "expect": {"cards": ["assessment-gaps"], "missing_assessments": ["sleep"]},
        },
    ],
)
def test_load_scenario_rejects_malformed(
    body: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "patients").mkdir()
    source = sc.fixtures_dir() / "patients" / "cohort-back-pain.json"
    (tmp_path / "patients" / "cohort-back-pain.json").write_text(source.read_text())
    _write_scenario(tmp_path, "broken", body)
    monkeypatch.setenv("CDS_FIXTURES_DIR", str(tmp_path))
    with pytest.raises(sc.ScenarioError):
        sc.load_scenario("broken")


# ---------------------------------------------------------------- hook_request


def test_hook_request_patient_view_with_prefetch() -> None:
    s = sc.load_scenario("pv-opioid-active", today=sc.FIXTURE_ANCHOR)
    req = s.hook_request(PREFETCH_PATIENT_VIEW, fhir_server="http://127.0.0.1:9/fhir")
    assert req["hook"] == "patient-view"
    assert uuid.UUID(req["hookInstance"]).version == 4
    assert req["fhirServer"] == "http://127.0.0.1:9/fhir"
    assert req["context"] == {"userId": "Practitioner/example", "patientId": "opioid-active"}
    prefetch = req["prefetch"]
    assert set(prefetch) == set(PREFETCH_PATIENT_VIEW)
    assert prefetch["patient"]["resourceType"] == "Patient"
    assert prefetch["patient"]["id"] == "opioid-active"
    meds = prefetch["medications"]
    assert meds["type"] == "searchset" and meds["total"] == 1
    assert meds["entry"][0]["resource"]["id"] == "opioid-active-oxycodone"
    conditions = [e["resource"]["id"] for e in prefetch["conditions"]["entry"]]
    assert "opioid-active-hypermobility" in conditions
    for value in prefetch.values():
        get_fhir_model_class(value["resourceType"]).model_validate(value)
    assert prefetch["diagnosticreports"] == {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
    }
    json.dumps(req)  # serialisable as is


def test_hook_request_active_filter_excludes_stopped_medications() -> None:
    s = sc.load_scenario("pv-opioid-stopped")
    prefetch = s.hook_request(PREFETCH_PATIENT_VIEW)["prefetch"]
    assert prefetch["medications"]["total"] == 0


def test_hook_request_without_templates_has_no_prefetch() -> None:
    s = sc.load_scenario("sign-mri-hip-no-radiograph")
    req = s.hook_request(None, hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea")
    assert req["hookInstance"] == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    assert "prefetch" not in req and "fhirServer" not in req
    assert req["hook"] == "order-sign"
    assert req["context"]["draftOrders"]["entry"][0]["resource"]["id"] == "draft-mri-hip"


def test_hook_request_order_select_prefetch_and_fresh_instances() -> None:
    s = sc.load_scenario("select-mri-hip-no-radiograph")
    first = s.hook_request(PREFETCH_ORDERS)
    second = s.hook_request(PREFETCH_ORDERS)
    assert first["hookInstance"] != second["hookInstance"]
    assert first["context"]["selections"] == ["ServiceRequest/draft-mri-hip"]
    assert set(first["prefetch"]) == set(PREFETCH_ORDERS)
    # the draft MRI is in the context, not in the record
    record_srs = [e["resource"]["id"] for e in first["prefetch"]["servicerequests"]["entry"]]
    assert "draft-mri-hip" not in record_srs


def test_unresolved_prefetch_token_drops_the_key() -> None:
    s = sc.load_scenario("pv-rehab-referral")
    prefetch = s.prefetch(
        {
            "enc": "Encounter/{{context.encounterId}}",
            "practitioner": "Practitioner/{{userPractitionerId}}",
            "patient": "Patient/{{ context.patientId }}",
        }
    )
    assert set(prefetch) == {"patient", "practitioner"}
    assert prefetch["practitioner"] is None  # read of a resource not on record
    assert prefetch["patient"]["id"] == "cohort-back-pain-no-rehab"


def test_render_template() -> None:
    ctx = {"patientId": "p1", "userId": "PractitionerRole/r9", "draftOrders": {"x": 1}}
    assert sc.render_template("Condition?patient={{context.patientId}}", ctx) == (
        "Condition?patient=p1"
    )
    assert sc.render_template("PractitionerRole/{{userPractitionerRoleId}}", ctx) == (
        "PractitionerRole/r9"
    )
    assert sc.render_template("Practitioner/{{userPractitionerId}}", ctx) is None
    assert sc.render_template("X?y={{context.draftOrders}}", ctx) is None


# ---------------------------------------------------------------- load_bundle_file


def test_load_bundle_file(tmp_path: Path) -> None:
    path = sc.fixtures_dir() / "patients" / "cohort-back-pain.json"
    resources = sc.load_bundle_file(path)
    assert resources[0]["id"] == "cohort-back-pain"
    assert all("resourceType" in r for r in resources)
    txn = tmp_path / "txn.json"
    txn.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": {"resourceType": "Patient", "id": "x"}, "request": {}},
                    {"request": {"method": "DELETE", "url": "Patient/y"}},
                ],
            }
        )
    )
    assert sc.load_bundle_file(txn) == [{"resourceType": "Patient", "id": "x"}]
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"resourceType": "Patient", "id": "z"}))
    assert sc.load_bundle_file(single) == [{"resourceType": "Patient", "id": "z"}]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(sc.ScenarioError):
        sc.load_bundle_file(bad)
    with pytest.raises(sc.ScenarioError):
        sc.load_bundle_file(tmp_path / "missing.json")
