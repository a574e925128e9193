"""What a rule is: an id from rules.md, the hooks it runs in, and a pure evaluate function.

A rule module opens with its When/Then from ``rules.md``, names its inclusion and exclusion
predicates, and ends with ``RULE = Rule(...)``. ``evaluate`` reads only :class:`ClinicalFacts`
and the :class:`RuleContext`; it returns one card or None. No HTTP, no clock, no FHIR parsing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cds_service.facts.model import ClinicalFacts
from cds_service.guidance.cards import Card, Indicator
from cds_service.guidance.settings import GuidanceSettings
from cds_service.knowledge import Knowledge

PATIENT_VIEW = "patient-view"
ORDER_SELECT = "order-select"
ORDER_SIGN = "order-sign"
ORDER_HOOKS = frozenset({ORDER_SELECT, ORDER_SIGN})


@dataclass(frozen=True)
class RuleContext:
    """What a rule may know besides the facts: the hook, the settings, the knowledge."""

    hook: str
    settings: GuidanceSettings
    knowledge: Knowledge


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    hooks: frozenset[str]
    indicator: Indicator
    when: str  # plain-language trigger, for the generated catalogue (docs/rules.md)
    then: str  # what the card says and suggests, for the catalogue
    evaluate: Callable[[ClinicalFacts, RuleContext], Card | None]
    concepts: tuple[str, ...] = ()  # knowledge concepts it reads, listed in the catalogue
    sources: tuple[str, ...] = ()  # keys of knowledge sources.json it cites
