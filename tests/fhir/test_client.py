"""FhirClient: paging, prefetched-bundle follow-up, error mapping, token hygiene, time budget.

Most tests mock HTTP with ``responses`` (its patch is process-wide, so it also covers the
client's worker threads). The timing tests use a real ThreadingHTTPServer on 127.0.0.1, because
only real sockets show real timeouts and real parallelism.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests
import responses

from cds_service.fhir.client import FetchError, FetchLimits, FhirClient

BASE = "https://fhir.test/r4"
TOKEN = "tok-SECRET-123"


def bundle(*resources: dict, next_url: str | None = None, self_url: str | None = None) -> dict:
    links = []
    if self_url:
        links.append({"relation": "self", "url": self_url})
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def limits_(**given) -> FetchLimits:
    """Budgets for these tests, which mock exact URLs: searches get no ``_count`` added (that
    is tested on its own, below)."""
    return FetchLimits(**{"page_size": 0, **given})


def cond(i: int) -> dict:
    return {"resourceType": "Condition", "id": f"c{i}"}


OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "processing"}],
}


@pytest.fixture
def client() -> Iterator[FhirClient]:
    c = FhirClient(limits=limits_(timeout_s=1.0, deadline_s=3.0, max_pages=5))
    yield c
    c.close()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def ids(result) -> list[str]:
    assert isinstance(result, list), result
    return [r["id"] for r in result]


# ---------------------------------------------------------------- searches, reads, paging


def test_search_across_three_pages(client, mocked) -> None:
    p1 = f"{BASE}/Condition?patient=p1"
    p2 = f"{BASE}?_getpages=abc&_page=2"
    p3 = f"{BASE}?_getpages=abc&_page=3"
    mocked.get(p1, json=bundle(cond(1), cond(2), next_url=p2, self_url=p1))
    mocked.get(p2, json=bundle(cond(3), next_url=p3, self_url=p2))
    mocked.get(p3, json=bundle(cond(4), self_url=p3))

    out = client.fetch(BASE, {"conditions": "Condition?patient=p1"}, token=None)

    assert ids(out["conditions"]) == ["c1", "c2", "c3", "c4"]
    assert [c.request.url for c in mocked.calls] == [p1, p2, p3]


def test_prefetched_bundle_next_link_is_followed(client, mocked) -> None:
    p2 = f"{BASE}/Condition?patient=p1&_page=2"
    mocked.get(p2, json=bundle(cond(3)))
    prefetched = bundle(cond(1), cond(2), next_url=p2)

    out = client.fetch(BASE, {}, token=TOKEN, follow_bundles={"conditions": prefetched})

    assert ids(out["conditions"]) == ["c1", "c2", "c3"]
    assert len(mocked.calls) == 1
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_prefetched_bundle_without_next_makes_no_call(client, mocked) -> None:
    out = client.fetch(BASE, {}, token=None, follow_bundles={"c": bundle(cond(1))})
    assert ids(out["c"]) == ["c1"]
    assert len(mocked.calls) == 0


def test_prefetched_non_bundle_is_not_fhir(client, mocked) -> None:
    out = client.fetch(BASE, {}, token=None, follow_bundles={"c": OUTCOME})
    assert isinstance(out["c"], FetchError) and out["c"].reason == "not-fhir"


def test_relative_next_link_is_resolved_against_the_page(client, mocked) -> None:
    mocked.get(f"{BASE}/Condition?patient=p1", json=bundle(cond(1), next_url="Condition?page=2"))
    mocked.get(f"{BASE}/Condition?page=2", json=bundle(cond(2)))
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert ids(out["c"]) == ["c1", "c2"]


def test_token_search_with_system_url_is_allowed(client, mocked) -> None:
    query = "Observation?patient=p1&code=http://loinc.org|8302-2&_sort=-date"
    mocked.get(f"{BASE}/Observation", json=bundle({"resourceType": "Observation", "id": "o1"}))
    out = client.fetch(BASE, {"o": query}, token=None)
    assert ids(out["o"]) == ["o1"]
    sent = urlsplit(mocked.calls[0].request.url)
    assert sent.path == "/r4/Observation"
    assert "loinc.org" in sent.query and "8302-2" in sent.query


def test_search_without_parameters_is_a_search(client, mocked) -> None:
    mocked.get(f"{BASE}/Condition", json=bundle(cond(1)))
    assert ids(client.fetch(BASE, {"c": "Condition"}, token=None)["c"]) == ["c1"]


def test_read_returns_single_resource_list(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    out = client.fetch(BASE, {"patient": "Patient/p1"}, token=None)
    assert out["patient"] == [{"resourceType": "Patient", "id": "p1"}]


@pytest.mark.parametrize("status", [404, 410])
def test_read_not_found_is_none(client, mocked, status: int) -> None:
    mocked.get(f"{BASE}/Patient/missing", json=OUTCOME, status=status)
    out = client.fetch(BASE, {"patient": "Patient/missing"}, token=None)
    assert out == {"patient": None}


def test_search_404_is_an_error_not_no_data(client, mocked) -> None:
    mocked.get(f"{BASE}/Nope?patient=p1", json=OUTCOME, status=404)
    out = client.fetch(BASE, {"x": "Nope?patient=p1"}, token=None)
    assert isinstance(out["x"], FetchError) and out["x"].reason == "http-404"


def test_search_mode_include_and_outcome_entries_are_skipped(client, mocked) -> None:
    body = bundle(cond(1))
    body["entry"] += [
        {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
        {"resource": OUTCOME, "search": {"mode": "outcome"}},
        {"resource": OUTCOME},  # no mode, still not data
        {"resource": cond(2)},  # no search element: a match (sandbox/EHR prefetch style)
        {"fullUrl": "urn:uuid:no-resource"},
    ]
    mocked.get(f"{BASE}/Condition?patient=p1", json=body)
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert ids(out["c"]) == ["c1", "c2"]


def test_empty_search_is_empty_list(client, mocked) -> None:
    mocked.get(f"{BASE}/Condition?patient=p1", json={"resourceType": "Bundle", "total": 0})
    assert client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None) == {"c": []}


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "reason"),
    [(401, "unauthorized"), (403, "forbidden"), (503, "http-503"), (500, "http-500")],
)
def test_http_errors(client, mocked, status: int, reason: str) -> None:
    mocked.get(f"{BASE}/Condition?patient=p1", json=OUTCOME, status=status)
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=TOKEN)
    err = out["c"]
    assert isinstance(err, FetchError)
    assert (err.key, err.reason, err.status) == ("c", reason, status)
    assert TOKEN not in str(err) and TOKEN not in repr(err)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html><body>Login</body></html>", "text/html"),
        # Ambiguous JSON is refused like any body that is not JSON: which of two "entry"
        # members a reader keeps is up to the reader.
        (
            '{"resourceType": "Bundle", "type": "searchset", "entry": [], "entry": []}',
            "application/fhir+json",
        ),
    ],
    ids=["html", "repeated-member"],
)
def test_reply_that_is_not_json_is_not_read(client, mocked, body, content_type) -> None:
    mocked.get(f"{BASE}/Condition?patient=p1", body=body, content_type=content_type)
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "not-json"


@pytest.mark.parametrize("query", ["Condition?patient=p1", "Patient/p1"])
def test_operation_outcome_with_200_is_not_fhir(client, mocked, query: str) -> None:
    mocked.get(f"{BASE}/{query}", json=OUTCOME)
    out = client.fetch(BASE, {"k": query}, token=None)
    assert isinstance(out["k"], FetchError) and out["k"].reason == "not-fhir"


@pytest.mark.parametrize("payload", [[1, 2], {"no": "resourceType"}, {"resourceType": "Patient"}])
def test_non_bundle_answer_to_search_is_not_fhir(client, mocked, payload) -> None:
    mocked.get(f"{BASE}/Condition?patient=p1", json=payload)
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "not-fhir"


@pytest.mark.parametrize("member,value", [("link", 5), ("link", True), ("link", {"a": 1}),
                                          ("entry", 5), ("entry", {"a": 1}), ("entry", "x")])
def test_a_searchset_whose_link_or_entry_is_not_an_array_is_not_fhir(client, mocked, member,
                                                                       value) -> None:
    page = {**bundle(cond(1)), member: value}
    mocked.get(f"{BASE}/Condition?patient=p1", json=page)
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "not-fhir"


def test_read_of_wrong_type_is_not_fhir(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Practitioner", "id": "p1"})
    out = client.fetch(BASE, {"p": "Patient/p1"}, token=None)
    assert isinstance(out["p"], FetchError) and out["p"].reason == "not-fhir"


def test_connection_error(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", body=requests.ConnectionError("refused"))
    out = client.fetch(BASE, {"p": "Patient/p1"}, token=None)
    assert isinstance(out["p"], FetchError) and out["p"].reason == "connection"


def test_one_failing_key_does_not_spoil_the_others(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    mocked.get(f"{BASE}/Condition?patient=p1", status=503)
    out = client.fetch(BASE, {"p": "Patient/p1", "c": "Condition?patient=p1"}, token=None)
    assert ids(out["p"]) == ["p1"]
    assert isinstance(out["c"], FetchError) and out["c"].reason == "http-503"


# ---------------------------------------------------------------- paging abuse


def test_next_pointing_at_itself_stops_quickly(client, mocked) -> None:
    url = f"{BASE}/Condition?patient=p1"
    mocked.get(url, json=bundle(cond(1), next_url=url))
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "next-loop"
    assert len(mocked.calls) == 1  # stopped at once: the page was not asked for again


def test_next_cycle_between_two_pages_is_detected(client, mocked) -> None:
    p1, p2 = f"{BASE}/Condition?patient=p1", f"{BASE}/Condition?patient=p1&page=2"
    mocked.get(p1, json=bundle(cond(1), next_url=p2))
    mocked.get(p2, json=bundle(cond(2), next_url=p1))
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "next-loop"
    assert len(mocked.calls) == 2


def test_next_equal_to_self_link_is_a_loop(client, mocked) -> None:
    canonical = f"{BASE}/Condition?patient=p1&_sort=id"
    mocked.get(
        f"{BASE}/Condition?patient=p1",
        json=bundle(cond(1), self_url=canonical, next_url=canonical),
    )
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "next-loop"


def test_too_many_pages(client, mocked) -> None:
    # max_pages=5 in the fixture: pages 1..5 are fetched, the 6th is refused.
    for i in range(1, 8):
        mocked.get(
            f"{BASE}/Condition?patient=p1&page={i}",
            json=bundle(cond(i), next_url=f"{BASE}/Condition?patient=p1&page={i + 1}"),
        )
    out = client.fetch(BASE, {"c": "Condition?patient=p1&page=1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "too-many-pages"
    assert len(mocked.calls) == 5


def test_too_many_resources(mocked) -> None:
    with FhirClient(limits=limits_(max_resources=3)) as small:
        mocked.get(f"{BASE}/Condition?patient=p1", json=bundle(*(cond(i) for i in range(4))))
        out = small.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "too-many-resources"


def test_keep_filters_every_page_and_the_limit_counts_every_match(mocked) -> None:
    p1 = f"{BASE}/Condition?patient=p1"
    p2 = f"{BASE}?_getpages=abc&_page=2"
    mocked.get(p1, json=bundle(cond(1), cond(2), cond(3), next_url=p2, self_url=p1))
    mocked.get(p2, json=bundle(cond(4), cond(5), self_url=p2))
    seen: list[str] = []

    def odd_only(resource: dict) -> bool:
        seen.append(resource["id"])
        return int(resource["id"][1:]) % 2 == 1

    with FhirClient(limits=limits_(max_resources=5)) as small:
        out = small.fetch(BASE, {"c": "Condition?patient=p1"}, token=None, keep=odd_only)
        assert ids(out["c"]) == ["c1", "c3", "c5"]
        assert sorted(seen) == ["c1", "c2", "c3", "c4", "c5"]
        # Five matches are the limit even though only three are kept: a sixth is too many.
        mocked.get(p2, json=bundle(cond(4), cond(5), cond(6), self_url=p2))
        out = small.fetch(BASE, {"c": "Condition?patient=p1"}, token=None, keep=odd_only)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "too-many-resources"


@pytest.mark.parametrize(
    "other",
    [
        "https://evil.test/r4/Condition?page=2",
        "https://fhir.test/r4-other/Condition?page=2",
        "http://fhir.test/r4/Condition?page=2",
        "https://fhir.test:8443/r4/Condition?page=2",
    ],
)
def test_next_off_server_is_refused_without_calling_it(client, mocked, other: str) -> None:
    mocked.get(f"{BASE}/Condition?patient=p1", json=bundle(cond(1), next_url=other))
    trap = mocked.get(other, json=bundle(cond(99)))
    out = client.fetch(BASE, {"c": "Condition?patient=p1"}, token=TOKEN)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "next-off-server"
    assert trap.call_count == 0
    assert len(mocked.calls) == 1


def test_prefetched_bundle_next_off_server_is_refused(client, mocked) -> None:
    trap = mocked.get("https://evil.test/page2", json=bundle(cond(2)))
    prefetched = bundle(cond(1), next_url="https://evil.test/page2")
    out = client.fetch(BASE, {}, token=TOKEN, follow_bundles={"c": prefetched})
    assert isinstance(out["c"], FetchError) and out["c"].reason == "next-off-server"
    assert trap.call_count == 0


def test_body_over_size_cap_is_refused(mocked) -> None:
    with FhirClient(limits=limits_(max_response_bytes=1000)) as small:
        big = bundle(*(cond(i) for i in range(200)))
        mocked.get(f"{BASE}/Condition?patient=p1", json=big)
        out = small.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "too-large"


def test_pages_over_the_call_s_byte_budget_are_refused_however_small_each(mocked) -> None:
    """A server sending page after page (each under the response cap) cannot fill the worker's
    memory until the deadline: all responses of one call share one budget."""
    page = bundle(*(cond(i) for i in range(20)))
    size = len(json.dumps(page))
    for n in range(1, 9):
        next_page = bundle(*(cond(i) for i in range(20)), next_url=f"{BASE}/page{n + 1}")
        mocked.get(f"{BASE}/page{n}", json=next_page)
    mocked.get(f"{BASE}/Condition?patient=p1",
               json=bundle(*(cond(i) for i in range(20)), next_url=f"{BASE}/page1"))
    mocked.get(f"{BASE}/Observation?patient=p1", json=page)
    budget = 5 * size  # fewer bytes than the ten Condition pages
    with FhirClient(limits=limits_(max_response_bytes=2 * size, max_call_bytes=budget)) as c:
        out = c.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
        assert isinstance(out["c"], FetchError) and out["c"].reason == "too-large"
        # A new call has a budget of its own.
        out = c.fetch(BASE, {"o": "Observation?patient=p1"}, token=None)
        assert len(out["o"]) == 20


@pytest.mark.parametrize(
    "query",
    [
        "../admin/Patient/p1",
        "Patient/../../admin",
        "Patient/%2e%2e/%2e%2e/admin",
        "https://evil.test/Patient/p1",
        "Patient/p1#x",
        "Condition?patient=p1\r\nX-Injected: 1",
        "?patient=p1",
        "",
    ],
)
def test_queries_that_escape_the_base_are_refused(client, mocked, query: str) -> None:
    out = client.fetch(BASE, {"q": query}, token=TOKEN)
    assert isinstance(out["q"], FetchError) and out["q"].reason == "bad-query"
    assert len(mocked.calls) == 0


# ---------------------------------------------------------------- redirects and the token


def test_redirect_to_other_host_refused_and_token_never_sent_there(client, mocked) -> None:
    mocked.get(
        f"{BASE}/Patient/p1",
        status=302,
        headers={"Location": "https://evil.test/steal/Patient/p1"},
    )
    trap = mocked.get("https://evil.test/steal/Patient/p1", json={"resourceType": "Patient"})
    out = client.fetch(BASE, {"p": "Patient/p1"}, token=TOKEN)
    assert isinstance(out["p"], FetchError) and out["p"].reason == "redirect-refused"
    assert trap.call_count == 0
    assert all(urlsplit(c.request.url).hostname == "fhir.test" for c in mocked.calls)


def test_redirect_outside_base_path_on_same_host_refused(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=307, headers={"Location": "/admin/Patient/p1"})
    trap = mocked.get("https://fhir.test/admin/Patient/p1", json={"resourceType": "Patient"})
    out = client.fetch(BASE, {"p": "Patient/p1"}, token=TOKEN)
    assert isinstance(out["p"], FetchError) and out["p"].reason == "redirect-refused"
    assert trap.call_count == 0


def test_redirect_within_base_is_followed_with_token(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=301, headers={"Location": f"{BASE}/Patient/p1-new"})
    mocked.get(f"{BASE}/Patient/p1-new", json={"resourceType": "Patient", "id": "p1-new"})
    out = client.fetch(BASE, {"p": "Patient/p1"}, token=TOKEN)
    assert ids(out["p"]) == ["p1-new"]
    assert [c.request.headers["Authorization"] for c in mocked.calls] == [f"Bearer {TOKEN}"] * 2


def test_redirect_loop_within_base_gives_up(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", status=302, headers={"Location": f"{BASE}/Patient/p1"})
    out = client.fetch(BASE, {"p": "Patient/p1"}, token=None)
    assert isinstance(out["p"], FetchError) and out["p"].reason == "too-many-redirects"
    assert len(mocked.calls) == 4


def test_headers_with_token(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    client.fetch(BASE, {"p": "Patient/p1"}, token=TOKEN)
    headers = mocked.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/fhir+json"


def test_headers_without_token(client, mocked) -> None:
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    client.fetch(BASE, {"p": "Patient/p1"}, token=None)
    headers = mocked.calls[0].request.headers
    assert "Authorization" not in headers
    assert headers["Accept"] == "application/fhir+json"


def test_token_and_urls_are_not_logged(client, mocked, caplog) -> None:
    caplog.set_level("DEBUG")
    mocked.get(f"{BASE}/Patient/secret-patient-id", status=401)
    mocked.get(f"{BASE}/Condition?patient=secret-patient-id", json=bundle(cond(1)))
    client.fetch(
        BASE,
        {"p": "Patient/secret-patient-id", "c": "Condition?patient=secret-patient-id"},
        token=TOKEN,
    )
    fetch_logs = [r for r in caplog.records if r.name == "cds_service.fhir.client"]
    assert fetch_logs, "expected debug records with key/status/timing"
    text = "\n".join(r.getMessage() for r in fetch_logs)
    assert "status=401" in text and "reason=unauthorized" in text
    assert TOKEN not in text and "secret-patient-id" not in text and "fhir.test" not in text


# ---------------------------------------------------------------- time budget (mocked)


def test_timeout_from_transport_is_a_fetch_error(client, mocked) -> None:
    def raise_timeout(request):
        raise requests.Timeout("read timed out")

    mocked.add_callback(responses.GET, f"{BASE}/Condition", callback=raise_timeout)
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    started = time.monotonic()
    out = client.fetch(BASE, {"c": "Condition?patient=p1", "p": "Patient/p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "timeout"
    assert ids(out["p"]) == ["p1"]
    assert time.monotonic() - started < client.limits.deadline_s


def test_deadline_cuts_off_slow_work_and_returns_on_time(mocked) -> None:
    release = threading.Event()

    def slow(request):
        release.wait(5)
        return (200, {}, json.dumps(bundle(cond(1))))

    mocked.add_callback(responses.GET, f"{BASE}/Condition", callback=slow)
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    with FhirClient(limits=limits_(timeout_s=5.0, deadline_s=0.4)) as c:
        started = time.monotonic()
        out = c.fetch(BASE, {"c": "Condition?patient=p1", "p": "Patient/p1"}, token=None)
        elapsed = time.monotonic() - started
        release.set()
    assert isinstance(out["c"], FetchError) and out["c"].reason == "deadline"
    assert ids(out["p"]) == ["p1"]
    assert 0.35 < elapsed < 0.9


def test_duplicate_key_in_queries_and_follow_bundles_is_rejected(client) -> None:
    with pytest.raises(ValueError):
        client.fetch(BASE, {"c": "Condition"}, token=None, follow_bundles={"c": bundle()})


def test_empty_request_returns_empty_dict(client, mocked) -> None:
    assert client.fetch(BASE, {}, token=None) == {}


# ---------------------------------------------------------------- real sockets on loopback


class _Server:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0


@pytest.fixture
def local_fhir(monkeypatch) -> Iterator[tuple[str, _Server]]:
    """ThreadingHTTPServer on 127.0.0.1: /fhir/Slow hangs, /fhir/Obs answers after 0.3 s."""
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    state = _Server()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            with state.lock:
                state.active += 1
                state.peak = max(state.peak, state.active)
            try:
                if self.path.startswith("/fhir/Slow"):
                    state.release.wait(5)
                elif self.path.startswith(("/fhir/Drip", "/fhir/Stall")):
                    self._partial_body(drip=self.path.startswith("/fhir/Drip"))
                    return
                elif self.path.startswith("/fhir/HeaderDrip"):
                    self._dripped_headers()
                    return
                else:
                    time.sleep(0.3)
                body = json.dumps(bundle({"resourceType": "Observation", "id": "o1"})).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should
            finally:
                with state.lock:
                    state.active -= 1

        def _partial_body(self, *, drip: bool) -> None:
            """Headers at once, then a body that drips a byte every 0.1 s or stalls."""
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"resourceType": "Bundle", "entry": [')
            self.wfile.flush()
            for _ in range(50):
                if state.release.wait(0.1 if drip else 5):
                    return
                self.wfile.write(b" ")
                self.wfile.flush()

        def _dripped_headers(self) -> None:
            """A status line, then a header line every 0.2 s for up to 10 s: each socket read
            gets something, so no socket timeout ever fires."""
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self.wfile.flush()
            for _ in range(50):
                if state.release.wait(0.2):
                    return
                self.wfile.write(b"X-Drip: 1\r\n")
                self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir", state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def test_real_slow_server_times_out_within_deadline(local_fhir) -> None:
    base, _ = local_fhir
    limits = limits_(timeout_s=0.5, deadline_s=1.0)
    with FhirClient(limits=limits) as c:
        started = time.monotonic()
        out = c.fetch(base, {"slow": "Slow?patient=p1"}, token=TOKEN)
        elapsed = time.monotonic() - started
    assert isinstance(out["slow"], FetchError)
    assert out["slow"].reason == "timeout"
    assert elapsed < limits.deadline_s + 0.5


@pytest.mark.parametrize("path", ["Drip", "Stall"])
def test_real_slow_body_is_cut_at_the_per_call_timeout(local_fhir, path: str) -> None:
    # Drip: every socket read succeeds quickly, only the elapsed-time check can stop it.
    # Stall: the read timeout fires while streaming the body (requests wraps it oddly).
    base, _ = local_fhir
    limits = limits_(timeout_s=0.5, deadline_s=3.0)
    with FhirClient(limits=limits) as c:
        started = time.monotonic()
        out = c.fetch(base, {"k": f"{path}?patient=p1"}, token=None)
        elapsed = time.monotonic() - started
    assert isinstance(out["k"], FetchError) and out["k"].reason == "timeout"
    assert elapsed < limits.timeout_s + 0.4


def test_real_dripped_headers_free_the_fetching_thread_at_the_deadline(local_fhir) -> None:
    """Headers sent a line at a time never trip the per-read timeout; without a cut at the
    deadline the fetching thread stayed blocked for as long as the server went on (here 10 s),
    and with every thread so held, calls to healthy EHRs got 412."""
    base, _ = local_fhir
    limits = limits_(timeout_s=0.5, deadline_s=1.0)
    with FhirClient(limits=limits, max_workers=1) as c:  # one thread: held, nothing else runs
        started = time.monotonic()
        out = c.fetch(base, {"k": "HeaderDrip?patient=p1"}, token=None)
        assert isinstance(out["k"], FetchError) and out["k"].reason == "deadline"
        assert time.monotonic() - started < limits.deadline_s + 0.5
        time.sleep(0.3)  # the cut lands at the deadline; the thread is back in the pool
        after = c.fetch(base, {"fast": "Obs?patient=p1"}, token=None)
    assert ids(after["fast"]) == ["o1"]


def _drip_then_fast(base: str, conn) -> None:  # noqa: ANN001 - a multiprocessing Connection
    limits = limits_(timeout_s=0.5, deadline_s=1.0)
    with FhirClient(limits=limits, max_workers=1) as c:
        first = c.fetch(base, {"k": "HeaderDrip?patient=p1"}, token=None)["k"]
        time.sleep(0.3)
        after = c.fetch(base, {"fast": "Obs?patient=p1"}, token=None)["fast"]
    conn.send((getattr(first, "reason", None),
               ids(after) if isinstance(after, list) else getattr(after, "reason", repr(after))))


def test_a_forked_worker_cuts_dripped_headers_too(local_fhir) -> None:
    """gunicorn forks its workers from a process that may already run the watchdog thread; the
    child has none (threads do not survive fork) and must start its own."""
    import multiprocessing

    base, _ = local_fhir
    limits = limits_(timeout_s=0.5, deadline_s=1.0)
    with FhirClient(limits=limits, max_workers=1) as c:  # the parent's watchdog is running
        c.fetch(base, {"k": "HeaderDrip?patient=p1"}, token=None)
    ours, theirs = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_drip_then_fast, args=(base, theirs))
    child.start()
    try:
        assert ours.poll(15), "the forked child did not answer"
        assert ours.recv() == ("deadline", ["o1"])
    finally:
        child.join(10)


def test_real_slow_server_hits_overall_deadline(local_fhir) -> None:
    base, _ = local_fhir
    limits = limits_(timeout_s=5.0, deadline_s=0.6)
    with FhirClient(limits=limits) as c:
        started = time.monotonic()
        out = c.fetch(base, {"slow": "Slow?patient=p1", "fast": "Obs?patient=p1"}, token=None)
        elapsed = time.monotonic() - started
    assert isinstance(out["slow"], FetchError) and out["slow"].reason in {"deadline", "timeout"}
    assert ids(out["fast"]) == ["o1"]
    assert elapsed < limits.deadline_s + 0.5


def test_real_queries_run_in_parallel(local_fhir) -> None:
    base, state = local_fhir
    queries = {f"q{i}": f"Obs?patient=p1&n={i}" for i in range(4)}
    before = set(threading.enumerate())  # other tests' clients may still have their threads
    with FhirClient(limits=limits_(timeout_s=2.0, deadline_s=3.0), max_workers=8) as c:
        out = c.fetch(base, queries, token=None)
        # A second call reuses the client's pool instead of creating threads per call.
        c.fetch(base, queries, token=None)
        workers = [t for t in threading.enumerate()
                   if t.name.startswith("fhir-fetch") and t not in before]
    assert all(ids(out[k]) == ["o1"] for k in queries)
    assert state.peak >= 4  # the server saw all four at once (no timing: the machine is shared)
    assert len(workers) <= 8


def test_real_connection_refused_is_a_connection_error(monkeypatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with FhirClient(limits=limits_(timeout_s=0.5, deadline_s=1.0)) as c:
        out = c.fetch(f"http://127.0.0.1:{port}/fhir", {"p": "Patient/p1"}, token=TOKEN)
    # "connection", not "timeout" or "deadline": the refusal was seen at once, not waited out
    assert isinstance(out["p"], FetchError) and out["p"].reason == "connection"


def test_a_late_cut_never_lands_on_the_next_request_of_the_same_connection(monkeypatch) -> None:
    """The watchdog decides to cut A (its headers are still coming at its deadline) and is then
    held up (here 0.3 s) before the shutdown, while A's headers complete and its connection
    goes back to the pool. B reuses the connection: the cut must not hit B (it once did: B got
    'connection', and over TLS a request could have gone out in clear text)."""
    from cds_service import outbound_http

    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    body = json.dumps(bundle()).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: B reuses A's connection

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self.wfile.flush()
            if "/A" in self.path:  # headers done just after A's 0.5 s deadline
                for _ in range(3):
                    time.sleep(0.18)
                    self.wfile.write(b"X-Drip: 1\r\n")
                    self.wfile.flush()
            else:
                time.sleep(0.4)
            self.wfile.write(b"Content-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    cut = outbound_http._cut

    def late_cut(connection) -> None:  # noqa: ANN001
        time.sleep(0.3)  # the watchdog thread descheduled between its check and the shutdown
        cut(connection)

    monkeypatch.setattr(outbound_http, "_cut", late_cut)
    try:
        with FhirClient(limits=limits_(timeout_s=1.5, deadline_s=0.5), max_workers=1) as c:
            c.fetch(base, {"A": "A?patient=p1"}, token=None)
            time.sleep(0.1)
            b = c.fetch(base, {"B": "B?patient=p2"}, token=None, deadline=time.monotonic() + 2)
    finally:
        server.shutdown()
        server.server_close()
    assert b["B"] == [], b["B"]


@pytest.mark.parametrize(
    ("query", "sent"),
    [
        ("Condition?patient=p1", "Condition?patient=p1&_count=500"),
        ("Observation?patient=p1&_count=7", "Observation?patient=p1&_count=7"),  # its own kept
        ("Observation?", "Observation?_count=500"),
        ("Observation", "Observation?_count=500"),
        ("Observation?patient=p1&", "Observation?patient=p1&_count=500"),
        ("Observation?patient=p1&_count:exact=5", "Observation?patient=p1&_count:exact=5"),
        # Its own, percent-encoded (requests sends "_" for "%5F"): kept, never sent twice.
        ("Observation?patient=p1&%5Fcount=5", "Observation?patient=p1&_count=5"),
        ("Observation?code=_count", "Observation?code=_count&_count=500"),  # a value, not a name
        ("Patient/p1", "Patient/p1"),  # a read is not a search
    ],
)
def test_searches_ask_for_the_page_size_unless_they_name_one(mocked, query, sent) -> None:
    mocked.get(re.compile(re.escape(BASE) + r"/.*"), json=bundle())
    mocked.get(f"{BASE}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    with FhirClient(limits=FetchLimits(page_size=500)) as c:
        c.fetch(BASE, {"k": query}, token=None)
    assert [call.request.url for call in mocked.calls] == [f"{BASE}/{sent}"]


def test_an_answer_that_arrives_after_the_deadline_is_not_used(mocked, monkeypatch) -> None:
    """The watchdog cuts a connection at the deadline; an answer completed after it (possibly
    cut short: headers ended by the cut read as an empty 200) is a "deadline", whichever of the
    cut and the caller's wait comes first (the race made a forked-worker test flaky)."""
    from cds_service.fhir import client as client_module

    late = [0.0]
    real = client_module.monotonic
    monkeypatch.setattr(client_module, "monotonic", lambda: real() + late[0])

    def slow_answer(request):
        late[0] = 100.0  # the server answered, but only after the call's deadline
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(bundle(cond(1)))

    mocked.add_callback(responses.GET, f"{BASE}/Condition", callback=slow_answer)
    with FhirClient(limits=limits_(timeout_s=1.0, deadline_s=3.0)) as c:
        out = c.fetch(BASE, {"c": "Condition?patient=p1"}, token=None,
                      deadline=real() + 3.0)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "deadline"


def test_a_page_of_tiny_values_is_charged_for_its_values_not_its_bytes(mocked) -> None:
    """A security review: seven gzip replies, each within the byte caps, made one call hold
    about 850 MB, since an empty object is 2 bytes of text and 64 of Python. A text is charged
    the larger of its size and 16 bytes a value (strict_json.cost)."""
    empties = b'{"resourceType":"Bundle","type":"searchset","x":[' + b"{}," * 3000 + b"{}]}"
    assert len(empties) < 10_000
    mocked.get(f"{BASE}/Condition?patient=p1", body=empties,
               content_type="application/fhir+json")
    with FhirClient(limits=limits_(max_response_bytes=20_000)) as small:
        out = small.fetch(BASE, {"c": "Condition?patient=p1"}, token=None)
    assert isinstance(out["c"], FetchError) and out["c"].reason == "too-large"
    mocked.get(f"{BASE}/Observation?patient=p1", body=empties,
               content_type="application/fhir+json")
    with FhirClient(limits=limits_(max_call_bytes=20_000)) as small:
        out = small.fetch(BASE, {"o": "Observation?patient=p1"}, token=None)
    assert isinstance(out["o"], FetchError) and out["o"].reason == "too-large"
