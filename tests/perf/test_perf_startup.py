"""Startup work moved off the hot path: garbage-collector thresholds."""

from __future__ import annotations

import gc

import pytest

from cds_service.pipeline import GC_FULL_COLLECTION_EVERY, tune_garbage_collector


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
