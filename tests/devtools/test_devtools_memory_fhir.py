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


def _by_reference(mid: str, pid: str, medication: str) -> dict:
    order = _med(mid, pid, "active")
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": medication}
    return order


INCLUDE = "&_include=MedicationRequest:medication"
WITH_MEDICATIONS = [
    _patient("p5"),
    _by_reference("r1", "p5", "Medication/oxy"),
    _by_reference("r2", "p5", "https://ehr.example.org/fhir/Medication/oxy"),  # the same one
    _by_reference("r3", "p5", "Medication/apap"),
    _by_reference("r4", "p5", "#contained"),
    _by_reference("r5", "p5", "Medication/not-held"),
    _med("r6", "p5", "stopped"),
    {"resourceType": "Medication", "id": "oxy", "code": {"text": "oxycodone 5 mg tablet"}},
    {"resourceType": "Medication", "id": "apap", "code": {"text": "acetaminophen"}},
    {"resourceType": "Medication", "id": "unused", "code": {"text": "ibuprofen"}},
]


def _modes(bundle: dict) -> list[tuple[str, str]]:
    return [(e["search"]["mode"], e["resource"]["id"]) for e in bundle.get("entry", [])]


def test_include_medication_adds_the_referenced_medications_once() -> None:
    found = mf.search(WITH_MEDICATIONS, f"MedicationRequest?patient=p5&status=active{INCLUDE}")
    assert _modes(found) == [
        ("match", "r1"), ("match", "r2"), ("match", "r3"), ("match", "r4"), ("match", "r5"),
        ("include", "oxy"), ("include", "apap"),
    ]
    assert found["total"] == 5  # matches only
    plain = mf.search(WITH_MEDICATIONS, "MedicationRequest?patient=p5&status=active")
    assert [mode for mode, _ in _modes(plain)] == ["match"] * 5
    assert _modes(mf.search(WITH_MEDICATIONS, "MedicationRequest?patient=p5&status=stopped"
                                              f"{INCLUDE}")) == [("match", "r6")]


@pytest.mark.parametrize("include", ["MedicationRequest:subject", "Condition:medication",
                                     "MedicationRequest:medication:Substance", "*"])
def test_other_includes_are_unsupported(include: str) -> None:
    with pytest.raises(mf.UnsupportedQuery):
        mf.search(WITH_MEDICATIONS, f"MedicationRequest?patient=p5&_include={include}")
    with pytest.raises(mf.UnsupportedQuery):
        mf.search(WITH_MEDICATIONS, f"Condition?patient=p5&_include={include}")


def test_server_pages_include_the_medications_of_each_page() -> None:
    httpd, base = mf.serve(WITH_MEDICATIONS, page_size=2)
    try:
        url: str | None = f"{base}/MedicationRequest?patient=p5&status=active{INCLUDE}"
        pages = []
        while url:
            page = requests.get(url, timeout=5).json()
            assert page["total"] == 5
            for entry in page["entry"]:
                kind = entry["resource"]["resourceType"]
                assert entry["fullUrl"] == f"{base}/{kind}/{entry['resource']['id']}"
            pages.append(_modes(page))
            url = {link["relation"]: link["url"] for link in page["link"]}.get("next")
        assert pages == [
            [("match", "r1"), ("match", "r2"), ("include", "oxy")],
            [("match", "r3"), ("match", "r4"), ("include", "apap")],
            [("match", "r5")],
        ]
        meta = requests.get(f"{base}/metadata", timeout=5).json()
        by_type = {r["type"]: r for r in meta["rest"][0]["resource"]}
        assert by_type["MedicationRequest"]["searchInclude"][0] == "MedicationRequest:medication"
        assert "Medication" in by_type
    finally:
        httpd.shutdown()
        httpd.server_close()


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
