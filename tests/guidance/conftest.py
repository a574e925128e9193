"""Helpers to run rules directly on facts built from plain FHIR JSON (no HTTP, no Flask)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from cds_service.facts.build import build_facts
from cds_service.facts.model import ClinicalFacts
from cds_service.fhir.record import build_record, validate
from cds_service.guidance.rule import RuleContext
from cds_service.guidance.settings import GuidanceSettings
from cds_service.knowledge import load_knowledge

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def knowledge():
    return load_knowledge()


@pytest.fixture
def make_facts(knowledge) -> Callable[..., ClinicalFacts]:
    """facts(resources, drafts=(), selected=None, settings=None, now=NOW, patient_id="p1",
    strict=False).

    ``strict`` guards against vacuous negatives: every resource must be valid FHIR and be read.
    """

    def build(
        resources: Iterable[dict[str, Any]],
        drafts: Iterable[dict[str, Any]] = (),
        *,
        selected: set[str] | None = None,
        settings: GuidanceSettings | None = None,
        now: datetime = NOW,
        patient_id: str = "p1",
        strict: bool = False,
    ) -> ClinicalFacts:
        record = build_record(list(resources), patient_id, knowledge)
        if strict:
            assert record.skipped_invalid == record.skipped_irrelevant == 0
        draft_models = [m for m in (validate(d, draft=True) for d in drafts) if m is not None]
        return build_facts(
            patient_id=patient_id,
            record=record,
            draft_orders=draft_models,
            selected=selected,
            now=now,
            settings=settings or GuidanceSettings(),
            knowledge=knowledge,
        )

    return build


@pytest.fixture
def make_ctx(knowledge) -> Callable[..., RuleContext]:
    def build(hook: str = "patient-view", settings: GuidanceSettings | None = None) -> RuleContext:
        return RuleContext(hook=hook, settings=settings or GuidanceSettings(), knowledge=knowledge)

    return build
