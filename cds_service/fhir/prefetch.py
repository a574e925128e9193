"""Gather the patient's data: prefetch first, then the EHR's FHIR server for what is missing.

Per key, with CDS Hooks 2.0 semantics:

- key absent, or an OperationOutcome (the client hit an error): fetch it from ``fhirServer``;
- ``null``: the client looked and found nothing, so there is no data and nothing to fetch;
- a searchset Bundle with a ``next`` link (the client paginated): follow it on ``fhirServer``;
- a Bundle or a single resource: use it.

What cannot be had either way makes the call fail with 412 (the standard's answer), naming the
keys and why, so the EHR's integrators can see what to fix.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.fhir.client import ByteBudget, FetchError, FhirClient
from cds_service.fhir.server_policy import FhirServerRefused, check_fhir_server

TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")


class PrefetchInvalid(ValueError):
    """The client sent a prefetch value that is not FHIR JSON (a 400: the client's bug)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class DataUnavailable(Exception):
    """Required data could be had neither from prefetch nor from the FHIR server (412)."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))


@dataclass
class GatheredData:
    resources: list[dict[str, Any]] = field(default_factory=list)
    from_prefetch: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    dropped: int = 0  # fetched resources ``keep`` refused, page by page


class _Counted:
    """``keep``, counting what it refuses (the FHIR client calls it from several threads)."""

    def __init__(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self.refused = 0

    def __call__(self, resource: dict[str, Any]) -> bool:
        if self._keep(resource):
            return True
        with self._lock:
            self.refused += 1
        return False


def render(template: str, context: Mapping[str, Any]) -> str | None:
    """Fill ``{{context.x}}`` tokens; None if a token has no primitive value in the context."""
    missing = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal missing
        value = context.get(match.group(1))
        if not isinstance(value, str | int) or isinstance(value, bool):
            missing = True
            return ""
        return str(value)

    rendered = TOKEN.sub(substitute, template)
    return None if missing else rendered


def _next_link(key: str, bundle: Mapping[str, Any]) -> str | None:
    """The Bundle's ``next`` link, if any. Its links are checked as the FHIR client checks a
    page's, so that a malformed one is the client's 400 here, never a 412 blamed on
    ``fhirServer`` when the client follows it."""
    links = bundle.get("link")
    if links is None:
        return None
    if not isinstance(links, list):
        raise PrefetchInvalid(key, f"prefetch.{key}.link must be an array")
    found = None
    for n, link in enumerate(links):
        if not isinstance(link, dict):
            raise PrefetchInvalid(key, f"prefetch.{key}.link[{n}] must be an object")
        if link.get("relation") != "next":
            continue
        url = link.get("url")
        if not isinstance(url, str) or not url.strip():
            raise PrefetchInvalid(key, f"prefetch.{key}.link[{n}].url must be a URL")
        found = found or url
    return found


def _classify(key: str, value: Any) -> tuple[str, list[dict[str, Any]]]:
    """('use' | 'fetch' | 'follow', resources) for one prefetch value."""
    if value is None:
        return "use", []
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise PrefetchInvalid(key, f"prefetch.{key} must be a FHIR resource, a Bundle or null")
    if value["resourceType"] == "OperationOutcome":
        return "fetch", []
    if value["resourceType"] == "Bundle":
        entries = value.get("entry", [])  # absent: an empty Bundle
        if not isinstance(entries, list):  # null too, as the FHIR client refuses it on a page
            raise PrefetchInvalid(key, f"prefetch.{key}.entry must be an array")
        resources = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict):  # as the FHIR client refuses it on a page
                raise PrefetchInvalid(key, f"prefetch.{key}.entry[{n}] must be an object")
            if isinstance(entry.get("resource"), dict):
                resources.append(entry["resource"])
        return ("follow" if _next_link(key, value) else "use"), resources
    return "use", [value]


def gather(
    *,
    templates: Mapping[str, str],
    context: Mapping[str, Any],
    prefetch: Mapping[str, Any] | None,
    fhir_server: str | None,
    token: str | None,
    client: FhirClient,
    allowlist: tuple[str, ...],
    allow_loopback_http: bool,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    deadline: float | None = None,
    budget: ByteBudget | None = None,
) -> GatheredData:
    """The patient's resources, from prefetch and, for what is missing, the FHIR server.

    ``keep``, if given, filters the resources the FHIR client gathers, page by page: those of
    fetched searches, and of a paginated prefetch Bundle it follows (first page included).
    ``dropped`` counts those it refused; other prefetch values are left as they are.
    ``deadline`` (monotonic) and ``budget`` bound the fetching, as :meth:`FhirClient.fetch`
    has them.
    """
    data = GatheredData()
    prefetch = prefetch or {}
    to_fetch: dict[str, str] = {}
    to_follow: dict[str, dict[str, Any]] = {}
    for key, template in templates.items():
        if key in prefetch:
            action, resources = _classify(key, prefetch[key])
            if action == "use":
                data.resources.extend(resources)
                data.from_prefetch.append(key)
                continue
            if action == "follow":
                to_follow[key] = prefetch[key]
                continue
        query = render(template, context)
        if query is None:
            raise DataUnavailable({key: "its prefetch template cannot be filled from the context"})
        to_fetch[key] = query
    if not to_fetch and not to_follow:
        return data
    if not fhir_server:
        problems = {key: "not in prefetch and no fhirServer to fetch it from" for key in to_fetch}
        problems.update({key: "a paginated Bundle but no fhirServer to page" for key in to_follow})
        raise DataUnavailable(problems)
    try:
        base = check_fhir_server(
            fhir_server, allowlist, allow_loopback_http=allow_loopback_http
        )
    except FhirServerRefused as refused:
        raise DataUnavailable({"fhirServer": refused.reason}) from None
    counted = _Counted(keep) if keep is not None else None
    results = client.fetch(
        base,
        to_fetch,
        token=token,
        follow_bundles=to_follow,
        keep=counted,
        deadline=deadline,
        budget=budget,
    )
    data.dropped = counted.refused if counted is not None else 0
    problems: dict[str, str] = {}
    for key in [*to_fetch, *to_follow]:
        result = results.get(key)
        if isinstance(result, FetchError):
            problems[key] = f"could not be fetched from fhirServer ({result.reason})"
        elif result:
            data.resources.extend(result)
            data.fetched.append(key)
        else:
            data.fetched.append(key)
    if problems:
        raise DataUnavailable(problems)
    return data
