"""Loads the JSON knowledge files and builds every lookup index once.

Rules call `concepts_of` for each coding of each resource in a chart (10,000 resources is a
normal size), so a lookup is one dict access plus, only for systems that have header or range
entries (ICD-10-CM, HCPCS), a handful of prefix probes. Everything is built at load time;
nothing is computed per request except that.

A chart repeats the same few codes thousands of times (every heart rate carries LOINC 8867-4),
so `concepts_of` answers are also memoised per (system, code). The memo is bounded (cleared when
full, so hostile input cannot grow it without limit) and safe to share between threads: the
knowledge never changes after load, so an entry is never stale. Texts are not memoised: they
can be free text about a patient, and nothing about a patient outlives its request here.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .model import MATCH_TYPES, CodeEntry, Coding, ConceptInfo, GuidelineSource
from .systems import SystemTable
from .terms import TermScreen, compile_terms, term_key, union_of_terms

PROJECT_SYSTEM = "urn:hypermobility-cds:codes"
_EMPTY: frozenset[str] = frozenset()
# Far above the distinct codes of any real chart, and small in memory (about 1 MB when full).
_MEMO_MAX = 8192
# Longer codes or system URLs are looked up but never remembered: no code or system the
# knowledge holds is near this long, and remembering a client's megabyte-long "code" would keep
# it in the process (8,192 of them: gigabytes).
_MEMO_KEY_MAX_CHARS = 256
# Files with a special shape; every other *.json file in the directory holds concepts.
_SYSTEMS_FILE = "systems.json"
_SOURCES_FILE = "sources.json"
_THRESHOLDS_FILE = "thresholds.json"


class _Concept:
    __slots__ = ("by_code", "entries", "info", "pattern", "term_by_key")

    def __init__(self, info: ConceptInfo, entries: tuple[CodeEntry, ...]) -> None:
        self.info = info
        self.entries = entries
        self.pattern, self.term_by_key = compile_terms(info.terms, anywhere=info.terms_anywhere)
        self.by_code: dict[str, CodeEntry] = {}
        for entry in entries:
            self.by_code.setdefault(entry.code, entry)


class Knowledge:
    """Read-only view of the service's terminology, guideline sources and thresholds."""

    __slots__ = (
        "_any_text",
        "_code_memo",
        "_concepts",
        "_exact",
        "_ingredients",
        "_prefix",
        "_prefix_lengths",
        "_ranges",
        "_sources",
        "_systems",
        "threshold_details",
        "thresholds",
    )

    def __init__(self, data_dir: Path) -> None:
        docs = {path.name: _read(path) for path in sorted(Path(data_dir).glob("*.json"))}
        for required in (_SYSTEMS_FILE, _SOURCES_FILE, _THRESHOLDS_FILE):
            if required not in docs:
                raise FileNotFoundError(f"knowledge data file missing: {data_dir}/{required}")
        self._systems = SystemTable(docs.pop(_SYSTEMS_FILE)["systems"])
        self._sources = _guideline_sources(docs.pop(_SOURCES_FILE))
        details = docs.pop(_THRESHOLDS_FILE)["thresholds"]
        self.threshold_details: Mapping[str, Any] = MappingProxyType(dict(details))
        self.thresholds: Mapping[str, Any] = MappingProxyType(
            {name: spec["value"] for name, spec in details.items()}
        )

        self._ingredients: dict[str, Coding] = {}
        self._concepts: dict[str, _Concept] = {}
        for name, doc in docs.items():
            if "concepts" not in doc:
                raise ValueError(f"{name}: not a concept file (no 'concepts' key)")
            for concept_id, raw in doc["concepts"].items():
                if concept_id in self._concepts:
                    raise ValueError(f"concept {concept_id!r} is defined twice ({name})")
                self._concepts[concept_id] = self._concept(name, doc, concept_id, raw)
        # An ingredient code maps to itself, so callers need not care which level they hold.
        if "opioid-ingredient" in self._concepts:
            for entry in self._concepts["opioid-ingredient"].entries:
                self._ingredients.setdefault(
                    entry.code, Coding(entry.system, entry.code, entry.display)
                )

        exact: dict[tuple[str, str], set[str]] = defaultdict(set)
        prefix: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        ranges: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for concept_id, concept in self._concepts.items():
            for entry in concept.entries:
                code = self._systems.normalise(entry.system, entry.code)
                if entry.match == "exact":
                    exact[(entry.system, code)].add(concept_id)
                elif entry.match == "prefix":
                    prefix[entry.system][code].add(concept_id)
                else:
                    upper = self._systems.normalise(entry.system, entry.to or "")
                    ranges[entry.system].append((code, upper, concept_id))

        self._exact = {key: frozenset(value) for key, value in exact.items()}
        self._prefix = {
            system: {code: frozenset(ids) for code, ids in table.items()}
            for system, table in prefix.items()
        }
        self._prefix_lengths = {
            system: tuple(sorted({len(code) for code in table}))
            for system, table in self._prefix.items()
        }
        self._ranges = {system: tuple(items) for system, items in ranges.items()}
        self._code_memo: dict[tuple[str | None, str], frozenset[str]] = {}
        self._any_text: dict[tuple[str, ...], tuple[TermScreen, re.Pattern[str]] | None] = {}

    # ----------------------------------------------------------------- loading helpers
    def _concept(
        self, file: str, doc: Mapping[str, Any], concept_id: str, raw: Mapping[str, Any]
    ) -> _Concept:
        sources = doc.get("sources", {})
        entries = []
        for item in raw.get("codes", ()):
            where = f"{file}: concept {concept_id!r} code {item.get('code')!r}"
            for key in ("system", "code", "display", "source"):
                if not item.get(key):
                    raise ValueError(f"{where}: missing {key}")
            if item["source"] not in sources:
                raise ValueError(f"{where}: source {item['source']!r} not in the file's sources")
            match = item.get("match", "exact")
            if match not in MATCH_TYPES:
                raise ValueError(f"{where}: unknown match type {match!r}")
            if (match == "range") != ("to" in item):
                raise ValueError(f"{where}: 'to' belongs to range entries only")
            canonical = self._systems.canonical(item["system"])
            if canonical != item["system"]:
                raise ValueError(f"{where}: use the canonical system URI, not {item['system']!r}")
            ingredient = item.get("ingredient")
            if ingredient:
                self._ingredients[item["code"]] = Coding(
                    item["system"], ingredient["code"], ingredient["name"]
                )
            entries.append(
                CodeEntry(
                    system=item["system"],
                    code=item["code"],
                    display=item["display"],
                    source=item["source"],
                    match=match,
                    to=item.get("to"),
                    status=item.get(
                        "status", "PROJECT" if item["system"] == PROJECT_SYSTEM else "VERIFIED"
                    ),
                )
            )
        info = ConceptInfo(
            id=concept_id,
            description=raw.get("description", ""),
            terms=tuple(raw.get("terms", ())),
            file=file,
            derived_from=MappingProxyType(dict(raw["derived_from"]))
            if "derived_from" in raw
            else None,
            terms_anywhere=_terms_anywhere(concept_id, raw),
        )
        return _Concept(info, tuple(entries))

    def _get(self, concept: str) -> _Concept:
        try:
            return self._concepts[concept]
        except KeyError:
            raise KeyError(f"unknown knowledge concept {concept!r}") from None

    def __contains__(self, concept: object) -> bool:
        return concept in self._concepts

    # ----------------------------------------------------------------------- lookups
    def concept_ids(self) -> frozenset[str]:
        """Every concept id in the data (for documentation and tests)."""
        return frozenset(self._concepts)

    def concepts_of(self, system: str | None, code: str | None) -> frozenset[str]:
        """Concept ids that contain this code; empty for unknown systems, codes or None."""
        if not code:
            return _EMPTY
        if (
            type(code) is str
            and (system is None or type(system) is str)
            and len(code) + (len(system) if system else 0) <= _MEMO_KEY_MAX_CHARS
        ):
            key = (system, code)
            found = self._code_memo.get(key)
            if found is None:
                found = self._lookup(system, code)
                if len(self._code_memo) >= _MEMO_MAX:
                    self._code_memo.clear()
                self._code_memo[key] = found
            return found
        return self._lookup(system, code)

    def _lookup(self, system: str | None, code: str) -> frozenset[str]:
        canonical = self._systems.canonical(system)
        if canonical is None:
            return _EMPTY
        norm = self._systems.normalise(canonical, code)
        found = self._exact.get((canonical, norm), _EMPTY)
        table = self._prefix.get(canonical)
        if table is not None:
            for length in self._prefix_lengths[canonical]:
                if length > len(norm):
                    break
                hit = table.get(norm[:length])
                if hit is not None:
                    found = found | hit
        spans = self._ranges.get(canonical)
        if spans is not None:
            for low, high, concept_id in spans:
                if len(norm) == len(low) and low <= norm <= high:
                    found = found | {concept_id}
        return found

    def matches(self, concept: str, codings: Iterable[tuple[str | None, str | None]]) -> bool:
        """True when any (system, code) pair belongs to the concept."""
        self._get(concept)
        return any(concept in self.concepts_of(system, code) for system, code in codings)

    def text_matches(self, concept: str, text: str | None) -> str | None:
        """The concept's first whole-word term found in `text` (case-insensitive), else None."""
        found = self._get(concept)
        if not text or found.pattern is None:
            return None
        hit = found.pattern.search(text)
        if hit is None:
            return None
        return found.term_by_key.get(term_key(hit.group(0)), hit.group(0))

    def without_terms(self, concept: str, text: str) -> str:
        """``text`` with each of the concept's whole-word terms replaced by a space."""
        found = self._get(concept)
        return text if found.pattern is None else found.pattern.sub(" ", text)

    def text_matches_any(self, concepts: tuple[str, ...], text: str | None) -> bool:
        """True when any of the concepts has a term in `text`, in one regex search.

        The same answer as ``any(text_matches(c, text) for c in concepts)``, for hot loops that
        only need yes or no (the relevance filter runs it on every display of a chart).
        """
        if not text or type(text) is not str:
            return False
        try:
            union = self._any_text[concepts]
        except KeyError:
            union = self._any_text[concepts] = self._union(concepts)
        return (
            union is not None and union[0].may_match(text) and union[1].search(text) is not None
        )

    def _union(self, concepts: tuple[str, ...]) -> tuple[TermScreen, re.Pattern[str]] | None:
        """One pattern whose search succeeds exactly when some concept's pattern would, and
        the screen that spares it the texts it cannot match."""
        infos = [self._get(concept).info for concept in concepts]
        terms = [term for info in infos for term in info.terms]
        pattern = union_of_terms([(info.terms, info.terms_anywhere) for info in infos])
        return None if pattern is None else (TermScreen(terms), pattern)

    def coding(self, concept: str, code: str) -> Coding:
        """The concept's entry for `code` as a Coding (for building suggestions)."""
        entry = self._get(concept).by_code.get(code)
        if entry is None:
            raise KeyError(f"code {code!r} is not listed in concept {concept!r}")
        return Coding(entry.system, entry.code, entry.display)

    def codes(self, concept: str) -> tuple[CodeEntry, ...]:
        """Every code entry of the concept, in data order (for generated documentation)."""
        return self._get(concept).entries

    def concept(self, concept: str) -> ConceptInfo:
        """Description, text terms and file of the concept."""
        return self._get(concept).info

    def opioid_ingredient(self, rxnorm_code: str | None) -> Coding | None:
        """The opioid ingredient of an RxNorm product (or the ingredient itself), else None."""
        if not rxnorm_code:
            return None
        return self._ingredients.get(rxnorm_code.strip())

    def source(self, key: str) -> GuidelineSource:
        """A guideline source from sources.json; KeyError for unknown keys."""
        try:
            return self._sources[key]
        except KeyError:
            raise KeyError(f"unknown guideline source {key!r}") from None

    def source_keys(self) -> frozenset[str]:
        return frozenset(self._sources)


def _terms_anywhere(concept_id: str, raw: Mapping[str, Any]) -> bool:
    mode = raw.get("terms_match", "whole-words")
    if mode not in ("whole-words", "anywhere"):
        raise ValueError(f"concept {concept_id!r}: terms_match must be whole-words or anywhere")
    return mode == "anywhere"


def _read(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _guideline_sources(doc: Mapping[str, Any]) -> dict[str, GuidelineSource]:
    result = {}
    for key, raw in doc["guidelines"].items():
        result[key] = GuidelineSource(
            key=key,
            label=raw["label"],
            url=raw.get("url"),
            citation=raw["citation"],
            status=raw["status"],
        )
    return result
