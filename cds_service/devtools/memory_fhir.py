"""A tiny in-memory FHIR "server" for tests, the developer CLI and benchmarks.

Why it exists: the service must be exercised against prefetch *and* against a live FHIR server
(when prefetch is missing it queries ``fhirServer`` itself, following ``next`` links). A real
server is heavy to start in tests, so this module answers exactly the interactions the service's
prefetch templates use, with FHIR's semantics:

- ``Type/id`` read: the resource, or ``None`` (404 over HTTP);
- ``Type?patient=X`` or ``Type?subject=Patient/X`` search, optionally ``status=a,b`` (OR) and
  ``_id=X``; ``_count``/``_sort``/``_format``/``_total`` are accepted and ignored. Anything else
  raises :class:`UnsupportedQuery` (400 over HTTP) rather than silently returning wrong data.

:func:`serve` wraps the same search in a ``ThreadingHTTPServer`` on loopback, with optional paging
(``next`` links, so the client's paging code is tested) and an optional fixed delay per response
(so benchmarks can model a slow EHR). Nothing here logs request paths: they carry patient ids.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

FHIR_JSON = "application/fhir+json; charset=utf-8"

# Parameters a real server accepts that change presentation, not the match set.
_IGNORED_PARAMS = frozenset({"_count", "_sort", "_format", "_total", "_summary"})
# Paging parameter used only by :func:`serve` in the ``next`` links it writes.
_OFFSET_PARAM = "_offset"


class UnsupportedQuery(ValueError):
    """The query uses a feature this small server does not implement."""


def _reference_matches(reference: Any, patient_id: str) -> bool:
    if not isinstance(reference, Mapping):
        return False
    ref = reference.get("reference")
    if not isinstance(ref, str):
        return False
    ref = ref.split("/_history/")[0]
    return ref == f"Patient/{patient_id}" or ref.endswith(f"/Patient/{patient_id}")


def _patient_of_param(value: str) -> str:
    """``X``, ``Patient/X`` or ``http://base/Patient/X`` -> ``X``."""
    if "/" in value:
        head, _, tail = value.rstrip("/").rpartition("/")
        if not head.endswith("Patient"):
            raise UnsupportedQuery(f"only Patient references are supported, got {value!r}")
        return tail
    return value


def _is_type(segment: str) -> bool:
    return segment[:1].isupper() and segment.isalpha()


def _split_query(query: str) -> tuple[str, str | None, list[tuple[str, str]]]:
    """Split ``Type/id`` or ``Type?params`` (optionally with a leading ``/`` or a full URL)."""
    parts = urlsplit(query)
    path = parts.path.strip("/")
    segments = [s for s in path.split("/") if s]
    params = parse_qsl(parts.query, keep_blank_values=True)
    if not segments:
        raise UnsupportedQuery("empty query")
    # Accept a full URL or a base path: the resource type is the last-but-one (read) or last
    # (search) segment, and resource types are alphabetic words starting upper-case.
    if len(segments) >= 2 and _is_type(segments[-2]):
        return segments[-2], segments[-1], params
    if _is_type(segments[-1]):
        return segments[-1], None, params
    raise UnsupportedQuery(f"not a read or type-level search: {query!r}")


def read(resources: Iterable[Mapping[str, Any]], resource_type: str, resource_id: str) -> Any:
    """The resource with that type and id, or ``None``."""
    for resource in resources:
        if resource.get("resourceType") == resource_type and resource.get("id") == resource_id:
            return resource
    return None


def matching(
    resources: Iterable[Mapping[str, Any]], resource_type: str, params: list[tuple[str, str]]
) -> list[Mapping[str, Any]]:
    """Resources of ``resource_type`` matching every parameter (AND), values comma-OR'd."""
    patients: list[str] | None = None
    statuses: set[str] | None = None
    ids: set[str] | None = None
    for name, value in params:
        if name in _IGNORED_PARAMS or name == _OFFSET_PARAM:
            continue
        values = [v for v in value.split(",") if v]
        if name in ("patient", "subject", "patient:Patient", "subject:Patient"):
            found = [_patient_of_param(v) for v in values]
            patients = found if patients is None else [p for p in patients if p in found]
        elif name == "status":
            statuses = set(values) if statuses is None else statuses & set(values)
        elif name == "_id":
            ids = set(values) if ids is None else ids & set(values)
        else:
            raise UnsupportedQuery(f"unsupported search parameter {name!r}")
    hits = []
    for resource in resources:
        if resource.get("resourceType") != resource_type:
            continue
        if ids is not None and resource.get("id") not in ids:
            continue
        if statuses is not None and resource.get("status") not in statuses:
            continue
        if patients is not None:
            if resource_type == "Patient":
                if resource.get("id") not in patients:
                    continue
            elif not any(
                _reference_matches(resource.get(key), pid)
                for key in ("subject", "patient")
                for pid in patients
            ):
                continue
        hits.append(resource)
    return hits


def searchset(
    hits: list[Mapping[str, Any]],
    *,
    total: int | None = None,
    base_url: str | None = None,
    links: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A ``searchset`` Bundle; ``fullUrl`` only when the base URL is known (it must be absolute)."""
    entries = []
    for resource in hits:
        entry: dict[str, Any] = {}
        if base_url:
            entry["fullUrl"] = f"{base_url}/{resource['resourceType']}/{resource['id']}"
        entry["resource"] = resource
        entry["search"] = {"mode": "match"}
        entries.append(entry)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(hits) if total is None else total,
    }
    if links:
        bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle


def search(resources: Iterable[Mapping[str, Any]], query: str) -> dict[str, Any] | None:
    """Run a read (``Type/id``) or a search (``Type?...``) against ``resources``.

    A read returns the resource itself or ``None``; a search returns a searchset Bundle (with
    ``total: 0`` and no entries when nothing matches, as servers do).
    """
    items = list(resources)
    resource_type, resource_id, params = _split_query(query)
    if resource_id is not None:
        if params:
            raise UnsupportedQuery("parameters on a read are not supported")
        found = read(items, resource_type, resource_id)
        return dict(found) if found is not None else None
    return searchset(matching(items, resource_type, params))


def _operation_outcome(code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def capability_statement() -> dict[str, Any]:
    """What ``/metadata`` answers: an R4 server with read and type search."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-01",
        "kind": "instance",
        "software": {"name": "hypermobility-cds memory_fhir (test double)"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": rt,
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                    }
                    for rt in (
                        "Patient",
                        "Condition",
                        "Observation",
                        "MedicationRequest",
                        "ServiceRequest",
                        "DiagnosticReport",
                        "Procedure",
                        "DeviceRequest",
                    )
                ],
            }
        ],
    }


def _make_handler(
    resources: list[Mapping[str, Any]], delay_s: float, page_size: int | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "memory-fhir/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Silent: request lines contain patient ids, which must not reach logs."""

        def _send(self, status: int, body: Mapping[str, Any]) -> None:
            if delay_s > 0:
                time.sleep(delay_s)
            payload = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", FHIR_JSON)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _base(self) -> str:
            host, port = self.server.server_address[:2]
            return f"http://{host}:{port}"

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            parts = urlsplit(self.path)
            path = parts.path.strip("/")
            if path == "metadata":
                self._send(200, capability_statement())
                return
            try:
                resource_type, resource_id, params = _split_query(self.path)
                if resource_id is not None:
                    found = search(resources, f"{resource_type}/{resource_id}")
                    if found is None:
                        self._send(
                            404,
                            _operation_outcome("not-found", f"{resource_type}/{resource_id}"),
                        )
                    else:
                        self._send(200, found)
                    return
                hits = matching(resources, resource_type, params)
            except UnsupportedQuery as exc:
                self._send(400, _operation_outcome("not-supported", str(exc)))
                return
            self._send(200, self._page(resource_type, params, hits))

        def _page(
            self, resource_type: str, params: list[tuple[str, str]], hits: list[Any]
        ) -> dict[str, Any]:
            base = self._base()
            plain = [(k, v) for k, v in params if k != _OFFSET_PARAM]
            offset = 0
            for key, value in params:
                if key == _OFFSET_PARAM:
                    try:
                        offset = max(0, int(value))
                    except ValueError:
                        offset = 0

            def url(extra: list[tuple[str, str]]) -> str:
                query = urlencode(plain + extra)
                return f"{base}/{resource_type}" + (f"?{query}" if query else "")

            if not page_size:
                return searchset(hits, base_url=base, links=[{"relation": "self", "url": url([])}])
            page = hits[offset : offset + page_size]
            links = [{"relation": "self", "url": url([(_OFFSET_PARAM, str(offset))])}]
            if offset + page_size < len(hits):
                next_offset = str(offset + page_size)
                links.append({"relation": "next", "url": url([(_OFFSET_PARAM, next_offset)])})
            return searchset(page, total=len(hits), base_url=base, links=links)

    return Handler


def serve(
    resources: Iterable[Mapping[str, Any]],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    delay_s: float = 0.0,
    page_size: int | None = None,
) -> tuple[ThreadingHTTPServer, str]:
    """Start the server in a daemon thread; returns ``(server, base_url)``.

    Stop it with ``server.shutdown(); server.server_close()``. ``port=0`` picks a free port.
    """
    handler = _make_handler(list(resources), delay_s, page_size)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="memory-fhir", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}"
