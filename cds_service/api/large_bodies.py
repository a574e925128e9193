"""Large request bodies are handled one at a time in each worker process.

A hook call with a long chart in its prefetch (several MB of JSON, only when an operator raises
``CDS_MAX_BODY_BYTES`` above its 1 MiB default) becomes tens of MB of Python objects while it is
handled. Two such calls in the same worker at once hold two of those trees and nearly double the
worker's peak memory, and gain nothing in return: the work is CPU-bound and holds the GIL, so
interleaving them only makes the first one finish later. So a call whose declared body is larger
than :data:`LARGE_BODY_BYTES` waits for the previous large one in its process to end; smaller
calls never wait.

The gate is taken before the body is read (after authentication) and released when the request
ends, after the view has returned and its parsed body is gone.
"""

from __future__ import annotations

import threading

from flask import Flask, current_app, g, request

LARGE_BODY_BYTES = 1024 * 1024

_one_at_a_time = threading.Lock()


def _enter() -> None:
    length = request.content_length
    cap = current_app.config.get("MAX_CONTENT_LENGTH")
    # A body over the cap is refused without being read, so it never waits.
    if length is not None and length > LARGE_BODY_BYTES and (cap is None or length <= cap):
        _one_at_a_time.acquire()
        g.large_body_gate = True


def _leave(_error: BaseException | None) -> None:
    if g.pop("large_body_gate", False):
        _one_at_a_time.release()


def install_large_body_gate(app: Flask) -> None:
    """Register the gate; call after the authentication hook, so that it runs after it."""
    app.before_request(_enter)
    app.teardown_request(_leave)
