"""Scale-out benchmark: requests/s for one and for two service instances, database in the path.

``python -m benchmarks.scale_out`` starts real ``hypermobility-cds serve`` instances (gunicorn,
``--workers`` each, JWT auth required) on loopback ports and drives them with ``wrk``
(``apt-get install -y wrk``): a mix of patient-view hook calls (full prefetch, cards, served-card
records) and feedback posts (a new entry each, committed durably before the 200). Every request
carries its own pre-signed ES384 JWT, so every call also writes its ``jti`` to the shared replay
table. Phases: SQLite with one instance (the embedded default), PostgreSQL with one instance,
PostgreSQL with two instances sharing it (wrk splits its connections between them, as a load
balancer would). A second, in-process part times the storage calls themselves: the per-call cost
of ``record_served`` (before: one durable autocommit per call; now: buffered), ``add_feedback``
and the replay check, on both backends.

PostgreSQL: ``--database-url`` or ``CDS_TEST_POSTGRES_URL``; without either, a throw-away
cluster is started from the Debian ``postgresql`` package (as ``.ci/run`` does). Results print
as a table and go to ``benchmarks/results/scale_out-<time>.json`` (gitignored).

Read the two-instance figure for what it is: on one machine, both instances, PostgreSQL and
wrk share the same cores, so it measures the cost of coordination through the shared store,
not the capacity of two machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from cds_service.devtools.scenarios import load_scenario
from cds_service.security import sign_development_token
from cds_service.security.replay import DatabaseReplayCache
from cds_service.storage.database import Database
from cds_service.storage.feedback import FeedbackStore
from cds_service.storage.schema import feedback as feedback_table
from tools.postgres_schema import fresh_schema
from tools.soak import ServedProcess, free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PUBLIC = "https://cds.bench.test"  # the load balancer address: every instance's JWT audience
ISS = "https://ehr.bench.test"
SCENARIO = "pv-assessment-gaps-all-missing"

# wrk: each thread reads its own list of "<kind> <jwt>" lines; h = hook call, f = feedback.
_WRK_LUA = r"""
local dir = os.getenv("SO_DIR")
local hook_path = os.getenv("SO_HOOK_PATH")
local fb_path = os.getenv("SO_FB_PATH")
local run = os.getenv("SO_RUN")  -- unique per wrk run: every feedback entry is a new row
local next_id, threads = 0, {}
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", os.getenv("SO_PREFIX") .. next_id)
  table.insert(threads, thread)
end
s401, s5xx, sother, wrapped = 0, 0, 0, 0
function response(status, headers, body)
  if status == 401 then s401 = s401 + 1
  elseif status >= 500 then s5xx = s5xx + 1
  elseif status ~= 200 then sother = sother + 1 end
end
local lines, i, hook_body = {}, 0, nil
function init(args)
  for line in io.lines(dir .. "/tokens-" .. tid .. ".txt") do table.insert(lines, line) end
  local f = assert(io.open(dir .. "/hook.json", "rb")); hook_body = f:read("*a"); f:close()
end
function request()
  i = i + 1
  if i > #lines then wrapped = 1 end  -- tokens reused: the service will refuse them (401)
  local line = lines[((i - 1) % #lines) + 1]
  local kind, token = line:sub(1, 1), line:sub(3)
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
  if kind == "f" then
    local body = '{"feedback":[{"card":"so-' .. run .. '-' .. tid .. '-' .. i ..
      '","outcome":"overridden","outcomeTimestamp":"2026-11-20T10:06:00Z"}]}'
    return wrk.format("POST", fb_path, headers, body)
  end
  return wrk.format("POST", hook_path, headers, hook_body)
end
function done(summary, latency, requests)
  local c401, c5xx, cother, wrap = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    c401 = c401 + t:get("s401"); c5xx = c5xx + t:get("s5xx"); cother = cother + t:get("sother")
    wrap = math.max(wrap, t:get("wrapped"))
  end
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d,"s401":%d,"s5xx":%d,"sother":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    c401, c5xx, cother, wrap))
end
"""


@dataclass
class HttpResult:
    phase: str
    backend: str
    instances: int
    workers: int
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    errors_by_kind: dict[str, int]
    tokens_reused: bool
    feedback_rows: int
    load_1m_before: float


# -- PostgreSQL ----------------------------------------------------------------------------------


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL cluster in a temp dir on a free loopback port (Debian package binaries)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not bins:
        raise SystemExit("no PostgreSQL: apt-get install -y postgresql, or pass --database-url")
    bindir = bins[-1]
    folder = Path(tempfile.mkdtemp(prefix="cds-bench-pg-"))
    password = uuid.uuid4().hex
    (folder / "pwfile").write_text(password + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pwfile", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "cds",
                    "--auth=scram-sha-256", f"--pwfile={folder / 'pwfile'}", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l",
                    str(folder / "server.log"), "-w", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c max_connections=200",
                    "start"], check=True, capture_output=True)
    try:
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cds",
                        "bench"], check=True, env={**os.environ, "PGPASSWORD": password})
        yield f"postgresql://cds:{password}@127.0.0.1:{port}/bench"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                        "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


# -- service instances ---------------------------------------------------------------------------


@dataclass
class Signer:
    pem: bytes
    kid: str
    issuers_file: Path

    def token(self, path: str) -> str:
        return sign_development_token(self.pem, kid=self.kid, iss=ISS, aud=PUBLIC + path,
                                      lifetime_s=900)


def make_signer(folder: Path) -> Signer:
    key = ec.generate_private_key(ec.SECP384R1())
    kid = f"bench-{uuid.uuid4().hex[:8]}"
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "ES384"}
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    issuers = folder / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks_file": "jwks.json"}]}))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return Signer(pem, kid, issuers)


@contextmanager
def instances(count: int, workers: int, database_url: str, signer: Signer,
              folder: Path) -> Iterator[list[str]]:
    """``count`` production instances (JWT required) on one database, launched side by side
    and then waited for; their base URLs."""
    env = {"CDS_PROFILE": "production", "CDS_AUTH": "required",
           "CDS_TRUSTED_ISSUERS_FILE": str(signer.issuers_file), "CDS_PUBLIC_BASE_URL": PUBLIC,
           "CDS_FHIR_SERVER_ALLOWLIST": "https://fhir.bench.test/r4"}
    served = [ServedProcess(folder, workers=workers, database_url=database_url, env=env,
                            cwd=REPO, own_session=True) for _ in range(count)]
    try:
        for instance in served:
            instance.launch()
        for instance in served:
            instance.wait_ready(60)
        yield [instance.url for instance in served]
    finally:
        for instance in served:
            instance.stop()


# -- load ----------------------------------------------------------------------------------------


def write_tokens(folder: Path, prefix: str, threads: int, per_thread: int, signer: Signer,
                 hook_path: str, fb_path: str, feedback_every: int) -> None:
    for t in range(1, threads + 1):
        lines = []
        for i in range(per_thread):
            kind, path = ("f", fb_path) if i % feedback_every == feedback_every - 1 else (
                "h", hook_path)
            lines.append(f"{kind} {signer.token(path)}")
        (folder / f"tokens-{prefix}{t}.txt").write_text("\n".join(lines) + "\n")


def run_wrk(bases: list[str], folder: Path, *, connections: int, duration_s: int,
            hook_path: str, fb_path: str) -> list[dict[str, Any]]:
    """One wrk per instance, in parallel, connections split evenly (as a balancer would)."""
    lua = folder / "scale_out.lua"
    lua.write_text(_WRK_LUA)
    procs = []
    share = max(1, connections // len(bases))
    for n, base in enumerate(bases):
        env = {**os.environ, "SO_DIR": str(folder), "SO_HOOK_PATH": hook_path,
               "SO_FB_PATH": fb_path, "SO_PREFIX": f"i{n}-", "SO_RUN": uuid.uuid4().hex[:8]}
        procs.append(subprocess.Popen(
            ["wrk", "-t", "1", "-c", str(share), "-d", f"{duration_s}s", "--timeout", "10s",
             "-s", str(lua), base], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=duration_s + 60)
        line = next((x for x in out.splitlines() if x.startswith("{")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed: {err or out}")
        results.append(json.loads(line))
    return results


def count_feedback(database_url: str) -> int:
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(feedback_table)).scalar_one()
    finally:
        engine.dispose()


def http_phase(name: str, backend: str, database_url: str, *, count: int, workers: int,
               connections: int, duration_s: int, feedback_every: int, signer: Signer,
               folder: Path, hook_body: bytes, hook_path: str, fb_path: str,
               round_no: int = 0) -> HttpResult:
    phase_dir = folder / f"{name}-r{round_no}"
    phase_dir.mkdir()
    (phase_dir / "hook.json").write_bytes(hook_body)
    # Generous (up to 800 req/s per instance): past this wrk would reuse tokens, which the
    # service refuses as replays; the result then says "wrapped" and the figure is void.
    per_instance = max(4000, 800 * duration_s)
    for n in range(count):
        write_tokens(phase_dir, f"i{n}-", 1, per_instance, signer, hook_path, fb_path,
                     feedback_every)
    load_before = os.getloadavg()[0]
    with instances(count, workers, database_url, signer, phase_dir) as bases:
        # Warm-up: the first calls in each worker import and build caches.
        warm_dir = phase_dir / "warm"
        warm_dir.mkdir()
        (warm_dir / "hook.json").write_bytes(hook_body)
        for n in range(count):
            write_tokens(warm_dir, f"i{n}-", 1, 300, signer, hook_path, fb_path, feedback_every)
        run_wrk(bases, warm_dir, connections=connections, duration_s=2, hook_path=hook_path,
                fb_path=fb_path)
        before = count_feedback(database_url)
        parts = run_wrk(bases, phase_dir, connections=connections, duration_s=duration_s,
                        hook_path=hook_path, fb_path=fb_path)
        time.sleep(1.0)  # served-card buffers flush; feedback is already committed
        rows = count_feedback(database_url) - before
    total = sum(p["requests"] for p in parts)
    seconds = max(p["duration_us"] for p in parts) / 1e6
    weights = [p["requests"] / max(total, 1) for p in parts]
    return HttpResult(
        phase=name, backend=backend, instances=count, workers=workers,
        connections=connections, duration_s=round(seconds, 2), requests=total,
        rps=round(total / seconds, 1),
        p50_ms=round(sum(w * p["p50_us"] for w, p in zip(weights, parts, strict=True)) / 1e3, 2),
        p95_ms=round(max(p["p95_us"] for p in parts) / 1e3, 2),
        p99_ms=round(max(p["p99_us"] for p in parts) / 1e3, 2),
        errors=sum(p["status_errors"] + p["socket_errors"] for p in parts),
        errors_by_kind={k: sum(p[k] for p in parts)
                        for k in ("s401", "s5xx", "sother", "socket_errors")},
        tokens_reused=any(p["wrapped"] for p in parts),
        feedback_rows=rows,
        load_1m_before=round(load_before, 2),
    )


# -- in-process storage costs --------------------------------------------------------------------


def _per_call_us(calls: int, fn: Callable[[int], None]) -> float:
    fn(-1)  # warm: connection, statement cache
    started = time.perf_counter()
    for i in range(calls):
        fn(i)
    return round((time.perf_counter() - started) / calls * 1e6, 1)


def _legacy_record_served(path: Path) -> Callable[[int], None]:
    """The pre-SQLAlchemy code path, verbatim: WAL, synchronous=FULL, autocommit per statement."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS served_cards (card_uuid TEXT PRIMARY KEY, "
                 "service_id TEXT NOT NULL, rule_id TEXT NOT NULL, hook TEXT NOT NULL, "
                 "served_at TEXT NOT NULL)")

    def call(i: int) -> None:
        rows = [(str(uuid.uuid4()), "svc", rule, "patient-view", "t") for rule in ("a", "b")]
        conn.executemany("INSERT OR IGNORE INTO served_cards VALUES (?,?,?,?,?)", rows)

    return call


def storage_costs(backend: str, database_url: str, calls: int) -> dict[str, float]:
    """Microseconds per call, single thread, for the storage work one request does."""
    costs: dict[str, float] = {}
    sync_store = FeedbackStore(database_url, served_flush_s=0)
    buffered = FeedbackStore(Database(database_url), served_flush_s=0.5)
    replay = DatabaseReplayCache(database_url)
    cards = lambda i: [(str(uuid.uuid4()), "rule-a"), (str(uuid.uuid4()), "rule-b")]  # noqa: E731
    try:
        costs["record_served_sync_us"] = _per_call_us(
            calls, lambda i: sync_store.record_served("svc", "patient-view", cards(i)))
        costs["record_served_buffered_us"] = _per_call_us(
            calls, lambda i: buffered.record_served("svc", "patient-view", cards(i)))
        buffered.flush()
        costs["add_feedback_us"] = _per_call_us(calls, lambda i: sync_store.add_feedback(
            "svc", [{"card": f"{uuid.uuid4()}", "outcome": "overridden",
                     "outcomeTimestamp": "2026-11-20T10:06:00Z"}]))
        costs["replay_add_if_new_us"] = _per_call_us(
            calls, lambda i: replay.add_if_new(ISS, str(uuid.uuid4()), time.time() + 300))
    finally:
        sync_store.close()
        buffered.close()
        replay.close()
    return costs


# -- main ----------------------------------------------------------------------------------------


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("CDS_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default: CDS_TEST_POSTGRES_URL, else start one)")
    parser.add_argument("--duration", type=int, default=15, help="seconds per HTTP phase")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections in all")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--feedback-every", type=int, default=4,
                        help="every Nth request is a feedback post (default 4: 25%%)")
    parser.add_argument("--calls", type=int, default=1000, help="calls per storage micro-timing")
    parser.add_argument("--skip-http", action="store_true", help="storage timings only")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of HTTP phases; the table shows each phase's median round")
    args = parser.parse_args(argv)
    if not args.skip_http and not shutil.which("wrk"):
        raise SystemExit("the HTTP phases need wrk: apt-get install -y wrk (or --skip-http)")

    scenario = load_scenario(SCENARIO)
    service = scenario.service
    hook_body = json.dumps(scenario.hook_request(service.prefetch)).encode()
    hook_path = f"/cds-services/{service.id}"
    fb_path = f"{hook_path}/feedback"

    server = _given(args.database_url) if args.database_url else throwaway_postgres()
    with server as postgres_url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        signer = make_signer(folder)
        common = dict(workers=args.workers, connections=args.connections,
                      duration_s=args.duration, feedback_every=args.feedback_every,
                      signer=signer, folder=folder, hook_body=hook_body, hook_path=hook_path,
                      fb_path=fb_path)
        rounds: list[list[HttpResult]] = []
        for n in range(0 if args.skip_http else args.repeat):
            # Phases interleave across rounds, so a busy spell hits every phase alike.
            one: list[HttpResult] = []
            sqlite_url = f"sqlite:///{folder / f'bench-{n}.sqlite3'}"
            one.append(http_phase("sqlite-1", "sqlite", sqlite_url, count=1, round_no=n,
                                  **common))
            for count in (1, 2):
                with fresh_schema(postgres_url, "bench") as url:
                    one.append(http_phase(f"postgresql-{count}", "postgresql", url,
                                          count=count, round_no=n, **common))
            # Control: the same number of processes as two instances, in one instance. On one
            # machine this separates "more worker processes" from "more instances".
            with fresh_schema(postgres_url, "bench") as url:
                control = {**common, "workers": 2 * args.workers}
                one.append(http_phase(f"postgresql-1x{2 * args.workers}w", "postgresql", url,
                                      count=1, round_no=n, **control))
            rounds.append(one)
        # Per phase, the round with the median throughput (a real run, not an average).
        http = [sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]
                for runs in zip(*rounds, strict=True)]
        costs: dict[str, dict[str, float]] = {}
        legacy_path = folder / "legacy.sqlite3"
        costs["sqlite"] = {"record_served_legacy_us": _per_call_us(
            args.calls, _legacy_record_served(legacy_path))}
        costs["sqlite"].update(storage_costs("sqlite", f"sqlite:///{folder / 'm.sqlite3'}",
                                             args.calls))
        with fresh_schema(postgres_url, "bench") as url:
            costs["postgresql"] = storage_costs("postgresql", url, args.calls)

    print_report(http, costs, rounds)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"scale_out-{stamp}.json"
    out.write_text(json.dumps({
        "benchmark": "scale_out",
        "when": stamp,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "loadavg": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k != "database_url"},
        "scenario": SCENARIO,
        "http": [asdict(r) for r in http],
        "http_all_rounds": [[asdict(r) for r in one] for one in rounds],
        "storage_us_per_call": costs,
    }, indent=2))
    print(f"\nwritten: {out.relative_to(REPO)}")
    return 0


def print_report(http: list[HttpResult], costs: dict[str, dict[str, float]],
                 rounds: list[list[HttpResult]]) -> None:
    if http:
        print(f"\nHTTP, {http[0].connections} connections in all, hook calls + feedback, "
              "a fresh JWT on every call")
        header = (f"{'phase':16} {'inst':>4} {'wrk/i':>5} {'req/s':>8} {'p50 ms':>7} "
                  f"{'p95 ms':>7} {'p99 ms':>7} {'requests':>9} {'errors':>6} {'fb rows':>8}")
        print(header)
        print("-" * len(header))
        for r in http:
            print(f"{r.phase:16} {r.instances:>4} {r.workers:>5} {r.rps:>8.1f} {r.p50_ms:>7.2f} "
                  f"{r.p95_ms:>7.2f} {r.p99_ms:>7.2f} {r.requests:>9} {r.errors:>6} "
                  f"{r.feedback_rows:>8}")
        for r in http:
            if r.errors or r.tokens_reused:
                print(f"  {r.phase}: errors {r.errors_by_kind}"
                      + (" - tokens ran out and were reused: figure void" if r.tokens_reused
                         else ""))
        if len(rounds) > 1:
            for runs in zip(*rounds, strict=True):
                print(f"  {runs[0].phase}: req/s per round "
                      + ", ".join(f"{r.rps:.1f}" for r in runs) + " (table: median)")
        loads = ", ".join(f"{r.phase} {r.load_1m_before}" for r in http)
        print(f"  1-min load average before each phase ({os.cpu_count()} CPUs): {loads}")
        if max(r.load_1m_before for r in http) > (os.cpu_count() or 1):
            print("  warning: the machine was busy with other work; figures are noisy")
    print("\nStorage cost per call (microseconds, one thread)")
    names = sorted({name for c in costs.values() for name in c})
    print(f"{'':28}" + "".join(f"{b:>12}" for b in costs))
    for name in names:
        print(f"{name:28}" + "".join(
            f"{costs[b].get(name, float('nan')):>12.1f}" for b in costs))


if __name__ == "__main__":
    sys.exit(main())
