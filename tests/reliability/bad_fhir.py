"""A misbehaving FHIR server on a real loopback socket, one failure mode per base path.

``http://127.0.0.1:PORT/<mode>`` is a FHIR base whose every read and search fails in that way:

===============  ==========================================================================
hang             accepts, then says nothing (until ``hang_s`` or server stop)
slow-drip        200 headers, then one body byte every 100 ms
http-500         500 with an OperationOutcome
http-503-html    503 with an HTML page (a proxy's error page)
html             200 with an HTML page
unauthorized     401 with ``WWW-Authenticate``
invalid-fhir     200 JSON that is not FHIR (``entry`` a string, reads without resourceType)
not-json         200 ``application/fhir+json`` that is not JSON
next-self        a searchset whose ``next`` link is the page itself
next-forever     a searchset whose ``next`` link always points one page further
reset            closes the connection without an answer
redirect-away    302 to another host, 127.0.0.2 (the token must not follow)
good             the fixture patient's data (memory_fhir semantics), for comparison
partial          like good, but Observation searches answer 500
===============  ==========================================================================

``refused_base()`` gives a base URL on a port where nothing listens (connection refused).
Request paths carry patient ids, so the handler never logs.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cds_service.devtools import memory_fhir

MODES = (
    "hang",
    "slow-drip",
    "http-500",
    "http-503-html",
    "html",
    "unauthorized",
    "invalid-fhir",
    "not-json",
    "next-self",
    "next-forever",
    "reset",
    "redirect-away",
)
HTML = b"<!doctype html><html><body><h1>Service Unavailable</h1></body></html>"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients (the service) hang up on purpose here; no tracebacks on stderr."""


class BadFhirServer:
    def __init__(
        self, resources: Iterable[Mapping[str, Any]] = (), *, hang_s: float = 10.0
    ) -> None:
        self.resources = list(resources)
        self.hang_s = hang_s
        self.stopping = threading.Event()
        self.requests = 0
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def base(self, mode: str) -> str:
        return f"{self.origin}/{mode}"

    def __enter__(self) -> BadFhirServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Silent: paths carry patient ids."""

            def _send(self, status: int, body: bytes, content_type: str, **headers: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, body: Any, **headers: str) -> None:
                self._send(status, json.dumps(body).encode(), "application/fhir+json", **headers)

            def do_GET(self) -> None:  # noqa: N802
                with outer._lock:
                    outer.requests += 1
                parts = urlsplit(self.path)
                mode, _, rest = parts.path.lstrip("/").partition("/")
                query = rest + (f"?{parts.query}" if parts.query else "")
                # The service may give up on us first: that is the point.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer(mode, query, parts.query)

            def _answer(self, mode: str, query: str, raw_query: str) -> None:
                url = f"{outer.origin}{self.path}"
                if mode == "hang":
                    outer.stopping.wait(outer.hang_s)
                    self._json(200, memory_fhir.searchset([]))
                elif mode == "slow-drip":
                    body = json.dumps(memory_fhir.searchset([])).encode() + b" " * 200
                    self.send_response(200)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    for byte in body:
                        if outer.stopping.wait(0.1):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                elif mode == "http-500":
                    outcome = {"resourceType": "OperationOutcome",
                               "issue": [{"severity": "error", "code": "exception"}]}
                    self._json(500, outcome)
                elif mode == "http-503-html":
                    self._send(503, HTML, "text/html")
                elif mode == "html":
                    self._send(200, HTML, "text/html")
                elif mode == "unauthorized":
                    self._send(401, b"", "text/plain", WWW_Authenticate='Bearer error="invalid"')
                elif mode == "invalid-fhir":
                    self._json(200, {"resourceType": "Bundle", "entry": "oops"}
                               if "?" in query else {"id": "no-resource-type"})
                elif mode == "not-json":
                    self._send(200, b'{"resourceType": "Bundle", ', "application/fhir+json")
                elif mode == "next-self":
                    page = memory_fhir.searchset([])
                    page["link"] = [{"relation": "self", "url": url},
                                    {"relation": "next", "url": url}]
                    self._json(200, page)
                elif mode == "next-forever":
                    params = [(k, v) for k, v in parse_qsl(raw_query) if k != "page"]
                    number = int(dict(parse_qsl(raw_query)).get("page", "0")) + 1
                    path = self.path.split("?")[0]
                    nxt = f"{outer.origin}{path}?{urlencode([*params, ('page', number)])}"
                    page = memory_fhir.searchset([])
                    page["link"] = [{"relation": "next", "url": nxt}]
                    self._json(200, page)
                elif mode == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.close_connection = True
                    self.connection.close()
                elif mode == "redirect-away":
                    self._send(302, b"", "text/plain", Location="http://127.0.0.2:9/fhir/Patient")
                elif mode in ("good", "partial"):
                    if mode == "partial" and query.startswith("Observation"):
                        self._json(500, {"resourceType": "OperationOutcome", "issue": []})
                        return
                    found = memory_fhir.search(outer.resources, query)
                    if found is None:
                        self._json(404, {"resourceType": "OperationOutcome", "issue": []})
                    else:
                        self._json(200, found)
                else:
                    self._json(404, {"resourceType": "OperationOutcome", "issue": []})

        return Handler


def refused_base() -> str:
    """A loopback base URL whose port has no listener (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/fhir"


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
