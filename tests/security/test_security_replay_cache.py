"""Replay caches: each (iss, jti) is accepted once until it expires, within and across processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cds_service.security import (
    MemoryReplayCache,
    ReplayCache,
    SqliteReplayCache,
    TrustedIssuer,
)

AUD = "https://cds.example.org/cds-services/hypermobility-patient-view"
ISS = "https://ehr.example.org"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite"])
def cache_and_clock(request, tmp_path, clock):
    if request.param == "memory":
        return MemoryReplayCache(clock=clock), clock
    return SqliteReplayCache(str(tmp_path / "replay.sqlite3"), clock=clock), clock


def test_both_caches_satisfy_the_protocol(tmp_path):
    assert isinstance(MemoryReplayCache(), ReplayCache)
    assert isinstance(SqliteReplayCache(str(tmp_path / "r.sqlite3")), ReplayCache)


def test_add_if_new_semantics(cache_and_clock):
    cache, clock = cache_and_clock
    exp = clock.now + 100
    assert cache.add_if_new(ISS, "a", exp) is True
    assert cache.add_if_new(ISS, "a", exp) is False
    assert cache.add_if_new(ISS, "b", exp) is True
    # The same jti from another issuer is a different token.
    assert cache.add_if_new("https://other.example", "a", exp) is True


def test_a_forgotten_pair_is_new_again_and_only_that_pair(cache_and_clock):
    """A request that did nothing (503) gives its jti back, so the EHR may send it again."""
    cache, clock = cache_and_clock
    exp = clock.now + 100
    assert cache.add_if_new(ISS, "a", exp) and cache.add_if_new(ISS, "b", exp)
    cache.forget(ISS, "a")
    cache.forget(ISS, "never-seen")  # nothing to forget: no error
    assert cache.add_if_new(ISS, "a", exp) is True
    assert cache.add_if_new(ISS, "a", exp) is False
    assert cache.add_if_new(ISS, "b", exp) is False


def test_entries_kept_until_expiry_then_purged(cache_and_clock):
    cache, clock = cache_and_clock
    expires_at = clock.now + 100
    assert cache.add_if_new(ISS, "a", expires_at)
    clock.now = expires_at  # still remembered at the expiry instant
    assert cache.add_if_new(ISS, "a", expires_at) is False
    clock.now = expires_at + 0.5
    assert cache.add_if_new(ISS, "a", clock.now + 100) is True


def test_memory_cache_purges_expired_entries(clock):
    cache = MemoryReplayCache(clock=clock)
    for i in range(50):
        cache.add_if_new(ISS, f"j{i}", clock.now + 10)
    assert len(cache) == 50
    clock.advance(11)
    cache.add_if_new(ISS, "fresh", clock.now + 10)
    assert len(cache) == 1


def test_sqlite_cache_purges_expired_rows(tmp_path, clock):
    path = tmp_path / "replay.sqlite3"
    cache = SqliteReplayCache(str(path), clock=clock)
    for i in range(20):
        cache.add_if_new(ISS, f"j{i}", clock.now + 10)
    clock.advance(11)
    cache.add_if_new(ISS, "fresh", clock.now + 10)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT jti FROM jwt_replay").fetchall() == [("fresh",)]


def test_sqlite_schema_and_wal(tmp_path):
    path = tmp_path / "sub" / "replay.sqlite3"  # parent directory is created
    SqliteReplayCache(str(path))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = {row[1]: row[5] for row in conn.execute("PRAGMA table_info(jwt_replay)")}
    assert cols == {"iss": 1, "jti": 2, "expires_at": 0}  # pk position: (iss, jti)


def test_memory_cache_is_thread_safe():
    cache = MemoryReplayCache()
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        results.append(cache.add_if_new(ISS, "race", time.time() + 60))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


def test_sqlite_two_instances_on_one_file(tmp_path):
    path = str(tmp_path / "replay.sqlite3")
    first, second = SqliteReplayCache(path), SqliteReplayCache(path)
    exp = time.time() + 60
    assert first.add_if_new(ISS, "shared", exp) is True
    assert second.add_if_new(ISS, "shared", exp) is False
    assert second.add_if_new(ISS, "other", exp) is True
    assert first.add_if_new(ISS, "other", exp) is False


_RACE_SCRIPT = """
import sys, time
from cds_service.security import SqliteReplayCache
cache = SqliteReplayCache(sys.argv[1])
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
print(cache.add_if_new("https://ehr.example.org", "raced-jti", time.time() + 60))
"""


def test_sqlite_cross_process_race_has_one_winner(tmp_path):
    path = str(tmp_path / "replay.sqlite3")
    SqliteReplayCache(path)  # create the schema up front
    start_at = str(time.time() + 1.5)  # let every interpreter start, then race together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE_SCRIPT, path, start_at],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert sorted(out.strip() for out, _ in outputs) == ["False", "False", "False", "True"]


# -- through the verifier -----------------------------------------------------------------------


def test_replay_detected_across_two_verifiers_sharing_sqlite(
    tmp_path, es384, make_verifier, sign, assert_rejected
):
    """Two gunicorn workers = two verifiers with their own cache objects on one database file."""
    path = str(tmp_path / "replay.sqlite3")
    issuers = [TrustedIssuer(iss=ISS, jwks=es384.jwks())]
    worker_a = make_verifier(issuers, replay_cache=SqliteReplayCache(path))
    worker_b = make_verifier(issuers, replay_cache=SqliteReplayCache(path))
    token = sign(es384)
    assert worker_a.verify(f"Bearer {token}", AUD)["iss"] == ISS
    assert_rejected(worker_b, f"Bearer {token}", "replay")
    assert_rejected(worker_a, f"Bearer {token}", "replay")


def test_replay_detected_with_memory_cache(es384, make_verifier, sign, assert_rejected):
    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks=es384.jwks())], replay_cache=MemoryReplayCache()
    )
    token = sign(es384)
    assert verifier.verify(f"Bearer {token}", AUD)
    assert_rejected(verifier, f"Bearer {token}", "replay")


def test_giving_a_jti_back_tries_the_database_once(tmp_path, monkeypatch):
    """It runs as a 503 is answered, most likely because the database just failed: a second
    try would only add its wait to an answer already late (review)."""
    cache = SqliteReplayCache(str(tmp_path / "replay.sqlite3"))
    seen = []
    real = cache.database.run

    def run(work, **kwargs):
        seen.append(kwargs["retry"].attempts)
        return real(work, **kwargs)

    monkeypatch.setattr(cache.database, "run", run)
    cache.forget(ISS, "a")
    assert seen == [1]
