"""Helpers shared by the reliability and fuzz tests: known scenarios, OpenAPI-based validation.

Response bodies are validated with ``jsonschema`` against the schemas of the served OpenAPI
document (not a copy), so the document and the real responses cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import requests
from jsonschema import Draft202012Validator, FormatChecker

from cds_service.api.openapi import openapi_document
from cds_service.devtools.scenarios import load_scenario

# Scenarios with several cards, one per hook: "the service still answers correctly".
KNOWN_SCENARIOS = ("pv-many-findings", "select-opioid-steroid-brace", "sign-opioid-steroid-brace")


@dataclass(frozen=True)
class KnownCall:
    name: str
    path: str
    body: dict[str, Any]
    expected: frozenset[str]
    prefetch_keys: tuple[str, ...]


def known_call(name: str, *, prefetch: bool = True, fhir_server: str | None = None) -> KnownCall:
    """A scenario's hook call: with full prefetch, or none (the service must fetch)."""
    scenario = load_scenario(name)
    service = scenario.service
    body = scenario.hook_request(service.prefetch if prefetch else None, fhir_server=fhir_server)
    return KnownCall(
        name=name,
        path=f"/cds-services/{service.id}",
        body=body,
        expected=scenario.expected_cards,
        prefetch_keys=tuple(service.prefetch),
    )


def rule_ids(body: Mapping[str, Any]) -> set[str]:
    return {card["source"]["topic"]["code"] for card in body["cards"]}


def post_timed(url: str, call: KnownCall) -> tuple[int, dict[str, Any], float]:
    """POST ``call`` to the server at ``url``: (status, JSON body or {}, seconds taken)."""
    started = time.monotonic()
    response = requests.post(url + call.path, json=call.body, timeout=30)
    elapsed = time.monotonic() - started
    return response.status_code, response.json() if response.content else {}, elapsed


@contextmanager
def healthy_traffic(
    url: str, call: KnownCall, limit: int, *, healthz: bool = False
) -> Iterator[list[tuple[int, float, set[str]]]]:
    """Post ``call`` over and over in a background thread (at most ``limit`` answers) while the
    block runs; yields the list of (status, seconds, rule ids fired) it fills, for the test to
    check afterwards (an assertion inside the thread could not fail the test; an exception there
    fails it when the block ends). With ``healthz``, a ``/healthz`` call follows each one; one
    that does not answer 200 fails the test when the block ends (it is not a row of the list, so
    every row is a hook call the test's checks apply to)."""
    results: list[tuple[int, float, set[str]]] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def run() -> None:
        session = requests.Session()
        try:
            while not stop.is_set() and len(results) < limit:
                started = time.monotonic()
                response = session.post(url + call.path, json=call.body, timeout=10)
                ids = rule_ids(response.json()) if response.status_code == 200 else set()
                results.append((response.status_code, time.monotonic() - started, ids))
                if healthz:
                    health = session.get(url + "/healthz", timeout=10)
                    if health.status_code != 200:
                        raise AssertionError(f"/healthz answered {health.status_code}")
        except Exception as error:  # a hung or failed call: the test fails below, not here
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield results
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive(), "the background traffic was still running 20 s after the block"
    assert not errors, f"a background call failed: {errors[0]!r}"


@cache
def _validator(component: str) -> Draft202012Validator:
    document = openapi_document()
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def schema_errors(component: str, body: Any) -> list[str]:
    """Messages of every way ``body`` violates the documented schema (empty: conforms)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _validator(component).iter_errors(body)
    ]


def assert_conforms(component: str, body: Any) -> None:
    errors = schema_errors(component, body)
    assert not errors, f"{component}: {errors[:5]}"


def assert_operation_outcome(status: int, raw: bytes | str) -> dict[str, Any]:
    """An error answer is JSON, an OperationOutcome per the document, no stack trace."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    assert "Traceback" not in text and 'File "' not in text, text[:300]
    try:
        body = json.loads(text)
    except ValueError:
        raise AssertionError(f"{status} answer is not JSON: {text[:200]!r}") from None
    assert_conforms("OperationOutcome", body)
    return body


def check_answer(status: int, raw: bytes, success: str | None = None) -> None:
    """The fuzzing invariant: never 5xx; 4xx is an OperationOutcome; a 200 body conforms to
    the ``success`` component when one is named."""
    assert status < 500, (status, raw[:300])
    if status >= 400:
        assert_operation_outcome(status, raw)
    elif status == 200 and success:
        assert_conforms(success, json.loads(raw))


def _complete(received: bytes) -> bool:
    """Whether ``received`` holds a whole answer: its head, and as much body as it announces."""
    head, found, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    return bool(found and length and len(body) >= int(length.group(1)))


def raw_http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are, malformed HTTP included; (status, lower-cased headers, body) of
    the answer, read up to its Content-Length.

    Not read to the close: after refusing a request nginx keeps reading what the client still
    sends for up to 5 s (its lingering close). And a server may close a refused connection with
    part of the request unread, so the kernel may reset it: a reset after the whole answer ends
    the read; one that cut the answer short sends the request again (at most twice more)."""
    for _ in range(3):
        received = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            try:
                conn.sendall(request)
                while not _complete(received):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass
        if _complete(received):
            break
    else:
        raise AssertionError(f"no complete answer in three tries: {received[:200]!r}")
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body
