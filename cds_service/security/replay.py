"""Replay protection for JWT ``jti`` values.

CDS Hooks makes ``jti`` REQUIRED precisely so a service can refuse a captured token that is sent
again. A ``(iss, jti)`` pair is remembered until the token could no longer pass the ``exp`` check
anyway (``exp`` + leeway); after that it can be forgotten safely, which keeps the store bounded by
the traffic of the last token lifetime.

The in-memory cache suits a single process. Behind gunicorn with several workers each process has
its own memory, so a replay sent to another worker would pass: use ``SqliteReplayCache`` there.
"""

from __future__ import annotations

import heapq
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class ReplayCache(Protocol):
    def add_if_new(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record ``(iss, jti)`` until ``expires_at``; return False if it was already recorded."""
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

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            expires_at, key = heapq.heappop(self._heap)
            if self._entries.get(key) == expires_at:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jwt_replay ("
    " iss TEXT NOT NULL,"
    " jti TEXT NOT NULL,"
    " expires_at REAL NOT NULL,"
    " PRIMARY KEY (iss, jti))",
    "CREATE INDEX IF NOT EXISTS jwt_replay_expires_at ON jwt_replay (expires_at)",
)


class SqliteReplayCache:
    """Replay cache shared by every process that opens the same SQLite file.

    The uniqueness decision is a single ``INSERT OR IGNORE`` on the primary key, so SQLite itself
    arbitrates between concurrent workers: exactly one of them sees ``rowcount == 1``. WAL mode lets
    readers and the single writer proceed without blocking each other; ``busy_timeout`` absorbs
    short write contention. Connections are per thread and per process id, so a cache object created
    before gunicorn forks never shares a connection across processes.
    """

    def __init__(
        self, path: str, *, clock: Callable[[], float] = time.time, busy_timeout_s: float = 5.0
    ) -> None:
        self._path = str(path)
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connection()
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            conn.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != pid:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so purge + insert is one
            # short write transaction.
            conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            self._local.pid = pid
        return conn

    def add_if_new(self, iss: str, jti: str, expires_at: float) -> bool:
        conn = self._connection()
        now = self._clock()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM jwt_replay WHERE expires_at < ?", (now,))
            cur = conn.execute(
                "INSERT OR IGNORE INTO jwt_replay (iss, jti, expires_at) VALUES (?, ?, ?)",
                (iss, jti, float(expires_at)),
            )
            inserted = cur.rowcount == 1
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (e.g. SQLITE_FULL); don't mask the real error.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return inserted

    def close(self) -> None:
        """Close this thread's connection (other threads' connections close when collected)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
