"""How clinicians answered the cards: acceptance and overrides per rule and per service.

Inputs are the rows the store keeps: every card served (uuid, service, rule, time; no patient
data) and every feedback entry. A card's outcome is its latest feedback; a card with none counts
as shown without feedback (the standard sends nothing when a card is ignored). Feedback about a
card this service has no record of serving is reported under the rule ``unknown``.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Tally:
    shown: int = 0
    accepted: int = 0
    overridden: int = 0
    no_feedback: int = 0
    override_reasons: Counter = field(default_factory=Counter)

    @property
    def acceptance_rate(self) -> float | None:
        answered = self.accepted + self.overridden
        return round(self.accepted / answered, 3) if answered else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["override_reasons"] = dict(self.override_reasons.most_common())
        data["acceptance_rate"] = self.acceptance_rate
        return data


@dataclass
class FeedbackReport:
    since: datetime | None
    until: datetime | None
    by_rule: dict[str, Tally]
    by_service: dict[str, Tally]
    # Feedback whose outcomeTimestamp is no real instant: the API refuses it now, but a database
    # written by an earlier version may hold some. Left out of the tallies (its card counts as
    # shown without feedback), counted here whatever the report's dates, which it cannot be
    # placed within.
    unreadable_feedback: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "by_rule": {k: v.to_json() for k, v in sorted(self.by_rule.items())},
            "by_service": {k: v.to_json() for k, v in sorted(self.by_service.items())},
            "unreadable_feedback": self.unreadable_feedback,
        }

    def to_table(self) -> str:
        lines = []
        for title, groups in (("rule", self.by_rule), ("service", self.by_service)):
            lines.append(
                f"{title:34} {'shown':>6} {'accepted':>8} {'overridden':>10} "
                f"{'no feedback':>11} {'accept %':>8}"
            )
            for key, t in sorted(groups.items()):
                rate = f"{t.acceptance_rate * 100:.0f}%" if t.acceptance_rate is not None else "-"
                lines.append(
                    f"{key:34} {t.shown:>6} {t.accepted:>8} {t.overridden:>10} "
                    f"{t.no_feedback:>11} {rate:>8}"
                )
                for reason, count in t.override_reasons.most_common():
                    lines.append(f"{'':4}override: {printable(reason)} ({count})")
            lines.append("")
        if self.unreadable_feedback:
            count = self.unreadable_feedback
            lines.append(
                f"{count} feedback {'entry' if count == 1 else 'entries'} (of any date: the "
                f"date cannot be read) left out: {'its' if count == 1 else 'their'} "
                "outcomeTimestamp is not a date and time"
            )
        return "\n".join(lines).rstrip() + "\n"


def printable(text: str) -> str:
    """``text`` with control and format characters (ESC, BEL, bidi overrides...) written as
    escapes: override reasons come from EHRs, and this report is read in a terminal, where they
    could rewrite the lines around them."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf")
        else ch
        for ch in text
    )


def parse_instant(value: str | None) -> datetime | None:
    """An ISO-8601 date or time (``Z`` allowed) as an aware datetime, UTC when it names no
    offset; None for None. ValueError if it is not ISO-8601."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _within(when: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or when >= since) and (until is None or when < until)


def build_report(
    served: Iterable[Mapping[str, Any]],
    feedback: Iterable[Mapping[str, Any]],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> FeedbackReport:
    cards = {row["card_uuid"]: row for row in served}
    # Compared as instants, not as text: "10:00:00.5Z" is later than "10:00:00Z", and
    # "11:00:00+02:00" earlier than "10:00:00Z", though their strings sort the other way.
    # Both timestamps are NOT NULL columns, so every row has an instant.
    latest: dict[str, tuple[datetime, Mapping[str, Any]]] = {}
    unreadable = 0
    for entry in feedback:
        try:
            when = parse_instant(entry["outcome_timestamp"])
        except ValueError:
            unreadable += 1
            continue
        if not _within(when, since, until):
            continue
        current = latest.get(entry["card_uuid"])
        if current is None or when >= current[0]:
            latest[entry["card_uuid"]] = (when, entry)

    by_rule: dict[str, Tally] = defaultdict(Tally)
    by_service: dict[str, Tally] = defaultdict(Tally)
    for card_uuid, row in cards.items():
        if not _within(parse_instant(row["served_at"]), since, until):
            continue
        for tally in (by_rule[row["rule_id"]], by_service[row["service_id"]]):
            tally.shown += 1
            if card_uuid not in latest:
                tally.no_feedback += 1
    for card_uuid, (_, entry) in latest.items():
        row = cards.get(card_uuid)
        rule = row["rule_id"] if row else "unknown"
        service = row["service_id"] if row else entry["service_id"]
        for tally in (by_rule[rule], by_service[service]):
            if entry["outcome"] == "accepted":
                tally.accepted += 1
            else:
                tally.overridden += 1
                reason = entry.get("override_display") or entry.get("override_code")
                tally.override_reasons[reason or "(no reason given)"] += 1
    return FeedbackReport(since, until, dict(by_rule), dict(by_service), unreadable)
