"""FHIR fallback: no prefetch, every query sent to a local FHIR server that delays each answer.

The service must send all its queries at once (they are independent), so a hook call should
take about as long as the slowest single query, not the sum of them. This measures both: the
hook call's total time, and each query alone against the same server with one connection, and
reports total / slowest.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import requests

from benchmarks.charts import PATIENT_VIEW_SCENARIO, build_chart
from benchmarks.common import call_of, median, queries_of
from benchmarks.inprocess import check_call, close_app, make_app, timed
from cds_service.devtools import memory_fhir


def run(
    *,
    delay_s: float = 0.1,
    size: int = 100,
    calls: int = 7,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    chart = build_chart(PATIENT_VIEW_SCENARIO, size)
    server, base = memory_fhir.serve(chart.scenario.resources, delay_s=delay_s)
    try:
        call = call_of(chart, prefetch=False, fhir_server=base)
        queries = queries_of(call)
        with tempfile.TemporaryDirectory(prefix="cds-fallback-") as directory:
            app = make_app(directory, allow_loopback_http=True, fhir_server_allowlist=(base,))
            check_call(app, call)  # also warms the client's connection pool
            totals = timed(app, call, calls)
            close_app(app)
        singles: dict[str, list[float]] = {key: [] for key in queries}
        with requests.Session() as session:
            for _ in range(calls):
                for key, query in queries.items():
                    started = time.perf_counter()
                    response = session.get(f"{base}/{query}",
                                           headers={"Accept": "application/fhir+json"})
                    response.content  # noqa: B018 - read the whole body, as the service does
                    singles[key].append(time.perf_counter() - started)
    finally:
        server.shutdown()
        server.server_close()
    per_query = {key: round(median(v) * 1000, 2) for key, v in singles.items()}
    slowest_key = max(per_query, key=per_query.get)
    total_ms = round(median(totals) * 1000, 2)
    result = {
        "scenario": PATIENT_VIEW_SCENARIO,
        "resources": chart.size,
        "delay_ms": delay_s * 1000,
        "queries": len(queries),
        "calls": calls,
        "total_ms_median": total_ms,
        "total_ms_max": round(max(totals) * 1000, 2),
        "slowest_query": slowest_key,
        "slowest_query_ms": per_query[slowest_key],
        "sum_of_queries_ms": round(sum(per_query.values()), 2),
        "per_query_ms": per_query,
        "ratio_total_to_slowest": round(total_ms / per_query[slowest_key], 3),
    }
    log(f"  {summary(result)}")
    return result


def summary(f: dict[str, Any]) -> str:
    """One line for the log and the table."""
    return (
        f"FHIR fallback ({f['queries']} queries, {f['delay_ms']:.0f} ms server delay each): total "
        f"{f['total_ms_median']:.1f} ms, slowest single query {f['slowest_query_ms']:.1f} ms, "
        f"ratio {f['ratio_total_to_slowest']:.2f} (sequential would be "
        f"{f['sum_of_queries_ms']:.0f} ms)"
    )
