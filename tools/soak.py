"""Soak test: a steady request rate against a real ``hypermobility-cds serve`` for minutes.

Why: slow leaks, connection or file-descriptor exhaustion and rare races only show after many
thousands of requests through the real server (gunicorn, several workers, threads), not in
unit tests. The run is all on loopback:

* the service: ``hypermobility-cds serve`` (development profile, auth off, a fresh SQLite
  database in a temp directory), ``--workers`` processes x ``--threads`` threads;
* an EHR: :mod:`cds_service.devtools.memory_fhir` serving every fixture patient, for the calls
  sent without prefetch (the service fetches the data itself);
* the traffic, at ``--rate`` requests per second on a fixed schedule: 55% hook calls with
  prefetch and 20% without (every fixture scenario, all three hooks), 20% feedback on cards
  received (one in ten sent twice), 5% discovery/health/metrics/OpenAPI.

Every answer is checked: a hook call must return exactly the scenario's expected cards,
feedback must be acknowledged. At the end, the database must hold every acknowledged feedback
entry exactly once. Worker RSS is sampled every few seconds after a warm-up; the report gives
RSS at start and end, and the run fails if it grew more than ``--max-rss-growth-mib``.

    python -m tools.soak                       # 5 minutes at 20 req/s (make soak)
    python -m tools.soak --duration 30         # what CI runs
    python -m tools.soak --json var/soak.json  # also write the report as JSON

Exit status 0 when there was no error, nothing was lost and memory stayed flat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tools.proc import live_children, memory

# ---------------------------------------------------------------------------- the server


def free_port() -> int:
    """A TCP port on loopback that nothing listens on just now (the benchmarks use it too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


REPO = Path(__file__).resolve().parents[1]


def _with_repo_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this checkout first on PYTHONPATH: the served process imports this
    checkout's ``cds_service``, as the caller does when run from it. The installed
    ``hypermobility-cds`` script would import whatever checkout the virtualenv was installed from
    (an editable install maps one checkout; several git worktrees may share one virtualenv)."""
    paths = [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


class ServedProcess:
    """A server on a free loopback port, as a child process: ``hypermobility-cds serve`` unless
    given another ``command``.

    The one way this repository starts a server to send requests to: the soak, the benchmarks
    (``benchmarks/http.py``: the service and the bare Flask floor under plain gunicorn;
    ``benchmarks/scale_out.py``: several instances side by side) and the process tests
    (``tests/reliability/test_processes.py``, ``tests/multi_instance/``). By default the
    service runs with the development profile, auth off and a SQLite database in ``workdir``;
    ``env`` adds or overrides variables. A ``command`` must listen on ``port`` (so pass both),
    run ``workers`` gunicorn workers and answer 200 on the ``wait_for`` path when ready. Output
    goes to ``log_path`` in ``workdir``. ``own_session`` gives it a process group of its own,
    so that a server that hangs is killed whole, workers included, and nothing else.
    Stop it with :meth:`stop` (SIGTERM: gunicorn drains, then exits).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 2,
        threads: int = 4,
        env: dict[str, str] | None = None,
        database_url: str | None = None,
        port: int | None = None,
        command: list[str] | None = None,
        cwd: Path | None = None,
        own_session: bool = False,
        name: str = "serve",
    ) -> None:
        if command is not None and port is None:
            raise ValueError("a command must name its port: pass port= too")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite:///{self.workdir / 'cds.sqlite3'}"
        self.name = name
        self.log_path = self.workdir / f"{name}-{self.port}.log"
        self.workers, self.threads = workers, threads
        self.command = command or [
            sys.executable, "-m", "cds_service.cli", "serve", "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(workers), "--threads", str(threads),
        ]
        self.cwd = cwd or self.workdir
        self.own_session = own_session
        self.env = _with_repo_on_path({
            **os.environ,
            "CDS_PROFILE": "development",
            "CDS_AUTH": "off",
            "CDS_DATABASE_URL": self.database_url,
            **(env or {}),
        })
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0, wait_for: str = "/readyz") -> ServedProcess:
        """Start and wait until ``wait_for`` answers 200 and every worker is up."""
        return self.launch().wait_ready(timeout, wait_for)

    def launch(self) -> ServedProcess:
        """Start the process and return at once (several can then start side by side)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
            start_new_session=self.own_session,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 60.0, wait_for: str = "/readyz") -> ServedProcess:
        """Wait until ``wait_for`` answers 200 and every worker is up; kill it if it never is."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: {self.tail()}")
            try:
                ready = requests.get(self.url + wait_for, timeout=1).status_code == 200
                if ready and len(self.worker_pids()) >= self.workers:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.name} did not become ready in {timeout} s: {self.tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's live children (:func:`tools.proc.live_children`)."""
        return live_children(self.pid)

    def worker_rss_kib(self) -> dict[int, int]:
        """Each worker's RSS (PSS is not read: see :func:`tools.proc.memory`)."""
        out = {}
        for pid in self.worker_pids():
            rss = memory(pid, pss=False).rss_kib
            if rss is not None:  # None: exited between listing and reading
                out[pid] = rss
        return out

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: in-flight requests finish), then wait; killed if still running
        after ``timeout`` s. Returns the exit code (negative: the signal that ended it)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        """SIGKILL to the server and its workers (a worker would outlive a killed master)."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.own_session:
            os.killpg(self.pid, signal.SIGKILL)  # its own group: all of it, nothing else
        else:
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
        self.process.wait(10)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


# ---------------------------------------------------------------------------- the traffic


@dataclass
class Stats:
    sent: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    max_lag_s: float = 0.0
    acked_feedback: set[str] = field(default_factory=set)  # card uuids acknowledged
    duplicates_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, error: str | None = None) -> None:
        with self.lock:
            self.sent[kind] += 1
            self.latencies.setdefault(kind, []).append(seconds)
            if error:
                self.errors.append(f"{kind}: {error}")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Traffic:
    """Builds and checks the requests; holds the cards received, for feedback."""

    def __init__(self, base_url: str, fhir_url: str, seed: int) -> None:
        from cds_service.devtools.scenarios import list_scenarios, load_scenario

        self.base_url = base_url
        self.fhir_url = fhir_url
        self.random = random.Random(seed)
        self.scenarios = [load_scenario(name) for name in list_scenarios()]
        self.cards: list[tuple[str, dict]] = []  # (service id, card) with suggestions or not
        self.cards_lock = threading.Lock()
        self.stats = Stats()
        self.local = threading.local()

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session

    def pick(self) -> str:
        roll = self.random.random()
        if roll < 0.55:
            return "hook-prefetch"
        if roll < 0.75:
            return "hook-fetch"
        if roll < 0.95:
            return "feedback"
        return "other"

    def run_one(self, kind: str) -> None:
        started = time.perf_counter()
        error = None
        try:
            if kind.startswith("hook"):
                error = self._hook(kind == "hook-prefetch")
            elif kind == "feedback":
                error = self._feedback()
            else:
                path = self.random.choice(["/cds-services", "/healthz", "/readyz", "/metrics",
                                           "/openapi.json"])
                response = self.session().get(self.base_url + path, timeout=10)
                if response.status_code != 200:
                    error = f"GET {path} answered {response.status_code}"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}"
        self.stats.record(kind, time.perf_counter() - started, error)

    def _hook(self, prefetch: bool) -> str | None:
        scenario = self.random.choice(self.scenarios)
        service = scenario.service
        body = scenario.hook_request(
            service.prefetch if prefetch else None,
            fhir_server=None if prefetch else self.fhir_url,
        )
        response = self.session().post(
            f"{self.base_url}/cds-services/{service.id}", json=body, timeout=10
        )
        if response.status_code != 200:
            return f"{scenario.name} answered {response.status_code}: {response.text[:200]}"
        cards = response.json()["cards"]
        got = {c["source"]["topic"]["code"] for c in cards}
        if got != set(scenario.expected_cards):
            return f"{scenario.name}: cards {sorted(got)} != {sorted(scenario.expected_cards)}"
        with self.cards_lock:
            self.cards.extend((service.id, card) for card in cards)
            del self.cards[:-500]  # keep the recent ones only
        return None

    def _feedback(self) -> str | None:
        with self.cards_lock:
            if not self.cards:
                return None
            service_id, card = self.cards.pop(self.random.randrange(len(self.cards)))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if card.get("suggestions") and self.random.random() < 0.5:
            entry = {
                "card": card["uuid"],
                "outcome": "accepted",
                "outcomeTimestamp": now,
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
            }
        else:
            reason = (card.get("overrideReasons") or [None])[0]
            entry = {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": now,
                "overrideReason": {"reason": reason} if reason else {"userComment": "soak"},
            }
        path = f"{self.base_url}/cds-services/{service_id}/feedback"
        sends = 2 if self.random.random() < 0.1 else 1
        for _ in range(sends):
            response = self.session().post(path, json={"feedback": [entry]}, timeout=10)
            if response.status_code != 200:
                return f"feedback answered {response.status_code}: {response.text[:200]}"
            with self.stats.lock:
                self.stats.acked_feedback.add(card["uuid"])
        if sends == 2:
            with self.stats.lock:
                self.stats.duplicates_sent += 1
        return None


# ---------------------------------------------------------------------------- the run


def _halves(samples: list[tuple[float, int]]) -> list[float]:
    if len(samples) < 3:
        return []
    middle = samples[len(samples) // 2][1]
    return [round((middle - samples[0][1]) / 1024, 1), round((samples[-1][1] - middle) / 1024, 1)]


def _count_feedback(database_url: str) -> int:
    """Through the service's own storage layer (the public FeedbackStore API)."""
    from cds_service import create_app
    from cds_service.settings import Settings

    app = create_app(Settings(auth="off", database_url=database_url))
    return app.extensions["cds"].store.count_feedback()


def soak(args: argparse.Namespace) -> dict[str, Any]:
    from cds_service.devtools import memory_fhir
    from cds_service.devtools.scenarios import list_patients, load_patient

    workdir = Path(tempfile.mkdtemp(prefix="cds-soak-"))
    resources = [r for patient in list_patients() for r in load_patient(patient)]
    fhir, fhir_url = memory_fhir.serve(resources)
    server = ServedProcess(workdir, workers=args.workers, threads=args.threads)
    report: dict[str, Any] = {"duration_s": args.duration, "rate_per_s": args.rate,
                              "workers": args.workers, "threads": args.threads}
    try:
        server.start()
        traffic = Traffic(server.url, fhir_url, args.seed)
        initial_workers = set(server.worker_pids())
        jobs: queue.Queue[tuple[float, str] | None] = queue.Queue()
        stop = threading.Event()

        def client() -> None:
            while True:
                job = jobs.get()
                if job is None:
                    return
                due, kind = job
                lag = time.monotonic() - due
                with traffic.stats.lock:
                    traffic.stats.max_lag_s = max(traffic.stats.max_lag_s, lag)
                traffic.run_one(kind)

        clients = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        for thread in clients:
            thread.start()

        samples: list[tuple[float, int]] = []
        warmup = min(max(3.0, args.duration * 0.1), 30.0)

        def sampler(start: float) -> None:
            while not stop.wait(args.sample_s):
                elapsed = time.monotonic() - start
                if elapsed >= warmup:
                    samples.append((elapsed, sum(server.worker_rss_kib().values())))

        start = time.monotonic()
        threading.Thread(target=sampler, args=(start,), daemon=True).start()
        interval = 1.0 / args.rate
        count = int(args.duration * args.rate)
        for i in range(count):
            due = start + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            jobs.put((due, traffic.pick()))
        for _ in clients:
            jobs.put(None)
        for thread in clients:
            thread.join(timeout=60)
        elapsed = time.monotonic() - start
        stop.set()
        samples.append((elapsed, sum(server.worker_rss_kib().values())))
        final_workers = set(server.worker_pids())
        stats = traffic.stats

        exit_code = server.stop()
        stored = _count_feedback(server.database_url)
        rss_start = samples[0][1] if samples else 0
        rss_end = samples[-1][1]
        all_latencies = [v for values in stats.latencies.values() for v in values]
        report.update(
            {
                "requests": sum(stats.sent.values()),
                "by_kind": dict(stats.sent),
                "elapsed_s": round(elapsed, 1),
                "achieved_rate_per_s": round(sum(stats.sent.values()) / elapsed, 2),
                "errors": len(stats.errors),
                "first_errors": stats.errors[:10],
                "latency_ms": {
                    kind: {
                        "p50": round(statistics.median(v) * 1000, 1),
                        "p95": round(_percentile(v, 0.95) * 1000, 1),
                        "p99": round(_percentile(v, 0.99) * 1000, 1),
                        "max": round(max(v) * 1000, 1),
                    }
                    for kind, v in sorted(stats.latencies.items())
                },
                "latency_ms_all_p99": round(_percentile(all_latencies, 0.99) * 1000, 1),
                "max_schedule_lag_ms": round(stats.max_lag_s * 1000, 1),
                "feedback_acknowledged": len(stats.acked_feedback),
                "feedback_sent_twice": stats.duplicates_sent,
                "feedback_stored": stored,
                "workers_restarted": initial_workers != final_workers,
                "rss_warmup_s": warmup,
                "rss_start_mib": round(rss_start / 1024, 1),
                "rss_end_mib": round(rss_end / 1024, 1),
                "rss_growth_mib": round((rss_end - rss_start) / 1024, 1),
                # Flat memory levels off: the second half should grow less than the first.
                "rss_growth_halves_mib": _halves(samples),
                "rss_samples_mib": [round(kib / 1024, 1) for _, kib in samples],
                "server_exit_code": exit_code,
            }
        )
        problems = []
        if stats.errors:
            problems.append(f"{len(stats.errors)} errors")
        if stored != len(stats.acked_feedback):
            problems.append(f"feedback stored {stored} != acknowledged {len(stats.acked_feedback)}")
        if report["workers_restarted"]:
            problems.append("a worker was restarted")
        if report["rss_growth_mib"] > args.max_rss_growth_mib:
            problems.append(f"RSS grew {report['rss_growth_mib']} MiB")
        if exit_code != 0:
            problems.append(f"server exited with {exit_code}")
        report["problems"] = problems
        report["ok"] = not problems
        return report
    finally:
        server.kill()
        fhir.shutdown()
        fhir.server_close()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--sample-s", type=float, default=2.0, help="RSS sampling interval")
    parser.add_argument("--max-rss-growth-mib", type=float, default=25.0,
                        help="fail if the workers' RSS grew more (default 25 MiB)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0:
        parser.error("--duration and --rate must be positive")
    print(f"soak: {args.duration:.0f} s at {args.rate:g} req/s against hypermobility-cds serve "
          f"({args.workers} workers x {args.threads} threads) on 127.0.0.1 ...", flush=True)
    report = soak(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    verdict = "OK" if report["ok"] else "FAILED: " + "; ".join(report["problems"])
    print(f"soak {verdict}: {report['requests']} requests, {report['errors']} errors, "
          f"feedback {report['feedback_stored']}/{report['feedback_acknowledged']} stored, "
          f"RSS of all workers together {report['rss_start_mib']} -> {report['rss_end_mib']} MiB")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
