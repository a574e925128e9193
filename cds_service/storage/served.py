"""A small in-process buffer for served-card records, written in batches off the request path.

Every hook call records the cards it served. Writing them inline would put a durable commit
(an fsync on SQLite, a WAL flush round trip on PostgreSQL) on the latency of every call, for
rows that only feed analytics ("which cards were shown and never answered"). So a call appends
its rows to memory and returns; one background thread per process writes whatever is pending
as a single relaxed-durability transaction once the oldest row is ``interval_s`` old, and on
shutdown (``close()``, gunicorn ``worker_exit``, or interpreter exit).

The trade-off, stated plainly: a worker killed with SIGKILL, or a power loss, can lose up to
about ``interval_s`` of served-card records. Feedback never takes this path; it is committed
before the EHR gets its 200. If the database is down, pending rows are kept (up to
``max_pending``, then the oldest are dropped and counted in the log) and retried on the next
tick; the hook response never waits for or fails on analytics. Duplicate rows are harmless
(``card_uuid`` is the key and inserts ignore conflicts), which makes a retried batch safe.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger("cds_service.storage")

Row = dict[str, Any]
_TICK_S = 0.05


class ServedCardBuffer:
    """Pending rows plus the function that writes a batch of them (in one transaction)."""

    def __init__(
        self,
        write: Callable[[list[Row]], None],
        *,
        interval_s: float = 0.5,
        max_batch: int = 2000,
        max_pending: int = 50_000,
    ) -> None:
        self._write = write
        self.interval_s = interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._rows: list[Row] = []
        self._oldest: float | None = None
        self._dropped = 0
        self._closed = False

    def add(self, rows: Iterable[Row]) -> None:
        """Queue rows (never blocks on the database unless the writer fell far behind)."""
        rows = list(rows)
        if not rows:
            return
        _flusher.watch(self)
        with self._lock:
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._rows.extend(rows)
            backlog = len(self._rows) >= self._max_batch * 4
        if backlog or self._closed:
            # Back-pressure: if the background writer cannot keep up, the caller helps.
            self.flush()

    def due(self, now: float) -> bool:
        oldest = self._oldest
        return oldest is not None and now - oldest >= self.interval_s

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write everything pending now; returns the number of rows written."""
        written = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = self._rows[: self._max_batch]
                    del self._rows[: self._max_batch]
                    if not self._rows:
                        self._oldest = None
                if not batch:
                    return written
                try:
                    self._write(batch)
                except Exception as error:
                    self._requeue(batch, error)
                    return written
                written += len(batch)

    def _requeue(self, batch: list[Row], error: Exception) -> None:
        with self._lock:
            self._rows[:0] = batch
            self._oldest = self._oldest or time.monotonic()
            overflow = len(self._rows) - self._max_pending
            if overflow > 0:
                del self._rows[:overflow]
                self._dropped += overflow
            pending, dropped = len(self._rows), self._dropped
        logger.error(
            "served-card records not written, will retry",
            extra={"error": type(error).__name__, "pending": pending, "dropped": dropped},
        )

    def close(self) -> None:
        """Flush and stop watching (later adds are written synchronously)."""
        self._closed = True
        self.flush()
        _flusher.unwatch(self)

    def _after_fork(self) -> None:
        # A forked child starts with fresh locks; rows inherited from the parent are the
        # parent's to write (if the parent still holds them, it will).
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._rows = []
        self._oldest = None


class _Flusher:
    """One daemon thread per process that flushes every live buffer when it is due."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffers: weakref.WeakSet[ServedCardBuffer] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def watch(self, buffer: ServedCardBuffer) -> None:
        if buffer in self._buffers and self._pid == os.getpid():
            return
        with self._lock:
            self._buffers.add(buffer)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="served-card-flusher", daemon=True
                )
                self._thread.start()

    def unwatch(self, buffer: ServedCardBuffer) -> None:
        with self._lock:
            self._buffers.discard(buffer)

    def _loop(self) -> None:
        while True:
            time.sleep(_TICK_S)
            now = time.monotonic()
            for buffer in list(self._buffers):
                if buffer.due(now):
                    try:
                        buffer.flush()
                    except Exception:  # pragma: no cover - flush already logs and requeues
                        logger.exception("served-card flush failed")

    def flush_all(self) -> None:
        for buffer in list(self._buffers):
            try:
                buffer.flush()
            except Exception:  # pragma: no cover - best effort at exit
                logger.exception("served-card flush at exit failed")

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self._pid = None
        for buffer in list(self._buffers):
            buffer._after_fork()


_flusher = _Flusher()
atexit.register(_flusher.flush_all)
os.register_at_fork(after_in_child=_flusher.after_fork)
