"""``hypermobility-cds serve`` on an IPv6 address: gunicorn's bind needs it in brackets."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from cds_service.cli import host_and_port
from tools.soak import _with_repo_on_path, free_port


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
    command = [sys.executable, "-m", "cds_service.cli", "serve", "--host", "::1",
               "--port", str(port), "--workers", "1", "--threads", "1"]
    env = _with_repo_on_path({"CDS_PROFILE": "development", "CDS_AUTH": "off",
                              "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'cds.sqlite3'}",
                              "PATH": "/usr/bin:/bin"})
    served = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                if served.poll() is not None or time.monotonic() > deadline:
                    served.kill()
                    raise AssertionError(served.communicate()[1][-1500:].decode()) from None
                time.sleep(0.1)
    finally:
        served.terminate()
        try:
            served.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.kill()
            served.wait()
        served.stderr.close()
