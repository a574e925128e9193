"""Every fixture scenario against a real FHIR R4 server process, over HTTP, with no prefetch.

The server (``integration/fhir-server``: Medplum's FHIR router and in-memory search engine behind
node:http) is started outside pytest, by ``.ci/run`` or by hand, and named by
``CDS_TEST_FHIR_URL``. The fixtures go in through the real ``load-fixtures`` command, and the
service then finds each patient's data only through its own FHIR queries, so reference search by
bare id, ``status`` token search, reads, 404s and ``next`` paging are all a real server's answers
rather than our in-memory stand-in's (``tests/scenarios`` covers that path with ``responses``).
Patients of the tests' own (at the end) name an opioid only by a ``Medication/<id>`` reference,
which the service must then read from the server.

Without ``CDS_TEST_FHIR_URL`` every test here is skipped, so ``make test`` passes on a machine
without node. ``make integration`` (run by ``.ci/run``) starts the server, sets the URL and
``CDS_TEST_FHIR_REQUIRED=1``, and fails if the server does not come up.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import requests

from cds_service import create_app
from cds_service.cli import main
from cds_service.devtools.load_fixtures import load_fixtures, transaction
from cds_service.devtools.scenarios import (
    QUERIED_TYPES,
    list_patients,
    list_scenarios,
    load_patient,
    load_scenario,
)
from cds_service.settings import Settings

FHIR_URL = os.environ.get("CDS_TEST_FHIR_URL", "").rstrip("/")
# Set by the runner script, so that a lost URL fails the run instead of skipping it quietly.
REQUIRED = os.environ.get("CDS_TEST_FHIR_REQUIRED") == "1"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not FHIR_URL and not REQUIRED,
        reason="CDS_TEST_FHIR_URL is not set: start integration/fhir-server (see .ci/run) to run",
    ),
]

FHIR_JSON = "application/fhir+json"
# The resource types the service searches by patient (the Patient itself it reads by id).
SEARCHED_TYPES = tuple(t for t in QUERIED_TYPES if t != "Patient")
MAX_PAGES = 50


def search_ids(session: requests.Session, resource_type: str, patient_id: str) -> list[str]:
    """Ids of every ``resource_type`` for the patient, following the server's ``next`` links."""
    url: str | None = f"{FHIR_URL}/{resource_type}?patient={patient_id}"
    ids: list[str] = []
    total = None
    for _ in range(MAX_PAGES):
        if url is None:
            break
        response = session.get(url, headers={"Accept": FHIR_JSON}, timeout=10)
        assert response.status_code == 200, response.text[:300]
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        total = bundle.get("total", total)
        ids += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"),
                   None)
    else:
        pytest.fail(f"{resource_type}?patient={patient_id}: more than {MAX_PAGES} pages")
    if total is not None:
        assert total == len(ids), f"{resource_type}?patient={patient_id}: total {total}"
    return ids


def server_state(session: requests.Session) -> dict[tuple[str, str], Counter]:
    """(patient, type) -> ids found by search on the server, as a multiset (duplicates show)."""
    return {
        (patient_id, rtype): Counter(search_ids(session, rtype, patient_id))
        for patient_id in list_patients()
        for rtype in SEARCHED_TYPES
    }


def fixture_state() -> dict[tuple[str, str], Counter]:
    expected: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for patient_id in list_patients():
        for resource in load_patient(patient_id):
            if resource["resourceType"] in SEARCHED_TYPES:
                expected[(patient_id, resource["resourceType"])][resource["id"]] += 1
    return {
        (p, t): expected.get((p, t), Counter()) for p in list_patients() for t in SEARCHED_TYPES
    }


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


@pytest.fixture(scope="module")
def loaded(session) -> dict[tuple[str, str], Counter]:
    """Load every fixture patient through the CLI, once; return what search then finds."""
    assert FHIR_URL, "CDS_TEST_FHIR_REQUIRED=1 but CDS_TEST_FHIR_URL is not set"
    response = session.get(f"{FHIR_URL}/metadata", headers={"Accept": FHIR_JSON}, timeout=10)
    assert response.status_code == 200, f"{FHIR_URL}/metadata: HTTP {response.status_code}"
    capability = response.json()
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"].startswith("4.0")
    assert main(["load-fixtures", "--fhir-server", FHIR_URL]) == 0
    return server_state(session)


@pytest.fixture(scope="module")
def client(tmp_path_factory, loaded):
    settings = Settings(
        auth="off",
        database_url=f"sqlite:///{tmp_path_factory.mktemp('db') / 'cds.sqlite3'}",
        fhir_server_allowlist=(FHIR_URL,),
        allow_loopback_http=True,
        # Correctness, not latency, is under test: a busy CI machine must not turn into a 412.
        fhir_timeout_s=10.0,
        fhir_deadline_s=20.0,
    )
    return create_app(settings).test_client()


def test_load_fixtures_puts_every_resource_where_search_finds_it(loaded):
    assert loaded == fixture_state()
    assert sum(sum(ids.values()) for ids in loaded.values()) > 0


def test_loading_twice_changes_nothing(session, loaded):
    result = load_fixtures(FHIR_URL)
    assert [item.patient_id for item in result] == list_patients()
    assert server_state(session) == loaded


def test_load_fixtures_fails_clearly_when_the_real_server_refuses(loaded, capsys):
    # POSTing a transaction Bundle to a type endpoint is a create of the wrong type: a 400.
    code = main(["load-fixtures", "--fhir-server", f"{FHIR_URL}/Patient",
                 "--patient", "opioid-active"])
    assert code == 1
    assert "refused patient opioid-active: HTTP 400" in capsys.readouterr().err


def test_every_patient_reads_back(session, loaded):
    for patient_id in list_patients():
        response = session.get(f"{FHIR_URL}/Patient/{patient_id}",
                               headers={"Accept": FHIR_JSON}, timeout=10)
        assert response.status_code == 200
        assert response.json()["id"] == patient_id


def test_active_medication_search_filters_by_status(session, loaded):
    """The patient-view service's ``status=active`` query must be answered by the server."""
    checked = 0
    for patient_id in list_patients():
        meds = [r for r in load_patient(patient_id) if r["resourceType"] == "MedicationRequest"]
        if not meds:
            continue
        response = session.get(
            f"{FHIR_URL}/MedicationRequest",
            params={"patient": patient_id, "status": "active"},
            headers={"Accept": FHIR_JSON},
            timeout=10,
        )
        assert response.status_code == 200
        found = {e["resource"]["id"] for e in response.json().get("entry", [])}
        assert found == {m["id"] for m in meds if m.get("status") == "active"}
        checked += 1
    assert checked > 0


def test_searches_page_with_next_links(session, loaded):
    """The service follows ``next``; the server must page (CI also shrinks its default page)."""
    (patient_id, rtype), ids = max(loaded.items(), key=lambda kv: sum(kv[1].values()))
    assert sum(ids.values()) >= 3
    url = f"{FHIR_URL}/{rtype}?patient={patient_id}&_count=2"
    pages, found = 0, Counter()
    while url and pages < MAX_PAGES:
        bundle = session.get(url, headers={"Accept": FHIR_JSON}, timeout=10).json()
        assert len(bundle.get("entry", [])) <= 2
        found.update(e["resource"]["id"] for e in bundle.get("entry", []))
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"),
                   None)
        pages += 1
    assert pages == -(-sum(ids.values()) // 2)
    assert found == ids


@pytest.mark.parametrize("name", list_scenarios())
def test_scenario_with_the_service_querying_the_server(client, name):
    scenario = load_scenario(name)
    body = scenario.hook_request(None, fhir_server=FHIR_URL)
    assert "prefetch" not in body
    response = client.post(f"/cds-services/{scenario.service.id}", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    fired = {card["source"]["topic"]["code"] for card in response.get_json()["cards"]}
    assert fired == set(scenario.expected_cards), (
        f"{name} at {datetime.now(UTC):%Y-%m-%d}: {scenario.notes}"
    )


# An opioid named only in a referenced Medication, which the service must read from the server.
# No fixture scenario names its drug by `medicationReference: {"reference": "Medication/<id>"}`
# alone, so these tests PUT patients of their own: copies of the in-cohort `cohort-back-pain`
# (every assessment on record, a recent rehabilitation order: no cards, scenario
# `pv-in-cohort-nothing-due`) under fresh ids, each with an active MedicationRequest naming a
# Medication by reference only. One of those Medications (the hydrocodone/acetaminophen of
# `select-opioid-contained-medication`) is PUT too; the other is not, so its read is a real 404.
# Everything PUT is deleted afterwards; no fixture file or fixture id is touched.

PATIENT_VIEW = "/cds-services/hypermobility-pain-patient-view"
BASE_PATIENT = "cohort-back-pain"
BASE_SCENARIO = "pv-in-cohort-nothing-due"
# Fresh for every run, so that neither a server kept between runs nor a fixture id collides.
RUN = f"itest-medread-{uuid.uuid4().hex[:12]}"
HELD, ABSENT = f"{RUN}-held", f"{RUN}-absent"  # the two patients
MEDICATION_ID, MISSING_MEDICATION_ID = f"{RUN}-med", f"{RUN}-med-not-on-server"


def base_cards() -> set[str]:
    """The exact cards the base patient gets (none); the copies differ only by their order."""
    scenario = load_scenario(BASE_SCENARIO)
    assert (scenario.patient_id, scenario.hook) == (BASE_PATIENT, "patient-view")
    return set(scenario.expected_cards)


def opioid_medication() -> dict:
    """The fixtures' contained Medication coded RxNorm 857002 (in the CDC opioid value set), as
    a resource of its own."""
    (draft,) = load_scenario("select-opioid-contained-medication").draft_orders
    (medication,) = draft["contained"]
    assert medication["code"]["coding"][0]["code"] == "857002"
    return {**medication, "id": MEDICATION_ID}


def patient_naming_by_reference(patient_id: str, medication_id: str) -> list[dict]:
    """``cohort-back-pain`` (dates shifted to today) re-id'd as ``patient_id``, plus an active
    MedicationRequest whose drug is only ``medicationReference`` to ``Medication/<id>``."""
    text = json.dumps(load_patient(BASE_PATIENT))
    resources = json.loads(text.replace(f'"{BASE_PATIENT}', f'"{patient_id}')
                           .replace(f'"Patient/{BASE_PATIENT}"', f'"Patient/{patient_id}"'))
    assert BASE_PATIENT not in json.dumps(resources)
    assert not any(r["resourceType"] in ("MedicationRequest", "Medication") for r in resources)
    order = {
        "resourceType": "MedicationRequest",
        "id": f"{patient_id}-opioid",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": f"Medication/{medication_id}"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": (datetime.now(UTC).date() - timedelta(days=47)).isoformat(),
    }
    return [*resources, order]


def assert_on_the_server_as_meant(session) -> None:
    """The premise of the two tests below: one Medication is there to be read, the other is
    not, and each patient's only active order names its drug by reference alone."""
    held = session.get(f"{FHIR_URL}/Medication/{MEDICATION_ID}",
                       headers={"Accept": FHIR_JSON}, timeout=10)
    assert held.status_code == 200 and held.json()["code"] == opioid_medication()["code"]
    missing = session.get(f"{FHIR_URL}/Medication/{MISSING_MEDICATION_ID}",
                          headers={"Accept": FHIR_JSON}, timeout=10)
    assert missing.status_code == 404
    for patient_id in (HELD, ABSENT):
        bundle = session.get(f"{FHIR_URL}/MedicationRequest",
                             params={"patient": patient_id, "status": "active"},
                             headers={"Accept": FHIR_JSON}, timeout=10).json()
        (order,) = [e["resource"] for e in bundle.get("entry", [])]
        assert set(order) & {"medicationCodeableConcept", "contained"} == set()


@pytest.fixture(scope="module")
def referencing_patients(session, loaded):
    """PUT both patients and the one Medication as the loader does (a transaction of PUTs);
    DELETE every one of them afterwards."""
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    put = [
        *patient_naming_by_reference(HELD, MEDICATION_ID),
        *patient_naming_by_reference(ABSENT, MISSING_MEDICATION_ID),
        opioid_medication(),
    ]
    try:
        response = session.post(FHIR_URL, json=transaction(put), headers=headers, timeout=30)
        assert response.status_code < 300, response.text[:300]
        assert_on_the_server_as_meant(session)
        yield
    finally:
        deleted = {
            f"{r['resourceType']}/{r['id']}": session.delete(
                f"{FHIR_URL}/{r['resourceType']}/{r['id']}", headers=headers, timeout=10
            ).status_code
            for r in reversed(put)
        }
        assert all(status < 300 for status in deleted.values()), deleted


def patient_view(client, patient_id: str, log_lines) -> tuple[set[str], dict]:
    """Call patient-view with ``fhirServer`` and no prefetch: the rule ids of its cards, and the
    call's ``hook answered`` log line."""
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": FHIR_URL,
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
    }
    response = client.post(PATIENT_VIEW, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    (line,) = [line for line in log_lines() if line["message"] == "hook answered"]
    assert line["prefetch_keys"] == [] and "medications" in line["fetched_keys"]
    assert RUN not in log_lines.text()  # ids are patient data: only counts are logged
    return {card["source"]["topic"]["code"] for card in response.get_json()["cards"]}, line


def test_an_opioid_in_a_medication_read_from_the_server_gets_its_card(
    client, referencing_patients, log_lines
):
    cards, line = patient_view(client, HELD, log_lines)
    assert cards == base_cards() | {"opioid-active"}
    assert (line["medications_read"], line["unresolved_medications"]) == (1, 0)


def test_a_medication_the_server_does_not_hold_leaves_its_order_unclassified(
    client, referencing_patients, log_lines
):
    cards, line = patient_view(client, ABSENT, log_lines)
    assert cards == base_cards()
    assert "opioid-active" not in cards
    assert (line["medications_read"], line["unresolved_medications"]) == (0, 1)
