"""DatabaseReplayCache on both backends: one winner per (iss, jti), across processes too."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from cds_service.security.replay import DatabaseReplayCache, ReplayCache
from cds_service.storage.database import Database
from cds_service.storage.schema import jwt_replay

ISS = "https://ehr.example.org"
REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def _rows(db: Database) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(jwt_replay)).scalar_one()


def test_protocol_and_semantics(database_url):
    clock = Clock()
    cache = DatabaseReplayCache(database_url, clock=clock)
    try:
        assert isinstance(cache, ReplayCache)
        exp = clock.now + 300
        assert cache.add_if_new(ISS, "a", exp) is True
        assert cache.add_if_new(ISS, "a", exp) is False
        assert cache.add_if_new("https://other.example", "a", exp) is True
        clock.now = exp  # remembered up to and including the expiry instant
        assert cache.add_if_new(ISS, "a", exp) is False
        clock.now = exp + 0.5  # an expired pair may be used again, even before any purge
        assert cache.add_if_new(ISS, "a", clock.now + 300) is True
        assert cache.add_if_new(ISS, "a", clock.now + 300) is False
    finally:
        cache.close()


def test_expired_rows_are_purged_at_most_every_interval(database_url):
    clock = Clock()
    cache = DatabaseReplayCache(database_url, clock=clock, purge_interval_s=5)
    try:
        for i in range(10):
            cache.add_if_new(ISS, f"j{i}", clock.now + 2)
        clock.now += 3  # expired, but the last purge was < 5 s ago: rows stay for now
        cache.add_if_new(ISS, "k", clock.now + 100)
        assert _rows(cache.database) == 11
        clock.now += 3
        cache.add_if_new(ISS, "fresh", clock.now + 100)
        assert _rows(cache.database) == 2  # k and fresh
    finally:
        cache.close()


def test_two_caches_on_one_database_share_decisions(database_url):
    first, second = DatabaseReplayCache(database_url), DatabaseReplayCache(database_url)
    try:
        exp = time.time() + 60
        assert first.add_if_new(ISS, "shared", exp) is True
        assert second.add_if_new(ISS, "shared", exp) is False
    finally:
        first.close()
        second.close()


def test_threads_racing_on_one_jti_have_one_winner(database_url):
    caches = [DatabaseReplayCache(database_url) for _ in range(2)]
    barrier = threading.Barrier(12)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        barrier.wait()
        outcome = caches[n % 2].add_if_new(ISS, "race", time.time() + 60)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in caches:
        c.close()
    assert sorted(results) == [False] * 11 + [True]


_RACE = """
import sys, time
from cds_service.security.replay import DatabaseReplayCache
cache = DatabaseReplayCache(sys.argv[1])
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
print(cache.add_if_new("https://ehr.example.org", "raced-jti", time.time() + 60))
"""


def test_processes_racing_on_one_jti_have_one_winner(database_url):
    DatabaseReplayCache(database_url).close()  # schema first
    start_at = str(time.time() + 2.0)
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACE, database_url, start_at], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert sorted(out.strip() for out, _ in outputs) == ["False", "False", "False", "True"]


def test_the_replay_check_asks_for_a_short_wait_and_two_tries(database_url, monkeypatch):
    """It runs while an EHR waits: half a second a try for a lock, two tries (Database.run
    honours lock_wait_s: test_storage_database), not the store's 5 s and five tries."""
    from cds_service.security import replay

    db = Database(database_url)
    cache = DatabaseReplayCache(db, clock=Clock())
    asked: list[dict] = []
    run = db.run

    def spy(work, **options):
        asked.append(options)
        return run(work, **options)

    monkeypatch.setattr(db, "run", spy)
    assert cache.add_if_new(ISS, "j1", 1_900_000_100.0)  # the first call purges too
    check, purge = asked
    assert check == {"relaxed": True, "retry": replay.RETRY, "lock_wait_s": 0.5,
                     "statement_s": 0.5}
    assert replay.RETRY.attempts == 2
    # The purge runs after the check, on its own: no statement bound, so that a long one still
    # finishes (under the check's bound it never could, and the table grew without end).
    assert "statement_s" not in purge and purge["retry"].attempts == 1


@pytest.mark.parametrize("failure", [
    lambda: OperationalError("DELETE", {}, Exception("canceling statement")),
    # Not the database's: the jti was claimed already, so it must not fail the call either
    # (a 503 "retry" whose retry would then be refused as a replay; found by review).
    lambda: RuntimeError("anything else"),
])
def test_a_purge_that_fails_never_fails_the_check(database_url, monkeypatch, failure):
    db = Database(database_url)
    cache = DatabaseReplayCache(db, clock=Clock())
    run = db.run

    def failing_purge(work, **options):
        if "statement_s" not in options:  # the purge
            raise failure()
        return run(work, **options)

    monkeypatch.setattr(db, "run", failing_purge)
    assert cache.add_if_new(ISS, "j1", 1_900_000_100.0) is True
    assert cache.add_if_new(ISS, "j1", 1_900_000_100.0) is False  # still a replay check


def test_a_purge_deletes_a_bounded_batch_so_a_backlog_clears_over_intervals(database_url,
                                                                            monkeypatch):
    """One purge of 3 M expired rows held its call up for 2.2 s (found by review): each purge
    now deletes at most PURGE_BATCH rows, and the next interval takes the next batch."""
    from cds_service.security import replay

    monkeypatch.setattr(replay, "PURGE_BATCH", 5)
    clock = Clock()
    cache = DatabaseReplayCache(database_url, clock=clock, purge_interval_s=5)
    try:
        cache._last_purge = clock.now  # the first call's purge is not due
        for i in range(12):
            cache.add_if_new(ISS, f"j{i}", clock.now + 2)
        seen = []
        for n in range(3):
            clock.now += 6  # every earlier row has expired, and a purge is due
            assert cache.add_if_new(ISS, f"fresh{n}", clock.now + 100)
            seen.append(_rows(cache.database))
        # 12 expired: 5 go each time; each call's own fresh row stays (and expires later)
        assert seen == [12 + 1 - 5, 12 + 2 - 10, 3]  # the last purge takes the 2 left
    finally:
        cache.close()
