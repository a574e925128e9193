"""Outbound HTTP that ends on time, for the FHIR client and the JWT key-set fetcher.

The socket timeout of ``requests`` applies to each read, so a server that drips its headers or
its body, a byte at a time, could hold a thread far beyond it:

* **Headers:** :class:`WatchedAdapter`'s connections end the wait for a response's status line
  and headers at the deadline set with :func:`deadline`: one watchdog thread per process shuts
  the socket then.
* **Body:** :func:`pieces` yields whatever one socket read delivered (``iter_content`` would
  block until a whole chunk arrived), so the reader's own elapsed-time check runs after every
  read.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
from collections.abc import Iterator
from time import monotonic
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse

CHUNK = 64 * 1024

# The deadline (a monotonic instant) of the request this thread is sending, for the watched
# connections below; set around each GET with :func:`deadline`.
_SENDING = threading.local()


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Requests sent by this thread meanwhile, through a :class:`WatchedAdapter`, stop waiting
    for their headers at monotonic instant ``at``."""
    _SENDING.deadline = at
    try:
        yield
    finally:
        _SENDING.deadline = None


def pieces(response: requests.Response) -> Iterator[bytes]:
    """The decoded body, a socket read at a time (``stream=True`` responses)."""
    raw = response.raw
    if isinstance(raw, BaseHTTPResponse):
        while chunk := raw.read1(CHUNK, decode_content=True):
            yield chunk
    else:  # a custom adapter without urllib3 underneath
        yield from response.iter_content(chunk_size=CHUNK)


def _cut(connection: HTTPConnection) -> None:
    """Shut the connection's socket, so that a read blocked on it returns at once.

    The plain socket's shutdown, also under TLS: ``SSLSocket.shutdown`` drops the TLS layer
    first, and anything sent on it in that moment would go out in clear text.
    """
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread per process that shuts the sockets of responses still awaited at their
    deadline. A thread per request would cost more than the request: starting one waits for it
    to run, which under load means waiting for the interpreter lock (measured: +5 ms on a FHIR
    fallback call of 7 queries).

    Entries are ``[deadline, sequence, connection, active]``; an answered request marks its
    entry inactive and the thread drops it when it comes up. The thread is woken only when a new
    deadline is earlier than the one it waits for (rare: a hook call's requests share one).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[list[Any]] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, connection: HTTPConnection) -> list[Any]:
        entry = [deadline, next(self._sequence), connection, True]
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="http-deadline-watchdog", daemon=True
                )
                self._thread.start()
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, entry)
            if earliest is None or deadline < earliest:
                self._cond.notify()
        return entry

    def unwatch(self, entry: list[Any]) -> None:
        """Under the lock: once this returns, no cut can land on the connection, which may go
        back to the pool and serve another request."""
        with self._cond:
            entry[3] = False

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and not self._heap[0][3]:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                if entry[3]:
                    _cut(entry[2])

    def _after_fork(self) -> None:
        # A forked child (a gunicorn worker) has no watchdog thread yet: it starts its own.
        self._cond = threading.Condition()
        self._heap = []
        self._thread = None


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._after_fork)


class _DeadlineWatch:
    """Mixed into urllib3's connections: the wait for a response's status line and headers ends
    at the deadline set with :func:`deadline`.

    A server that sends a header line every half second would otherwise hold the thread for
    ever (for the FHIR client, long after the hook call answered 412; enough such calls would
    leave no thread for healthy EHRs). :data:`_WATCHDOG` shuts the socket at the deadline; the
    body has its reader's own elapsed-time check.
    """

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_SENDING, "deadline", None)
        if deadline is None:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]
        entry = _WATCHDOG.watch(deadline, self)  # type: ignore[arg-type]
        try:
            return super().getresponse(*args, **kwargs)  # type: ignore[misc]
        finally:
            _WATCHDOG.unwatch(entry)


class _WatchedHTTPConnection(_DeadlineWatch, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_DeadlineWatch, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """An adapter whose connections honour the deadline set with :func:`deadline`
    (:class:`_DeadlineWatch`)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }
