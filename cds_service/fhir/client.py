"""Fetch FHIR data the CDS client did not prefetch, within a hard time budget.

CDS Hooks asks services to answer in roughly 500 ms, and an EHR FHIR server can be slow, page
its results, redirect, or answer with HTML from a proxy. This module turns all of that into a
per-key result (a list of resources, ``None`` for "no data", or a :class:`FetchError`) so the
caller can decide between "use what we have" and "412 Precondition Failed" without ever seeing
an exception from the network layer.

Safety properties (the base URL itself must already have passed
:func:`cds_service.fhir.server_policy.check_fhir_server`):

* every request goes to the base URL or below it; paging links and redirects that leave it are
  refused, so the bearer token is never sent anywhere else;
* bodies are streamed and capped, page and resource counts are capped, and ``next`` loops are
  detected, so a hostile or broken server cannot exhaust memory or time;
* the whole call is bounded by ``FetchLimits.deadline_s`` however many queries it runs;
* logs carry only the key, status code, reason and timing: never the token, URLs (which hold
  patient ids) or bodies.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from time import monotonic
from typing import Any
from urllib.parse import parse_qsl, urljoin

import requests
from requests.auth import AuthBase
from urllib3.exceptions import DecodeError, HTTPError, MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry

from cds_service import strict_json
from cds_service.fhir.server_policy import is_under_base
from cds_service.outbound_http import WatchedAdapter, deadline, pieces

__all__ = ["FetchError", "FetchLimits", "FetchResult", "FhirClient"]

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 3
# An instance read ("Patient/123") or version read ("Patient/123/_history/2"); ids per FHIR
# R4 (1-64 of [A-Za-z0-9-.]). Anything else is sent as a search and must answer with a Bundle.
_READ_RE = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]{1,63})/[A-Za-z0-9.\-]{1,64}(?:/_history/[A-Za-z0-9.\-]{1,64})?$"
)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# Search results that are not matches: "include" entries are other resource types the server
# chose to add (and may repeat on every page) and "outcome" entries are server messages.
_SKIPPED_SEARCH_MODES = frozenset({"include", "outcome"})


@dataclass(frozen=True)
class FetchLimits:
    """Budgets for one :meth:`FhirClient.fetch` call (all queries together for the deadline)."""

    timeout_s: float = 1.5  # per HTTP call (connect + read, including the body)
    deadline_s: float = 2.0  # overall budget for all queries of one hook call
    max_pages: int = 50  # per query, the first (or prefetched) page included
    # Asked of the server (``_count``) on the searches this client starts, unless the query
    # names its own: many servers page by 10 or 20 by default, and a few years of vital signs
    # then take more pages than a hook call can wait for. Servers may answer with fewer.
    page_size: int = 1000  # 0: no _count sent
    max_resources: int = 20000  # per query
    max_response_bytes: int = 20 * 1024 * 1024  # per HTTP response, after decompression
    # All responses of one hook call together (every query, page and Medication read: its
    # fetches share one ByteBudget), so that a hostile or broken server cannot fill a worker's
    # memory with page after page until the deadline.
    max_call_bytes: int = 32 * 1024 * 1024


class FetchError(Exception):
    """One query could not produce data.

    ``reason`` is a short machine-friendly code: ``timeout``, ``deadline``, ``connection``,
    ``unauthorized`` (401), ``forbidden`` (403), ``http-<status>``, ``not-json``, ``not-fhir``,
    ``too-large``, ``too-many-pages``, ``too-many-resources``, ``next-off-server``,
    ``next-loop``, ``redirect-refused``, ``too-many-redirects``, ``bad-query``,
    ``bad-encoding`` or ``internal-error``. It never contains the token, a URL or a body.
    """

    def __init__(self, key: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
        self.status = status

    def __repr__(self) -> str:
        return f"FetchError(key={self.key!r}, reason={self.reason!r}, status={self.status!r})"


FetchResult = list[dict[str, Any]] | None | FetchError


class _Auth(AuthBase):
    """Sets (or deliberately omits) the bearer token.

    Passing an auth object even without a token stops requests from consulting ``~/.netrc``,
    which would otherwise add Basic credentials (and replace our header) for matching hosts.
    """

    def __init__(self, token: str | None) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._token:
            r.headers["Authorization"] = f"Bearer {self._token}"
        else:
            r.headers.pop("Authorization", None)
        return r

    def __repr__(self) -> str:  # keep the token out of any accidental repr/log
        return "_Auth(<redacted>)"


class ByteBudget:
    """Bytes one hook call may still read from the FHIR server, shared by all its fetches and
    their worker threads, as they share its deadline (see :meth:`FhirClient.budget`)."""

    def __init__(self, limit: int) -> None:
        self._left = limit
        self._lock = threading.Lock()

    def spend(self, size: int) -> bool:
        """Take ``size`` bytes; False once the budget is spent."""
        with self._lock:
            self._left -= size
            return self._left >= 0


@dataclass(frozen=True)
class _Call:
    """Per-fetch state shared by the worker threads of one hook call."""

    base_url: str
    auth: _Auth = field(repr=False)
    deadline: float
    budget: ByteBudget = field(repr=False)
    keep: Callable[[dict[str, Any]], bool] | None = None


def _new_session(max_workers: int) -> requests.Session:
    """A session meant to be shared by all hook calls and threads.

    Cookies are refused: the session is shared between users and EHRs, and a cookie set for one
    user's request must never ride along on another's. We only ever GET, so one retry on
    connection errors is harmless; reads and statuses are not retried (time budget).
    """
    session = requests.Session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    retry = Retry(
        total=1,
        connect=1,
        read=False,  # re-raise read timeouts as such (read=0 turns them into ConnectionError)
        redirect=0,
        status=0,
        other=0,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        raise_on_redirect=False,
        respect_retry_after_header=False,
    )
    adapter = WatchedAdapter(
        pool_connections=16, pool_maxsize=max(max_workers, 1), max_retries=retry
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class FhirClient:
    """Runs FHIR reads/searches in parallel on a shared thread pool and HTTP connection pool.

    Create one per process and reuse it: both pools are meant to be long-lived. A session passed
    in is used as is (its owner configures adapters and proxies); otherwise one is built by
    :func:`_new_session`.
    """

    def __init__(
        self,
        session: requests.Session | None = None,
        *,
        limits: FetchLimits = FetchLimits(),  # noqa: B008 - frozen dataclass, safe default
        max_workers: int = 8,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._owns_session = session is None
        self._session = session if session is not None else _new_session(max_workers)
        self._limits = limits
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fhir-fetch")
        self._closed = threading.Event()

    @property
    def limits(self) -> FetchLimits:
        return self._limits

    def close(self) -> None:
        """Stop the worker threads (pending work is cancelled) and close an owned session."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    def budget(self) -> ByteBudget:
        """A fresh byte budget of ``max_call_bytes``, for all the fetches of one hook call."""
        return ByteBudget(self._limits.max_call_bytes)

    def fetch(
        self,
        base_url: str,
        queries: Mapping[str, str],
        *,
        token: str | None,
        follow_bundles: Mapping[str, dict] | None = None,
        keep: Callable[[dict[str, Any]], bool] | None = None,
        deadline: float | None = None,
        budget: ByteBudget | None = None,
    ) -> dict[str, FetchResult]:
        """Run all ``queries`` (and finish all ``follow_bundles``) in parallel.

        ``queries`` maps a key to a relative FHIR query: an instance read ``"Patient/123"`` or a
        search ``"Condition?patient=123"``. ``follow_bundles`` maps a key to a prefetched
        searchset Bundle whose ``next`` links must still be followed. Keys must not appear in
        both.

        Result per key: a search gives the ``entry[].resource`` list across all pages (only
        matches: ``include``/``outcome`` entries and OperationOutcome resources are dropped); a
        read gives ``[resource]``, or ``None`` when the server answers 404/410 (no data); any
        failure gives a :class:`FetchError`. Keys still running when ``deadline_s`` expires get
        ``FetchError(key, "deadline")`` and this method returns on time.

        ``keep``, if given, filters a search's resources page by page (it may be called from
        several threads at once), so a long chart's pages are not all held in memory at once;
        ``max_resources`` still counts every match.

        ``deadline`` (a ``time.monotonic()`` instant) replaces ``deadline_s`` from now, and
        ``budget`` a fresh :class:`ByteBudget`, so that several calls for one hook call can
        share one time and one byte budget.
        """
        follow = dict(follow_bundles or {})
        overlap = set(queries) & set(follow)
        if overlap:
            raise ValueError("a key cannot be both a query and a bundle to follow")
        base = base_url.rstrip("/")
        if not is_under_base(base, base):
            raise ValueError("base_url is not an acceptable FHIR base URL")
        if not queries and not follow:
            return {}
        call = _Call(
            base_url=base,
            auth=_Auth(token),
            deadline=monotonic() + self._limits.deadline_s if deadline is None else deadline,
            budget=budget or self.budget(),
            keep=keep,
        )

        futures = {}
        for key, query in queries.items():
            futures[key] = self._pool.submit(self._run_query, call, key, query)
        for key, bundle in follow.items():
            futures[key] = self._pool.submit(self._run_follow, call, key, bundle)

        done, _ = wait(futures.values(), timeout=max(0.0, call.deadline - monotonic()))
        results: dict[str, FetchResult] = {}
        for key, future in futures.items():
            if future not in done:
                # Queued work is dropped; running work stops at its next deadline check, and
                # its HTTP timeout is already capped at the remaining budget.
                future.cancel()
                log.debug("fhir fetch key=%s reason=deadline", key)
                results[key] = FetchError(key, "deadline")
                continue
            exc = future.exception()
            if exc is None:
                results[key] = future.result()
            elif isinstance(exc, FetchError):
                results[key] = exc
            else:  # a bug, not a server problem: keep the hook call alive, log the type only
                log.warning("fhir fetch key=%s internal error %s", key, type(exc).__name__)
                results[key] = FetchError(key, "internal-error")
        return results

    # ------------------------------------------------------------------ workers

    def _run_query(self, call: _Call, key: str, query: str) -> list[dict[str, Any]] | None:
        relative = query.strip().lstrip("/")
        path, _, params = relative.partition("?")
        url = f"{call.base_url}/{relative}"
        # Containment is judged on the path (the query string cannot change host or path, and
        # token values such as "code=http://loinc.org|1234" legitimately contain "://").
        # A '#' would silently truncate the query; control characters could split the request.
        if (
            not path
            or "://" in path  # an absolute URL is not a relative query
            or "#" in relative
            or _CONTROL_CHARS.search(params)
            or not is_under_base(f"{call.base_url}/{path}", call.base_url)
        ):
            raise FetchError(key, "bad-query")
        read = _READ_RE.match(path) if not params and "?" not in relative else None
        if read:
            resource = self._get_json(call, key, url, read=True)
            if resource is None:
                return None
            rtype = resource.get("resourceType")
            if rtype != read.group("type"):  # includes OperationOutcome with a 200
                raise FetchError(key, "not-fhir")
            return [resource]
        page_size = self._limits.page_size
        if page_size and "_count" not in _param_names(params):
            url = f"{url.rstrip('?&')}{'&' if params.strip('&') else '?'}_count={page_size}"
        bundle = self._get_json(call, key, url, read=False)  # never None for a search
        return self._collect(call, key, bundle, url)

    def _run_follow(self, call: _Call, key: str, bundle: dict) -> list[dict[str, Any]]:
        return self._collect(call, key, bundle, None)

    def _collect(self, call: _Call, key: str, bundle: Any, url: str | None) -> list[dict[str, Any]]:
        """Gather match resources from ``bundle`` and every following page."""
        limits = self._limits
        seen: set[str] = set()
        resources: list[dict[str, Any]] = []
        matched = 0
        pages = 1
        current = url if url is not None else call.base_url + "/"
        if url is not None:
            seen.add(url)
        while True:
            _require_bundle(key, bundle)
            matches = _matches(key, bundle)
            matched += len(matches)
            if matched > limits.max_resources:
                raise FetchError(key, "too-many-resources")
            keep = call.keep
            resources.extend(matches if keep is None else [r for r in matches if keep(r)])
            links = _links(key, bundle, current)
            seen.update(links.get("self", ()))
            nxt = links.get("next")
            if not nxt:
                return resources
            next_url = nxt[0]
            if not is_under_base(next_url, call.base_url):
                raise FetchError(key, "next-off-server")
            if next_url in seen:
                raise FetchError(key, "next-loop")
            if pages >= limits.max_pages:
                raise FetchError(key, "too-many-pages")
            if self._closed.is_set() or monotonic() >= call.deadline:
                raise FetchError(key, "deadline")
            seen.add(next_url)
            pages += 1
            bundle = self._get_json(call, key, next_url, read=False)
            current = next_url

    # ------------------------------------------------------------------ HTTP

    def _get_json(self, call: _Call, key: str, url: str, *, read: bool) -> dict[str, Any] | None:
        """GET one URL under the base; follow same-base redirects; return the JSON object.

        Returns ``None`` only for a read answered with 404/410.
        """
        for _ in range(_MAX_REDIRECTS + 1):
            remaining = call.deadline - monotonic()
            if remaining <= 0 or self._closed.is_set():
                raise FetchError(key, "deadline")
            timeout = min(self._limits.timeout_s, remaining)
            started = monotonic()
            try:
                with deadline(call.deadline):
                    response = self._session.get(
                        url,
                        headers={"Accept": FHIR_JSON},
                        auth=call.auth,
                        timeout=timeout,
                        allow_redirects=False,
                        stream=True,
                    )
            except requests.Timeout:
                raise _logged(FetchError(key, _late(call, "timeout")), started) from None
            except requests.RequestException as exc:
                reason = "timeout" if _is_read_timeout(exc) else "connection"
                raise _logged(FetchError(key, _late(call, reason)), started) from None
            with response:
                if monotonic() >= call.deadline:
                    # Too late to be used; and the watchdog may have cut its headers short at
                    # the deadline, which would read as a complete but empty answer.
                    raise _logged(FetchError(key, "deadline"), started)
                status = response.status_code
                if status in _REDIRECT_STATUSES:
                    url = self._redirect_target(call, key, url, response, started)
                    continue
                if read and status in (404, 410):
                    _log_ok(key, status, started)
                    return None
                if status == 401:
                    raise _logged(FetchError(key, "unauthorized", status=status), started)
                if status == 403:
                    raise _logged(FetchError(key, "forbidden", status=status), started)
                if not 200 <= status < 300:
                    raise _logged(FetchError(key, f"http-{status}", status=status), started)
                body = self._read_body(call, key, response, started, timeout)
            _log_ok(key, status, started)
            return _parse_json(key, body)
        raise FetchError(key, "too-many-redirects")

    def _redirect_target(
        self, call: _Call, key: str, url: str, response: requests.Response, started: float
    ) -> str:
        location = response.headers.get("Location")
        status = response.status_code
        if not location:
            raise _logged(FetchError(key, f"http-{status}", status=status), started)
        target = urljoin(url, location)
        if not is_under_base(target, call.base_url):
            # Never follow: the next request would carry the token to an unapproved server.
            raise _logged(FetchError(key, "redirect-refused", status=status), started)
        _log_ok(key, status, started)
        return target

    def _read_body(
        self, call: _Call, key: str, response: requests.Response, started: float, timeout: float
    ) -> bytes:
        """Stream the body, stopping past the size cap (this response's, or all of the fetch
        call's together) or the per-call time budget.

        The elapsed-time check runs after every socket read (``outbound_http.pieces``), so a server
        dripping a byte at a time cannot hold a worker beyond ``timeout_s``. A read that starts
        just before the budget ends can still take one more socket timeout; the caller's
        deadline is unaffected.
        """
        status = response.status_code
        cap = self._limits.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _logged(FetchError(key, "too-large", status=status), started)
        buf = bytearray()
        for chunk in _chunks(key, response, started):
            buf += chunk
            if len(buf) > cap or not call.budget.spend(len(chunk)):
                raise _logged(FetchError(key, "too-large", status=status), started)
            if monotonic() - started > timeout:
                raise _logged(FetchError(key, "timeout", status=status), started)
        # Tiny values cost more than their bytes once parsed (strict_json.cost): the rest of
        # the charge, against this response's cap and the call's budget alike.
        body = bytes(buf)
        extra = strict_json.cost(body) - len(body)
        if extra > 0 and (len(body) + extra > cap or not call.budget.spend(extra)):
            raise _logged(FetchError(key, "too-large", status=status), started)
        return body


def _late(call: _Call, reason: str) -> str:
    """``deadline`` for a request that failed once the call's deadline had passed (the
    watchdog's cut makes the socket fail), else ``reason``."""
    return "deadline" if monotonic() >= call.deadline else reason


def _chunks(key: str, response: requests.Response, started: float) -> Iterator[bytes]:
    """Decoded body pieces as they arrive, with transport errors mapped to FetchError."""
    try:
        yield from pieces(response)
    except (ReadTimeoutError, requests.Timeout):
        raise _logged(FetchError(key, "timeout"), started) from None
    except (DecodeError, requests.exceptions.ContentDecodingError):
        raise _logged(FetchError(key, "bad-encoding"), started) from None
    except requests.ConnectionError as exc:
        # requests reports a read timeout while streaming as ConnectionError(ReadTimeoutError)
        reason = "timeout" if _is_read_timeout(exc) else "connection"
        raise _logged(FetchError(key, reason), started) from None
    except (HTTPError, requests.RequestException, OSError):
        raise _logged(FetchError(key, "connection"), started) from None


# ---------------------------------------------------------------------- helpers


def _is_read_timeout(exc: BaseException) -> bool:
    """requests wraps some read timeouts in ConnectionError (while streaming the body, or
    inside a MaxRetryError from a custom Retry); report those as timeouts, not as outages."""
    for arg in exc.args:
        if isinstance(arg, MaxRetryError):
            arg = arg.reason
        if isinstance(arg, ReadTimeoutError):
            return True
    return False


def _elapsed_ms(started: float) -> float:
    return (monotonic() - started) * 1000


def _log_ok(key: str, status: int, started: float) -> None:
    log.debug("fhir fetch key=%s status=%s ms=%.0f", key, status, _elapsed_ms(started))


def _logged(error: FetchError, started: float) -> FetchError:
    log.debug(
        "fhir fetch key=%s status=%s reason=%s ms=%.0f",
        error.key,
        error.status,
        error.reason,
        _elapsed_ms(started),
    )
    return error


def _parse_json(key: str, body: bytes) -> dict[str, Any]:
    try:
        data = strict_json.loads(body)
    except ValueError:  # not JSON text, a repeated member name, or nesting too deep
        raise FetchError(key, "not-json") from None
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise FetchError(key, "not-fhir")
    return data


def _require_bundle(key: str, bundle: Any) -> None:
    """A search must answer with a Bundle; an OperationOutcome (even with 200) is an error."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FetchError(key, "not-fhir")
    if not isinstance(bundle.get("entry", []), list) or not isinstance(
        bundle.get("link", []), list
    ):
        raise FetchError(key, "not-fhir")


def _matches(key: str, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Resources of match entries.

    Entries with ``search.mode`` "include" or "outcome" are dropped, as are OperationOutcome
    resources without a mode (some servers omit it): callers asked for the searched type, and
    includes would also repeat on every page. Entries without a mode are treated as matches
    (prefetch Bundles from EHRs and the sandbox often carry no ``search`` element).
    """
    out: list[dict[str, Any]] = []
    for entry in bundle.get("entry", []):
        if not isinstance(entry, dict):
            raise FetchError(key, "not-fhir")
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if mode in _SKIPPED_SEARCH_MODES or resource.get("resourceType") == "OperationOutcome":
            continue
        out.append(resource)
    return out


def _links(key: str, bundle: dict[str, Any], current_url: str) -> dict[str, list[str]]:
    """Bundle links by relation, each resolved to an absolute URL against the page's URL."""
    out: dict[str, list[str]] = {}
    for link in bundle.get("link", []):
        if not isinstance(link, dict):
            raise FetchError(key, "not-fhir")
        relation, href = link.get("relation"), link.get("url")
        if isinstance(relation, str) and isinstance(href, str) and href.strip():
            out.setdefault(relation, []).append(urljoin(current_url, href.strip()))
    return out


def _param_names(params: str) -> set[str]:
    """The parameter names of a query string, percent-decoded as the server will read them and
    without a modifier (``a=1&b:exact=2&%5Fc=3`` gives ``a``, ``b`` and ``_c``)."""
    pairs = parse_qsl(params, keep_blank_values=True)
    return {name.partition(":")[0] for name, _ in pairs}
