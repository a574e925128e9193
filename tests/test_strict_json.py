"""The strict JSON reader against the standard library, which names repeated members exactly.

The reader's duplicate check counts string tokens instead of looking at names, so these tests
aim at what could fool a count: escaped quotes and backslashes, names escaped differently but
equal, repeats deep inside, and text written every way JSON allows (whitespace, ``\\u`` escapes,
``\\/``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.strict_json import MAX_DEPTH, DuplicateKey, TooDeep, loads


class _Repeat(Exception):
    pass


def _reference(text: bytes) -> Any:
    """The standard library's reading, refusing any repeated name (the old, slow way)."""

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise _Repeat
        return dict(pairs)

    return json.loads(text, object_pairs_hook=pairs_hook)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (b'{"a": 1, "a": 2}', "a"),
        (b'{"a": "x", "b": {"c": [1, {"d": 1, "e": 2, "d": 3}]}}', "d"),
        (b'[{"x": 1}, {"y": 1, "y": 1}]', "y"),
        (b'{"\\u0061": 1, "a": 2}', "a"),  # the same name, escaped once
        (b'{"q\\"": 1, "q\\u0022": 2}', 'q"'),
        (b'{"b\\\\": "\\\\", "b\\\\": 0}', "b\\"),
        (b'{"k": "\\"\\"\\"", "k": "v"}', "k"),
        # The dropped first value holds fewer strings than the kept one: still one name fewer.
        (b'{"a": 1, "a": {"p": "1", "q": "2", "r": ["3", "4"]}}', "a"),
        (b'{"a": {"p": "1", "q": "2"}, "a": 1}', "a"),
    ],
)
def test_repeated_names_are_refused_by_name(text, name):
    with pytest.raises(DuplicateKey) as refused:
        loads(text)
    assert str(refused.value) == name


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": "\\"", "b": "\\\\", "c": "\\\\\\"", "d": "\\\\\\\\"}',
        b'{"a\\"b": "\\u0022", "a\\u005cb": "/\\/", "ab": "\\ud83d\\ude00"}',
        b'{"\\"": {"\\\\": ["\\"\\\\\\"", {"\\\\\\\\": 1}]}}',
        b'[ "a" , "a" , {"a" : "a"} , {"a" :"a"} ]',  # the same name in different objects
        b'{"url": "http:\\/\\/x\\/y?a=\\"1\\"", "div": "<div xmlns=\\"h\\">\\n</div>"}',
    ],
)
def test_escapes_without_repeats_are_read_as_the_standard_library_does(text):
    assert loads(text) == json.loads(text)


def test_refuses_what_is_not_json_text():
    for text in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": "\\ud800"}', b"{", b"[1e400]",
                 b'{"a": "\xff"}', b'{"\xc3": 1}'):  # bytes that are not UTF-8, too
        with pytest.raises(ValueError):
            loads(text)


def test_a_utf8_byte_order_mark_is_skipped_and_other_encodings_are_named():
    assert loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    for encoding in ("utf-16", "utf-16-be", "utf-32-le"):
        with pytest.raises(ValueError, match="must be UTF-8"):
            loads('{"a": 1}'.encode(encoding))


def test_nesting_it_cannot_write_back_is_too_deep():
    assert loads(b"[" * 250 + b"]" * 250)
    for levels in (300, 1_024, 1_025, 100_000):
        with pytest.raises(TooDeep):
            loads(b"[" * levels + b"]" * levels)


def test_scalars_are_read():
    assert loads(b' "x" ') == "x"
    assert loads(b"6.0") == 6.0


# Any JSON value, written out with every freedom JSON allows, and with names drawn from a few
# characters that need escaping so that repeats are frequent.
_NAMES = st.text(alphabet='a"\\/\u00e9\n', max_size=3)
_STRINGS = st.text(alphabet='x"\\/:,{}[]\u00e9\U0001f600\t ', max_size=6)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _STRINGS,
    lambda inner: st.lists(inner, max_size=4)
    | st.lists(st.tuples(_NAMES, inner), max_size=4),  # pairs: an object, repeats allowed
    max_leaves=20,
)


@st.composite
def _json_texts(draw: st.DrawFn) -> bytes:
    def space() -> str:
        return draw(st.sampled_from(["", " ", "\n", "\t ", "\r\n"]))

    def string(value: str) -> str:
        out = []
        for char in value:
            how = draw(st.sampled_from(["plain", "plain", "u"]))
            if char == '"' or char == "\\" or char < " ":
                out.append(f"\\u{ord(char):04x}" if how == "u" else json.dumps(char)[1:-1])
            elif how == "u" and ord(char) < 0x10000:
                out.append(f"\\u{ord(char):04X}")
            elif char == "/" and draw(st.booleans()):
                out.append("\\/")
            else:
                out.append(char)
        return '"' + "".join(out) + '"'

    def write(value: Any) -> str:
        if isinstance(value, str):
            return string(value)
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            members = [space() + string(k) + space() + ":" + space() + write(v) for k, v in value]
            return "{" + ",".join(members) + space() + "}"
        if isinstance(value, list):
            return "[" + ",".join(space() + write(v) + space() for v in value) + "]"
        return json.dumps(value)

    return (space() + write(draw(_VALUES)) + space()).encode("utf-8")


@settings(max_examples=1500, deadline=None)
@given(_json_texts())
def test_agrees_with_the_standard_library(text):
    try:
        expected = _reference(text)
    except _Repeat:
        with pytest.raises(DuplicateKey):
            loads(text)
        return
    assert loads(text) == expected


def test_max_depth_is_where_the_reader_stops():
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    with pytest.raises(TooDeep):
        loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))


def _blood_pressure(n: int) -> dict:
    """A vital sign as FHIR servers write them: compact, codes without displays."""
    def component(code: str) -> dict:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": 120, "unit": "mmHg",
                                  "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    return {"resourceType": "Observation", "id": f"bp-{n}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                      "observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-01",
            "component": [component("8480-6"), component("8462-4")]}


def test_fhir_json_is_charged_its_size_and_tiny_values_their_tokens():
    """A security review found 32 MiB of empty objects cost a worker about 1 GB; a review of
    the fix found compact vital signs (a comma per 15 bytes) charged more than their size, and
    refused near the cap. Objects are charged most: they cost Python most."""
    from cds_service.devtools.scenarios import load_patient
    from cds_service.strict_json import BRACE_BYTES, MOST_PER_BYTE, TOKEN_BYTES, cost

    assert (TOKEN_BYTES, BRACE_BYTES, MOST_PER_BYTE) == (8, 8, 16)
    chart = json.dumps(load_patient("cohort-back-pain-no-rehab"), separators=(",", ":")).encode()
    vitals = json.dumps({"resourceType": "Bundle", "entry": [
        {"resource": _blood_pressure(n)} for n in range(200)]}, separators=(",", ":")).encode()
    for fhir in (chart, vitals):
        assert cost(fhir) == len(fhir)  # FHIR JSON: its size
    empties = b"[" + b"{}," * 999 + b"{}]"  # 3,001 bytes: 1,000 objects, 999 commas, 1 list
    assert cost(empties) == 8 * (1000 + 999 + 1) + 8 * 1000
    assert cost(b"{" * 100) == 16 * 100  # the most a byte is charged
