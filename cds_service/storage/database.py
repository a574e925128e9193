"""One database handle for every backend: engines, transactions with retries, schema upgrades.

``CDS_DATABASE_URL`` picks the backend. ``sqlite:///path`` (the default) is an embedded file for a
single machine; ``postgresql://...`` is a server that several workers and instances share. All
SQL is written once, in SQLAlchemy Core; the few places where the backends differ are tuning
(durability, locking) and live here, not in the queries.

Why each piece exists:

* **Engines are created lazily, once per process.** gunicorn builds the app in the master and
  then forks workers; a pooled connection opened before the fork would be shared by several
  processes and corrupt both. :attr:`Database.engine` notices a new process id and starts a fresh
  pool there (the inherited one is dropped without closing the parent's sockets).
* **Transactions are retried on transient errors** (serialization failure, deadlock, dropped
  connection, SQLite "database is locked") a bounded number of times with jittered exponential
  backoff. Our writes are idempotent upserts, so replaying a transaction whose commit outcome was
  unknown never duplicates a row. :meth:`Database.run` returns only after COMMIT succeeded: an
  HTTP 200 is never sent for a write that is not durable.
* **Two durability classes.** Feedback is clinical record-keeping and always commits durably
  (SQLite ``synchronous=FULL``; PostgreSQL's default synchronous commit). Served-card analytics
  and the JWT replay cache may use ``relaxed=True``: SQLite ``synchronous=NORMAL`` (WAL: safe
  against a process crash, an OS crash may lose the last commits) and PostgreSQL
  ``synchronous_commit=off`` (the commit is visible to every other session at once; a server
  crash may lose well under a second of them).
* **Schema upgrades (Alembic) are serialised** across processes and instances: in one
  transaction holding ``BEGIN IMMEDIATE`` on SQLite or a transaction-scoped advisory lock on
  PostgreSQL, so two replicas starting together never race to create the same table.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

logger = logging.getLogger("cds_service.storage")

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "cds_alembic_version"
# The newest revision in migrations/versions (a test holds it to alembic's own answer). Knowing
# it here lets startup check the schema without importing alembic, which then is imported only
# to migrate: about 10 MB less in every worker process.
SCHEMA_HEAD = "0001"
# Any constant works; it only has to be the same for every instance of this service.
_MIGRATION_LOCK_KEY = 0x43445348  # "CDSH"

# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, lock not available,
# too many connections, operator intervention (admin shutdown, crash recovery, cannot connect
# now). Every class-08 state (connection exception) is retried too.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "53300", "57P01", "57P02", "57P03"})
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "busy")


class DatabaseConfigError(ValueError):
    """``CDS_DATABASE_URL`` names a backend or form this service does not support."""


def cannot_open(database: Database, error: Exception) -> str:
    """One line for an operator: which database (password masked) and the driver's reason."""
    reason = str(getattr(error, "orig", None) or error).splitlines()[0]
    return f"cannot open the database {database!r}: {reason}"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries in all, sleeping base * 2**n (capped, jittered)."""

    attempts: int = 5
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


def normalise_url(url: str) -> URL:
    """A SQLAlchemy URL for ``url``: PostgreSQL through psycopg 3, SQLite as a file."""
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise DatabaseConfigError("CDS_DATABASE_URL is not a database URL") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("psycopg", ""):
            raise DatabaseConfigError("PostgreSQL URLs use the psycopg (version 3) driver")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise DatabaseConfigError(
                "an in-memory SQLite database cannot be shared by workers; name a file "
                "(sqlite:///path/to/file.sqlite3)"
            )
        return parsed.set(drivername="sqlite")
    raise DatabaseConfigError("CDS_DATABASE_URL must start with sqlite:/// or postgresql://")


def as_database(target: Database | str | Path) -> Database:
    """A :class:`Database` for a URL, or for a bare SQLite file path (the older constructors)."""
    if isinstance(target, Database):
        return target
    text_value = str(target)
    return Database(text_value if "://" in text_value else f"sqlite:///{text_value}")


def is_transient(error: BaseException) -> bool:
    """True for errors that a fresh attempt of the same transaction may not meet again."""
    if isinstance(error, sa_exc.TimeoutError):  # pool exhausted for pool_timeout seconds
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return any(marker in message for marker in _SQLITE_TRANSIENT)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
    # psycopg raises OperationalError without a SQLSTATE when the server is unreachable or the
    # connection broke mid-statement.
    return isinstance(error, sa_exc.OperationalError) and orig is not None and (
        type(orig).__module__.startswith("psycopg")
    )


def _set_local(
    conn: Connection, relaxed: bool, lock_wait_ms: int | None, statement_ms: int | None
) -> None:
    """This PostgreSQL transaction's own settings, in one round trip (``set_config(..., true)``
    is ``SET LOCAL``): the replay check, on every authenticated call, asks for all three."""
    settings = {
        "synchronous_commit": "off" if relaxed else None,
        "lock_timeout": lock_wait_ms,
        "statement_timeout": statement_ms,
    }
    chosen = [f"set_config('{name}', '{value}', true)" for name, value in settings.items()
              if value is not None]
    if chosen:
        conn.exec_driver_sql("SELECT " + ", ".join(chosen))


class Database:
    """The database behind ``CDS_DATABASE_URL``, safe to share between threads and to fork.

    ``pool_size``/``max_overflow`` are per process: a gunicorn worker with N threads needs at
    most N connections at once, so the default (5 + 5) leaves room; PostgreSQL's
    ``max_connections`` must cover instances x workers x (pool_size + max_overflow).
    ``sqlite_busy_timeout_s`` is how long one attempt waits for SQLite's write lock; with the
    retries, a write gives up after about five times that, inside gunicorn's 30 s timeout.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 5,
        pool_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        sqlite_busy_timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self.backend = self.url.get_backend_name()
        self.retry = retry or RetryPolicy()
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self._pool_timeout_s = pool_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._busy_timeout_s = sqlite_busy_timeout_s
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._schema_current = False

    def __repr__(self) -> str:  # never print a password
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    # -- engines --------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """This process's engine (and pool), created on first use after any fork."""
        pid = os.getpid()
        engine = self._engine
        if engine is not None and self._engine_pid == pid:
            return engine
        with self._lock:
            if self._engine is not None and self._engine_pid != pid:
                # Inherited from the parent: forget its pool without closing the parent's
                # connections (they belong to the parent process).
                self._engine.dispose(close=False)
                self._engine = None
            if self._engine is None:
                self._engine = self._create_engine()
                self._engine_pid = pid
            return self._engine

    def _create_engine(self, *, pooled: bool = True) -> Engine:
        pool_args: dict[str, Any] = (
            {
                "pool_size": self._pool_size,
                "max_overflow": self._max_overflow,
                "pool_timeout": self._pool_timeout_s,
            }
            if pooled
            else {"poolclass": NullPool}
        )
        if self.backend == "sqlite":
            # On first use, not when constructed: a service that refuses its settings (checked
            # with the database constructed, before it is opened) leaves no directory behind.
            Path(self.url.database or "").parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self.url,
                connect_args={"timeout": self._busy_timeout_s, "check_same_thread": False},
                **pool_args,
            )
            _sqlite_events(engine, busy_timeout_ms=round(self._busy_timeout_s * 1000))
            return engine
        # No pool_pre_ping: it would cost a round trip on every checkout. A connection the
        # server dropped fails its statement as a disconnect, SQLAlchemy then discards the
        # pool's older connections, and run() retries the transaction on a fresh one.
        return create_engine(
            self.url,
            pool_recycle=1800,
            connect_args={"connect_timeout": max(1, round(self._connect_timeout_s))},
            **pool_args,
        )

    def dispose(self) -> None:
        """Close this process's pooled connections (a new pool is created on next use)."""
        with self._lock:
            if self._engine is not None and self._engine_pid == os.getpid():
                self._engine.dispose()
            self._engine = None
            self._engine_pid = None

    # -- transactions ---------------------------------------------------------------------------

    def run(
        self,
        work: Callable[[Connection], T],
        *,
        relaxed: bool = False,
        retry: RetryPolicy | None = None,
        lock_wait_s: float | None = None,
        statement_s: float | None = None,
    ) -> T:
        """Run ``work(connection)`` in one transaction, committed before this returns.

        ``work`` may run more than once (after a transient error), so it must only execute
        statements, never keep state outside the transaction. For work a caller is waiting on:
        ``lock_wait_s`` bounds each attempt's wait for a lock (SQLite's write lock, below the
        database's own ``sqlite_busy_timeout_s``; a PostgreSQL lock), and ``statement_s`` each
        PostgreSQL statement (SQLite runs in this process: nothing stalls but the lock).
        Connecting is bounded by ``connect_timeout_s`` and the pool's ``pool_timeout_s`` alone.
        """
        policy = retry or self.retry
        lock_wait_ms = None if lock_wait_s is None else max(1, round(lock_wait_s * 1000))
        statement_ms = None if statement_s is None else max(1, round(statement_s * 1000))
        for attempt in range(1, policy.attempts + 1):
            try:
                with self.engine.connect() as conn:
                    if relaxed:
                        conn.execution_options(cds_relaxed=True)
                    if lock_wait_ms is not None:
                        conn.execution_options(cds_lock_wait_ms=lock_wait_ms)
                    with conn.begin():
                        if self.backend == "postgresql":
                            _set_local(conn, relaxed, lock_wait_ms, statement_ms)
                        result = work(conn)
                    return result
            except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
                if attempt >= policy.attempts or not is_transient(error):
                    raise
                delay = policy.delay(attempt)
                logger.warning(
                    "transient database error, retrying",
                    extra={"error": type(error.orig if isinstance(error, sa_exc.DBAPIError)
                                         else error).__name__,
                           "attempt": attempt, "delay_ms": round(delay * 1000, 1)},
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema ---------------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Bring the schema to the newest revision; a no-op once done in this object."""
        if self._schema_current:
            return
        try:
            if self.current_revision() == SCHEMA_HEAD:
                self._schema_current = True
                return
        except (sa_exc.DBAPIError, sa_exc.TimeoutError):
            pass  # the migration below retries what is transient, and reports the rest
        from alembic import command

        engine = self._create_engine(pooled=False)
        try:
            for attempt in range(1, self.retry.attempts + 1):
                try:
                    with engine.begin() as conn:
                        self._lock_for_migration(conn)
                        command.upgrade(self._alembic_config(conn), "head")
                    break
                except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
                    # e.g. a PostgreSQL server still starting next to us
                    if attempt >= self.retry.attempts or not is_transient(error):
                        raise
                    time.sleep(self.retry.delay(attempt))
        finally:
            engine.dispose()
        self._schema_current = True

    def current_revision(self) -> str | None:
        """The revision the database is at (None: never migrated)."""
        engine = self._create_engine(pooled=False)
        try:
            with engine.connect() as conn:
                if not inspect(conn).has_table(VERSION_TABLE):
                    return None
                rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        finally:
            engine.dispose()
        if len(rows) > 1:
            raise DatabaseConfigError(f"{VERSION_TABLE} holds {len(rows)} revisions, not one")
        return rows[0][0] if rows else None

    @staticmethod
    def head_revision() -> str:
        return SCHEMA_HEAD

    def require_current(self) -> None:
        """Raise :class:`DatabaseConfigError` unless the schema is at the newest revision."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise DatabaseConfigError(
                f"database schema is at {current or 'no revision'}, this version needs {head}: "
                "run `hypermobility-cds db upgrade` (or enable CDS_DATABASE_AUTO_MIGRATE)"
            )
        self._schema_current = True

    def _lock_for_migration(self, conn: Connection) -> None:
        if self.backend == "postgresql":
            # Released at COMMIT/ROLLBACK; a second instance waits here, then finds the schema
            # already current. (SQLite: the BEGIN IMMEDIATE of this transaction does the same.)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})

    def _alembic_config(self, conn: Connection) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        config.attributes["version_table"] = VERSION_TABLE
        return config


def _sqlite_events(engine: Engine, *, busy_timeout_ms: int) -> None:
    """SQLite settings on every new connection, and explicit write transactions.

    The stdlib driver's own transaction handling starts transactions lazily and would let two
    writers deadlock on lock upgrade; the SQLAlchemy-documented remedy is to turn it off and emit
    BEGIN ourselves. ``BEGIN IMMEDIATE`` takes the write lock up front (waiting up to the busy
    timeout: ``busy_timeout_ms``, or the transaction's own ``cds_lock_wait_ms``), so every
    transaction either runs alone or waits its turn.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        wanted = "NORMAL" if conn.get_execution_options().get("cds_relaxed") else "FULL"
        if conn.info.get("cds_synchronous", "FULL") != wanted:
            conn.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            conn.info["cds_synchronous"] = wanted
        wait_ms = conn.get_execution_options().get("cds_lock_wait_ms", busy_timeout_ms)
        if conn.info.get("cds_busy_timeout_ms", busy_timeout_ms) != wait_ms:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(wait_ms)}")
            conn.info["cds_busy_timeout_ms"] = wait_ms
        conn.exec_driver_sql("BEGIN IMMEDIATE")
