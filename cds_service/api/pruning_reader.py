"""Read a long hook body a few dozen Bundle entries at a time, dropping those no rule reads.

Parsed whole, a 10,000-resource prefetch (5 MB of JSON) becomes about 33 MB of Python objects at
once: fresh memory the kernel has to fault in page by page, far larger than the CPU caches, and
handed back to it when the call ends. That made a long chart cost more per resource than a short
one (the benchmarks measured 1k -> 10k growing 15x and more, even for a bare parse). Nearly all of
those objects are vital signs and other entries the relevance filter throws away.

So for a body above :data:`PRUNE_ABOVE_BYTES`, :func:`loads_pruned` finds the members of the body,
of ``prefetch``, of each prefetch Bundle, and the items of each Bundle's ``entry`` array as byte
spans (msgspec, without building them), parses the entries :data:`CHUNK` at a time with the strict
reader, and keeps only those ``keep`` accepts. Each chunk's objects are freed before the next is
built, so the memory they use is reused while it is still in cache.

Nothing about strictness changes. Every member value is parsed by
:func:`cds_service.strict_json.loads_counted`, padded to the depth it has in the body (so the
depth limit holds where it did); the names, braces and commas around them are read by msgspec,
which checks them as strictly (names must be UTF-8). Repeated member names are caught at every
level: the members the span finder reads are counted, and their string tokens plus those of
every parsed part must add up to the tokens of the whole text; a name repeated where spans were
found drops a member and breaks the sum. Members a hook call does not define (a vendor's) are
kept, parsed like the others. Whenever anything is not as expected (not an object, a prefetch
value neither an object nor null, a repeat, a syntax error, a span finder limit), the whole body
is read again the plain way with :func:`cds_service.strict_json.loads`, which names the problem
exactly as it always has (and drops nothing). Bodies the plain way refuses are refused the same
way; bodies it accepts give the same value, less the dropped entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from cds_service.api.large_bodies import LARGE_BODY_BYTES
from cds_service.strict_json import (
    REFUSALS,
    TooCostly,
    cost,
    loads,
    loads_counted,
    string_tokens_x2,
    without_bom,
)

# Above this size a body is read in chunks: the size from which bodies are large (one at a
# time per worker, too). Measured: below about 1 MB the plain reader is as fast (the whole
# tree fits in cache), and finding the spans costs more than it saves.
PRUNE_ABOVE_BYTES = LARGE_BODY_BYTES
CHUNK = 64  # entries parsed at once: a few hundred kB of objects, reused chunk after chunk
# A chunk of entries up to this size is parsed without counting its cost (strict_json.cost):
# it is freed before the next, and at most 16 bytes a byte of it cannot hold a worker's memory.
# Entries of an ordinary chart are far smaller (a chunk of 64 is about 32 kB).
UNCOUNTED_CHUNK_BYTES = 256 * 1024

_Span = msgspec.Raw
_Absent = msgspec.UnsetType
_ABSENT = msgspec.UNSET


class _HookCall(msgspec.Struct, forbid_unknown_fields=True):
    """Spans of a CDS Hooks request's members, found in one pass: ``prefetch`` down to the
    members of each of its values (a member of another name is looked for again by
    :data:`_MEMBERS`; a prefetch value neither an object nor null sends the body the plain
    way)."""

    hook: _Span | _Absent = _ABSENT
    hookInstance: _Span | _Absent = _ABSENT
    fhirServer: _Span | _Absent = _ABSENT
    fhirAuthorization: _Span | _Absent = _ABSENT
    context: _Span | _Absent = _ABSENT
    extension: _Span | _Absent = _ABSENT
    prefetch: dict[str, dict[str, _Span] | None] | None | _Absent = _ABSENT


_HOOK_CALL = msgspec.json.Decoder(_HookCall)
# A body with a member a hook call does not define (a vendor's, say): every member's span, then
# those inside prefetch, in a second pass (rare, and cheap next to parsing the entries).
_MEMBERS = msgspec.json.Decoder(dict[str, _Span])
_PREFETCH = msgspec.json.Decoder(dict[str, dict[str, _Span] | None] | None)
_ITEMS = msgspec.json.Decoder(list[_Span])
# What sends a body the plain way: the span finder's refusals (msgspec.ValidationError is a
# DecodeError; names that are not UTF-8 raise UnicodeDecodeError; its recursion limit depends
# on the stack) and the strict reader's. Not caught: whatever ``keep`` raises.
_READ_THE_PLAIN_WAY = (msgspec.DecodeError, UnicodeDecodeError, RecursionError, *REFUSALS)
_OPEN_ARRAY = ord("[")


class _Irregular(Exception):
    """The body is not shaped as expected: read it the plain way."""


def loads_pruned(
    raw: bytes, keep: Callable[[Any], bool], max_cost: int | None = None
) -> tuple[Any, int]:
    """The JSON value of ``raw`` as :func:`loads` gives it, and how many entries were dropped.

    Items of ``prefetch.<key>.entry`` arrays (where the prefetch value is a Bundle) for which
    ``keep(item)`` is false are left out of the value. Raises what :func:`loads` raises, and
    lets through what ``keep`` raises (a bug there is not a bad body). The members of the body
    may come in another order.

    With ``max_cost``, raises :class:`~cds_service.strict_json.TooCostly` when what is kept
    (every part but the dropped entries), or a chunk of entries over
    :data:`UNCOUNTED_CHUNK_BYTES`, costs more (strict_json.cost): only those are counted, not
    the whole text, whose entries are mostly dropped.
    """
    try:
        return _Reader(keep, max_cost).body(without_bom(raw))
    except (_Irregular, *_READ_THE_PLAIN_WAY):  # not TooCostly: that one is answered
        if max_cost is not None and cost(raw) > max_cost:
            raise TooCostly("over the cap") from None
        return loads(raw), 0


def _members(raw: bytes) -> list[tuple[str, Any]]:
    """The body's members as (name, span), ``prefetch`` as the spans of its values' members."""
    try:
        call = _HOOK_CALL.decode(raw)
    except msgspec.ValidationError:  # not an object, an unknown member, an odd prefetch value
        members = _MEMBERS.decode(raw)
        if "prefetch" in members:
            members["prefetch"] = _PREFETCH.decode(members["prefetch"])
        return list(members.items())
    return [
        (name, member)
        for name in call.__struct_fields__
        if (member := getattr(call, name)) is not _ABSENT
    ]


class _Reader:
    def __init__(self, keep: Callable[[Any], bool], max_cost: int | None = None) -> None:
        self.keep = keep
        self.tokens = 0  # twice the string tokens accounted for so far
        self.dropped = 0
        self.max_cost = max_cost
        self.spent = 0  # the cost of what is kept so far

    def _charge(self, text: bytes, *, kept: bool = True) -> None:
        if self.max_cost is None:
            return
        charge = cost(text)
        if kept:
            self.spent += charge
            charge = self.spent
        if charge > self.max_cost:
            raise TooCostly("over the cap")

    def body(self, raw: bytes) -> tuple[Any, int]:
        body: dict[str, Any] = {}
        for name, member in _members(raw):
            self.tokens += 2  # each member name is one string token
            body[name] = self._prefetch(member) if name == "prefetch" else self._leaf(member, 1)
        if self.tokens != string_tokens_x2(raw):
            raise _Irregular  # a member name repeated where spans were found
        return body, self.dropped

    def _leaf(self, span: _Span, depth: int) -> Any:
        """Parse a span strictly, nested as deep as it sits in the body (``depth`` levels)."""
        text = bytes(span)
        self._charge(text)
        value, tokens = loads_counted(b"[" * depth + text + b"]" * depth)
        self.tokens += tokens
        for _ in range(depth):
            value = value[0]
        return value

    def _prefetch(self, values: dict[str, dict[str, _Span] | None] | None) -> Any:
        if values is None:
            return None
        self.tokens += 2 * len(values)
        return {key: self._bundle(members) for key, members in values.items()}

    def _bundle(self, members: dict[str, _Span] | None) -> Any:
        if members is None:
            return None
        self.tokens += 2 * len(members)
        parsed = {
            name: self._leaf(member, depth=3) for name, member in members.items() if name != "entry"
        }
        entries = members.get("entry")
        if entries is None:
            return parsed
        if parsed.get("resourceType") == "Bundle" and memoryview(entries)[0] == _OPEN_ARRAY:
            parsed["entry"] = self._entries(entries)
        else:
            parsed["entry"] = self._leaf(entries, depth=3)
        return {name: parsed[name] for name in members}  # in the body's order

    def _entries(self, span: _Span) -> list[Any]:
        items = _ITEMS.decode(span)
        keep = self.keep
        kept: list[Any] = []
        for start in range(0, len(items), CHUNK):
            # The chunk's array stands for the entry array (level 4 of the body), inside three
            # more for the body, prefetch and the Bundle: its items sit as deep as in the body.
            spans = items[start : start + CHUNK]
            chunk = b"[[[[" + b",".join(spans) + b"]]]]"
            if len(chunk) > UNCOUNTED_CHUNK_BYTES:
                self._charge(chunk, kept=False)
            value, tokens = loads_counted(chunk)
            self.tokens += tokens
            items_here = value[0][0][0]
            kept_here = []
            for item, item_span in zip(items_here, spans, strict=True):
                if keep(item):
                    self._charge(bytes(item_span))
                    kept_here.append(item)
            self.dropped += len(items_here) - len(kept_here)
            kept += kept_here
        return kept
