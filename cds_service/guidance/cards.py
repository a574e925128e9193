"""CDS Hooks 2.0 response objects (Card, Suggestion, Action, Link, Source, Coding).

They live beside the rules because cards are what the rules produce; the HTTP layer only
serialises them. The models enforce the standard's constraints at construction time, so a rule
cannot build a non-conformant card: summary under 140 characters, ``selectionBehavior`` whenever
there are suggestions, ``display`` on every override reason, a uuid on every card and suggestion,
``resourceId`` on deletes. CDS Hooks 2.0 forbids ``null``, ``""``, ``[]`` and ``{}`` for optional
fields, so no optional string may be empty, a created resource is pruned of empty values when its
action is built, and serialising leaves out every field still at its default (``None`` or ``()``):
the JSON is written by pydantic in one pass, with no walk over it afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

Indicator = Literal["info", "warning", "critical"]

RULE_CODE_SYSTEM = "urn:hypermobility-cds:rules"


# Random bytes are read from the OS this many uuids at a time.
UUID_BATCH = 256
RANDOM_BYTES = 10  # a version 7 uuid holds 74 random bits: 80 are read, 6 of them overwritten
_uuid_bytes: list[bytes] = []


def new_uuid() -> str:
    """A version 7 uuid (RFC 9562, section 5.7): the Unix time in milliseconds, then 74 random
    bits, from a batch of OS randomness.

    Why the time first: the served-card records are keyed by card uuid, and feedback is indexed
    by it, so both tables grow by one index entry per card, forever. Random (version 4) keys
    land all over the index: each insert reads and dirties a different page, and the cost grows
    with the table (measured on SQLite: 8.5 µs a row on average over the first 90,000 rows,
    about 20 µs a row past 360,000). Keys that begin with the time land at the index's end
    (4 µs a row, flat). Two uuids can only collide within one millisecond, and there 74 random
    bits tell them apart (a version 4 uuid has 122 in all); it tells whoever holds the card when
    it was made, which the EHR that asked knows anyway.

    Why a batch: every card and suggestion needs one, and ``os.urandom`` gives up the GIL. In a
    threaded worker under load, each such call can hand the interpreter to another request's
    thread and wait for it back; measured under gunicorn, one call per uuid cost about a tenth
    of the service's throughput. ``list.pop`` is atomic, so threads never share a value, and the
    batch is dropped in a forked child (gunicorn workers) so that no two processes do.
    """
    try:
        raw = _uuid_bytes.pop()
    except IndexError:
        batch = os.urandom(RANDOM_BYTES * UUID_BATCH)
        _uuid_bytes.extend(
            batch[i : i + RANDOM_BYTES] for i in range(RANDOM_BYTES, len(batch), RANDOM_BYTES)
        )
        raw = batch[:RANDOM_BYTES]
    millis = time.time_ns() // 1_000_000
    value = millis << 80 | int.from_bytes(raw) & _UUID_CLEAR | _UUID_SET
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# RFC 9562 version 7, below the 48 bits of time: the version nibble (bits 79-76) is 0111, the
# variant's two bits (63-62) are 10; the other 74 bits are random.
_UUID_CLEAR = ~((0xF << 76) | (0x3 << 62))
_UUID_SET = (0x7 << 76) | (0x2 << 62)


os.register_at_fork(after_in_child=_uuid_bytes.clear)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Identified(_Model):
    """A card or suggestion: its uuid is given, or made when the object is built.

    Not a ``default_factory``: serialising with defaults left out would call the factory again
    for every object, only to compare.
    """

    uuid: str

    @model_validator(mode="before")
    @classmethod
    def _new_uuid(cls, data: Any) -> Any:
        if isinstance(data, dict) and "uuid" not in data:
            return {**data, "uuid": new_uuid()}
        return data


class Coding(_Model):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = Field(default=None, min_length=1)


# Optional strings are absent or not empty.
NonEmpty = Annotated[str, Field(min_length=1)]


class Source(_Model):
    label: str = Field(min_length=1)
    url: NonEmpty | None = None
    icon: NonEmpty | None = None
    topic: Coding | None = None


class Link(_Model):
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    type: Literal["absolute", "smart"]  # required by the standard: no default to leave out
    appContext: NonEmpty | None = None


class Action(_Model):
    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resourceId: NonEmpty | None = None

    @field_validator("resource")
    @classmethod
    def _prune_resource(cls, resource: dict[str, Any] | None) -> dict[str, Any] | None:
        return prune(resource) if resource is not None else None

    @model_validator(mode="after")
    def _check_target(self) -> Action:
        if self.type == "delete" and not self.resourceId:
            raise ValueError("a delete action needs resourceId (e.g. 'MedicationRequest/123')")
        if self.type in ("create", "update") and not self.resource:
            raise ValueError(f"a {self.type} action needs the resource")
        return self


class Suggestion(_Identified):
    label: str = Field(min_length=1)
    isRecommended: bool | None = None
    actions: tuple[Action, ...] = ()


class Card(_Identified):
    summary: str = Field(min_length=1, max_length=139)
    indicator: Indicator
    source: Source
    detail: NonEmpty | None = None
    suggestions: tuple[Suggestion, ...] = ()
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: tuple[Coding, ...] = ()
    links: tuple[Link, ...] = ()

    @field_validator("overrideReasons")
    @classmethod
    def _reasons_have_display(cls, reasons: tuple[Coding, ...]) -> tuple[Coding, ...]:
        if any(not reason.display for reason in reasons):
            raise ValueError("every override reason needs a display")
        return reasons

    @model_validator(mode="after")
    def _check_selection(self) -> Card:
        if self.suggestions and not self.selectionBehavior:
            raise ValueError("selectionBehavior is required when there are suggestions")
        recommended = sum(1 for s in self.suggestions if s.isRecommended)
        if self.selectionBehavior == "at-most-one" and recommended > 1:
            raise ValueError("at-most-one allows at most one recommended suggestion")
        return self

    @property
    def rule_id(self) -> str | None:
        topic = self.source.topic
        return topic.code if topic and topic.system == RULE_CODE_SYSTEM else None

    def to_json(self) -> dict[str, Any]:
        """The card as CDS Hooks JSON, with no null or empty values anywhere."""
        return self.model_dump(mode="json", exclude_defaults=True)


_CARDS = TypeAdapter(tuple[Card, ...])


def response_json(cards: Iterable[Card]) -> bytes:
    """A CDS Hooks response body, ``{"cards": [...]}``, each card as :meth:`Card.to_json` has it."""
    return b'{"cards":' + _CARDS.dump_json(tuple(cards), exclude_defaults=True) + b"}"


_CONTAINERS = (dict, list, tuple)


def _kept(item: Any) -> bool:
    """Not ``None`` and not an empty string (containers are judged once pruned)."""
    return item is not None and (type(item) is not str or item != "")


def prune(value: Any) -> Any:
    """Recursively drop ``None``, empty strings, empty lists and empty objects (a tuple comes
    back as a list). Containers are pruned first, so one that empties is dropped too."""
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            if isinstance(item, _CONTAINERS):
                item = prune(item)
                if item:
                    kept[key] = item
            elif _kept(item):
                kept[key] = item
        return kept
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            if isinstance(item, _CONTAINERS):
                item = prune(item)
                if item:
                    items.append(item)
            elif _kept(item):
                items.append(item)
        return items
    return value
