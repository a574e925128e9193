"""deploy/nginx.conf under a real nginx: its own answers are OperationOutcomes, the replicas'
answers pass through untouched.

The config is the file itself, with the compose replicas' addresses replaced by a local upstream
(or a closed port) and the public port by a free one, inside a minimal main config (one process,
temp paths under tmp_path). Skipped when nginx is not installed, unless CDS_REQUIRE_NGINX is set
(CI installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cds_service.security.verifier import MAX_TOKEN_CHARS
from tests.reliability.support import assert_operation_outcome, raw_http
from tools.soak import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
if NGINX is None:
    if os.environ.get("CDS_REQUIRE_NGINX"):
        raise RuntimeError("CDS_REQUIRE_NGINX is set but nginx is not installed")
    pytest.skip("nginx is not installed", allow_module_level=True)

# The stand-in replica's own answers, by path: each must reach the client byte for byte.
REPLICA_ANSWERS = {
    path: (status, b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"'
           + code + b'","diagnostics":"the replica\'s own ' + str(status).encode() + b'"}]}')
    for path, status, code in (
        ("/bad", 400, b"invalid"),
        ("/big", 413, b"too-costly"),
        ("/gateway", 502, b"transient"),
        ("/busy", 503, b"transient"),
    )
}
SLOW_S = 3.0  # /slow answers after this; the test config gives replicas 1 s


class _Replica(BaseHTTPRequestHandler):
    """A stand-in replica: the answers above, /slow late, 200 {"ok": true} elsewhere."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/slow":
            time.sleep(SLOW_S)
        status, body = REPLICA_ANSWERS.get(self.path, (200, b'{"ok":true}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _config(tmp: Path, upstream_port: int, port: int) -> Path:
    site = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    replicas = re.findall(r"server cds-\d+:8000[^;]*;", site)
    assert replicas, "deploy/nginx.conf names no replica"
    site = site.replace(replicas[0], f"server 127.0.0.1:{upstream_port};")
    for line in replicas[1:]:
        site = site.replace(line, "")
    assert "listen 8090;" in site and "proxy_read_timeout 35s;" in site
    site = site.replace("listen 8090;", f"listen 127.0.0.1:{port};")
    site = site.replace("proxy_read_timeout 35s;", "proxy_read_timeout 1s;")  # for the 504
    temp = {name: tmp / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    main = tmp / "nginx.conf"
    main.write_text(
        f"daemon off;\nmaster_process off;\npid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'};\nevents {{ worker_connections 64; }}\n"
        "http {\n    access_log off;\n"
        + "".join(f"    {name}_temp_path {path};\n"
                  for name, path in (("client_body", temp["body"]),
                                     ("proxy", temp["proxy"]),
                                     ("fastcgi", temp["fastcgi"]),
                                     ("uwsgi", temp["uwsgi"]),
                                     ("scgi", temp["scgi"])))
        + site + "\n}\n",
        encoding="utf-8",
    )
    return main


def _nginx(tmp: Path, upstream_port: int) -> Iterator[int]:
    port = free_port()
    config = _config(tmp, upstream_port, port)
    process = subprocess.Popen([NGINX, "-c", str(config), "-p", str(tmp)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = tmp / "error.log"
                    said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"nginx did not start: {said}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def replica() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def balancer(tmp_path, replica) -> Iterator[int]:
    yield from _nginx(tmp_path, replica)


@pytest.fixture
def balancer_without_replicas(tmp_path) -> Iterator[int]:
    # A port held, bound but not listening: connecting to it is refused, and nothing else can
    # take it while the test runs.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield from _nginx(tmp_path, held.getsockname()[1])


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: cds\r\nConnection: close\r\n\r\n".encode()


def _is_outcome(status: int, headers: dict[str, str], body: bytes) -> dict:
    assert headers["content-type"] == "application/json", (status, body[:200])
    return assert_operation_outcome(status, body)


def test_no_replica_reachable_is_a_502_operation_outcome(balancer_without_replicas):
    status, headers, body = raw_http(balancer_without_replicas, _get("/cds-services"))
    assert status == 502
    assert headers["retry-after"] == "5"
    assert _is_outcome(status, headers, body)["issue"][0]["code"] == "transient"


def test_a_replica_too_slow_is_a_504_operation_outcome(balancer):
    status, headers, body = raw_http(balancer, _get("/slow"))
    assert status == 504
    assert _is_outcome(status, headers, body)["issue"][0]["code"] == "timeout"


def test_requests_nginx_refuses_are_operation_outcomes(balancer):
    refused = {
        414: b"GET /" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: cds\r\n\r\n",
        400: b"GET /cds-services HTTP/1.1\r\nHost: cds\r\nConnection: close\r\nX-Long: "
        + b"a" * 40_000 + b"\r\n\r\n",
        413: b"POST /cds-services/x HTTP/1.1\r\nHost: cds\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 40000000\r\n\r\n",
        405: b"TRACE / HTTP/1.1\r\nHost: cds\r\nConnection: close\r\n\r\n",
        501: b"POST /cds-services/x HTTP/1.1\r\nHost: cds\r\nConnection: close\r\n"
        b"Transfer-Encoding: gzip\r\n\r\n",
        505: b"GET /cds-services HTTP/2.0\r\nHost: cds\r\n\r\n",
    }
    for expected, request in refused.items():
        status, headers, body = raw_http(balancer, request)
        assert status == expected, body[:200]
        _is_outcome(status, headers, body)
        if status == 405:
            assert headers["allow"] == "GET, POST, OPTIONS"  # RFC 9110 section 15.5.6
    status, headers, body = raw_http(balancer, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400
    _is_outcome(status, headers, body)


def test_the_error_pages_are_not_served_to_the_outside(balancer):
    status, headers, body = raw_http(balancer, _get("/cds-errors/502.json"))
    assert status == 404
    assert "retry-after" not in headers
    assert _is_outcome(status, headers, body)["issue"][0]["code"] == "not-found"


def test_the_replicas_own_answers_pass_through_untouched(balancer):
    """Errors included: nginx must not put its own pages in their place."""
    status, _headers, body = raw_http(balancer, _get("/cds-services"))
    assert (status, json.loads(body)) == (200, {"ok": True})
    for path, (expected, answer) in REPLICA_ANSWERS.items():
        status, headers, body = raw_http(balancer, _get(path))
        assert (status, body) == (expected, answer), path
        assert "retry-after" not in headers


def test_the_longest_token_and_a_long_request_line_reach_the_replicas(balancer):
    """nginx's default buffers (8 KiB) would refuse a bearer token the service accepts (16 KiB)
    with a page of its own; deploy/nginx.conf gives header lines up to 32 KiB (review)."""
    token = "Authorization: Bearer " + "a" * MAX_TOKEN_CHARS
    status, _, body = raw_http(balancer, f"GET /cds-services HTTP/1.1\r\nHost: cds\r\n{token}\r\n"
                                         "Connection: close\r\n\r\n".encode())
    assert (status, json.loads(body)) == (200, {"ok": True})
    status, _, body = raw_http(balancer, _get("/cds-services?" + "q" * 20_000))
    assert (status, json.loads(body)) == (200, {"ok": True})


def test_every_error_page_nginx_names_is_an_operation_outcome_it_serves():
    """Each error_page status has its internal page, answering that status with an
    OperationOutcome (the 500 page, say, which no request here can make nginx need)."""
    site = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    named = {
        status: page
        for statuses, page in re.findall(r"error_page ([\d ]+) (/cds-errors/\d+\.json);", site)
        for status in statuses.split()
    }
    assert set(named) >= {"400", "404", "405", "413", "414", "500", "501", "502", "504", "505"}
    pages = dict(re.findall(r"location = (/cds-errors/\d+\.json) \{.*?return (\d+ '.*?');",
                            site, re.S))
    for status, page in named.items():
        answer = pages[page]
        code, _, text = answer.partition(" ")
        expected = "400" if status == "494" else status  # nginx sends its 494 as 400
        assert code == expected, page
        assert_operation_outcome(int(code), text.strip("'"))
