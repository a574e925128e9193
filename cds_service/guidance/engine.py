"""Run the enabled rules of one hook over the clinical facts, each rule isolated from the others.

A patient outside the cohort gets no cards at all (rules.md: this is a specialised service and
must stay quiet elsewhere). A rule that raises is reported as a failure, with its id, so the
other rules' cards still reach the clinician and the failure is logged and counted upstream; it
is never silently turned into an empty answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from cds_service.facts.model import ClinicalFacts
from cds_service.guidance.cards import Card
from cds_service.guidance.rule import Rule, RuleContext
from cds_service.guidance.rules import ALL

logger = logging.getLogger("cds_service.guidance")


@dataclass(frozen=True)
class Evaluation:
    cards: tuple[Card, ...]
    failed_rules: tuple[str, ...] = ()
    evaluated_rules: tuple[str, ...] = field(default=())


def rules_for(hook: str, enabled: frozenset[str], rules: Sequence[Rule] = ALL) -> list[Rule]:
    return [r for r in rules if hook in r.hooks and r.id in enabled]


def evaluate(
    facts: ClinicalFacts, ctx: RuleContext, rules: Sequence[Rule] = ALL
) -> Evaluation:
    """Cards for this hook, at most one per rule, in catalogue order."""
    selected = rules_for(ctx.hook, ctx.settings.enabled_rules, rules)
    if not facts.in_cohort:
        return Evaluation(cards=(), evaluated_rules=tuple(r.id for r in selected))
    cards: list[Card] = []
    failed: list[str] = []
    for rule in selected:
        try:
            card = rule.evaluate(facts, ctx)
        except Exception as exc:  # noqa: BLE001 - isolate one faulty rule from the rest
            # The rule id and exception type only: messages and tracebacks can quote facts.
            # The log line carries the request's hookInstance from the logging context.
            logger.error("rule failed", extra={"rule": rule.id, "error": type(exc).__name__})
            failed.append(rule.id)
            continue
        if card is not None:
            cards.append(card)
    return Evaluation(
        cards=tuple(cards),
        failed_rules=tuple(failed),
        evaluated_rules=tuple(r.id for r in selected),
    )
