"""gunicorn's own refusals as OperationOutcomes, like every other error answer of the service.

A request that is not well-formed HTTP never reaches Flask: gunicorn's worker refuses it itself
(a request line over 4 KiB, a header line over its limit, a ``Content-Length`` that is not a
number, a ``Transfer-Encoding`` it does not support, a malformed method such as ``get``...) and
writes the answer with ``gunicorn.util.write_error``, an HTML page. An EHR reading our errors as
JSON then gets something it cannot parse. :func:`install` has gunicorn write the same status
and message as an OperationOutcome (:func:`cds_service.api.errors.operation_outcome`) instead.
The status text comes from the status: gunicorn keeps "Bad Request" when it answers 500 or 501.

Why replace that one function: it is where every worker class (sync, gthread) writes such an
answer, after gunicorn has chosen the status and message, so nothing of its choice is repeated
here. ``hypermobility-cds serve`` installs it once, before the workers fork.

gunicorn also logs each refusal, as "Invalid request from ip=<ip>: <error>", and its error may
quote the refused request: its request line, or a header line without a colon (an
``Authorization Bearer <token>`` line, say). :func:`install` keeps the address and the fact in
that log line and drops the quote, whatever the address looks like. (gunicorn's other line
that names a request, "Error handling request <method> <uri>", is written only for a fault of
the server's own; this service's URIs carry no patient data, and its access log is off.)
"""

from __future__ import annotations

import socket
from http import HTTPStatus

import orjson
from gunicorn import util

from cds_service.api.errors import issue_code, operation_outcome
from cds_service.logs import keep_url_loggers_quiet

MAX_MESSAGE_CHARS = 200  # gunicorn's message may quote the refused request line
_NAMED = frozenset(HTTPStatus)


def refusal(status: int, reason: str, message: str) -> bytes:
    """The whole HTTP response gunicorn sends for a request it refuses, with a JSON body.
    ``reason`` is used only for a status the standard library does not name."""
    if status in _NAMED:
        reason = HTTPStatus(status).phrase
    detail = f"{reason}: {message[:MAX_MESSAGE_CHARS]}" if message else reason
    body = orjson.dumps(
        operation_outcome([detail], code=issue_code(status))
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1", "replace") + body


def write_refusal(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error``'s signature and effect, with an OperationOutcome body."""
    util.write_nonblock(sock, refusal(status_int, reason, mesg))


def install() -> None:
    """Have gunicorn (in this process and the workers it forks) answer refusals in JSON, and
    log them without quoting the request."""
    util.write_error = write_refusal
    keep_url_loggers_quiet()  # the refusal's log line too (logs.WithholdRequestText)
