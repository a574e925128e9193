"""Which side a hip finding or order names, so that the imaging a card drafts names it too.

A radiology desk sends back an order for "XR Hip" with no side. The side is read from the
words of the record's own texts (codings' displays, the text, a body site), as
``knowledge/data/wording.json`` lists them: ICD-10-CM titles and EHR order names spell it out
("Pain in right hip", "MR Hip - left WO contrast", "bilateral"). A code without a display says
nothing here, and the card then drafts the order without a side, as before.
"""

from __future__ import annotations

from collections.abc import Iterable

from cds_service.facts.model import Side
from cds_service.knowledge import Knowledge


def side_of(knowledge: Knowledge, texts: Iterable[str]) -> Side | None:
    """The side the texts name: "both" for both sides or "bilateral", else "left" or "right",
    else None."""
    found: set[Side] = set()
    for text in texts:
        if knowledge.text_matches("side-both", text):
            return "both"
        if knowledge.text_matches("side-left", text):
            found.add("left")
        if knowledge.text_matches("side-right", text):
            found.add("right")
    if len(found) == 2:
        return "both"
    return found.pop() if found else None


def together(sides: Iterable[Side | None]) -> Side | None:
    """The side several findings name between them: None when any names none (in doubt, no
    side), "both" when they differ."""
    named = set()
    for side in sides:
        if side is None:
            return None
        named.add(side)
    if not named:
        return None
    return named.pop() if len(named) == 1 else "both"
