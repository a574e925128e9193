"""The chunked reader of long hook bodies answers exactly as the plain strict reader does.

For every text, :func:`loads_pruned` must either raise what :func:`loads` raises (same class, same
message) or return the same value less the Bundle entries ``keep`` refused, and count them. The
generated texts aim at what could fool it: repeated names at every level it finds spans in,
escapes in names and values, nesting at the depth limit, odd shapes where a Bundle is expected,
and text that is not JSON at all.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.api import body as body_module
from cds_service.api import pruning_reader
from cds_service.api.pruning_reader import loads_pruned
from cds_service.devtools.scenarios import load_scenario
from cds_service.strict_json import loads

HOOK_CALL_MEMBERS = {"hook", "hookInstance", "fhirServer", "fhirAuthorization", "context",
                     "extension", "prefetch"}


def keep(item: Any) -> bool:
    """The test's filter: drop an entry whose resource says ``"drop"``."""
    return not (
        isinstance(item, dict) and isinstance(item.get("resource"), dict)
        and "drop" in item["resource"]
    )


def pruned(value: Any) -> tuple[Any, int]:
    """What the plain reading becomes once the filter has run on every prefetch Bundle.

    Only a JSON object is filtered (members a hook call does not define, a vendor's say, are
    kept as they are); a prefetch value that is neither an object nor null (refused by the
    service anyway) leaves it as it is.
    """
    value = copy.deepcopy(value)
    dropped = 0
    if not isinstance(value, dict):
        return value, 0
    prefetch = value.get("prefetch")
    if isinstance(prefetch, dict) and all(
        v is None or isinstance(v, dict) for v in prefetch.values()
    ):
        for bundle in prefetch.values():
            if (isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle"
                    and isinstance(bundle.get("entry"), list)):
                kept = [item for item in bundle["entry"] if keep(item)]
                dropped += len(bundle["entry"]) - len(kept)
                bundle["entry"] = kept
    return value, dropped


def outcome(read, text: bytes) -> tuple[str, Any]:
    try:
        return "value", read(text)
    except Exception as error:  # noqa: BLE001 - the class and message are what is compared
        return "error", (type(error), str(error))


def assert_same_as_plain(text: bytes) -> None:
    plain = outcome(loads, text)
    chunked = outcome(lambda t: loads_pruned(t, keep), text)
    if plain[0] == "error":
        assert chunked == plain
    else:
        assert chunked == ("value", pruned(plain[1]))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(pruning_reader, "CHUNK", 2)  # chunk boundaries in every test


ENTRY_KEEP = '{"resource": {"resourceType": "Observation", "id": "k"}}'
ENTRY_DROP = '{"resource": {"resourceType": "Observation", "drop": true}}'


def hook_body(entries: str, *, bundle_extra: str = "", top_extra: str = "",
              prefetch_extra: str = "") -> bytes:
    return (
        '{"hook": "patient-view"' + top_extra + ', "prefetch": {"a": {"resourceType": "Bundle"'
        + bundle_extra + ', "entry": [' + entries + "]}" + prefetch_extra + "}}"
    ).encode()


def test_drops_and_counts_the_entries_keep_refuses():
    text = hook_body(",".join([ENTRY_KEEP, ENTRY_DROP, ENTRY_DROP, ENTRY_KEEP, ENTRY_DROP]))
    value, dropped = loads_pruned(text, keep)
    assert dropped == 3
    assert [e["resource"]["id"] for e in value["prefetch"]["a"]["entry"]] == ["k", "k"]
    assert_same_as_plain(text)


def test_a_member_a_hook_call_does_not_define_is_kept_and_entries_are_still_dropped():
    """A vendor's member used to send a long body the plain way: every entry parsed and kept."""
    vendor = ', "com.example.trace": {"id": [1, "x"]}, "context": {"patientId": "p"}'
    text = hook_body(",".join([ENTRY_KEEP, ENTRY_DROP, ENTRY_DROP]), top_extra=vendor)
    value, dropped = loads_pruned(text, keep)
    assert dropped == 2
    assert value["com.example.trace"] == {"id": [1, "x"]} and value["context"] == {"patientId": "p"}
    assert_same_as_plain(text)


@pytest.mark.parametrize(
    "text",
    [
        # A name repeated at each level where spans are found, and inside an entry in a later chunk.
        hook_body(ENTRY_KEEP, top_extra=', "hook": "order-sign"'),
        hook_body(ENTRY_DROP, top_extra=', "vendor": 1, "vendor": 2'),
        hook_body(ENTRY_DROP, top_extra=', "vendor": 1, "hook": "order-sign"'),
        b'{"vendor": 1, "prefetch": {"a": 5}}',
        hook_body(ENTRY_KEEP, prefetch_extra=', "a": null'),
        hook_body(ENTRY_KEEP, bundle_extra=', "resourceType": "Bundle"'),
        hook_body(",".join([ENTRY_KEEP] * 5 + ['{"resource": {"id": 1, "id": 2}}'])),
        hook_body(ENTRY_DROP + ', {"resource": {"drop": 1, "drop": 2}}'),
        # Repeats spelled differently, next to escaped quotes and backslashes.
        b'{"pre\\u0066etch": {}, "prefetch": {}}',
        hook_body(ENTRY_KEEP, top_extra=', "q\\"": "\\\\", "q\\u0022": 1'),
        # Not JSON, or not the shape looked for.
        hook_body(ENTRY_KEEP + ", NaN"),
        hook_body('{"resource": {"x": "\\ud800"}}'),
        hook_body('{"resource": {"x": 1e400}}'),
        hook_body(ENTRY_DROP, bundle_extra=', "total": 12345678901234567890123'),
        hook_body(ENTRY_KEEP) + b" x",
        b"\xef\xbb\xbf" + hook_body(ENTRY_DROP),
        b"\xef\xbb\xbf" * 2 + hook_body(ENTRY_DROP),  # one mark is skipped, not two
        hook_body(ENTRY_DROP).decode().encode("utf-16"),
        hook_body(ENTRY_DROP).replace(b'"k"', b'"\xff"'),
        b'[{"prefetch": {}}]',
        b'{"prefetch": null}',
        b'{"prefetch": [1, 2]}',
        b'{"prefetch": {"a": null, "b": 5, "c": [1]}}',
        b'{"prefetch": {"a": {"resourceType": "Bundle", "entry": {"x": 1}}}}',
        b'{"prefetch": {"a": {"resourceType": "List", "entry": [' + ENTRY_DROP.encode() + b"]}}}",
        b'{"prefetch": {"a": {"resourceType": "B\\u0075ndle", "entry": ['
        + ENTRY_DROP.encode() + b"]}}}",
        b'{"prefetch": {"a": {"entry": [' + ENTRY_DROP.encode() + b'], "resourceType": "Bundle"}}}',
        b'{"prefetch": {"a": {"resourceType": "Bundle", "entry": []}}}',
        b"{}",
        b"",
    ],
)
def test_same_answer_as_the_plain_reader(text):
    assert_same_as_plain(text)


@pytest.mark.parametrize("error", [TypeError("bug"), ValueError("bug")])
def test_what_keep_raises_is_not_taken_for_a_bad_body(error):
    def broken(item: Any) -> bool:
        raise error

    with pytest.raises(type(error), match="bug"):
        loads_pruned(hook_body(ENTRY_KEEP), broken)


def test_a_bundle_keeps_its_member_order():
    text = b'{"prefetch": {"a": {"entry": [], "resourceType": "Bundle", "type": "searchset"}}}'
    assert list(loads_pruned(text, keep)[0]["prefetch"]["a"]) == ["entry", "resourceType", "type"]


@pytest.mark.parametrize("levels", [248, 249, 250, 251, 1_030])
def test_nesting_is_limited_where_it_was(levels):
    """An entry's resource sits 6 levels down; the plain reader's limit is 254 in all."""
    deep = "[" * levels + "]" * levels
    for entry in (f'{{"resource": {{"x": {deep}}}}}', f'{{"resource": {{"drop": {deep}}}}}'):
        assert_same_as_plain(hook_body(entry))
    assert_same_as_plain(hook_body(ENTRY_KEEP, top_extra=f', "context": {deep}'))
    assert_same_as_plain(hook_body(ENTRY_KEEP, bundle_extra=f', "meta": {deep}'))


# Generated bodies: names from a few characters that need escaping (so repeats are frequent),
# written out with every freedom JSON allows.
class Members(list):
    """A JSON object as (name, value) pairs, so that a name can repeat."""


_NAMES = st.sampled_from(["hook", "context", "prefetch", "entry", "resourceType", "drop",
                          "resource", "a", 'q"', "b\\", "\u00e9"])
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(alphabet='x"\\/\u00e9\U0001f600', max_size=4)
            | st.sampled_from(["Bundle", "Observation"]))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.lists(st.tuples(_NAMES, inner), max_size=3, unique_by=lambda member: member[0]).map(
        Members)
    | st.lists(st.tuples(_NAMES, inner), max_size=3).map(Members),  # repeats allowed
    max_leaves=8,
)
# Members beside the ones a level must have: other names, or now and then the same name again.
_EXTRA = st.lists(
    st.tuples(st.one_of(*[st.sampled_from(["a", 'q"', "b\\", "\u00e9", "context"])] * 5,
                        _NAMES), _VALUES),
    max_size=2, unique_by=lambda member: member[0],
)
_RESOURCES = st.builds(
    lambda drop, extra: Members([("resourceType", "Observation"), *extra,
                                 *((("drop", True),) if drop else ())]),
    st.booleans(), st.one_of(st.just([]), _EXTRA),
)
_ENTRIES = st.one_of(
    st.builds(lambda resource, extra: Members([("resource", resource), *extra]),
              _RESOURCES, st.one_of(st.just([]), _EXTRA)),
    _VALUES,
)
_BUNDLES = st.one_of(
    *[st.builds(
        lambda entries, extra, kind: Members([("resourceType", kind), *extra, ("entry", entries)]),
        st.lists(_ENTRIES, min_size=1, max_size=6), st.one_of(st.just([]), _EXTRA),
        st.sampled_from(["Bundle", "Bundle", "Bundle", "List"]),
    )] * 4,
    st.none(),
    _VALUES,  # not a resource at all: the plain way
)
_BODIES = st.builds(
    lambda prefetch, extra: Members([*extra, ("prefetch", prefetch)]),
    st.one_of(
        st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), _BUNDLES), min_size=1,
                 max_size=3, unique_by=lambda member: member[0]).map(Members),
        st.lists(st.tuples(st.sampled_from(["a", "b"]), _BUNDLES), max_size=3).map(Members),
        _VALUES,
    ),
    st.lists(  # mostly members a hook call has, now and then another
        st.tuples(st.one_of(*[st.sampled_from(sorted(HOOK_CALL_MEMBERS - {"prefetch"}))] * 5,
                            _NAMES), _VALUES),
        max_size=3, unique_by=lambda member: member[0],
    ),
)


@st.composite
def _texts(draw: st.DrawFn, hook_calls: bool = False) -> bytes:
    """A generated body (a well-formed hook call if ``hook_calls``), written out as JSON."""

    def space() -> str:
        return draw(st.sampled_from(["", " ", "\n\t"]))

    def string(value: str) -> str:
        if draw(st.integers(0, 3)):
            return json.dumps(value)
        return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in value) + '"'

    def write(value: Any) -> str:
        if isinstance(value, str):
            return string(value)
        if isinstance(value, Members):
            return "{" + ",".join(space() + string(k) + ":" + space() + write(v)
                                  for k, v in value) + space() + "}"
        if isinstance(value, list):
            return "[" + ",".join(space() + write(v) + space() for v in value) + "]"
        return json.dumps(value)

    return (space() + write(draw(_CALLS if hook_calls else _BODIES)) + space()).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts())
def test_generated_bodies_read_the_same_as_with_the_plain_reader(text):
    assert_same_as_plain(text)


def test_a_long_hook_call_answers_as_a_short_one(client, monkeypatch, log_lines):
    """Through the API: the same cards and the same resource count, whichever reader ran."""
    scenario = load_scenario("pv-many-findings")
    request = scenario.hook_request(dict(scenario.service.prefetch))
    noise = {"resourceType": "Observation", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
             "subject": {"reference": f"Patient/{request['context']['patientId']}"}}
    bundle = request["prefetch"]["observations"]
    bundle["entry"] = bundle.get("entry", []) + [{"resource": noise}] * 20
    raw = json.dumps(request).encode()
    path = f"/cds-services/{scenario.service.id}"

    def call() -> tuple[list[str], int]:
        answer = client.post(path, data=raw, content_type="application/json")
        assert answer.status_code == 200
        line = [x for x in log_lines() if x["message"] == "hook answered"][-1]
        return sorted(card["summary"] for card in answer.get_json()["cards"]), line["resources"]

    plain_cards, plain_count = call()
    dropped = []
    original = body_module.loads_pruned
    monkeypatch.setattr(body_module, "PRUNE_ABOVE_BYTES", 0)
    def counted(raw: bytes, keep: Any, **options: Any) -> tuple[Any, int]:
        result = original(raw, keep, **options)
        dropped.append(result[1])
        return result

    monkeypatch.setattr(body_module, "loads_pruned", counted)
    chunked_cards, chunked_count = call()
    assert dropped and dropped[0] >= 20  # the chunked reader ran and dropped the noise
    assert (chunked_cards, chunked_count) == (plain_cards, plain_count)
    assert plain_cards


# Well-formed hook calls whose Bundles mix kept and dropped entries: the pruning itself, with
# chunk boundaries anywhere.
_CALL_ENTRIES = st.lists(
    st.builds(lambda drop, rid: Members([("resource", Members(
        [("resourceType", "Observation"), ("id", rid), *((("drop", True),) if drop else ())]))]),
        st.booleans(), st.text(alphabet='x"\\é', max_size=3)),
    max_size=12,
)
_CALLS = st.builds(
    lambda bundles, patient: Members([
        ("hook", "patient-view"), ("context", Members([("patientId", "p")])),
        ("prefetch", Members([
            ("patient", patient),
            *[(f"k{n}", Members([("resourceType", "Bundle"), ("type", "searchset"),
                                 ("entry", entries)])) for n, entries in enumerate(bundles)],
        ])),
    ]),
    st.lists(_CALL_ENTRIES, min_size=1, max_size=3),
    st.one_of(st.none(), st.just(Members([("resourceType", "Patient"), ("id", "p")]))),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts(hook_calls=True), st.integers(1, 5))
def test_generated_hook_calls_are_pruned_as_the_filter_says(text, chunk):
    pruning_reader.CHUNK = chunk  # the small_chunks fixture's monkeypatch restores it
    assert_same_as_plain(text)


def test_a_bug_in_the_entry_filter_is_not_answered_as_a_bad_body(app, monkeypatch):
    """Through the API: what the filter raises (a ValueError here) is our fault, a 500 logged as
    such, never a 400 telling the EHR its body was not valid JSON."""
    scenario = load_scenario("pv-many-findings")
    raw = json.dumps(scenario.hook_request(dict(scenario.service.prefetch))).encode()
    monkeypatch.setattr(body_module, "PRUNE_ABOVE_BYTES", 0)

    def broken(entry: Any) -> bool:
        raise ValueError("bug in the filter")

    monkeypatch.setattr(app.extensions["cds"].pipeline, "keeps_entry", broken)
    answer = app.test_client().post(f"/cds-services/{scenario.service.id}", data=raw,
                                    content_type="application/json")
    assert answer.status_code == 500, answer.get_data(as_text=True)
    assert "not valid JSON" not in answer.get_data(as_text=True)
