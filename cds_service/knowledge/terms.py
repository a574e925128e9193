"""Whole-word text terms, compiled once per concept.

Free-text orders ("traMADol 50 mg tab") must match an ingredient name, but a name must not match
inside another word ("codeinex", or "cortisone" inside "fludrocortisone"). A word boundary here
is anything that is not a letter or digit, so "tramadol/APAP" and "oxycodone-acetaminophen"
still match. Spaces and hyphens inside a term are interchangeable ("low level laser" matches
"low-level laser").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SEPARATOR = re.compile(r"[\s\-]+")
# Not preceded / followed by a letter or digit (underscore counts as a separator).
_BEFORE = r"(?<![^\W_])"
_AFTER = r"(?![^\W_])"


def term_key(text: str) -> str:
    """Case- and separator-insensitive form used to map a regex hit back to its term."""
    return _SEPARATOR.sub(" ", text.strip()).casefold()


def compile_terms(terms: Iterable[str]) -> tuple[re.Pattern[str] | None, dict[str, str]]:
    """One alternation per concept, longest term first so the most specific phrase wins."""
    by_key: dict[str, str] = {}
    for term in terms:
        key = term_key(term)
        if not key:
            raise ValueError("empty text term")
        # The relevance filter searches a resource's texts joined by "|" at once: the same as
        # searching each alone only while no term holds a "|" or begins or ends with anything
        # but a letter or digit (terms match between word boundaries).
        if "|" in key or not (key[0].isalnum() and key[-1].isalnum()):
            raise ValueError(f"text term {term!r} must hold no '|' and begin and end alphanumeric")
        by_key.setdefault(key, term)
    if not by_key:
        return None, by_key
    alternatives = []
    for key in sorted(by_key, key=lambda k: (-len(k), k)):
        alternatives.append(r"[\s\-]+".join(re.escape(part) for part in key.split(" ")))
    pattern = re.compile(_BEFORE + "(?:" + "|".join(alternatives) + ")" + _AFTER, re.IGNORECASE)
    return pattern, by_key
