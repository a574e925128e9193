"""Names for coded things, for card text: the record's own words first, then our knowledge's."""

from __future__ import annotations

import re
from typing import Any

from cds_service.facts.fhirpath import label
from cds_service.knowledge import Knowledge


def known_display(knowledge: Knowledge, system: str | None, code: str) -> str | None:
    """The display our knowledge files give this exact code, if any concept lists it."""
    for concept in sorted(knowledge.concepts_of(system, code)):
        try:
            display = knowledge.coding(concept, code).display
        except KeyError:  # matched by prefix or range, not listed as such
            continue
        if display:
            return display
    return None


def name_of(knowledge: Knowledge, concept: Any, fallback: str) -> str:
    """The concept's name for card text (see :func:`card_text`); "unnamed" when the record's
    words are nothing but spacing or invisible characters."""
    name = label(concept, fallback, lambda system, code: known_display(knowledge, system, code))
    return card_text(name) or "unnamed"


# Line breaks, tabs, other spacing and invisible control or format characters (bidi overrides).
_NOT_ONE_LINE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]+")
_ANGLES = str.maketrans("<>", "\u2039\u203a")
# What GitHub-flavoured markdown turns into a link by itself (its "autolink literals"), as the
# CDS Hooks sandbox renders ``detail``: a scheme (after anything but a letter, a digit
# included), a leading "www.", and an e-mail address ("name@host.tld").
_WEB_ADDRESS = re.compile(
    r"(?i)(?<![a-z])(https?|ftp)://|(?<![a-z])(mailto|xmpp):|(?<![a-z0-9])(www)\."
    r"|(?<=[a-z0-9._+-])(@)(?=[a-z0-9_-]+\.)"
)


def _defanged(match: re.Match[str]) -> str:
    scheme, other_scheme, www, at = match.groups()
    if scheme:
        return f"{scheme}[:]//"
    if other_scheme:
        return f"{other_scheme}[:]"
    return f"{www}[.]" if www else "[at]"


def card_text(value: str) -> str:
    """Text from the record, made safe to put into a card: on one line, with no HTML tag (its
    angle brackets become ‹ ›), no markdown link or image (``](`` is split) and no web or
    e-mail address a renderer would make a link of (``https[:]//``, ``www[.]``, ``[at]``).
    A chart's free text is written by many hands; in a card, where ``detail`` is markdown that
    some EHRs render with raw HTML, it must not pass itself off as the service's own guidance,
    sources or links, nor break the card's layout."""
    if (
        value.isprintable()
        and "<" not in value
        and ">" not in value
        and "](" not in value
        and ":" not in value
        and "@" not in value
        and "www." not in value.lower()
    ):
        return value  # the usual name: nothing to change
    one_line = _NOT_ONE_LINE.sub(" ", value).strip()
    return _WEB_ADDRESS.sub(_defanged, one_line.translate(_ANGLES).replace("](", "] ("))
