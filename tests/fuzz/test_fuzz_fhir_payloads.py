"""Hypothesis against the FHIR payloads: real scenario requests, mutated where it hurts.

Schemathesis only knows the document, which says little about what sits inside a prefetched
Bundle. Here every request starts as a real fixture scenario (prefetch with the patient's FHIR
resources, draft orders) and gets 1-4 mutations anywhere in its tree: wrong types, missing
members, huge strings, odd unicode (NUL, line separators, noncharacters, bidi overrides),
deep nesting, invalid FHIR inside valid JSON (impossible dates, wrong resourceTypes, codes as
numbers), NaN/Infinity, duplicated keys. A second family sends raw bytes: truncated or invalid JSON,
invalid UTF-8, a BOM, enormous numbers, non-object bodies, wrong content types.

Invariant for every request: no 5xx; 4xx is an OperationOutcome; 200 matches the documented
response schema. Where the outcome is certain it is asserted exactly (a duplicated key is 400,
an oversized body 413, a non-JSON content type 415).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_app import APP, EXAMPLES, FUZZ_SETTINGS, TALLY
from tests.reliability.support import check_answer, known_call

SCENARIOS = (
    "pv-many-findings",
    "pv-beighton-local-flowsheet-code",
    "pv-mri-hip-after-normal-radiograph-bursitis",
    "select-opioid-steroid-brace",
    "sign-opioid-steroid-brace",
    "sign-rehab-programme-40-hours",
    "sign-mri-hip-no-radiograph",
)
CALLS = {name: known_call(name) for name in SCENARIOS}
MAX_BODY = APP.extensions["cds"].settings.max_body_bytes

Path = tuple[Any, ...]


def _paths(node: Any, prefix: Path = ()) -> list[Path]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            out.extend(_paths(child, (*prefix, index)))
    return out


PATHS = {name: _paths(call.body) for name, call in CALLS.items()}


def _nest(depth: int, dict_style: bool) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value} if dict_style else [value]
    return value


ODD_TEXT = st.sampled_from(
    [
        # Lone surrogates are refused by the JSON reader (tested on their own below); odd text
        # here is what gets past it, so that mutations reach the rules.
        "\u2028line\u2029",
        "\ufffe\uffff",  # noncharacters
        "\x00",
        "a\x00b",
        "\u202eevil",  # right-to-left override
        "\ufeff",
        "\U0010ffff",
        "Z\u0300\u0301\u0302\u0303\u0304",
        "\u0661\u0662\u0663\u0664-\u0660\u0661-\u0660\u0661",  # Arabic-Indic digits date
        "𝔭𝔞𝔱𝔦𝔢𝔫𝔱",
        "\r\n\t",
        "' OR 1=1 --",
        "{{context.patientId}}",
        "../../etc/passwd",
    ]
)
FHIR_JUNK = st.sampled_from(
    [
        "2020-13-45",
        "2020-02-30T25:61:00Z",
        "0000-00-00",
        "9999-12-31T23:59:59+14:00",
        "-1",
        "",
        " ",
        "Patient/",
        "Patient/../x",
        "urn:uuid:not-a-uuid",
        "http://snomed.info/sct",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "Q79.62",
        "M54.5",
        "entered-in-error",
        "preliminary",
        "Bundle",
        "OperationOutcome",
        "Binary",
        "NotAResourceType",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    ODD_TEXT,
    FHIR_JUNK,
)
JUNK = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=8), FHIR_JUNK), SCALARS, max_size=4),
    st.integers(min_value=1_000, max_value=300_000).map(lambda n: "x" * n),  # huge string
    st.builds(_nest, st.integers(min_value=2, max_value=120), st.booleans()),  # deep nesting
    st.just({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}]}),
    st.just({"resourceType": "Observation", "valueQuantity": {"value": "four"}}),
)


class Dup:
    """Marks a dict to be serialised with one key written twice (JSON allows the text)."""

    def __init__(self, items: dict, key: str) -> None:
        self.items, self.key = items, key


def _dump(node: Any) -> str:
    if isinstance(node, Dup):
        pairs = [*node.items.items(), (node.key, node.items[node.key])]
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in pairs) + "}"
    if isinstance(node, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_dump(v) for v in node) + "]"
    return json.dumps(node)  # NaN/Infinity become the (non-standard) literals


def _has_dup(node: Any) -> bool:
    if isinstance(node, Dup):
        return True
    if isinstance(node, dict):
        return any(_has_dup(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_dup(v) for v in node)
    return False


def _get(root: Any, path: Path) -> Any:
    for step in path:
        root = root[step]
    return root


@st.composite
def mutated_request(draw: st.DrawFn) -> tuple[str, str, bytes, set[str]]:
    name = draw(st.sampled_from(SCENARIOS))
    body = copy.deepcopy(CALLS[name].body)
    applied: set[str] = set()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(body)[1:]
        if not paths:  # the root became a Dup
            break
        path = draw(st.sampled_from(paths))
        try:
            parent = _get(body, path[:-1])
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced an ancestor
        if isinstance(parent, Dup):
            continue
        kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "duplicate"]))
        if kind == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind == "duplicate" and isinstance(parent, dict):
            grand = _get(body, path[:-2]) if len(path) > 1 else None
            if grand is None:
                body = Dup(body, path[-1])  # type: ignore[assignment]
            else:
                grand[path[-2]] = Dup(parent, path[-1])
        else:
            kind = "replace"
            parent[path[-1]] = copy.deepcopy(draw(JUNK))  # st.just values are shared
        applied.add(kind)
    if _has_dup(body):  # a later mutation may have replaced the duplicated object
        applied.add("duplicated-key-sent")
    raw = _dump(body)
    return name, CALLS[name].path, raw.encode("utf-8", "surrogatepass"), applied


def _post(path: str, raw: bytes, content_type: str | None = "application/json"):
    headers = {"Content-Type": content_type} if content_type else {}
    return APP.test_client().post(path, data=raw, headers=headers)


@given(mutated_request())
@settings(FUZZ_SETTINGS, max_examples=4 * EXAMPLES)
def test_mutated_scenario_requests(case):
    TALLY.source = "hypothesis-mutated"
    _name, path, raw, applied = case
    response = _post(path, raw)
    status, body = response.status_code, response.get_data()
    check_answer(status, body, "CdsServiceResponse")
    if len(raw) > MAX_BODY:
        assert status == 413
    elif "duplicated-key-sent" in applied:
        assert status == 400, body[:300]


RAW_BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda name, cut: json.dumps(CALLS[name].body).encode()[:cut],
        st.sampled_from(SCENARIOS),
        st.integers(min_value=0, max_value=4000),
    ),
    st.builds(
        lambda name, junk: json.dumps(CALLS[name].body).encode().replace(b'"', junk, 1),
        st.sampled_from(SCENARIOS),
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"]),
    ),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(min_value=60, max_value=200_000)),
    st.builds(
        lambda n: b'{"a":' * n + b"1" + b"}" * n, st.integers(min_value=60, max_value=50_000)
    ),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'"text"',
            b"1",
            b"NaN",
            b'{"hook": 1e999}',
            b'{"hook": ' + b"9" * 5000 + b"}",
            b'{"hook": -Infinity}',
            b"\xef\xbb\xbf{}",  # UTF-8 BOM
            b'{"hook": "patient-view", "hook": "patient-view"}',
            b"{" + b'"k": 1,' * 100_000 + b'"k": 2}',
        ]
    ),
    st.builds(lambda n: b'{"x": "' + b"a" * n + b'"}', st.sampled_from([MAX_BODY, MAX_BODY + 1])),
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/fhir+json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ]
)
TARGETS = st.sampled_from(
    sorted({call.path for call in CALLS.values()} | {c.path + "/feedback" for c in CALLS.values()})
)


@given(RAW_BODIES, CONTENT_TYPES, TARGETS)
@settings(FUZZ_SETTINGS, max_examples=2 * EXAMPLES)
def test_raw_bodies(raw, content_type, path):
    TALLY.source = "hypothesis-raw"
    response = _post(path, raw, content_type)
    status, body = response.status_code, response.get_data()
    check_answer(status, body)
    json_type = content_type is not None and "json" in content_type
    if not json_type:
        assert status == 415, (status, content_type)
    elif len(raw) > MAX_BODY:
        assert status == 413


FEEDBACK_ENTRY = st.fixed_dictionaries(
    {
        "card": st.one_of(st.uuids().map(str), st.text(max_size=200), SCALARS),
        "outcome": st.one_of(st.sampled_from(["accepted", "overridden"]), SCALARS),
        "outcomeTimestamp": st.one_of(
            st.just("2026-01-02T03:04:05Z"), st.just("2026-01-02T03:04:05.123+01:00"), FHIR_JUNK,
            ODD_TEXT,
        ),
    },
    optional={
        "acceptedSuggestions": st.one_of(
            st.lists(st.fixed_dictionaries({"id": st.one_of(st.uuids().map(str), SCALARS)}),
                     max_size=3),
            SCALARS,
        ),
        "overrideReason": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "reason": st.one_of(
                        st.fixed_dictionaries(
                            {"system": st.one_of(st.just("http://example.org/r"), SCALARS),
                             "code": st.one_of(st.just("not-relevant"), SCALARS)},
                            optional={"display": st.one_of(st.text(max_size=20), JUNK)},
                        ),
                        JUNK,
                    ),
                    "userComment": st.one_of(st.text(max_size=50), ODD_TEXT, JUNK),
                },
            ),
            JUNK,
        ),
        "extension": JUNK,
    },
)


@given(
    st.lists(FEEDBACK_ENTRY, min_size=0, max_size=4),
    st.sampled_from(sorted({c.path + "/feedback" for c in CALLS.values()})),
)
@settings(FUZZ_SETTINGS, max_examples=2 * EXAMPLES)
def test_feedback_payloads(entries, path):
    TALLY.source = "hypothesis-feedback"
    raw = json.dumps({"feedback": entries}).encode("utf-8", "surrogatepass")
    response = _post(path, raw)
    check_answer(response.status_code, response.get_data(), "FeedbackResponse")


def test_nan_in_a_resource_does_not_leak_into_the_answer():
    """A deliberate case: NaN (accepted by Python's JSON reader) inside a Beighton value."""
    call = CALLS["pv-many-findings"]
    body = copy.deepcopy(call.body)
    for entry in body["prefetch"]["observations"].get("entry", []):
        resource = entry["resource"]
        if "valueInteger" in resource or "valueQuantity" in resource:
            resource.pop("valueInteger", None)
            resource["valueQuantity"] = {"value": math.nan}
    response = _post(call.path, _dump(body).encode())
    check_answer(response.status_code, response.get_data(), "CdsServiceResponse")
    assert b"NaN" not in response.get_data()


def test_lone_surrogates_are_refused_not_a_500():
    """Found by this file: a JSON-escaped half surrogate pair in a feedback comment reached the
    database driver (which cannot encode it) and the answer was a 500."""
    entry = {
        "card": "0f8a3c2e-7d41-4b6a-9c55-2e1d0a9b8c7f",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-01-02T03:04:05Z",
        "overrideReason": {"userComment": "\ud800 comment"},
    }
    path = CALLS["sign-opioid-steroid-brace"].path
    response = _post(path + "/feedback", json.dumps({"feedback": [entry]}).encode())
    assert response.status_code == 400
    check_answer(400, response.get_data())
    assert b"surrogate" in response.get_data()


def test_lone_surrogates_in_hook_calls_are_refused():
    """A JSON-escaped half surrogate pair is not Unicode text. Hook calls once let it through
    (their strings are never stored); the reader now refuses it wherever it sits, with a 400
    that says so, and the same body without it still gets its cards."""
    call = CALLS["sign-opioid-steroid-brace"]
    placements = {
        "patientId": lambda b: b["context"].__setitem__("patientId", "a\udfffb"),
        "userId": lambda b: b["context"].__setitem__("userId", "Practitioner/\udfff"),
        "encounterId": lambda b: b["context"].__setitem__("encounterId", "\ud800"),
        "hookInstance": lambda b: b.__setitem__("hookInstance", "a\udfffb"),
        "selections": lambda b: b["context"].__setitem__("selections", ["Patient/\ud800"]),
        "draft order note": lambda b: b["context"]["draftOrders"]["entry"][0]["resource"]
        .setdefault("note", [])
        .append({"text": "\ud800 note \udfff"}),
        "prefetch resource id": lambda b: b["prefetch"]["conditions"]["entry"][0]["resource"]
        .__setitem__("id", "\udfff"),
    }
    for where, place in placements.items():
        body = copy.deepcopy(call.body)
        place(body)
        response = _post(call.path, json.dumps(body).encode())
        check_answer(response.status_code, response.get_data())
        assert response.status_code == 400, where
        assert b"surrogate" in response.get_data(), where
    response = _post(call.path, json.dumps(call.body).encode())
    assert response.status_code == 200
    assert {c["source"]["topic"]["code"] for c in response.get_json()["cards"]} == set(
        call.expected
    )
