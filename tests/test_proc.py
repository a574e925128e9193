"""tools/proc.py, the one reader of /proc for the soak, the benchmarks and the process tests.

A real process is read: one with a child forked from another thread (a gunicorn master re-forks
workers from whichever thread runs its loop; ``task/<pid>/children`` would miss that child) and
a zombie child, which burns CPU and grows its memory on request.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tools.proc import Memory, cpu_seconds, live_children, memory

PARENT = r"""
import os, subprocess, sys, threading, time

sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
kept, forked = [], threading.Event()


def fork_and_stay():  # a child of a thread that lives on (were it to end, its children would
    kept.append(subprocess.Popen(sleeper))  # pass to the main thread)
    forked.set()
    threading.Event().wait()


threading.Thread(target=fork_and_stay, daemon=True).start()
forked.wait()
kept.append(subprocess.Popen(sleeper))
zombie = subprocess.Popen([sys.executable, "-c", "pass"])
os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, never reaped: a zombie
print(*(p.pid for p in kept), zombie.pid, flush=True)
ballast = []
for line in sys.stdin:
    if line.strip() == "burn":
        end = time.process_time() + 0.5
        while time.process_time() < end:
            pass
    elif line.strip() == "grow":
        ballast.append(b"x" * (64 << 20))  # written, so resident
    print("done", flush=True)
"""


class Parent:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        *children, zombie = (int(p) for p in self.process.stdout.readline().split())
        self.children, self.zombie = children, zombie

    def ask(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "done"

    def end(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def parent() -> Iterator[Parent]:
    started = Parent()
    try:
        yield started
    finally:
        started.end()


def test_live_children_are_found_whichever_thread_forked_them_and_zombies_are_not(parent):
    assert len(parent.children) == 2
    assert live_children(parent.process.pid) == sorted(parent.children)
    assert parent.zombie not in live_children(parent.process.pid)
    assert live_children(parent.children[0]) == []


def test_cpu_seconds_grow_with_the_work_done(parent):
    before = cpu_seconds(parent.process.pid)
    parent.ask("burn")
    assert cpu_seconds(parent.process.pid) >= before + 0.4


def test_memory_reads_rss_peak_and_pss_in_kib(parent):
    pid = parent.process.pid
    before = memory(pid)
    parent.ask("grow")
    after = memory(pid)
    assert after.rss_kib >= before.rss_kib + 60 * 1024
    assert after.peak_kib >= after.rss_kib
    assert 0 < after.pss_kib <= after.rss_kib
    without_pss = memory(pid, pss=False)
    assert without_pss.pss_kib is None and without_pss.rss_kib >= 60 * 1024


def test_a_process_that_is_gone_reads_as_nothing(parent):
    pid = parent.process.pid
    parent.end()
    assert live_children(pid) == []
    assert cpu_seconds(pid) == 0.0
    assert memory(pid) == Memory()
