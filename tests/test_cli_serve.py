"""``hypermobility-cds serve`` on an IPv6 address: gunicorn's bind needs it in brackets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import requests

from cds_service.cli import host_and_port
from tools.soak import ServedProcess, free_port


def test_an_ipv6_host_is_bracketed_and_others_are_not():
    assert host_and_port("::1", 8000) == "[::1]:8000"
    assert host_and_port("fe80::1", 80) == "[fe80::1]:80"
    assert host_and_port("127.0.0.1", 8000) == "127.0.0.1:8000"
    assert host_and_port("0.0.0.0", 8000) == "0.0.0.0:8000"
    assert host_and_port("localhost", 8000) == "localhost:8000"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_serve_listens_on_ipv6_loopback(tmp_path):
    port = free_port()
    server = ServedProcess(tmp_path, workers=1, threads=1, port=port, own_session=True, command=[
        sys.executable, "-m", "cds_service.cli", "serve", "--host", "::1", "--port", str(port),
        "--workers", "1", "--threads", "1",
    ])
    server.url = f"http://[::1]:{port}"  # what ServedProcess waits on, and the test asks
    with server:
        assert requests.get(server.url + "/cds-services", timeout=10).status_code == 200


@pytest.mark.parametrize("env", [
    {},  # production: authentication required, and no trusted issuer
    {"CDS_AUTH": "off", "CDS_FHIR_SERVER_ALLOWLIST": "http://fhir.example.org/r4"},
])
def test_serve_refuses_bad_settings_before_it_migrates_the_database(tmp_path, env):
    """A release that cannot start must leave the shared database as it found it: serve
    migrated first and checked the settings after (found by review)."""
    database = tmp_path / "new" / "dir" / "fresh.sqlite3"  # nor its directories (review)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    environment.update(env, CDS_DATABASE_URL=f"sqlite:///{database}")
    done = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(free_port())],
        env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr
    assert not (tmp_path / "new").exists()
