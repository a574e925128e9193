"""The clinical facts: a small, typed summary of one patient that every rule reads.

Facts are computed once per hook call from the parsed FHIR record and the draft orders; rules
never look at FHIR directly. Each fact keeps what a clinician needs to see as evidence on the
card (the condition's name and codes, the observation's value and date, the order's name), so a
rule can say *why* it fired without re-reading the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

PainSite = Literal["back", "hip"]
Side = Literal["left", "right", "both"]  # the side a hip finding or order names
AssessmentId = Literal[
    "hypermobility", "psychological-distress", "autonomic", "pelvic-floor", "mast-cell"
]
ASSESSMENT_IDS: tuple[AssessmentId, ...] = (
    "hypermobility",
    "psychological-distress",
    "autonomic",
    "pelvic-floor",
    "mast-cell",
)


@dataclass(frozen=True)
class ConditionFact:
    """A Condition as evidence: its name, its codes, its concepts and its dates.

    ``onset`` is the onset as a date when one can be worked out (from ``onsetDateTime``, the
    start of ``onsetPeriod``, or an onset age and the patient's birth date); ``onset_age`` then
    says which age it came from ("age 30 years"). ``onset_undated`` says how the onset was
    given when it is there but is not a date (text, an age without a birth date...): rules.md
    then does not fall back to ``recorded``.
    """

    id: str | None
    name: str
    codes: str
    concepts: frozenset[str]
    active: bool
    onset: date | None
    recorded: date | None
    remission: bool = False  # clinical status "remission"
    side: Side | None = None  # the side its texts name (facts.laterality)
    onset_age: str | None = None
    onset_undated: str | None = None
    # The onset and recorded moments, when given with a time of day: the 84-day test then
    # counts from the moment, not from its local calendar date.
    onset_at: datetime | None = None
    recorded_at: datetime | None = None

    def evidence(self) -> str:
        codes = f" ({self.codes})" if self.codes and self.codes != self.name else ""
        return f"{self.name}{codes}"


@dataclass(frozen=True)
class PainFact:
    """An active back or hip pain condition that meets the chronic definition, and why."""

    condition: ConditionFact
    site: PainSite
    chronic_because: str


@dataclass(frozen=True)
class BeightonFact:
    """The most recent valid Beighton score, with the threshold applied to it."""

    score: int
    on: date | None
    observation_id: str | None
    threshold: int
    threshold_basis: str

    @property
    def meets_threshold(self) -> bool:
        return self.score >= self.threshold

    def evidence(self) -> str:
        when = f" on {self.on.isoformat()}" if self.on else " (undated)"
        return f"Beighton score {self.score}/9{when}"


@dataclass(frozen=True)
class MedicationOrder:
    """A MedicationRequest, classified for the opioid and corticosteroid rules."""

    resource_type: str
    id: str | None
    name: str
    status: str | None
    authored: date | None
    selected: bool
    opioid: str | None = None  # how it was recognised as an opioid, e.g. "RxNorm 1049621"
    # The opioid ingredients it names, lower case ("oxycodone"): tells a renewal from a new drug.
    opioid_ingredients: frozenset[str] = frozenset()
    moud: str | None = None  # why it counts as a medication for opioid use disorder
    systemic_corticosteroid: str | None = None  # why it counts as systemic
    corticosteroid_not_flagged: str | None = None  # why a corticosteroid is not flagged

    @property
    def reference(self) -> str | None:
        return f"{self.resource_type}/{self.id}" if self.id else None


# Statuses of an order, procedure or report that is not on record (rules.md "on record": any
# status except entered-in-error, revoked or cancelled; a Procedure's not-done says it never
# happened, so a hospice admission or an assessment "not done" is not one on record).
NOT_ON_RECORD = frozenset({"entered-in-error", "revoked", "cancelled", "not-done"})


@dataclass(frozen=True)
class ServiceOrder:
    """A ServiceRequest, DeviceRequest, Procedure or DiagnosticReport, classified by concept."""

    resource_type: str
    id: str | None
    name: str
    status: str | None
    on: date | None
    concepts: frozenset[str]
    draft: bool = False  # came from context.draftOrders
    selected: bool = False  # one of the orders this order-select call is about
    planned_hours: float | None = None
    normal_result: bool = False  # a final report whose conclusion is normal/negative/equivocal
    conclusion: str | None = None
    # A report's earliest and latest possible moments (fhirpath.moment_span), to order reports
    # by; None when undated.
    span: tuple[datetime, datetime] | None = None
    side: Side | None = None  # the side its texts name (facts.laterality)

    @property
    def reference(self) -> str | None:
        return f"{self.resource_type}/{self.id}" if self.id else None

    @property
    def on_record(self) -> bool:
        """Counts as ordered or done: any status but entered-in-error, revoked or cancelled,
        and, for a Procedure, not-done (it was not performed)."""
        return self.status not in NOT_ON_RECORD


@dataclass(frozen=True)
class ClinicalFacts:
    """Everything the rules need to know about one patient at one moment."""

    now: datetime
    patient_id: str
    age: int | None
    hypermobility_diagnoses: tuple[ConditionFact, ...]
    has_any_eds_or_hypermobility_diagnosis: bool
    beighton: BeightonFact | None
    chronic_pain: tuple[PainFact, ...]
    opioid_exemptions: tuple[str, ...]
    has_opioid_use_disorder: bool
    pots: tuple[ConditionFact, ...]
    hip_soft_tissue: tuple[ConditionFact, ...]
    draft_medications: tuple[MedicationOrder, ...]
    active_medications: tuple[MedicationOrder, ...]
    services: tuple[ServiceOrder, ...]
    assessments: Mapping[AssessmentId, str | None] = field(default_factory=dict)

    @property
    def today(self) -> date:
        return self.now.date()

    @property
    def hypermobility_evidence(self) -> bool:
        return bool(self.hypermobility_diagnoses) or bool(
            self.beighton and self.beighton.meets_threshold
        )

    @property
    def in_cohort(self) -> bool:
        """Hypermobility evidence and chronic back or hip pain (rules.md, "In cohort")."""
        return self.hypermobility_evidence and bool(self.chronic_pain)

    @property
    def opioid_exempt(self) -> bool:
        return bool(self.opioid_exemptions)

    @property
    def missing_assessments(self) -> tuple[AssessmentId, ...]:
        return tuple(a for a in ASSESSMENT_IDS if not self.assessments.get(a))

    def services_with(self, concept: str) -> tuple[ServiceOrder, ...]:
        return tuple(s for s in self.services if concept in s.concepts)
