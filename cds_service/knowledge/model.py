"""Small immutable value types handed out by the knowledge loader.

They are frozen so rules can share them freely (one loaded `Knowledge` serves every request) and
slotted because tens of thousands of them live for the life of the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MATCH_TYPES = frozenset({"exact", "prefix", "range"})


@dataclass(frozen=True, slots=True)
class Coding:
    """A code as a rule needs it to build a FHIR Coding in a suggestion."""

    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """One code of a concept as written in the data, with where it came from.

    `match` says how patient codes are compared with it: `exact`, `prefix` (ICD-10-CM category
    headers, compared without dots) or `range` (inclusive, from `code` to `to`). `status` mirrors
    terminology.md (VERIFIED, VERIFIED-3P, PARTIAL) or says PROJECT for the service's own codes
    (the default for the project code system; VERIFIED is the default elsewhere), or
    CHECKED-PUBLIC for a code terminology.md does not list, checked by the project against the
    public page or file its source cites (the source's ``url``, or ``repository`` and ``path``).
    """

    system: str
    code: str
    display: str
    source: str
    match: str = "exact"
    to: str | None = None
    status: str = "VERIFIED"


@dataclass(frozen=True, slots=True)
class ConceptInfo:
    """What a concept means, for documentation and for the card text that cites it."""

    id: str
    description: str
    terms: tuple[str, ...]
    file: str
    derived_from: Mapping[str, Any] | None = field(default=None)
    # "terms_match": "anywhere" in the data: a term matches inside a longer word too (the
    # Beighton score's "contains 'Beighton'"); by default terms match whole words only.
    terms_anywhere: bool = False


@dataclass(frozen=True, slots=True)
class GuidelineSource:
    """A guideline a card can cite in `source` and `links`."""

    key: str
    label: str
    url: str | None
    citation: str
    status: str
