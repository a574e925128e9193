"""JSON from outside the service, read fast and strictly, by one reader.

:func:`loads` parses with orjson (the hot path of every hook call: about twice as fast as the
standard library). orjson already refuses what is not UTF-8 JSON text (lone surrogates, NaN and
Infinity, numbers too large for a double, UTF-16 and UTF-32); a leading UTF-8 byte order mark is
skipped, as RFC 8259 allows. Then this module refuses what RFC 8259 leaves open:

* **Repeated member names.** Most parsers keep the last one, so two readers of the same text can
  disagree. orjson keeps the last one silently, so the check counts instead: a text's string
  tokens (member names plus string values) are its unescaped quote characters halved. Parsing
  drops at least one name per repeat and never adds a string, so the count of the parsed value,
  written back out by orjson, equals the text's exactly when no object repeats a name. Only when
  the counts differ is the text parsed again with the standard library, slowly, to name the key.
* **Nesting orjson cannot write back** (deeper than 254 levels): refused as too deep, as is
  nesting beyond its parser's own limit.

Used for everything JSON that comes from outside: request bodies, token headers and claims, key
sets (fetched or configured) and FHIR server replies. Integers beyond 64 bits arrive as floats
(orjson's rule): FHIR integers (32 bits) refuse them either way, and a decimal that large keeps
about 17 significant digits, as every decimal with a fraction already did.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_UTF8_BOM = b"\xef\xbb\xbf"


class DuplicateKey(ValueError):
    """A JSON object names the same member twice; ``str(error)`` is the name."""


# orjson writes back at most this many levels of nesting, so the repeated-name check cannot
# look deeper: more is refused as too deep.
MAX_DEPTH = 254


class TooDeep(ValueError):
    """The JSON text nests deeper than :data:`MAX_DEPTH`."""


class NotUtf8(ValueError):
    """The text is in another Unicode encoding (UTF-16 or UTF-32)."""


def string_tokens_x2(text: bytes) -> int:
    """Twice the number of string tokens in valid JSON ``text``: its unescaped quotes.

    Escaped backslashes go first (pairs, left to right: a run of three before a quote leaves
    one, which escapes the quote); every backslash left then escapes the character after it.
    """
    if b"\\" in text:
        text = text.replace(b"\\\\", b"")
        return text.count(b'"') - text.count(b'\\"')
    return text.count(b'"')


def _named_duplicate(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return result


# A parsed value costs Python far more memory than its text: ``{}`` is 2 bytes of text and a
# 64-byte dict, ``{"a":0}`` 7 bytes and a 184-byte one. Byte caps alone let a text of tiny
# values become 10 to 30 times its size in objects, so a text is charged the larger of its size
# and these many bytes for each comma, opening bracket and (on top) opening brace, which every
# value but the first brings. FHIR JSON as the templates fetch it (compact Observations without
# displays, labs, the benchmark charts) has a brace per 47 to 59 bytes and a comma per 27 to 37,
# so it is charged at most 0.7 of its size: its size. The costliest texts still parse to about
# 8 times their charge (a one-member object per 8 bytes).
TOKEN_BYTES = 8  # each comma, opening bracket and opening brace
BRACE_BYTES = 8  # each opening brace again: an object costs Python more than anything else
MOST_PER_BYTE = TOKEN_BYTES + BRACE_BYTES  # a text of braces alone


class TooCostly(ValueError):
    """The text would cost more than its cap once parsed (:func:`cost`)."""


def cost(text: bytes) -> int:
    """What ``text`` is charged against a byte cap: its size, or the tokens' charge, whichever
    is more (counted without parsing, in two passes: about 5 ms for 5 MB; inside strings the
    characters count too, against the text)."""
    tokens = len(text) - len(text.translate(None, b",{["))
    return max(len(text), TOKEN_BYTES * tokens + BRACE_BYTES * text.count(b"{"))


# Everything :func:`loads` raises (all are ``ValueError``).
REFUSALS = (DuplicateKey, TooDeep, NotUtf8, orjson.JSONDecodeError)


def loads(raw: bytes) -> Any:
    """The JSON value of UTF-8 text ``raw``.

    Raises :class:`DuplicateKey`, :class:`TooDeep`, :class:`NotUtf8`, or orjson's
    ``JSONDecodeError`` (all ``ValueError``) with what is wrong and where.
    """
    return loads_counted(without_bom(raw))[0]


def without_bom(raw: bytes) -> bytes:
    """RFC 8259 section 8.1: a parser may ignore a leading UTF-8 byte order mark."""
    return raw[3:] if raw[:3] == _UTF8_BOM else raw


def loads_counted(raw: bytes) -> tuple[Any, int]:
    """:func:`loads` of text with no byte order mark, and :func:`string_tokens_x2` of it."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if "depth limit" in error.msg:  # orjson's own limit (1,024 levels): valid but too deep
            raise TooDeep("nested too deeply") from None
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:4]:
            raise NotUtf8(
                "JSON text must be UTF-8 (RFC 8259 section 8.1); this looks like UTF-16 or UTF-32"
            ) from None
        raise
    if type(value) is not dict and type(value) is not list:
        return value, string_tokens_x2(raw)
    try:
        written = orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise TooDeep("nested too deeply") from None
    tokens = string_tokens_x2(raw)
    if tokens != string_tokens_x2(written):
        json.loads(raw, object_pairs_hook=_named_duplicate)  # raises, naming the key
        raise DuplicateKey("")  # the counts prove a repeat even if it were not found by name
    return value, tokens
