"""Replay protection for JWT ``jti`` values.

CDS Hooks makes ``jti`` REQUIRED precisely so a service can refuse a captured token that is sent
again. A ``(iss, jti)`` pair is remembered until the token could no longer pass the ``exp`` check
anyway (``exp`` + leeway); after that it can be forgotten safely, which keeps the store bounded by
the traffic of the last token lifetime.

The in-memory cache suits a single process. Behind gunicorn with several workers, or several
instances behind a load balancer, each process has its own memory, so a replay sent to another
worker would pass: the service uses ``DatabaseReplayCache`` on the shared database
(``CDS_DATABASE_URL``, SQLite for one machine, PostgreSQL for several).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from sqlalchemy import bindparam, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from cds_service.storage.database import Database, RetryPolicy, as_database
from cds_service.storage.schema import jwt_replay

logger = logging.getLogger("cds_service.auth")

# The replay check runs while an EHR waits for its hook call, so it may wait for the database
# about a second in all (two attempts of half a second each), not the half-minute that the
# store's background writes may take: past that, the call answers 503 (see the verifier).
LOCK_WAIT_S = 0.5
RETRY = RetryPolicy(attempts=2, base_delay_s=0.05, max_delay_s=0.1)
# Housekeeping and the release of a jti after a 503 try once: neither may hold up an answer.
ONE_TRY = RetryPolicy(attempts=1)
PURGE_BATCH = 5000


@runtime_checkable
class ReplayCache(Protocol):
    def add_if_new(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record ``(iss, jti)`` until ``expires_at``; return False if it was already recorded."""
        ...

    def forget(self, iss: str, jti: str) -> None:
        """Forget ``(iss, jti)``: its request did nothing (a 503), so it may be sent again."""
        ...


class MemoryReplayCache:
    """Thread-safe, single-process replay cache.

    Expired entries are purged on every call through a min-heap ordered by expiry, so the purge
    costs only the entries that actually expired.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def add_if_new(self, iss: str, jti: str, expires_at: float) -> bool:
        key = (iss, jti)
        with self._lock:
            self._purge(self._clock())
            if key in self._entries:
                return False
            self._entries[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True

    def forget(self, iss: str, jti: str) -> None:
        with self._lock:  # its heap entry stays, and is skipped when it comes up
            self._entries.pop((iss, jti), None)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            expires_at, key = heapq.heappop(self._heap)
            if self._entries.get(key) == expires_at:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class DatabaseReplayCache:
    """Replay cache shared by every worker and instance that uses the same database.

    The decision is one statement, so the database arbitrates between concurrent workers and
    exactly one of them sees ``rowcount == 1``::

        INSERT INTO jwt_replay (iss, jti, expires_at) VALUES (...)
        ON CONFLICT (iss, jti) DO UPDATE SET expires_at = excluded.expires_at
        WHERE jwt_replay.expires_at < :now

    A new pair is inserted; a pair whose earlier token has expired is taken over (so correctness
    never waits for the purge); a live pair is left alone and the statement reports 0 rows.
    Expired rows are deleted at most every ``purge_interval_s`` per process, after the check and
    in a transaction of its own, a bounded batch at a time, which keeps the table bounded by the
    traffic of one token lifetime without a second statement per call.

    The commit uses relaxed durability (see :mod:`cds_service.storage.database`): it is visible
    to every other worker at once; only a database *server* crash can forget the last fraction
    of a second of ``jti`` values, for tokens that expire within minutes anyway. Transient
    errors are retried once, within :data:`LOCK_WAIT_S` a try; anything else, or a database
    still locked or down after that, propagates, and the verifier fails closed (503).
    """

    def __init__(
        self,
        database: Database | str,
        *,
        clock: Callable[[], float] = time.time,
        purge_interval_s: float = 5.0,
        migrate: bool = True,
    ) -> None:
        self.database = as_database(database)
        if migrate:
            self.database.upgrade()
        self._clock = clock
        self._purge_interval_s = purge_interval_s
        self._last_purge: float | None = None
        self._purge_lock = threading.Lock()
        # Built once: SQLAlchemy then reuses the compiled form on every call (hot path).
        dialect = postgresql if self.database.backend == "postgresql" else sqlite
        insert = dialect.insert(jwt_replay).values(
            iss=bindparam("iss"), jti=bindparam("jti"), expires_at=bindparam("expires_at")
        )
        self._claim = insert.on_conflict_do_update(
            index_elements=[jwt_replay.c.iss, jwt_replay.c.jti],
            set_={"expires_at": insert.excluded.expires_at},
            where=jwt_replay.c.expires_at < bindparam("now"),
        ).execution_options(preserve_rowcount=True)
        # At most PURGE_BATCH expired rows a purge, so that one never holds up its call long,
        # whatever backlog an outage left: a batch of 5,000 a process every few seconds is far
        # more than any EHR's calls add, so the backlog clears.
        key = tuple_(jwt_replay.c.iss, jwt_replay.c.jti)
        expired = (
            select(jwt_replay.c.iss, jwt_replay.c.jti)
            .where(jwt_replay.c.expires_at < bindparam("now"))
            .limit(PURGE_BATCH)
        )
        self._purge = delete(jwt_replay).where(key.in_(expired))
        self._forget = delete(jwt_replay).where(
            jwt_replay.c.iss == bindparam("iss"), jwt_replay.c.jti == bindparam("jti")
        )

    def add_if_new(self, iss: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        params = {"iss": iss, "jti": jti, "expires_at": float(expires_at), "now": now}
        is_new = self.database.run(
            lambda conn: conn.execute(self._claim, params).rowcount == 1,
            relaxed=True,
            retry=RETRY,
            lock_wait_s=LOCK_WAIT_S,
            statement_s=LOCK_WAIT_S,
        )
        if self._purge_due(now):
            self._purge_expired(now)
        return is_new

    def forget(self, iss: str, jti: str) -> None:
        self.database.run(
            lambda conn: conn.execute(self._forget, {"iss": iss, "jti": jti}),
            relaxed=True,
            retry=ONE_TRY,
            lock_wait_s=LOCK_WAIT_S,
            statement_s=LOCK_WAIT_S,
        )

    def _purge_expired(self, now: float) -> None:
        """Delete up to :data:`PURGE_BATCH` expired rows, in a transaction of its own after the
        check: housekeeping must never fail a call nor be cut short by the check's statement
        bound (a purge that could not finish in time would never finish, and the table would
        grow without end). One try, a short wait for locks; a failure is logged, and the next
        interval tries again."""
        try:
            self.database.run(
                lambda conn: conn.execute(self._purge, {"now": now}),
                relaxed=True,
                retry=ONE_TRY,
                lock_wait_s=LOCK_WAIT_S,
            )
        except Exception as error:  # the jti is already claimed: failing now would refuse it
            logger.warning("JWT replay purge failed", extra={"error": type(error).__name__})

    def _purge_due(self, now: float) -> bool:
        with self._purge_lock:
            if self._last_purge is not None and now - self._last_purge < self._purge_interval_s:
                return False
            self._last_purge = now
            return True

    def close(self) -> None:
        """Close this process's pooled connections."""
        self.database.dispose()


class SqliteReplayCache(DatabaseReplayCache):
    """:class:`DatabaseReplayCache` on a SQLite file (the pre-SQLAlchemy constructor)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
        purge_interval_s: float = 5.0,
    ) -> None:
        super().__init__(
            Database(f"sqlite:///{path}", sqlite_busy_timeout_s=busy_timeout_s),
            clock=clock,
            purge_interval_s=purge_interval_s,
        )
