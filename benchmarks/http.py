"""Over HTTP: the service under gunicorn against a bare Flask "floor", both driven by wrk.

Both servers run on loopback with the same gunicorn workers and threads, and wrk drives each for
the same fixed duration with the same connections, alternating floor/service so that a change in
the machine's load hits both alike. Reported: requests/s of each and their ratio (medians over the
rounds), wrk's latency percentiles, and, after a run of 10,000-resource charts against the same
service, the peak RSS of each worker. A run in which one worker took all of wrk's connections
(and the other idled) is run again, for either app: see :func:`balanced_wrk`.

wrk (Debian package ``wrk``) is the load generator; it is checked for first, with a clear message
when missing.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.charts import PATIENT_VIEW_SCENARIO
from benchmarks.common import hook_call, median
from tools.proc import cpu_seconds
from tools.proc import memory as process_memory
from tools.soak import ServedProcess, free_port

HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk_post.lua"
WORKERS = 2
THREADS = 4  # the ``serve`` defaults
MIN_SPREAD = 0.5  # a run whose least busy worker did less than half the busiest's is redone
MAX_TRIES = 4


class WrkMissing(RuntimeError):
    pass


def require_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise WrkMissing(
            "wrk is not installed: the HTTP benchmark needs it as its load generator. "
            "Install it with `apt-get install -y wrk` (Debian/Ubuntu), or run with --no-http."
        )
    return found


def post(port: int, path: str, body: bytes, timeout: float = 60) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_service(directory: Path, workers: int, threads: int) -> ServedProcess:
    """``hypermobility-cds serve`` as deployed: the production profile (not the development
    one ServedProcess defaults to) with auth off (wrk sends no JWT)."""
    env = {"CDS_PROFILE": "production"}
    return ServedProcess(directory, workers=workers, threads=threads, env=env,
                         own_session=True).start()


def start_floor(directory: Path, workers: int, threads: int,
                response_bytes: int) -> ServedProcess:
    """The floor app under plain gunicorn, with the service's workers and threads."""
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads), "--timeout", "30",
        "--chdir", str(HERE.parent), "benchmarks.floor_app:app",
    ]
    return ServedProcess(directory, workers=workers, threads=threads, command=command,
                         port=port, env={"FLOOR_RESPONSE_BYTES": str(response_bytes)},
                         own_session=True, name="floor").start()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return round(float(number) * _UNITS[unit], 3)


def parse_wrk(output: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rps:
        raise RuntimeError(f"could not read wrk output:\n{output}")
    result: dict[str, Any] = {"requests_per_s": float(rps.group(1))}
    total = re.search(r"(\d+) requests in", output)
    result["requests"] = int(total.group(1)) if total else None
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = int(bad.group(1)) if bad else 0
    errors = re.search(r"Socket errors:(.*)", output)
    result["socket_errors"] = errors.group(1).strip() if errors else ""
    latency = {}
    for pct in ("50", "90", "99"):
        hit = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+(?:us|ms|s))\s*$", output, re.M)
        if hit:
            latency[f"p{pct}"] = _ms(hit.group(1))
    result["latency_ms"] = latency
    return result


def run_wrk(wrk: str, port: int, path: str, body_file: Path, *, duration: int,
            connections: int, threads: int) -> dict[str, Any]:
    argv = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
        "-s", str(LUA), f"http://127.0.0.1:{port}{path}",
    ]
    env = {**os.environ, "WRK_BODY_FILE": str(body_file)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True,
                          timeout=duration + 60)
    result = parse_wrk(done.stdout)
    if result["non_2xx"]:
        raise RuntimeError(f"{result['non_2xx']} responses were not 2xx:\n{done.stdout}")
    return result


def spread(before: dict[int, float], after: dict[int, float]) -> float:
    """How evenly the workers shared a run: the least busy worker's CPU over the busiest's
    (1.0 when even, 0.0 when one did nothing; 1.0 for a single worker)."""
    used = [after.get(pid, 0.0) - start for pid, start in before.items()]
    busiest = max(used, default=0.0)
    return round(min(used) / busiest, 3) if busiest > 0 else 1.0


def cpu_per_request(before: dict[int, float], after: dict[int, float],
                    result: dict[str, Any]) -> float | None:
    """The workers' CPU time per request answered in a run, in ms: what each call costs the
    machine, whatever the load left for the app. None when wrk reported no requests, or when a
    worker's clock went back (it was replaced mid-run: its CPU time is lost, not zero)."""
    requests = result.get("requests")
    used = [after[pid] - start for pid, start in before.items()]
    if not requests or min(used, default=0.0) < 0:
        return None
    return round(sum(used) / requests * 1000, 3)


def balanced_wrk(wrk: str, server: ServedProcess, path: str, body_file: Path, *, duration: int,
                 connections: int, threads: int, tries: int = MAX_TRIES,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """A wrk run in which every worker did its share, retried up to ``tries`` times.

    wrk opens its keep-alive connections once, at the start, and each stays with the worker that
    accepted it. The workers share one listening socket, so now and then one of them accepts
    them all and the other idles for the whole run: the machine then serves at about half its
    rate, whichever app it is (seen here for the floor and the service alike, 770 against 2,300
    req/s). A run whose least busy worker used under :data:`MIN_SPREAD` of the busiest one's
    CPU measured that accident, not the app, so it is run again; the result says how often.
    If no run in ``tries`` is even, the last is returned marked ``unbalanced``.
    """
    discarded = []
    for _ in range(tries):
        before = {pid: cpu_seconds(pid) for pid in server.worker_pids()}
        result = run_wrk(wrk, server.port, path, body_file, duration=duration,
                         connections=connections, threads=threads)
        after = {pid: cpu_seconds(pid) for pid in before}
        result["worker_spread"] = spread(before, after)
        result["worker_cpu_ms_per_request"] = cpu_per_request(before, after, result)
        if result["worker_spread"] >= MIN_SPREAD:
            result["discarded_unbalanced"] = discarded
            return result
        log(f"  (run again: one worker did {result['worker_spread']:.0%} of the other's work, "
            f"{result['requests_per_s']:.0f} req/s)")
        discarded.append({"requests_per_s": result["requests_per_s"],
                          "worker_spread": result["worker_spread"]})
    # Never even: keep the last run, marked, rather than lose the whole benchmark's figures.
    log(f"  (the load never spread over the workers in {tries} runs; the last one is kept)")
    result["discarded_unbalanced"] = discarded[:-1]
    result["unbalanced"] = True
    return result


def _mb(kib: int | None) -> float:
    return float("nan") if kib is None else round(kib / 1024, 1)


def memory_mb(pid: int) -> dict[str, float]:
    """RSS now and at its peak, and PSS (see :class:`tools.proc.Memory`), in MB to one decimal;
    nan for a figure that could not be read."""
    used = process_memory(pid)
    return {"rss_mb": _mb(used.rss_kib), "peak_rss_mb": _mb(used.peak_kib),
            "pss_mb": _mb(used.pss_kib)}


def worker_memory(server: ServedProcess, big_body: bytes, path: str, calls: int) -> dict[str, Any]:
    """Send ``calls`` 10k-resource hook calls, two at a time (both workers), then read RSS."""

    def one(_: int) -> float:
        started = time.perf_counter()
        status, data = post(server.port, path, big_body, timeout=120)
        if status != 200:
            raise RuntimeError(f"10k call answered {status}: {data[:200]!r}")
        return time.perf_counter() - started

    before = {str(pid): memory_mb(pid) for pid in server.worker_pids()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        seconds = list(pool.map(one, range(calls)))
    workers = {str(pid): memory_mb(pid) for pid in server.worker_pids()}
    return {
        "calls": calls,
        "workers_before": before,
        "call_seconds_median": round(median(seconds), 3),
        "workers": workers,
        "peak_rss_mb_max": max((w["peak_rss_mb"] for w in workers.values()), default=None),
        "master": memory_mb(server.pid),
    }


def run(
    *,
    duration: int = 10,
    rounds: int = 3,
    size: int = 100,
    workers: int = WORKERS,
    threads: int = THREADS,
    memory_calls: int = 8,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    wrk = require_wrk()
    call = hook_call(PATIENT_VIEW_SCENARIO, size)
    big = hook_call(PATIENT_VIEW_SCENARIO, 10_000)
    connections = workers * threads
    wrk_threads = max(1, min(2, os.cpu_count() or 1, connections))  # no more than connections
    with tempfile.TemporaryDirectory(prefix="cds-http-bench-") as tmp:
        directory = Path(tmp)
        body_file = directory / "body.json"
        body_file.write_bytes(call.body)
        service = start_service(directory, workers, threads)
        floor = None
        try:
            status, answer = post(service.port, call.path, call.body)
            if status != 200:
                raise RuntimeError(f"the service answered {status}: {answer[:300]!r}")
            floor = start_floor(directory, workers, threads, len(answer))
            status, floor_answer = post(floor.port, call.path, call.body)
            if status != 200 or len(floor_answer) != len(answer):
                raise RuntimeError("the floor app does not answer like the service")
            for server in (floor, service):  # warm up both (imports, first validations)
                run_wrk(wrk, server.port, call.path, body_file, duration=2,
                        connections=connections, threads=wrk_threads)
            floor_runs, service_runs = [], []
            for n in range(rounds):
                floor_runs.append(balanced_wrk(wrk, floor, call.path, body_file,
                                               duration=duration, connections=connections,
                                               threads=wrk_threads, log=log))
                service_runs.append(balanced_wrk(wrk, service, call.path, body_file,
                                                 duration=duration, connections=connections,
                                                 threads=wrk_threads, log=log))
                log(
                    f"  http round {n + 1}/{rounds}: floor "
                    f"{floor_runs[-1]['requests_per_s']:.0f} req/s, service "
                    f"{service_runs[-1]['requests_per_s']:.0f} req/s"
                )
            floor.stop()
            floor = None
            memory = worker_memory(service, big.body, big.path, memory_calls)
            log(f"  worker peak RSS after 10k charts: {memory['peak_rss_mb_max']} MB")
        finally:
            if floor is not None:
                floor.stop()
            service.stop()
    floor_rps = median([r["requests_per_s"] for r in floor_runs])
    service_rps = median([r["requests_per_s"] for r in service_runs])
    floor_cpu = [r["worker_cpu_ms_per_request"] for r in floor_runs]
    service_cpu = [r["worker_cpu_ms_per_request"] for r in service_runs]
    return {
        "scenario": PATIENT_VIEW_SCENARIO,
        "resources": call.chart.size,
        "request_bytes": len(call.body),
        "response_bytes": len(answer),
        "workers": workers,
        "threads": threads,
        "connections": connections,
        "wrk_threads": wrk_threads,
        "duration_s": duration,
        "rounds": rounds,
        "floor_requests_per_s": round(floor_rps, 1),
        "service_requests_per_s": round(service_rps, 1),
        "ratio": round(service_rps / floor_rps, 3),
        "floor_worker_cpu_ms_per_request": median(floor_cpu) if None not in floor_cpu else None,
        "service_worker_cpu_ms_per_request": (
            median(service_cpu) if None not in service_cpu else None
        ),
        "floor_runs": floor_runs,
        "service_runs": service_runs,
        "unbalanced_runs_redone": {
            "floor": sum(len(r["discarded_unbalanced"]) for r in floor_runs),
            "service": sum(len(r["discarded_unbalanced"]) for r in service_runs),
        },
        "memory_after_10k": memory,
    }
