"""gunicorn's own refusals (requests that are not well-formed HTTP) are OperationOutcomes.

The whole path under a real ``serve`` is in tests/reliability/test_processes.py.
"""

import json
import logging
import socket

from gunicorn import util

from cds_service.api import server_refusals
from cds_service.api.server_refusals import MAX_MESSAGE_CHARS, refusal, write_refusal
from tests.reliability.support import assert_operation_outcome


def _parse(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status_line, headers, body


def test_a_refusal_is_a_complete_http_answer_with_an_operation_outcome():
    status_line, headers, body = _parse(
        refusal(431, "Request Header Fields Too Large", "Error parsing headers: 'too long'")
    )
    assert status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    outcome = assert_operation_outcome(431, body)
    assert outcome["issue"] == [{
        "severity": "error",
        "code": "too-long",
        "diagnostics": "Request Header Fields Too Large: Error parsing headers: 'too long'",
    }]


def test_the_status_text_follows_the_status_not_gunicorns_leftover_reason():
    """gunicorn answers an unsupported Transfer-Encoding 501 with reason "Bad Request"."""
    status_line, _, body = _parse(
        refusal(501, "Bad Request", "Unsupported transfer coding: 'foo'")
    )
    assert status_line == "HTTP/1.1 501 Not Implemented"
    assert json.loads(body)["issue"][0]["diagnostics"] == (
        "Not Implemented: Unsupported transfer coding: 'foo'"
    )
    assert _parse(refusal(599, "Odd", "m"))[0] == "HTTP/1.1 599 Odd"


def test_issue_codes_follow_the_status():
    def code(status: int, reason: str) -> str:
        return json.loads(_parse(refusal(status, reason, "m"))[2])["issue"][0]["code"]

    assert code(400, "Bad Request") == "invalid"
    assert code(414, "URI Too Long") == "too-long"
    assert code(403, "Forbidden") == "forbidden"
    assert code(501, "Not Implemented") == "not-supported"
    assert code(500, "Internal Server Error") == "exception"


def test_a_quoted_request_line_is_cut_short_and_an_empty_message_leaves_the_reason():
    long_line = "GET /" + "a" * 5000 + " HTTP/1.1"
    _, _, body = _parse(refusal(400, "Bad Request", f"Invalid Request Line '{long_line}'"))
    diagnostics = json.loads(body)["issue"][0]["diagnostics"]
    assert len(diagnostics) == len("Bad Request: ") + MAX_MESSAGE_CHARS
    _, _, body = _parse(refusal(500, "Internal Server Error", ""))
    assert json.loads(body)["issue"][0]["diagnostics"] == "Internal Server Error"


def test_install_makes_gunicorn_write_refusals_this_way(monkeypatch):
    monkeypatch.setattr(util, "write_error", util.write_error)  # restored after the test
    monkeypatch.setattr(logging.getLogger("gunicorn.error"), "filters", [])
    server_refusals.install()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        util.write_error(ours, 400, "Bad Request", "Invalid HTTP Version 'HTTP/9'")
        ours.shutdown(socket.SHUT_WR)
        received = b"".join(iter(lambda: theirs.recv(4096), b""))
    assert util.write_error is write_refusal
    status_line, headers, body = _parse(received)
    assert status_line == "HTTP/1.1 400 Bad Request"
    assert json.loads(body)["issue"][0]["diagnostics"] == (
        "Bad Request: Invalid HTTP Version 'HTTP/9'"
    )


def test_gunicorns_log_line_for_a_refusal_keeps_the_address_not_the_request(monkeypatch, caplog):
    """A header line without a colon is quoted whole in gunicorn's warning: here a token."""
    error_log = logging.getLogger("gunicorn.error")
    monkeypatch.setattr(error_log, "filters", [])
    monkeypatch.setattr(util, "write_error", util.write_error)
    server_refusals.install()
    server_refusals.install()  # once is enough: no second filter
    assert len(error_log.filters) == 1
    with caplog.at_level(logging.WARNING, logger="gunicorn.error"):
        for ip in ("127.0.0.1", "::1", "/run/cds.sock"):
            error_log.warning(
                f"Invalid request from ip={ip}: Invalid HTTP header name: "
                "'Authorization Bearer eyJhbGciOi.secret'"
            )
        error_log.warning("Worker timeout (pid:%s)", 1234)  # other lines are left alone
    messages = [record.getMessage() for record in caplog.records]
    assert not any("secret" in m or "Authorization" in m for m in messages)
    assert messages[0].startswith("Invalid request from ip=127.0.0.1: refused")
    assert messages[1].startswith("Invalid request from ip=::1: refused")
    assert messages[2].startswith("Invalid request from ip=/run/cds.sock: refused")
    assert messages[3] == "Worker timeout (pid:1234)"
