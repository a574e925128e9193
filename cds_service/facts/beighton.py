"""Beighton score: find it, validate it, pick the most recent, apply the threshold.

No LOINC or SNOMED CT code exists for the score, so EHRs file it under local flowsheet codes.
rules.md therefore recognises it by the project's own code *or* by the word "Beighton" in the
code's text or displays. Only final/amended/corrected integers 0..9 count.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Any

from cds_service.facts.fhirpath import (
    EARLIEST,
    age_on,
    codings,
    first_present,
    gives_a_value,
    period_start,
    texts,
    to_date,
    to_instant,
)
from cds_service.facts.model import BeightonFact
from cds_service.guidance.settings import GuidanceSettings
from cds_service.knowledge import Knowledge

COUNTED_STATUSES = frozenset({"final", "amended", "corrected"})


def is_beighton(observation: Any, knowledge: Knowledge) -> bool:
    if knowledge.matches("beighton-score", codings(observation.code)):
        return True
    return any(knowledge.text_matches("beighton-score", t) for t in texts(observation.code))


def score_value(observation: Any) -> int | None:
    """The integer score 0..9, or None when the value is missing or not a valid score."""
    if observation.valueInteger is not None:
        value: Any = observation.valueInteger
    elif observation.valueQuantity is not None and observation.valueQuantity.value is not None:
        value = observation.valueQuantity.value
    else:
        return None
    if isinstance(value, Decimal | float):
        if value != int(value):
            return None
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        return None
    return value


def _effective(observation: Any) -> str | None:
    """The observation's effective time as written (its first one present)."""
    return first_present(
        observation.effectiveDateTime,
        observation.effectiveInstant,
        period_start(observation.effectivePeriod),
        observation.issued,
    )


def effective_date(observation: Any) -> date | None:
    return to_date(_effective(observation))


def valid_scores(
    observations: Iterable[Any], knowledge: Knowledge
) -> list[tuple[int, date | None, Any]]:
    """Every counted Beighton score as (score, date, observation); one that says why its
    value is absent is not (fhirpath.gives_a_value, as for every assessment)."""
    scores = []
    for obs in observations:
        if obs.status not in COUNTED_STATUSES or not gives_a_value(obs):
            continue
        if not is_beighton(obs, knowledge):
            continue
        value = score_value(obs)
        if value is not None:
            scores.append((value, effective_date(obs), obs))
    return scores


def threshold_for(age: int | None, settings: GuidanceSettings) -> tuple[int, str]:
    """The threshold and a sentence saying where it comes from, for the card."""
    fixed = settings.beighton_fixed_threshold
    if settings.beighton_threshold_mode == "fixed":
        return fixed, f"threshold {fixed}/9 (the source guidance's cut-off)"
    if age is None:
        return fixed, f"threshold {fixed}/9 (age unknown, so the age bands could not be used)"
    for min_age, threshold in settings.beighton_age_bands:
        if age >= min_age:
            return threshold, f"threshold {threshold}/9 (2017 criteria age band for age {age})"
    return fixed, f"threshold {fixed}/9"


def most_recent_beighton(
    observations: Iterable[Any],
    knowledge: Knowledge,
    born: date | None,
    today: date,
    settings: GuidanceSettings,
) -> BeightonFact | None:
    scores = valid_scores(observations, knowledge)
    if not scores:
        return None
    # rules.md: "the most recent by effective date wins", compared as moments, not calendar
    # days (two scores on one day, or across a date line, are told apart by their times); an
    # undated one is the oldest.
    score, on, obs = max(scores, key=lambda item: to_instant(_effective(item[2])) or EARLIEST)
    # The age band is the one the patient was in when examined: a score of 5 at 17 (band 6)
    # does not meet the criteria because the patient is 19 now.
    exam_age = age_on(born, on or today)
    if exam_age is not None and exam_age < 0:  # dated before birth: a date error; age now
        exam_age = age_on(born, today)
    threshold, basis = threshold_for(exam_age, settings)
    return BeightonFact(
        score=score, on=on, observation_id=obs.id, threshold=threshold, threshold_basis=basis
    )
