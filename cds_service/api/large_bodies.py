"""Large request bodies are parsed and handled one at a time in each worker process.

A hook call with a long chart in its prefetch (several MB of JSON: discovery asks for every
Observation, and the body cap, ``CDS_MAX_BODY_BYTES``, is 32 MiB) becomes tens of MB of Python
objects while it is handled. Two such calls in the same worker at once hold two of those trees
and nearly double the worker's peak memory, and gain nothing in return: the work is CPU-bound
and holds the GIL, so interleaving them only makes the first one finish later. So once a body
larger than :data:`LARGE_BODY_BYTES` has been read (a slow upload never holds the gate), it
waits for the previous large one in its process to end; smaller bodies never wait.

The gate is released when the request ends, after the view has returned and its parsed body is
gone. It is held meanwhile even while the call waits for the EHR's FHIR server (a prefetch that
lacks keys), so a second large call in that worker can wait up to ``CDS_FHIR_DEADLINE_S`` more.
Since long prefetches are read a chunk of entries at a time (``pruning_reader``), a large hook
call's tree is small, and narrowing the gate to parsing and rules is a candidate for later.
"""

from __future__ import annotations

import threading

from flask import Flask, g

LARGE_BODY_BYTES = 1024 * 1024

_one_at_a_time = threading.Lock()


def wait_if_large(size: int) -> None:
    """Called with the size of a body just read, before it is parsed."""
    if size > LARGE_BODY_BYTES and not g.get("large_body_gate"):
        _one_at_a_time.acquire()
        g.large_body_gate = True


def _leave(_error: BaseException | None) -> None:
    if g.pop("large_body_gate", False):
        _one_at_a_time.release()


def install_large_body_gate(app: Flask) -> None:
    """Release the gate, if a request took it, when that request ends."""
    app.teardown_request(_leave)
