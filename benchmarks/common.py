"""Shared pieces of the benchmarks: request bodies, a direct WSGI caller, statistics, machine.

The in-process benchmarks call the Flask app as a WSGI callable, exactly as gunicorn does, but
without sockets: what is timed is the service's own work (body reading, validation, facts, rules,
the served-card write, serialisation), not the HTTP client's.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.charts import Chart, build_chart
from cds_service.api.services import ServiceDefinition
from cds_service.devtools.scenarios import render_template

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class HookCall:
    """One benchmark request: the chart, its service, and the JSON body with full prefetch."""

    chart: Chart
    service: ServiceDefinition
    body: bytes

    @property
    def path(self) -> str:
        return f"/cds-services/{self.service.id}"


def hook_call(scenario: str, size: int, *, prefetch: bool = True, fhir_server: str | None = None,
              ) -> HookCall:
    return call_of(build_chart(scenario, size), prefetch=prefetch, fhir_server=fhir_server)


def call_of(chart: Chart, *, prefetch: bool = True, fhir_server: str | None = None) -> HookCall:
    """The hook call for a chart already built."""
    service = chart.scenario.service
    request = chart.scenario.hook_request(service.prefetch if prefetch else None,
                                          fhir_server=fhir_server)
    return HookCall(chart, service, json.dumps(request).encode("utf-8"))


def queries_of(call: HookCall) -> dict[str, str]:
    """The FHIR queries the call's service would send, per prefetch key, for its chart."""
    context = call.chart.scenario.context()
    return {key: render_template(template, context) for key, template in
            call.service.prefetch.items()}


def wsgi_post(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` to ``path`` through the WSGI interface; (status code, response body)."""
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    status: list[str] = []

    def start_response(line: str, headers: list, exc_info: Any = None) -> None:
        status.append(line)

    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return int(status[0].split(" ", 1)[0]), data


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p95": round(percentile(ms, 95), 3),
        "p99": round(percentile(ms, 99), 3),
        "mean": round(statistics.fmean(ms), 3),
        "min": round(min(ms), 3),
        "max": round(max(ms), 3),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were taken on, and how busy the machine was (others may share it)."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
