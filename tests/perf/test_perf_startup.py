"""Startup work moved off the hot path: model warm-up and garbage-collector thresholds."""

from __future__ import annotations

import gc

import pytest

from cds_service.fhir import record
from cds_service.fhir.record import CODE_FIELDS, is_relevant, validate, warm_up
from cds_service.knowledge import load_knowledge
from cds_service.pipeline import GC_FULL_COLLECTION_EVERY, tune_garbage_collector


def test_warm_up_covers_every_type_the_record_validates():
    types = {r["resourceType"] for r in record._WARM_UP}
    assert types == set(CODE_FIELDS) | {"Patient"}
    for resource in record._WARM_UP:
        assert validate(resource) is not None, resource["resourceType"]
    warm_up()  # and again: idempotent


def test_warm_up_resources_carry_no_codes_and_reach_no_rule():
    knowledge = load_knowledge()
    for resource in record._WARM_UP:
        assert '"code": "' not in str(resource).replace("'", '"')
        # Patient, Medication and an order with a contained drug are kept whatever they say.
        if resource["resourceType"] not in ("Patient", "Medication", "MedicationRequest"):
            assert not is_relevant(resource, knowledge), resource["resourceType"]


@pytest.fixture
def restore_gc_thresholds():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_full_collections_become_rare_and_young_ones_stay(restore_gc_thresholds):
    gc.set_threshold(700, 10, 10)
    tune_garbage_collector()
    assert gc.get_threshold() == (700, 10, GC_FULL_COLLECTION_EVERY)
    tune_garbage_collector()
    assert gc.get_threshold() == (700, 10, GC_FULL_COLLECTION_EVERY)
    gc.set_threshold(500, 5, 5000)  # an operator's own, rarer setting is left alone
    tune_garbage_collector()
    assert gc.get_threshold() == (500, 5, 5000)


def test_building_the_app_tunes_the_collector(restore_gc_thresholds, settings):
    from cds_service import create_app

    gc.set_threshold(700, 10, 10)
    create_app(settings)
    assert gc.get_threshold()[2] == GC_FULL_COLLECTION_EVERY


def test_model_class_cache_holds_only_real_resource_types():
    bogus = ("NoSuchType", "x" * 200, "Patient/../Observation", "")
    for name in bogus:
        assert validate({"resourceType": name, "id": "a"}) is None
    assert validate({"resourceType": "Patient", "id": "a"}) is not None
    assert not set(bogus) & set(record._MODEL_CLASSES)
    assert record._MODEL_CLASSES["Patient"].get_resource_type() == "Patient"
