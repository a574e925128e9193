"""Hook calls in process: patient-view and order-sign through the Flask app, 100-10,000 resources.

Each call goes through the whole WSGI app as gunicorn would drive it, with the served-card
database write in place. Besides the latency percentiles, every call is split into where its time
went, so the owners of each part can act on it:

* ``body``: reading and checking the request JSON (``cds_service.api.body``: size, strict
  parse, repeated names, nesting); for a body over 1 MiB (the 10k chart) also the relevance
  filter, which the chunked reader runs as it parses (``cds_service.api.pruning_reader``);
* ``pipeline``: prefetch, relevance filter (of what is left) and validation, facts, rules
  (``HookPipeline.run``);
* ``storage``: the served-card write (``store.record_served``);
* ``other``: Flask, request model, logging and response serialisation;
* ``gc``: time in Python's cyclic garbage collector, which overlaps the parts above;
* ``background_cpu``: CPU used by the process's other threads meanwhile (the served-card writer
  flushes in the background, so that part of the storage cost shows here, not in ``storage``).

Next to each size, the same request body is sent the same way to the bare Flask floor app
(``floor_app.py``: parses the JSON, answers as many bytes as the service): its growth 1k -> 10k is
what "linear" can mean in this CPython on this machine, since parsing alone grows faster than the
chart (fresh memory arenas, cache misses).
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask

from benchmarks.charts import ORDER_SIGN_SCENARIO, PATIENT_VIEW_SCENARIO, SIZES
from benchmarks.common import HookCall, hook_call, median, summary_ms, wsgi_post
from benchmarks.floor_app import create_floor_app
from cds_service import create_app
from cds_service.api import hooks as hooks_module
from cds_service.pipeline import tune_garbage_collector
from cds_service.settings import Settings

SCENARIOS = {"patient-view": PATIENT_VIEW_SCENARIO, "order-sign": ORDER_SIGN_SCENARIO}
# Calls per size and repeat: enough for a p99 at the typical size within a few seconds.
CALLS = {100: 400, 1_000: 100, 10_000: 15}
WARMUP = 3


def close_app(app: Flask) -> None:
    """Flush and close the app's database before its directory goes (if the store can)."""
    close = getattr(app.extensions["cds"].store, "close", None)
    if close is not None:
        close()


def make_app(directory: str | Path, **overrides: Any) -> Flask:
    """The service as deployed (auth off, embedded database; the default body cap takes the
    10,000-resource chart)."""
    settings = Settings(
        auth="off",
        database_url=f"sqlite:///{Path(directory) / 'bench.sqlite3'}",
        **overrides,
    )
    return create_app(settings)


class Probe:
    """Times the parts of each call by wrapping them (a few hundred ns of overhead per call)."""

    def __init__(self, app: Flask) -> None:
        self.parts: dict[str, float] = {}
        self._gc_started = 0.0
        self._restore: list[tuple[Any, str, Any]] = []
        state = app.extensions["cds"]
        self._wrap(state.pipeline, "run", "pipeline")
        self._wrap(state.store, "record_served", "storage")
        self._wrap(hooks_module, "_hook_body", "body")

    def _wrap(self, owner: Any, name: str, part: str) -> None:
        original = getattr(owner, name)  # a part that moved must be followed here, not lost
        parts = self.parts

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                parts[part] = parts.get(part, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed)
        self._restore.append((owner, name, original))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.parts["gc"] = self.parts.get("gc", 0.0) + time.perf_counter() - self._gc_started

    @contextmanager
    def gc_timing(self):
        gc.callbacks.append(self._on_gc)
        try:
            yield
        finally:
            gc.callbacks.remove(self._on_gc)

    def close(self) -> None:
        for owner, name, original in reversed(self._restore):
            if owner is hooks_module:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # the instance attribute hid the class's method
        self._restore.clear()


def check_call(app: Flask, call: HookCall) -> list[dict[str, Any]]:
    """The call must answer 200 with exactly the scenario's cards, or nothing is timed."""
    status, data = wsgi_post(app, call.path, call.body)
    if status != 200:
        raise RuntimeError(f"{call.path} answered {status}: {data[:300]!r}")
    cards = json.loads(data)["cards"]
    fired = {c["source"]["topic"]["code"] for c in cards}
    if fired != set(call.chart.scenario.expected_cards):
        raise RuntimeError(
            f"{call.chart.scenario.name} at {call.chart.size} resources fired {sorted(fired)}, "
            f"expected {sorted(call.chart.scenario.expected_cards)}"
        )
    return cards


def warm_up(app: Flask, call: HookCall) -> None:
    for _ in range(WARMUP):
        wsgi_post(app, call.path, call.body)


def timed(app: Flask, call: HookCall, n: int) -> list[float]:
    """Seconds taken by each of ``n`` calls; every one must answer 200."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        status, data = wsgi_post(app, call.path, call.body)
        samples.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"{call.path} answered {status}: {data[:200]!r}")
    return samples


def floor_p50(floor: Flask, call: HookCall, n: int) -> float:
    """p50 (ms) of ``n`` calls of the floor app with the service's request body."""
    warm_up(floor, call)
    return summary_ms(timed(floor, call, n))["p50"]


def time_calls(app: Flask, call: HookCall, n: int, probe: Probe) -> dict[str, Any]:
    warm_up(app, call)
    probe.parts.clear()
    process_cpu, main_cpu = time.process_time(), time.thread_time()
    with probe.gc_timing():
        samples = timed(app, call, n)
    # CPU used meanwhile by other threads of the process: the served-card writer works in the
    # background, so its cost shows here rather than in "storage".
    background = (time.process_time() - process_cpu) - (time.thread_time() - main_cpu)
    total = sum(samples)
    parts = {
        k: probe.parts.get(k, 0.0)
        for k in ("body", "pipeline", "storage", "gc")
    }
    other = total - parts["body"] - parts["pipeline"] - parts["storage"]
    breakdown = {f"{k}_ms": round(v / n * 1000, 3) for k, v in parts.items()}
    breakdown["other_ms"] = round(other / n * 1000, 3)
    breakdown["background_cpu_ms"] = round(max(0.0, background) / n * 1000, 3)
    breakdown["storage_share"] = round(parts["storage"] / total, 4)
    breakdown["body_share"] = round(parts["body"] / total, 4)
    breakdown["gc_share"] = round(parts["gc"] / total, 4)
    return {"latency_ms": summary_ms(samples), "breakdown": breakdown}


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats of every figure (each percentile separately)."""
    latency = {
        key: round(median([r["latency_ms"][key] for r in runs]), 3)
        for key in runs[0]["latency_ms"]
    }
    breakdown = {
        key: round(median([r["breakdown"][key] for r in runs]), 4)
        for key in runs[0]["breakdown"]
    }
    return {"latency_ms": latency, "breakdown": breakdown, "runs": runs}


def run(
    sizes: Iterable[int] = SIZES,
    repeats: int = 3,
    calls: dict[int, int] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Latency of both hooks at each size (medians over ``repeats``), with the time breakdown.

    Each size also has the floor app's p50 for the same body (``floor``), and each hook the p50
    growth 1k -> 10k of the service and of the floor, and their ratio.
    """
    calls = {**CALLS, **(calls or {})}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as directory:
        app = make_app(directory)
        # The service sets the garbage collector's thresholds for its whole process when its app
        # is created; set them here too, before anything is timed, so that the floor is measured
        # under the same thresholds as the service, not CPython's defaults.
        tune_garbage_collector()
        probe = Probe(app)
        try:
            for hook, scenario in SCENARIOS.items():
                for size in sizes:
                    call = hook_call(scenario, size)
                    cards = check_call(app, call)
                    response_bytes = len(wsgi_post(app, call.path, call.body)[1])
                    floor = create_floor_app(response_bytes)
                    n = calls.get(size, max(10, 40_000 // max(size, 1)))
                    runs, floor_runs = [], []
                    for _ in range(repeats):  # alternated, so a change in load hits both alike
                        runs.append(time_calls(app, call, n, probe))
                        floor_runs.append(floor_p50(floor, call, n))
                    entry = _median_of(runs)
                    entry.update(
                        scenario=scenario,
                        resources=call.chart.size,
                        relevant_resources=call.chart.relevant,
                        composition=call.chart.composition,
                        request_bytes=len(call.body),
                        cards=len(cards),
                        floor={
                            "response_bytes": response_bytes,
                            "p50_ms": round(median(floor_runs), 3),
                            "runs_p50_ms": floor_runs,
                        },
                    )
                    results.setdefault(hook, {})[str(size)] = entry
                    lat = entry["latency_ms"]
                    log(
                        f"  in process {hook:12} {size:>6} resources: p50 {lat['p50']:.2f} ms,"
                        f" p99 {lat['p99']:.2f} ms; floor p50 {entry['floor']['p50_ms']:.2f} ms"
                    )
        finally:
            probe.close()
            close_app(app)
    for per_size in results.values():
        if "1000" in per_size and "10000" in per_size:
            small, large = per_size["1000"], per_size["10000"]
            ours = large["latency_ms"]["p50"] / small["latency_ms"]["p50"]
            floor_growth = large["floor"]["p50_ms"] / small["floor"]["p50_ms"]
            per_size["scaling_1k_to_10k"] = round(ours, 2)
            per_size["floor_scaling_1k_to_10k"] = round(floor_growth, 2)
            per_size["scaling_over_floor"] = round(ours / floor_growth, 2)
    return results
