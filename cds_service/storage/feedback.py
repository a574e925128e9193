"""Feedback and served-card records in an embedded SQLite database.

Durability first: WAL journal with ``synchronous=FULL``, so an entry we acknowledged survives a
crash or restart. Idempotent: each feedback entry is keyed by a hash of its service and content,
so a client that sends the same feedback twice (the standard says it may) is counted once.
Served cards are recorded with rule id, service and time only (no patient data) so analytics can
tell cards that were shown but never answered.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    entry_hash TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    outcome_timestamp TEXT NOT NULL,
    accepted_suggestions TEXT,
    override_system TEXT,
    override_code TEXT,
    override_display TEXT,
    user_comment TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback (card_uuid);
CREATE TABLE IF NOT EXISTS served_cards (
    card_uuid TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    served_at TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def entry_hash(service_id: str, entry: Mapping[str, Any]) -> str:
    canonical = json.dumps([service_id, entry], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class FeedbackStore:
    """One SQLite file; one connection per thread (SQLite connections are not thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connection() as conn:
            conn.executescript(SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        yield conn

    def add_feedback(self, service_id: str, entries: Iterable[Mapping[str, Any]]) -> int:
        """Store entries in one transaction; returns how many were new (not seen before)."""
        rows = []
        received = _now()
        for entry in entries:
            reason = (entry.get("overrideReason") or {}).get("reason") or {}
            accepted = entry.get("acceptedSuggestions")
            rows.append(
                (
                    entry_hash(service_id, entry),
                    service_id,
                    entry["card"],
                    entry["outcome"],
                    entry["outcomeTimestamp"],
                    json.dumps([s["id"] for s in accepted]) if accepted else None,
                    reason.get("system"),
                    reason.get("code"),
                    reason.get("display"),
                    (entry.get("overrideReason") or {}).get("userComment"),
                    received,
                )
            )
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO feedback VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows
                )
                added = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return added

    def record_served(self, service_id: str, hook: str, cards: Iterable[tuple[str, str]]) -> None:
        """Record (card uuid, rule id) pairs served; no patient data is stored."""
        served = _now()
        rows = [(card_uuid, service_id, rule_id, hook, served) for card_uuid, rule_id in cards]
        if not rows:
            return
        with self._connection() as conn:
            conn.executemany("INSERT OR IGNORE INTO served_cards VALUES (?,?,?,?,?)", rows)

    def count_feedback(self) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]

    def feedback_rows(self) -> list[dict[str, Any]]:
        with self._connection() as conn:
            conn.row_factory = sqlite3.Row
            try:
                return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY rowid")]
            finally:
                conn.row_factory = None

    def writable(self) -> bool:
        try:
            with self._connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False
