"""memory_fhir: search semantics of the in-memory FHIR double, and its HTTP server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from cds_service.devtools import memory_fhir as mf
from cds_service.devtools.scenarios import FIXTURE_ANCHOR, load_patient


def _patient(pid: str) -> dict:
    return {"resourceType": "Patient", "id": pid}


def _med(mid: str, pid: str, status: str, *, key: str = "subject") -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        key: {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": {"text": "x"},
    }


RESOURCES = [
    _patient("p1"),
    _patient("p2"),
    _med("m1", "p1", "active"),
    _med("m2", "p1", "stopped"),
    _med("m3", "p1", "on-hold"),
    _med("m4", "p2", "active"),
    {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "https://ehr.example.org/fhir/Patient/p1"},
    },
    {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Group/p1"}},
]


def _ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_read_returns_resource_or_none() -> None:
    assert mf.search(RESOURCES, "Patient/p1") == {"resourceType": "Patient", "id": "p1"}
    assert mf.search(RESOURCES, "/Patient/p2")["id"] == "p2"
    assert mf.search(RESOURCES, "Patient/nobody") is None
    assert mf.search(RESOURCES, "MedicationRequest/p1") is None  # type matters


def test_search_by_patient_and_subject() -> None:
    by_patient = mf.search(RESOURCES, "MedicationRequest?patient=p1")
    assert by_patient["resourceType"] == "Bundle" and by_patient["type"] == "searchset"
    assert _ids(by_patient) == ["m1", "m2", "m3"] and by_patient["total"] == 3
    assert _ids(mf.search(RESOURCES, "MedicationRequest?subject=Patient/p1")) == ["m1", "m2", "m3"]
    assert _ids(mf.search(RESOURCES, "MedicationRequest?patient=Patient/p2")) == ["m4"]
    # absolute references match; a Group with the same id does not
    assert _ids(mf.search(RESOURCES, "Condition?patient=p1")) == ["c1"]


def test_status_is_or_within_and_across_parameters() -> None:
    q = "MedicationRequest?patient=p1&status=active,on-hold"
    assert _ids(mf.search(RESOURCES, q)) == ["m1", "m3"]
    q = "MedicationRequest?patient=p1&status=active,on-hold&status=on-hold"
    assert _ids(mf.search(RESOURCES, q)) == ["m3"]


def test_count_and_sort_are_ignored() -> None:
    q = "MedicationRequest?patient=p1&_count=1&_sort=-authoredon"
    assert _ids(mf.search(RESOURCES, q)) == ["m1", "m2", "m3"]


def test_empty_search_keeps_total() -> None:
    assert mf.search(RESOURCES, "Procedure?patient=p1") == {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 0,
    }


def test_patient_field_is_searched_too() -> None:
    resources = [_med("m9", "p3", "active", key="patient")]
    assert _ids(mf.search(resources, "MedicationRequest?patient=p3")) == ["m9"]


@pytest.mark.parametrize(
    "query",
    [
        "Observation?patient=p1&code=http://loinc.org|44261-6",
        "Observation?patient=Group/p1",
        "Patient/p1?x=1",
        "lowercase?patient=p1",
    ],
)
def test_unsupported_queries_raise(query: str) -> None:
    with pytest.raises(mf.UnsupportedQuery):
        mf.search(RESOURCES, query)


def test_search_on_fixture_patient() -> None:
    resources = load_patient("opioid-active", today=FIXTURE_ANCHOR)
    conditions = mf.search(resources, "Condition?patient=opioid-active")
    assert conditions["total"] == 3  # hypermobility, back pain, mast cell
    active = mf.search(resources, "MedicationRequest?patient=opioid-active&status=active")
    assert _ids(active) == ["opioid-active-oxycodone"]


# ---------------------------------------------------------------- HTTP server


@pytest.fixture
def server() -> Iterator[str]:
    resources = [*RESOURCES, *(_med(f"x{i}", "p2", "active") for i in range(5))]
    httpd, base = mf.serve(resources, page_size=2)
    try:
        yield base
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_server_metadata_and_read(server: str) -> None:
    meta = requests.get(f"{server}/metadata", timeout=5)
    assert meta.status_code == 200
    assert meta.headers["Content-Type"].startswith("application/fhir+json")
    assert meta.json()["resourceType"] == "CapabilityStatement"
    assert meta.json()["fhirVersion"] == "4.0.1"
    read = requests.get(f"{server}/Patient/p1", timeout=5)
    assert read.status_code == 200 and read.json() == {"resourceType": "Patient", "id": "p1"}
    missing = requests.get(f"{server}/Patient/zzz", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_server_rejects_unsupported_search(server: str) -> None:
    bad = requests.get(f"{server}/Observation?patient=p1&code=1234-5", timeout=5)
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["code"] == "not-supported"


def test_server_pages_with_next_links(server: str) -> None:
    url: str | None = f"{server}/MedicationRequest?patient=p2&status=active"
    seen: list[str] = []
    pages = 0
    while url:
        bundle = requests.get(url, timeout=5).json()
        assert bundle["type"] == "searchset" and bundle["total"] == 6
        assert len(bundle.get("entry", [])) <= 2
        for entry in bundle["entry"]:
            assert entry["fullUrl"] == f"{server}/MedicationRequest/{entry['resource']['id']}"
        seen += _ids(bundle)
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith(f"{server}/MedicationRequest?")
        url = links.get("next")
        pages += 1
    assert pages == 3
    assert seen == ["m4", "x0", "x1", "x2", "x3", "x4"]


def test_server_without_paging_returns_everything() -> None:
    httpd, base = mf.serve(RESOURCES)
    try:
        bundle = requests.get(f"{base}/MedicationRequest?patient=p1", timeout=5).json()
        assert _ids(bundle) == ["m1", "m2", "m3"]
        assert [link["relation"] for link in bundle["link"]] == ["self"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_server_delay_is_applied_per_response() -> None:
    httpd, base = mf.serve(RESOURCES, delay_s=0.2)
    try:
        start = time.monotonic()
        assert requests.get(f"{base}/Patient/p1", timeout=5).status_code == 200
        assert time.monotonic() - start >= 0.2
    finally:
        httpd.shutdown()
        httpd.server_close()
