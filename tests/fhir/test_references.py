"""Medications named only by reference: which are missing, and reading them from fhirServer."""

from __future__ import annotations

import json
from time import monotonic

import pytest
import responses

from cds_service.fhir.client import FetchLimits, FhirClient
from cds_service.fhir.models import MedicationRequest
from cds_service.fhir.record import validate
from cds_service.fhir.references import (
    IN_FLIGHT,
    MAX_READS,
    missing_medications,
    read_medications,
)

FHIR = "https://fhir.example.org/r4"
TOKEN = "tok-SECRET-9"


def order(rid: str, reference: str) -> MedicationRequest:
    model = validate({"resourceType": "MedicationRequest", "id": rid, "status": "active",
                      "intent": "order", "subject": {"reference": "Patient/p1"},
                      "medicationReference": {"reference": reference}})
    assert model is not None
    return model


def medication(mid: str) -> dict:
    return {"resourceType": "Medication", "id": mid,
            "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                 "code": "7804"}]}}


def test_missing_are_the_relative_references_not_at_hand_each_once_in_order():
    orders = [
        order("a", "Medication/oxy"),
        order("b", "Medication/have"),
        order("c", "Medication/oxy"),  # once
        order("d", "#contained"),  # travels with its order
        order("e", "https://other.example/fhir/Medication/x"),  # never: the token stays home
        order("f", "Patient/p1"),  # not a Medication
        order("i", "Medication/second"),
    ]
    have = {"Medication/have": object()}
    assert missing_medications(orders, have) == ["oxy", "second"]
    assert missing_medications([], have) == []


def test_a_version_of_a_medication_is_read_by_its_id():
    orders = [
        order("a", "Medication/oxy/_history/3"),
        order("b", "Medication/oxy"),  # the same Medication: once
        order("c", "Medication/have/_history/1"),  # at hand already, whatever the version
        order("d", "Medication/x/_history/"),  # no version: not a reference
    ]
    assert missing_medications(orders, {"Medication/have": object()}) == ["oxy"]


@pytest.fixture
def client():
    c = FhirClient(limits=FetchLimits(timeout_s=1.0, deadline_s=3.0))
    yield c
    c.close()


def read(client, ids, *, server=FHIR, allowlist=(FHIR,)):
    return read_medications(ids, fhir_server=server, token=TOKEN, client=client,
                            allowlist=allowlist, allow_loopback_http=False,
                            deadline=monotonic() + 3.0)


@responses.activate
def test_each_missing_medication_is_read_with_the_token_and_failures_are_told_apart(client):
    responses.get(f"{FHIR}/Medication/oxy", json=medication("oxy"))
    responses.get(f"{FHIR}/Medication/gone", status=404)  # no such Medication: not a failure
    responses.get(f"{FHIR}/Medication/broken", status=500)
    reads = read(client, ["oxy", "gone", "broken"])
    assert [m["id"] for m in reads.found] == ["oxy"]
    assert reads.failed == {"broken": "http-500"}
    assert {c.request.headers["Authorization"] for c in responses.calls} == {f"Bearer {TOKEN}"}


@responses.activate
def test_nothing_is_read_without_a_trusted_server(client):
    for reads in (read(client, ["oxy"], server=None),
                  read(client, ["oxy"], allowlist=("https://elsewhere.example/r4",)),
                  read(client, [])):
        assert (reads.found, reads.failed) == ([], {})
    assert len(responses.calls) == 0


@responses.activate
def test_at_most_max_reads_are_sent_and_at_most_in_flight_at_once(client, monkeypatch):
    ids = [f"m{n}" for n in range(MAX_READS + 5)]
    for mid in ids:
        responses.get(f"{FHIR}/Medication/{mid}", json=medication(mid))
    sizes = []
    fetch = client.fetch

    def counted(base, queries, **kwargs):
        sizes.append(len(queries))
        assert all(not key.startswith("Medication") for key in queries)  # keys carry no id
        return fetch(base, queries, **kwargs)

    monkeypatch.setattr(client, "fetch", counted)
    reads = read(client, ids)
    assert len(reads.found) == MAX_READS and reads.failed == {}
    assert len(responses.calls) == MAX_READS
    assert max(sizes) == IN_FLIGHT and sum(sizes) == MAX_READS


@responses.activate
def test_the_reads_share_the_hook_call_s_byte_budget_across_batches():
    """One budget for the whole hook call: with one per batch, each batch of 7 would get its
    own, and 32 reads could take about five budgets."""
    ids = [f"m{n}" for n in range(2 * IN_FLIGHT)]
    for mid in ids:
        responses.get(f"{FHIR}/Medication/{mid}", json=medication(mid))
    size = len(json.dumps(medication("m0"))) + 8
    with FhirClient(limits=FetchLimits(max_call_bytes=IN_FLIGHT * size)) as small:
        budget = small.budget()
        reads = read_medications(ids, fhir_server=FHIR, token=None, client=small,
                                 allowlist=(FHIR,), allow_loopback_http=False,
                                 deadline=monotonic() + 3.0, budget=budget)
    assert len(reads.found) <= IN_FLIGHT
    assert len(reads.failed) >= IN_FLIGHT and set(reads.failed.values()) == {"too-large"}
