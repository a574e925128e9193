"""Errors as FHIR OperationOutcomes: every non-2xx answer says what was wrong, in JSON.

CDS Hooks 2.0 defines only 200 and 412; it allows other 4xx/5xx, and the 3.0 ballot asks for an
OperationOutcome body on them. We always send one, never an HTML page or a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

logger = logging.getLogger("cds_service.api")

FHIR_JSON = "application/fhir+json"


class ApiError(Exception):
    """An error answer: HTTP status, OperationOutcome issue code, and human-readable messages."""

    def __init__(
        self,
        status: int,
        messages: str | Sequence[str],
        *,
        code: str = "invalid",
        expressions: Sequence[str | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        self.code = code
        self.expressions = list(expressions) if expressions else [None] * len(self.messages)
        self.headers = headers or {}
        super().__init__("; ".join(self.messages))


RETRY_AFTER_S = 5  # what a 503 tells the client to wait before trying again


def try_again_later(message: str) -> ApiError:
    """A 503 with ``Retry-After``: the service's own fault, passing (its database, say);
    nothing was done, and the same request may be sent again."""
    return ApiError(503, message, code="transient", headers={"Retry-After": str(RETRY_AFTER_S)})


def operation_outcome(
    messages: Sequence[str], *, code: str, expressions: Sequence[str | None] | None = None
) -> dict[str, Any]:
    expressions = list(expressions) if expressions else [None] * len(messages)
    issues = []
    for message, expression in zip(messages, expressions, strict=True):
        issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": message}
        if expression:
            issue["expression"] = [expression]
        issues.append(issue)
    return {"resourceType": "OperationOutcome", "issue": issues}


def error_response(
    status: int,
    messages: Sequence[str],
    *,
    code: str,
    expressions: Sequence[str | None] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify(operation_outcome(messages, code=code, expressions=expressions))
    response.status_code = status
    response.headers.update(headers or {})
    return response


# OperationOutcome issue codes (http://hl7.org/fhir/issue-type) for the HTTP errors that Flask
# raises and that gunicorn answers itself (api/server_refusals.py).
_HTTP_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    414: "too-long",
    415: "not-supported",
    417: "not-supported",
    431: "too-long",
    501: "not-supported",
}


def issue_code(status: int) -> str:
    """The OperationOutcome issue code for an HTTP error status ("exception" when unlisted)."""
    return _HTTP_CODES.get(status, "exception")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(
            error.status,
            error.messages,
            code=error.code,
            expressions=error.expressions,
            headers=error.headers,
        )

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = error.description or error.name
        if status == 413:
            message = "The request body is larger than this service accepts."
        # A 405 MUST say which methods are allowed (RFC 9110 section 15.5.6).
        allow = dict(error.get_headers()).get("Allow")
        return error_response(
            status,
            [message],
            code=issue_code(status),
            headers={"Allow": allow} if allow else None,
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # Log the type only: exception messages can quote request data.
        logger.error("unhandled error", extra={"error": type(error).__name__})
        return error_response(
            500, ["The service failed to process this request."], code="exception"
        )
