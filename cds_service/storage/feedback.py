"""Feedback and served-card records, in SQLite or PostgreSQL (see :mod:`.database`).

Durability first for feedback: each call is one transaction, committed (durably) before the
method returns, so an entry we acknowledged survives a crash or restart. Idempotent: each
feedback entry is keyed by a hash of its service and content, so a client that sends the same
feedback twice (the standard says it may), to any worker or instance, is counted once; the
database arbitrates with ``INSERT ... ON CONFLICT DO NOTHING``, so concurrent duplicates race
safely. Served cards are recorded with rule id, service and time only (no patient data) so
analytics can tell cards that were shown but never answered; they are buffered and written off
the request path (:mod:`.served`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Insert, Table, false, func, select
from sqlalchemy.dialects import postgresql, sqlite

from . import schema
from .database import Database, RetryPolicy, as_database
from .served import ServedCardBuffer

logger = logging.getLogger("cds_service.storage")

def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def entry_hash(service_id: str, entry: Mapping[str, Any]) -> str:
    canonical = json.dumps([service_id, entry], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def insert_ignoring_duplicates(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], key: Sequence[str]
) -> int:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` for every row; returns how many were new.

    One statement shape whatever the number of rows (executed as an executemany), so
    SQLAlchemy compiles it once per process and caches it; each dialect renders the same
    construct. ``rowcount`` is then the sum over the rows on both backends.
    """
    statement = _insert_ignoring(conn.dialect.name, table, tuple(key))
    return conn.execute(statement, [dict(row) for row in rows]).rowcount


@functools.cache
def _insert_ignoring(dialect_name: str, table: Table, key: tuple[str, ...]) -> Insert:
    """Built once per (backend, table): constructing the statement costs more than running it."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (
        dialect.insert(table)
        .on_conflict_do_nothing(index_elements=list(key))
        # SQLAlchemy only promises rowcount for UPDATE/DELETE unless asked to keep it.
        .execution_options(preserve_rowcount=True)
    )


class FeedbackStore:
    """Feedback and served-card records; safe to share between threads, and to fork.

    ``served_flush_s`` bounds how long a served-card record may wait in memory (0 writes it
    synchronously on the request path, as a relaxed-durability transaction).
    """

    def __init__(
        self,
        database: Database | str | Path,
        *,
        served_flush_s: float = 0.5,
        migrate: bool = True,
    ) -> None:
        self.database = as_database(database)
        if migrate:
            self.database.upgrade()
        self._served = (
            ServedCardBuffer(self._write_served, interval_s=served_flush_s)
            if served_flush_s > 0
            else None
        )

    # -- feedback (durable) ---------------------------------------------------------------------

    def add_feedback(self, service_id: str, entries: Iterable[Mapping[str, Any]]) -> int:
        """Store entries in one transaction; returns how many were new (not seen before)."""
        received = _now()
        rows = []
        seen: set[str] = set()
        for entry in entries:
            digest = entry_hash(service_id, entry)
            if digest in seen:  # the same entry twice in one request: once is enough
                continue
            seen.add(digest)
            override = entry.get("overrideReason") or {}
            reason = override.get("reason") or {}
            accepted = entry.get("acceptedSuggestions")
            rows.append(
                {
                    "entry_hash": digest,
                    "service_id": service_id,
                    "card_uuid": entry["card"],
                    "outcome": entry["outcome"],
                    "outcome_timestamp": entry["outcomeTimestamp"],
                    "accepted_suggestions": (
                        json.dumps([s["id"] for s in accepted]) if accepted else None
                    ),
                    "override_system": reason.get("system"),
                    "override_code": reason.get("code"),
                    "override_display": reason.get("display"),
                    "user_comment": override.get("userComment"),
                    "received_at": received,
                }
            )
        if not rows:
            return 0
        return self.database.run(
            lambda conn: insert_ignoring_duplicates(conn, schema.feedback, rows, ["entry_hash"])
        )

    def count_feedback(self) -> int:
        query = select(func.count()).select_from(schema.feedback)
        return self.database.run(lambda conn: conn.execute(query).scalar_one())

    def feedback_rows(self) -> list[dict[str, Any]]:
        """Every stored entry, oldest first (without the internal ``id``)."""
        columns = [schema.feedback.c[name] for name in schema.FEEDBACK_COLUMNS]
        query = select(*columns).order_by(schema.feedback.c.id)
        return self.database.run(
            lambda conn: [dict(row._mapping) for row in conn.execute(query)]
        )

    # -- served cards (analytics, buffered) -----------------------------------------------------

    def record_served(self, service_id: str, hook: str, cards: Iterable[tuple[str, str]]) -> None:
        """Record (card uuid, rule id) pairs served; no patient data is stored."""
        served = _now()
        rows = [
            {
                "card_uuid": card_uuid,
                "service_id": service_id,
                "rule_id": rule_id,
                "hook": hook,
                "served_at": served,
            }
            for card_uuid, rule_id in cards
        ]
        if not rows:
            return
        if self._served is not None:
            self._served.add(rows)
            return
        try:  # written during the call (served_flush_s=0): analytics never fail a hook call
            self._write_served(rows)
        except Exception as error:
            logger.error(
                "served-card records not written",
                extra={"error": type(error).__name__, "dropped": len(rows)},
            )

    def _write_served(self, rows: list[dict[str, Any]]) -> None:
        self.database.run(
            lambda conn: insert_ignoring_duplicates(conn, schema.served_cards, rows, ["card_uuid"]),
            relaxed=True,
        )

    def flush(self) -> None:
        """Write pending served-card records now (tests, shutdown)."""
        if self._served is not None:
            self._served.flush()

    def served_rows(self) -> list[dict[str, Any]]:
        """Every served-card record (uuid, service, rule, hook, time), oldest first."""
        table = schema.served_cards
        query = select(
            table.c.card_uuid, table.c.service_id, table.c.rule_id, table.c.hook, table.c.served_at
        ).order_by(table.c.served_at)
        return self.database.run(
            lambda conn: [dict(row._mapping) for row in conn.execute(query)]
        )

    def count_served(self) -> int:
        query = select(func.count()).select_from(schema.served_cards)
        return self.database.run(lambda conn: conn.execute(query).scalar_one())

    # -- health and lifecycle -------------------------------------------------------------------

    def writable(self) -> bool:
        """True when a write transaction can start now (readiness: reachable, not read-only).

        Runs a write that matches no row and rolls back: SQLite must take its write lock,
        PostgreSQL refuses it on a read-only server or transaction.
        """
        try:
            with self.database.engine.connect() as conn, conn.begin() as transaction:
                conn.execute(schema.served_cards.delete().where(false()))
                transaction.rollback()
            return True
        except Exception as error:  # any failure means "not ready", never a 500
            logger.warning("database not writable", extra={"error": type(error).__name__})
            return False

    def close(self) -> None:
        """Flush served-card records and close this process's connections."""
        if self._served is not None:
            self._served.close()
        self.database.dispose()


__all__ = ["FeedbackStore", "RetryPolicy", "entry_hash", "insert_ignoring_duplicates"]
