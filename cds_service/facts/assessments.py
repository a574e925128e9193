"""The five assessments the guidance says are often missed, and the record that satisfies each.

Implements rules.md "Assessments": each value is a short description of the evidence found
(for review and tests), or None when the assessment has no record.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from cds_service.facts.beighton import effective_date
from cds_service.facts.fhirpath import codings, gives_a_value
from cds_service.facts.model import AssessmentId, BeightonFact, ConditionFact, ServiceOrder
from cds_service.fhir.record import COMPONENT_CONCEPTS
from cds_service.knowledge import Knowledge

NOT_A_RESULT = frozenset({"entered-in-error", "cancelled", "registered"})


def _concepts(knowledge: Knowledge, observation: Any) -> frozenset[str]:
    """The concepts of an observation's code, and the assessment concepts of its components'
    codes (a panel of orthostatic vitals is one Observation whose components carry the supine
    and standing heart rates: it counts as both, as two separate Observations would). A value
    that is absent (``dataAbsentReason``: a screen declined, a reading not performed) is no
    result, for the observation or for its component."""
    found: frozenset[str] = frozenset()
    if gives_a_value(observation):
        found = found.union(*(knowledge.concepts_of(s, c) for s, c in codings(observation.code)))
    for component in observation.component or ():
        if not gives_a_value(component):
            continue
        for system, code in codings(component.code):
            found |= knowledge.concepts_of(system, code) & COMPONENT_CONCEPTS
    return found


class _Results:
    """The observations that are results, each with the concepts of its codes, worked out once
    (five assessments look through the same observations, a long chart holds hundreds)."""

    def __init__(self, knowledge: Knowledge, observations: Iterable[Any]) -> None:
        self._knowledge = knowledge
        self._classified = [
            (obs, _concepts(knowledge, obs))
            for obs in observations
            if obs.status not in NOT_A_RESULT
        ]

    def with_concept(self, concept: str) -> list[tuple[date | None, Any]]:
        self._knowledge.concept(concept)  # an unknown concept id is a KeyError, not "none found"
        return [(effective_date(obs), obs) for obs, found in self._classified if concept in found]


def find_assessments(
    knowledge: Knowledge,
    *,
    today: date,
    psych_lookback_days: int,
    observations: list[Any],
    conditions: list[ConditionFact],
    services: Iterable[ServiceOrder],
    any_beighton: BeightonFact | None,
) -> dict[AssessmentId, str | None]:
    services = [s for s in services if s.on_record]
    results = _Results(knowledge, observations)
    found: dict[AssessmentId, str | None] = {}

    found["hypermobility"] = any_beighton.evidence() if any_beighton else None

    since = today - timedelta(days=psych_lookback_days)
    screens = [
        (when, obs)
        for when, obs in results.with_concept("psych-screen")
        if when is not None and when >= since
    ]
    mood = [c for c in conditions if c.active and "depression-or-anxiety" in c.concepts]
    if screens:
        when, _ = max(screens, key=lambda item: item[0])
        found["psychological-distress"] = f"screening questionnaire on {when.isoformat()}"
    elif mood:
        found["psychological-distress"] = mood[0].evidence()
    else:
        found["psychological-distress"] = None

    lying = results.with_concept("heart-rate-lying-or-sitting")
    standing = results.with_concept("heart-rate-standing")
    tilt = [s for s in services if "tilt-table-test" in s.concepts] + [
        obs for _, obs in results.with_concept("tilt-table-test")
    ]
    pots = [c for c in conditions if "pots" in c.concepts]
    if lying and standing:
        found["autonomic"] = "orthostatic heart rates recorded"
    elif tilt:
        found["autonomic"] = "tilt table test on record"
    elif pots:
        found["autonomic"] = pots[0].evidence()
    else:
        found["autonomic"] = None

    pelvic_dx = [c for c in conditions if "pelvic-floor-diagnosis" in c.concepts]
    pelvic_work = [s for s in services if "pelvic-floor-workup" in s.concepts] + [
        obs for _, obs in results.with_concept("pelvic-floor-workup")
    ]
    if pelvic_dx:
        found["pelvic-floor"] = pelvic_dx[0].evidence()
    elif pelvic_work:
        found["pelvic-floor"] = "pelvic floor work-up on record"
    else:
        found["pelvic-floor"] = None

    mast = [c for c in conditions if "mast-cell-activation" in c.concepts]
    found["mast-cell"] = mast[0].evidence() if mast else None
    return found
