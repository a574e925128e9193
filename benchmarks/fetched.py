"""A long chart fetched from the FHIR server: no prefetch, 10,000 resources served in pages.

An EHR that does not prefetch sends ``fhirServer``, and the service pages through its searches
(``cds_service.fhir.client``), keeping only what a rule could read, page by page. This times
that path end to end in process.

The FHIR server (``cds_service.devtools.memory_fhir``, no delay) runs in a process of its own,
so that its work (building and writing the pages) does not share the service's interpreter: the
figure is the service's own time plus the server's answers as a client waits for them.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import requests

from benchmarks.charts import PATIENT_VIEW_SCENARIO, build_chart
from benchmarks.common import call_of, median, queries_of, summary_ms
from benchmarks.inprocess import check_call, close_app, make_app, timed

PAGE_SIZE = 1_000


def _serve(resources: list[dict[str, Any]], page_size: int, conn: Connection) -> None:
    """Child process: serve the chart's resources until killed. They come from the parent's
    chart (pickled by the spawn), not built again: the server holds exactly what the call is
    checked against, and the chart is built once."""
    from cds_service.devtools import memory_fhir

    _server, base = memory_fhir.serve(resources, page_size=page_size)
    conn.send(base)
    conn.close()
    threading.Event().wait()  # the server runs in its own thread until this process is ended


def pages_alone(base: str, query: str, calls: int) -> list[float]:
    """Seconds to fetch every page of one search with a plain client, ``calls`` times."""
    samples = []
    with requests.Session() as session:
        for _ in range(calls):
            started = time.perf_counter()
            url: str | None = f"{base}/{query}"
            while url:
                bundle = session.get(url, headers={"Accept": "application/fhir+json"},
                                     timeout=30).json()
                url = next((link["url"] for link in bundle.get("link", [])
                            if link.get("relation") == "next"), None)
            samples.append(time.perf_counter() - started)
    return samples


def run(
    *,
    size: int = 10_000,
    page_size: int = PAGE_SIZE,
    calls: int = 5,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    chart = build_chart(PATIENT_VIEW_SCENARIO, size)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=False)
    server = context.Process(
        target=_serve, args=(chart.scenario.resources, page_size, theirs), daemon=True
    )
    server.start()
    try:
        if not ours.poll(120):
            raise RuntimeError("the FHIR server process did not start within 120 s")
        base = ours.recv()
        call = call_of(chart, prefetch=False, fhir_server=base)
        with tempfile.TemporaryDirectory(prefix="cds-fetched-") as directory:
            app = make_app(directory, allow_loopback_http=True, fhir_server_allowlist=(base,))
            try:
                check_call(app, call)  # the scenario's cards, and a warm connection pool
                seconds = timed(app, call, calls)
            finally:
                close_app(app)
        queries = queries_of(call)
        alone = {key: median(pages_alone(base, query, calls)) for key, query in queries.items()}
    finally:
        server.terminate()
        server.join(10)
    latency = summary_ms(seconds)
    slowest = max(alone, key=alone.get)
    result = {
        "scenario": PATIENT_VIEW_SCENARIO,
        "resources": call.chart.size,
        "relevant_resources": call.chart.relevant,
        "page_size": page_size,
        "queries": len(queries),
        "calls": calls,
        "latency_ms": latency,
        "slowest_query": slowest,
        "slowest_query_all_pages_ms": round(alone[slowest] * 1000, 2),
        "per_query_all_pages_ms": {key: round(s * 1000, 2) for key, s in alone.items()},
        "ratio_total_to_slowest": round(median(seconds) / alone[slowest], 3),
    }
    log(f"  {summary(result)}")
    return result


def summary(g: dict[str, Any]) -> str:
    """One line for the log and the table."""
    return (
        f"Long chart fetched from a FHIR server ({g['resources']} resources, no prefetch, "
        f"pages of {g['page_size']}; reference, not a target): "
        f"p50 {g['latency_ms']['p50']:.1f} ms; "
        f"the slowest query's pages alone ({g['slowest_query']}) "
        f"{g['slowest_query_all_pages_ms']:.1f} ms, ratio {g['ratio_total_to_slowest']:.2f}"
    )
