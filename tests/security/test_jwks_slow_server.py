"""A slow key server holds up only the request that refreshes its key set, and only as long as
the fetch timeout.

Found by a security review: the fetch timeout bounded each socket read, not the body, so a
server sending one byte every 0.3 s held the refreshing request for minutes; and every other
request of that issuer, its key already cached, waited on the same lock. A review of the fix
found the same for headers sent a byte at a time, and a body that stalls raising past the fetch.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any

import pytest
import requests

from cds_service.outbound_http import WatchedAdapter
from cds_service.security import (
    JwtVerifier,
    MemoryReplayCache,
    TrustedIssuer,
    sign_development_token,
)
from cds_service.security.errors import AuthError
from cds_service.security.jwks import JwksFetcher
from tests.security.conftest import FakeClock, make_keypair

ISS = "https://ehr.example.org"
AUD = "https://cds.example.org/cds-services/x"
KEYS = "https://keys.ehr.example.org"


class DripServer:
    """Answers the first request at once; later ones get their headers, then one body byte
    every ``gap`` seconds (each read succeeds well within the socket timeout)."""

    def __init__(self, body: bytes, gap: float = 0.3) -> None:
        self.body, self.gap, self.stop = body, gap, threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        served = 0
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn, served == 0), daemon=True).start()
            served += 1

    def _answer(self, conn: socket.socket, at_once: bool) -> None:
        conn.recv(65536)
        try:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(self.body)).encode() + b"\r\nConnection: close\r\n\r\n"
            )
            if at_once:
                conn.sendall(self.body)
            else:
                for byte in self.body:
                    if self.stop.is_set():
                        break
                    conn.sendall(bytes([byte]))
                    time.sleep(self.gap)
        except OSError:
            pass
        conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


class ToLocal(WatchedAdapter):
    """Sends the key server's https URL to the local plain-http server (test plumbing), through
    watched connections as the service's own key-set session has (jwks.key_set_session)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def send(self, request: Any, **kwargs: Any) -> Any:
        request.url = request.url.replace(KEYS, f"http://127.0.0.1:{self.port}")
        return super().send(request, **kwargs)


def in_thread(verifier: JwtVerifier, token: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["claims"] = verifier.verify(f"Bearer {token}", AUD)
        except Exception as error:  # noqa: BLE001 - reported by the assertion
            out["error"] = repr(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_dripping_key_server_holds_up_neither_the_refresh_nor_the_others():
    keys = make_keypair("ES384")
    server = DripServer(json.dumps(keys.jwks()).encode())
    session = requests.Session()
    session.mount("https://", ToLocal(server.port))
    clock = FakeClock(time.time())
    verifier = JwtVerifier(
        [TrustedIssuer(iss=ISS, jwks_url=f"{KEYS}/jwks")],
        replay_cache=MemoryReplayCache(clock=clock), session=session,
        fetch_timeout_s=1.0, clock=clock, jwks_cache_ttl_s=3600,
    )

    def token() -> str:
        return sign_development_token(
            keys.private_pem, kid=keys.kid, iss=ISS, aud=AUD, alg="ES384",
            extra_claims={"iat": int(clock.now), "exp": int(clock.now) + 300})

    try:
        verifier.verify(f"Bearer {token()}", AUD)  # the key set is fetched and cached
        clock.advance(3601)  # stale: the next request refreshes it from the dripping server
        refresh, refreshed = in_thread(verifier, token())
        time.sleep(0.2)
        other, answered = in_thread(verifier, token())  # its key is cached
        other.join(0.5)
        assert not other.is_alive() and "claims" in answered, answered
        refresh.join(3)  # the fetch gives up after its 1 s timeout; the cached keys still serve
        assert not refresh.is_alive() and "claims" in refreshed, refreshed
    finally:
        server.close()


def one_shot_server(answer) -> socket.socket:  # noqa: ANN001 - a function of the connection
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def serve() -> None:
        conn, _ = sock.accept()
        conn.recv(65536)
        with contextlib.suppress(OSError):
            answer(conn)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock


def fetcher(sock: socket.socket, timeout_s: float) -> JwksFetcher:
    session = requests.Session()
    session.mount("https://", ToLocal(sock.getsockname()[1]))
    return JwksFetcher(session, timeout_s=timeout_s, ttl_s=3600, min_refresh_interval_s=0)


def test_headers_sent_a_byte_at_a_time_are_cut_at_the_fetch_timeout():
    keys = make_keypair("ES384")
    body = json.dumps(keys.jwks()).encode()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + b"X-Pad: a\r\n" * 40 + b"\r\n")
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        for byte in head:
            if stop.is_set():
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.05)
        conn.sendall(body)

    sock = one_shot_server(drip)
    started = time.monotonic()
    try:
        with pytest.raises(AuthError):
            fetcher(sock, timeout_s=1.0).lookup(f"{KEYS}/jwks", keys.kid)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        sock.close()
    assert elapsed < 2.5, f"the fetch held the request {elapsed:.1f} s with a 1 s timeout"


def test_a_body_that_stalls_is_a_failed_fetch_not_an_exception():
    keys = make_keypair("ES384")
    body = json.dumps(keys.jwks()).encode()

    def stall(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
        time.sleep(2)

    sock = one_shot_server(stall)
    try:
        with pytest.raises(AuthError):  # the key set cannot be had: not a raw TimeoutError
            fetcher(sock, timeout_s=0.5).lookup(f"{KEYS}/jwks", keys.kid)
    finally:
        sock.close()
