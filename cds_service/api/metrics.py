"""Prometheus metrics: request counts and latencies per service, cards per rule, rule failures,
FHIR fetch errors, feedback entries; served at ``/metrics`` in the Prometheus text format.

Why ``prometheus_client`` and not a hand-written exposition: the text format has escaping,
histogram (``_bucket``/``_sum``/``_count``, cumulative ``le``) and ``# TYPE`` rules that scrapers
check strictly; the library gets them right, is pure Python and has no dependencies.

Why one registry per app, per process: every :func:`cds_service.create_app` call gets its own
:class:`Metrics` (so tests and several apps in one process never share counters), and under
gunicorn each worker process counts what it served. A scrape reaches one worker, so a dashboard
sums the series over scrapes of every worker or, more simply, treats them as samples; the
``process_*`` series (RSS, CPU, start time) tell workers apart. ``prometheus_client``'s
multiprocess mode would aggregate across workers but needs a shared directory prepared before
the workers fork and cleaned on worker exit; per-process counters are honest and enough for
alerting on rates and failures.

Label values are bounded on purpose: the service label is a known service id or ``"unknown"``,
the endpoint label is a Flask endpoint name or ``"unmatched"``, so a client sending random paths
(or a fuzzer) cannot grow the series without bound. No label ever carries patient data.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from cds_service.api.services import SERVICES
from cds_service.fhir.client import FetchError, FetchResult, FhirClient

EXTENSION = "cds_metrics"
# The classic text format (0.0.4): what every Prometheus-compatible scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Hook calls are expected in ~0.5 s and are cut at the FHIR deadline (2 s by default).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

bp = Blueprint("metrics", __name__)


class Metrics:
    """All the service's metrics, in one registry owned by one app."""

    def __init__(self) -> None:
        # ``*_created`` timestamps double the output and no dashboard of ours reads them
        # (a process-wide prometheus_client switch; counters reset with the process anyway).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "cds_http_requests",
            "HTTP requests answered, by endpoint, CDS service id and status code.",
            ["endpoint", "service", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cds_http_request_duration_seconds",
            "Time from request start to response, by endpoint and CDS service id.",
            ["endpoint", "service"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cards = Counter(
            "cds_cards",
            "Cards returned to clients, by rule id.",
            ["rule"],
            registry=self.registry,
        )
        self.rule_failures = Counter(
            "cds_rule_failures",
            "Rule evaluations that raised (the other rules' cards were still returned).",
            ["rule"],
            registry=self.registry,
        )
        self.fhir_fetch_errors = Counter(
            "cds_fhir_fetch_errors",
            "FHIR queries that produced no data, by reason (timeout, http-500, not-json...).",
            ["reason"],
            registry=self.registry,
        )
        self.feedback_entries = Counter(
            "cds_feedback_entries",
            "Feedback entries received, by whether they were new or repeats of stored ones.",
            ["result"],
            registry=self.registry,
        )
        self._series: dict[tuple[Any, tuple[str, ...]], Any] = {}
        # Pre-create the label sets a dashboard expects, so they exist (at 0) from the start.
        for result in ("new", "duplicate"):
            self.series(self.feedback_entries, result)

    def series(self, metric: Any, *label_values: str) -> Any:
        """``metric.labels(*label_values)``, remembered: ``labels`` takes a lock and checks its
        arguments every time, and a hook call counts seven series (about 14 against 3 µs).
        The label values are bounded (module docstring), so this dictionary is too; two threads
        that miss at once both get the one series ``labels`` keeps."""
        key = (metric, label_values)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = metric.labels(*label_values)
        return found

    def record_evaluation(
        self, rules_with_cards: Iterable[str], failed_rules: Iterable[str]
    ) -> None:
        for rule in rules_with_cards:
            self.series(self.cards, rule or "unknown").inc()
        for rule in failed_rules:
            self.series(self.rule_failures, rule).inc()

    def record_fetch(self, results: Mapping[str, FetchResult]) -> None:
        for result in results.values():
            if isinstance(result, FetchError):
                self.series(self.fhir_fetch_errors, _bounded_reason(result.reason)).inc()

    def record_feedback(self, received: int, new: int) -> None:
        self.series(self.feedback_entries, "new").inc(new)
        self.series(self.feedback_entries, "duplicate").inc(max(received - new, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MeteredFhirClient(FhirClient):
    """The FHIR client, counting failed queries by reason (the reason codes are a closed set)."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    def fetch(self, *args: Any, **kwargs: Any) -> dict[str, FetchResult]:
        results = super().fetch(*args, **kwargs)
        self._metrics.record_fetch(results)
        return results


def _bounded_reason(reason: str) -> str:
    # FetchError reasons are fixed words plus "http-<status>"; keep anything else out of labels.
    return reason if len(reason) <= 32 and reason.replace("-", "").isalnum() else "other"


def current_metrics() -> Metrics | None:
    """The app's metrics, or None for an app built without them (then recording is skipped)."""
    return current_app.extensions.get(EXTENSION)


def record_evaluation(rules_with_cards: Iterable[str], failed_rules: Iterable[str]) -> None:
    metrics = current_metrics()
    if metrics is not None:
        metrics.record_evaluation(rules_with_cards, failed_rules)


def record_feedback(received: int, new: int) -> None:
    metrics = current_metrics()
    if metrics is not None:
        metrics.record_feedback(received, new)


def install(app: Flask, metrics: Metrics) -> None:
    """Time and count every request, and serve ``/metrics`` (no auth: no patient data)."""
    app.extensions[EXTENSION] = metrics
    app.before_request(_start_timer)
    app.after_request(_count)
    app.register_blueprint(bp)


def _start_timer() -> None:
    g.cds_started = time.perf_counter()


def _labels() -> tuple[str, str]:
    endpoint = request.url_rule.endpoint if request.url_rule is not None else "unmatched"
    service_id = (request.view_args or {}).get("service_id")
    if service_id is None:
        return endpoint, ""
    return endpoint, service_id if service_id in SERVICES else "unknown"


def _count(response: Response) -> Response:
    metrics = current_metrics()
    if metrics is None:
        return response
    endpoint, service = _labels()
    status = str(response.status_code)
    metrics.series(metrics.requests, endpoint, service, status).inc()
    started = g.get("cds_started")
    if started is not None:
        metrics.series(metrics.latency, endpoint, service).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    metrics = current_metrics()
    body = metrics.exposition() if metrics is not None else b""
    return Response(body, status=200, content_type=CONTENT_TYPE)
