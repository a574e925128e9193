"""The data-access layer: URLs, retries on transient errors only, one pool per process."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from cds_service.storage.database import (
    Database,
    DatabaseConfigError,
    RetryPolicy,
    is_transient,
    normalise_url,
)
from cds_service.storage.feedback import FeedbackStore

FAST = RetryPolicy(attempts=4, base_delay_s=0.001, max_delay_s=0.002)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@db:5432/cds", "postgresql+psycopg"),
        ("postgres://u@db/cds", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/cds", "postgresql+psycopg"),
        ("sqlite:///var/x.sqlite3", "sqlite"),
        ("sqlite:////abs/x.sqlite3", "sqlite"),
    ],
)
def test_normalise_url(url, driver):
    assert normalise_url(url).drivername == driver


@pytest.mark.parametrize(
    "url",
    ["mysql://u@db/cds", "postgresql+psycopg2://u@db/cds", "sqlite://", "sqlite:///:memory:",
     "not a url", "postgresql://cds:pw@db:notaport/cds"],
)
def test_unsupported_urls_are_refused(url):
    with pytest.raises(DatabaseConfigError):
        normalise_url(url)


def test_repr_hides_the_password():
    assert "s3cret" not in repr(Database("postgresql://cds:s3cret@db/cds"))


def test_sqlite_parent_directory_is_created_on_first_use(tmp_path):
    """Not when constructed: the service constructs its database while it checks its
    settings, and one that refuses them must leave nothing behind."""
    database = Database(f"sqlite:///{tmp_path / 'a' / 'b' / 'x.sqlite3'}")
    assert not (tmp_path / "a").exists()
    database.upgrade()
    assert (tmp_path / "a" / "b").is_dir()


class _PgError(Exception):
    def __init__(self, sqlstate):
        super().__init__("pg")
        self.sqlstate = sqlstate


def _wrapped(orig, cls=sa_exc.OperationalError, invalidated=False):
    return cls("stmt", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_wrapped(sqlite3.OperationalError("database is locked")), True),
        (_wrapped(sqlite3.OperationalError("no such table: feedback")), False),
        (_wrapped(_PgError("40001")), True),  # serialization_failure
        (_wrapped(_PgError("40P01")), True),  # deadlock_detected
        (_wrapped(_PgError("08006")), True),  # connection_failure
        (_wrapped(_PgError("57P01")), True),  # admin_shutdown
        (_wrapped(_PgError("23505"), sa_exc.IntegrityError), False),  # unique_violation
        (_wrapped(_PgError("42P01"), sa_exc.ProgrammingError), False),  # undefined_table
        (_wrapped(ValueError("x"), sa_exc.DBAPIError, invalidated=True), True),
        (sa_exc.TimeoutError("pool"), True),
        (ValueError("not a database error"), False),
    ],
)
def test_transient_error_classification(error, transient):
    assert is_transient(error) is transient


def test_retry_policy_backs_off_within_bounds():
    policy = RetryPolicy(attempts=5, base_delay_s=0.1, max_delay_s=0.3)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3)]:
        for _ in range(20):
            assert ceiling / 2 <= policy.delay(attempt) <= ceiling


def test_transient_errors_are_retried_then_committed(database_url):
    db = Database(database_url, retry=FAST)
    FeedbackStore(db).flush()
    calls = []

    def work(conn):
        calls.append(1)
        conn.execute(text("INSERT INTO served_cards VALUES (:u, 's', 'r', 'h', 't')"),
                     {"u": f"u{len(calls)}"})
        if len(calls) < 3:
            raise _wrapped(sqlite3.OperationalError("database is locked"))
        return "done"

    try:
        assert db.run(work) == "done"
        assert len(calls) == 3
        # The failed attempts were rolled back; only the committed one remains.
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT card_uuid FROM served_cards")).scalars().all() == [
                "u3"
            ]
    finally:
        db.dispose()


def test_retries_are_bounded(database_url):
    db = Database(database_url, retry=FAST)
    calls = []

    def work(conn):
        calls.append(1)
        raise _wrapped(_PgError("40001"))

    try:
        with pytest.raises(sa_exc.OperationalError):
            db.run(work)
        assert len(calls) == FAST.attempts
    finally:
        db.dispose()


def test_permanent_errors_are_not_retried(database_url):
    db = Database(database_url, retry=FAST)
    calls = []

    def work(conn):
        calls.append(1)
        conn.execute(text("SELECT * FROM no_such_table"))

    try:
        with pytest.raises(sa_exc.DBAPIError):
            db.run(work)
        assert len(calls) == 1
    finally:
        db.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool(database_url):
    """gunicorn forks after the app (and maybe the engine) exists in the master."""
    store = FeedbackStore(database_url)
    store.add_feedback("svc", [{"card": "parent", "outcome": "overridden",
                                "outcomeTimestamp": "2026-01-01T00:00:00Z"}])
    parent_engine = store.database.engine
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not touch the parent's pooled connection
        os.close(read)
        code = 1
        try:
            fresh = store.database.engine is not parent_engine
            store.add_feedback("svc", [{"card": "child", "outcome": "overridden",
                                        "outcomeTimestamp": "2026-01-01T00:00:00Z"}])
            code = 0 if fresh and store.count_feedback() == 2 else 3
        finally:
            os.write(write, str(code).encode())
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child_said = os.read(read, 8).decode()
    os.close(read)
    try:
        assert child_said == "0" and os.waitstatus_to_exitcode(status) == 0
        # The parent's pooled connection still works after the child exited.
        assert store.database.engine is parent_engine
        assert store.count_feedback() == 2
    finally:
        store.close()


def test_a_connection_killed_by_the_server_is_replaced(postgres_url):
    """A dropped connection (server restart, idle timeout, failover) costs no request."""
    store = FeedbackStore(postgres_url)
    try:
        with store.database.engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        killer = Database(postgres_url)
        with killer.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        killer.dispose()
        time.sleep(0.1)
        assert store.add_feedback("svc", [{"card": "after-kill", "outcome": "overridden",
                                           "outcomeTimestamp": "2026-01-01T00:00:00Z"}]) == 1
        assert store.count_feedback() == 1
    finally:
        store.close()


def test_relaxed_transactions_turn_off_synchronous_commit_only_for_themselves(postgres_url):
    db = Database(postgres_url)
    try:
        show = "SHOW synchronous_commit"
        assert db.run(lambda c: c.exec_driver_sql(show).scalar_one(), relaxed=True) == "off"
        assert db.run(lambda c: c.exec_driver_sql(show).scalar_one()) == "on"
    finally:
        db.dispose()


def test_sqlite_durability_per_transaction(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'd.sqlite3'}", pool_size=1, max_overflow=0)
    pragma = "PRAGMA synchronous"
    try:
        assert db.run(lambda c: c.exec_driver_sql(pragma).scalar_one()) == 2  # FULL
        assert db.run(lambda c: c.exec_driver_sql(pragma).scalar_one(), relaxed=True) == 1
        assert db.run(lambda c: c.exec_driver_sql(pragma).scalar_one()) == 2
        assert db.run(lambda c: c.exec_driver_sql("PRAGMA journal_mode").scalar_one()) == "wal"
    finally:
        db.dispose()


def _lock_wait_now(conn) -> int:
    """The transaction's own lock wait in ms, as the backend has it."""
    if conn.dialect.name == "sqlite":
        return conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    value = conn.exec_driver_sql("SHOW lock_timeout").scalar()  # e.g. "250ms" or "0"
    return int(value.removesuffix("ms") or 0)


def test_a_lock_wait_holds_for_its_transaction_only(database_url):
    """The JWT replay check may wait half a second for a lock, not the store's 5 s: asked per
    transaction, and gone for the next one on the same pooled connection."""
    db = Database(database_url, pool_size=1, max_overflow=0)
    db.upgrade()
    assert db.run(_lock_wait_now, lock_wait_s=0.25) == 250
    default = 5000 if db.backend == "sqlite" else 0  # PostgreSQL waits for locks by default
    assert db.run(_lock_wait_now) == default
    assert db.run(_lock_wait_now, lock_wait_s=0.25) == 250


def test_a_statement_bound_holds_for_its_transaction_only(database_url):
    """PostgreSQL only (SQLite runs in process): the replay check's statements are cut after
    half a second, and the next transaction on the connection is not."""
    db = Database(database_url, pool_size=1, max_overflow=0)
    if db.backend != "postgresql":
        pytest.skip("a statement bound is PostgreSQL's")

    def bound(conn) -> str:
        return conn.exec_driver_sql("SHOW statement_timeout").scalar()

    assert db.run(bound, statement_s=0.25) == "250ms"
    assert db.run(bound) == "0"
    assert db.run(bound, lock_wait_s=0.25) == "0"  # a lock wait alone bounds no statement


def test_a_transactions_own_settings_cost_one_round_trip(postgres_url):
    """The replay check runs on every authenticated call with all three settings: they were
    three statements before its own (found by review); now one."""
    from sqlalchemy import event

    db = Database(postgres_url, pool_size=1, max_overflow=0)
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: sent.append(statement))

    def settings(conn) -> tuple:
        return conn.exec_driver_sql(
            "SELECT current_setting('synchronous_commit'), current_setting('lock_timeout'), "
            "current_setting('statement_timeout')"
        ).one()

    assert tuple(db.run(settings, relaxed=True, lock_wait_s=0.5, statement_s=0.5)) == (
        "off", "500ms", "500ms")
    assert len(sent) == 2  # the settings, then the work
    sent.clear()
    assert tuple(db.run(settings)) == ("on", "0", "0")
    assert len(sent) == 1
