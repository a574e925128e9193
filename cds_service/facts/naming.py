"""Names for coded things, for card text: the record's own words first, then our knowledge's."""

from __future__ import annotations

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
    return label(concept, fallback, lambda system, code: known_display(knowledge, system, code))
