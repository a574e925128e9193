"""FeedbackStore on both backends: idempotent, ordered, concurrent writers lose nothing."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from cds_service.storage import schema
from cds_service.storage.database import Database
from cds_service.storage.feedback import FeedbackStore, entry_hash

SERVICE = "hypermobility-pain-patient-view"


def entry(card: str, outcome: str = "accepted", **extra) -> dict:
    body = {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-20T10:05:31Z"}
    if outcome == "accepted":
        body["acceptedSuggestions"] = [{"id": f"s-{card}"}]
    body.update(extra)
    return body


@pytest.fixture
def store(database_url):
    store = FeedbackStore(database_url)
    yield store
    store.close()


def test_add_feedback_counts_new_entries_once(store):
    assert store.add_feedback(SERVICE, [entry("c-1"), entry("c-2")]) == 2
    assert store.add_feedback(SERVICE, [entry("c-1"), entry("c-3")]) == 1
    assert store.add_feedback(SERVICE, [entry("c-1")]) == 0
    # The same entry twice within one request is one entry.
    assert store.add_feedback(SERVICE, [entry("c-4"), entry("c-4")]) == 1
    assert store.count_feedback() == 4
    # Same content for another service is a different entry.
    assert store.add_feedback("other-service", [entry("c-1")]) == 1
    assert store.add_feedback(SERVICE, []) == 0


def test_rows_keep_every_field_in_arrival_order(store):
    overridden = entry(
        "c-2",
        "overridden",
        overrideReason={
            "reason": {"system": "urn:x", "code": "palliative-intent", "display": "Palliative"},
            "userComment": "hospice referral pending",
        },
    )
    store.add_feedback(SERVICE, [entry("c-9"), overridden, entry("c-1")])
    rows = store.feedback_rows()
    assert [r["card_uuid"] for r in rows] == ["c-9", "c-2", "c-1"]
    assert set(rows[0]) == set(schema.FEEDBACK_COLUMNS)
    assert rows[0]["accepted_suggestions"] == '["s-c-9"]'
    assert rows[0]["entry_hash"] == entry_hash(SERVICE, entry("c-9"))
    assert (rows[1]["override_system"], rows[1]["override_code"]) == ("urn:x", "palliative-intent")
    assert rows[1]["user_comment"] == "hospice referral pending"
    assert rows[1]["accepted_suggestions"] is None


def test_large_request_spans_several_insert_chunks(store):
    entries = [entry(f"c-{i}") for i in range(1234)]
    assert store.add_feedback(SERVICE, entries) == 1234
    assert store.add_feedback(SERVICE, entries[600:700] + [entry("new")]) == 1
    assert store.count_feedback() == 1235


def test_feedback_survives_a_new_store_on_the_same_database(database_url, store):
    store.add_feedback(SERVICE, [entry("c-1")])
    store.close()
    again = FeedbackStore(database_url)
    try:
        assert again.count_feedback() == 1
        assert again.add_feedback(SERVICE, [entry("c-1")]) == 0
    finally:
        again.close()


def test_concurrent_writers_lose_nothing_and_count_each_entry_once(database_url):
    """8 threads x 2 stores (two 'workers'), overlapping entries: every new entry once."""
    stores = [FeedbackStore(database_url), FeedbackStore(database_url)]
    barrier = threading.Barrier(8)

    def writer(n: int) -> int:
        barrier.wait()
        added = 0
        for i in range(25):
            # Entries 0..99 are sent by two writers each; 100.. are unique to one writer.
            shared = entry(f"shared-{(n * 25 + i) % 100}")
            own = entry(f"own-{n}-{i}")
            added += stores[n % 2].add_feedback(SERVICE, [shared, own])
        return added

    try:
        with ThreadPoolExecutor(8) as pool:
            added = sum(pool.map(writer, range(8)))
        assert stores[0].count_feedback() == 100 + 8 * 25
        assert added == 100 + 8 * 25  # each new row reported new exactly once
    finally:
        for s in stores:
            s.close()


def test_served_cards_are_buffered_then_written(database_url):
    store = FeedbackStore(database_url, served_flush_s=0.2)
    try:
        store.record_served(SERVICE, "patient-view", [("u-1", "rule-a"), ("u-2", "rule-b")])
        store.record_served(SERVICE, "patient-view", [])
        assert store.count_served() == 0  # not on the request path
        deadline = time.monotonic() + 5
        while store.count_served() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.count_served() == 2
        # A resent uuid is not a second card.
        store.record_served(SERVICE, "patient-view", [("u-1", "rule-a")])
        store.flush()
        assert store.count_served() == 2
    finally:
        store.close()


def test_close_writes_pending_served_cards(database_url):
    store = FeedbackStore(database_url, served_flush_s=60)
    store.record_served(SERVICE, "order-select", [("u-9", "rule-z")])
    store.close()
    check = FeedbackStore(database_url)
    try:
        with check.database.engine.connect() as conn:
            rows = conn.execute(select(schema.served_cards)).mappings().all()
        assert [(r["card_uuid"], r["rule_id"], r["hook"]) for r in rows] == [
            ("u-9", "rule-z", "order-select")
        ]
    finally:
        check.close()


def test_served_cards_synchronous_mode(database_url):
    store = FeedbackStore(database_url, served_flush_s=0)
    try:
        store.record_served(SERVICE, "patient-view", [("u-1", "rule-a")])
        assert store.count_served() == 1
    finally:
        store.close()


def test_writable(store):
    assert store.writable() is True


def test_not_writable_while_another_process_holds_the_sqlite_write_lock(tmp_path):
    path = tmp_path / "locked.sqlite3"
    FeedbackStore(path).close()
    store = FeedbackStore(Database(f"sqlite:///{path}", sqlite_busy_timeout_s=0.2))
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        assert store.writable() is True
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        assert store.writable() is False
        assert time.monotonic() - started < 5  # bounded by the busy timeout, no retry loop
        holder.execute("ROLLBACK")
        assert store.writable() is True
    finally:
        holder.close()
        store.close()


def test_not_writable_when_postgres_is_read_only(postgres_url):
    store = FeedbackStore(postgres_url)
    try:
        assert store.writable() is True
        with store.database.engine.connect() as conn:
            conn.exec_driver_sql("SET SESSION default_transaction_read_only = on")
            conn.commit()
        # The pool holds one connection, now read-only: the readiness check must say so.
        assert store.writable() is False
    finally:
        store.close()
