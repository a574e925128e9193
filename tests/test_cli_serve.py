"""``hypermobility-cds serve`` on an IPv6 address: gunicorn's bind needs it in brackets."""

from __future__ import annotations

import socket
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
