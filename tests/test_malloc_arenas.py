"""`serve` caps glibc's malloc arenas (cds_service.cli.cap_malloc_arenas).

Each check runs in a fresh interpreter: the cap is process-wide, and what it changes is how many
arenas glibc creates when several threads allocate, read from glibc's own ``malloc_info``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the cap is for glibc's malloc"
)

# Threads that each hold a large buffer (glibc's malloc, not Python's small-object allocator)
# while the others allocate, then glibc's count of arenas ("<heap nr=...>" in malloc_info).
PROGRAM = """
import ctypes, os, sys, tempfile, threading
from cds_service.cli import cap_malloc_arenas

capped = cap_malloc_arenas() if sys.argv[1] == "cap" else None
barrier = threading.Barrier(8)

def hold():
    buffer = bytearray(100_000)  # below the mmap threshold: from this thread's arena
    barrier.wait()

threads = [threading.Thread(target=hold) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(delete=False) as named:
    path = named.name
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
with open(path) as fh:
    print(capped, fh.read().count("<heap nr="))
os.unlink(path)
"""


def _run(mode: str, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return out[0], int(out[1])


def test_the_cap_bounds_the_arenas_threads_create():
    capped, arenas = _run("cap")
    assert capped == "True"
    assert arenas <= 2
    _, uncapped = _run("none")
    assert uncapped > 2  # what the cap prevents: one arena per allocating thread


def test_an_operators_own_setting_is_left_alone():
    capped, arenas = _run("cap", MALLOC_ARENA_MAX="4")
    assert capped == "False"
    assert 2 < arenas <= 4
