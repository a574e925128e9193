"""Alembic migrations: same schema on both backends, safe to run twice or from many processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from cds_service.storage import schema
from cds_service.storage.database import VERSION_TABLE, Database, DatabaseConfigError
from cds_service.storage.feedback import FeedbackStore

REPO = Path(__file__).resolve().parents[2]


def _shape(db: Database) -> dict:
    """Tables -> (columns with nullability, primary key, unique constraints, index names)."""
    with db.engine.connect() as conn:
        inspector = inspect(conn)
        shape = {}
        for table in sorted(set(inspector.get_table_names()) - {VERSION_TABLE}):
            shape[table] = (
                {c["name"]: c["nullable"] for c in inspector.get_columns(table)},
                tuple(inspector.get_pk_constraint(table)["constrained_columns"]),
                sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
                sorted(i["name"] for i in inspector.get_indexes(table) if not i.get("unique")),
            )
        return shape


def _expected_shape() -> dict:
    shape = {}
    for table in schema.metadata.sorted_tables:
        shape[table.name] = (
            {c.name: c.nullable for c in table.columns},
            tuple(c.name for c in table.primary_key.columns),
            sorted(
                tuple(c.name for c in u.columns)
                for u in table.constraints
                if u.__class__.__name__ == "UniqueConstraint"
            ),
            sorted(i.name for i in table.indexes),
        )
    return shape


def test_migrations_build_the_schema_the_code_uses(database_url):
    db = Database(database_url)
    try:
        assert db.current_revision() is None
        db.upgrade()
        assert db.current_revision() == Database.head_revision()
        assert _shape(db) == _expected_shape()
    finally:
        db.dispose()


def test_upgrade_twice_is_a_no_op_and_keeps_rows(database_url):
    store = FeedbackStore(database_url)
    store.add_feedback("svc", [{"card": "c", "outcome": "overridden",
                                "outcomeTimestamp": "2026-01-01T00:00:00Z"}])
    store.close()
    again = Database(database_url)
    again.upgrade()
    assert FeedbackStore(again).count_feedback() == 1
    again.dispose()


def test_downgrade_to_base_and_back(database_url):
    db = Database(database_url)
    db.upgrade()
    engine = db._create_engine(pooled=False)
    with engine.begin() as conn:
        command.downgrade(db._alembic_config(conn), "base")
    engine.dispose()
    assert db.current_revision() is None
    assert set(_shape(db)) == set()
    fresh = Database(database_url)
    fresh.upgrade()
    assert _shape(fresh) == _expected_shape()
    db.dispose()
    fresh.dispose()


def test_require_current_refuses_an_unmigrated_database(database_url):
    db = Database(database_url)
    with pytest.raises(DatabaseConfigError, match="db upgrade"):
        db.require_current()
    db.upgrade()
    Database(database_url).require_current()
    db.dispose()


_UPGRADE = """
import sys, time
from cds_service.storage.database import Database
from cds_service.storage.feedback import FeedbackStore
start_at = float(sys.argv[2])
while time.time() < start_at:
    time.sleep(0.001)
store = FeedbackStore(sys.argv[1])
print(store.add_feedback("svc", [{"card": sys.argv[3], "outcome": "overridden",
                                  "outcomeTimestamp": "2026-01-01T00:00:00Z"}]))
"""


def test_instances_starting_together_migrate_once(database_url):
    """Several replicas start at the same moment against an empty database."""
    start_at = str(time.time() + 2.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _UPGRADE, database_url, start_at, f"card-{i}"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == ["1"] * 4
    db = Database(database_url)
    assert db.current_revision() == Database.head_revision()
    assert FeedbackStore(db).count_feedback() == 4
    db.dispose()


_LEGACY_SCHEMA = """
CREATE TABLE feedback (
    entry_hash TEXT PRIMARY KEY, service_id TEXT NOT NULL, card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL, outcome_timestamp TEXT NOT NULL, accepted_suggestions TEXT,
    override_system TEXT, override_code TEXT, override_display TEXT, user_comment TEXT,
    received_at TEXT NOT NULL);
CREATE INDEX feedback_card ON feedback (card_uuid);
CREATE TABLE served_cards (card_uuid TEXT PRIMARY KEY, service_id TEXT NOT NULL,
    rule_id TEXT NOT NULL, hook TEXT NOT NULL, served_at TEXT NOT NULL);
CREATE TABLE jwt_replay (iss TEXT NOT NULL, jti TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (iss, jti));
CREATE INDEX jwt_replay_expires_at ON jwt_replay (expires_at);
"""


def test_a_pre_alembic_sqlite_file_is_adopted_without_losing_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(_LEGACY_SCHEMA)
        for card in ("zz-first", "aa-second", "mm-third"):  # rowid order != hash order
            conn.execute(
                "INSERT INTO feedback VALUES (?, 'svc', ?, 'overridden', 't', NULL, 's', 'c', "
                "'d', 'why', 'r')",
                (f"hash-{card}", card),
            )
        conn.execute("INSERT INTO served_cards VALUES ('u1', 'svc', 'rule', 'hook', 't')")
        conn.execute("INSERT INTO jwt_replay VALUES ('iss', 'jti', 1e12)")
    conn.close()
    store = FeedbackStore(path)
    try:
        rows = store.feedback_rows()
        assert [r["card_uuid"] for r in rows] == ["zz-first", "aa-second", "mm-third"]
        assert rows[0]["user_comment"] == "why"
        assert store.count_served() == 1
        assert _shape(store.database) == _expected_shape()
        # Old entries still deduplicate against new ones; the replay row still counts.
        assert store.add_feedback("svc", [{"card": "new", "outcome": "overridden",
                                           "outcomeTimestamp": "t"}]) == 1
        from cds_service.security.replay import DatabaseReplayCache

        assert DatabaseReplayCache(store.database).add_if_new("iss", "jti", 1e12) is False
    finally:
        store.close()


def test_the_schema_head_constant_is_alembics_head():
    from alembic.script import ScriptDirectory

    from cds_service.storage.database import MIGRATIONS_DIR, SCHEMA_HEAD

    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() == SCHEMA_HEAD


_START_ON_A_CURRENT_DATABASE = """
import sys
from cds_service import create_app
from cds_service.settings import Settings
create_app(Settings(auth="off", database_url=sys.argv[1]))
print("alembic" in sys.modules)
"""


def test_startup_on_a_current_database_does_not_import_alembic(tmp_path):
    """Alembic is imported to migrate, not to check: workers forked after startup do not carry
    it (about 10 MB each)."""
    url = f"sqlite:///{tmp_path / 'current.sqlite3'}"
    Database(url).upgrade()
    started = subprocess.run(
        [sys.executable, "-c", _START_ON_A_CURRENT_DATABASE, url],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    assert started.stdout.strip() == "False"
