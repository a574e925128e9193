"""One hook call, end to end, without HTTP: validated request -> data -> facts -> rules -> cards.

The Flask view only reads the body and turns exceptions into responses; everything in between
lives here so the developer CLI, the benchmarks and the tests can drive the same path.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic
from typing import Any

from pydantic import ValidationError

from cds_service.api.models import (
    CONTEXTS,
    Context,
    HookRequest,
    OrderSelectContext,
    OrderSignContext,
    problems,
)
from cds_service.api.services import ServiceDefinition
from cds_service.facts.build import build_facts, ordered, prescriptions
from cds_service.fhir.client import FhirClient
from cds_service.fhir.prefetch import DataUnavailable, gather
from cds_service.fhir.record import build_record, is_relevant, validate
from cds_service.fhir.references import missing_medications, read_medications
from cds_service.guidance.engine import Evaluation, evaluate
from cds_service.guidance.rule import RuleContext
from cds_service.guidance.rules import ALL
from cds_service.knowledge import Knowledge
from cds_service.settings import Settings

logger = logging.getLogger("cds_service.pipeline")

DRAFT_TYPES = frozenset({"MedicationRequest", "ServiceRequest", "DeviceRequest", "Medication"})


# CPython's third GC threshold: middle-generation collections between two full ones (default 10).
GC_FULL_COLLECTION_EVERY = 1000


def tune_garbage_collector() -> None:
    """Make Python's full garbage collections rare (idempotent; once per process in practice).

    A hook call builds one short-lived object per JSON value of its prefetch, about a million
    for a 10,000-resource chart. Reference counting frees all of them when the call ends, but
    while they live, CPython's default thresholds run a *full* collection after every 100
    young ones (once the old generation has grown by a quarter), each walking every object in
    the process: measured by the benchmarks, that was ~40% of a 10k-resource call and made its
    cost grow faster than the chart. Young collections stay as they are (they keep real cyclic
    garbage in check); full ones happen 100 times less often.
    """
    young, middle, full = gc.get_threshold()
    if full < GC_FULL_COLLECTION_EVERY:
        gc.set_threshold(young, middle, GC_FULL_COLLECTION_EVERY)


class ContextInvalid(ValueError):
    """The hook's context does not match the hook's schema (a 400)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{where}: {what}" for where, what in errors))


@dataclass(frozen=True)
class HookResult:
    evaluation: Evaluation
    resources: int
    skipped_invalid: int
    skipped_other_patient: int
    prefetch_keys: tuple[str, ...]
    fetched_keys: tuple[str, ...]
    medications_read: int = 0  # referenced Medications read from fhirServer
    unresolved_medications: int = 0  # referenced Medications that could not be had


class HookPipeline:
    def __init__(
        self,
        settings: Settings,
        knowledge: Knowledge,
        client: FhirClient,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rules: tuple = ALL,
    ) -> None:
        self.settings = settings
        self.knowledge = knowledge
        self.client = client
        self.clock = clock
        self.rules = rules
        tune_garbage_collector()

    def parse_context(self, request: HookRequest) -> Context:
        try:
            return CONTEXTS[request.hook].model_validate(request.context)
        except ValidationError as exc:
            raise ContextInvalid(problems(exc, "context")) from None

    def keeps_entry(self, entry: Any) -> bool:
        """False for a prefetch Bundle entry whose resource no rule reads (the relevance filter
        of :func:`~cds_service.fhir.record.build_record`), so a long body's reader can drop it
        while parsing; every other entry, odd ones included, is left for the pipeline."""
        if type(entry) is not dict:
            return True
        resource = entry.get("resource")
        return type(resource) is not dict or self.keeps_resource(resource)

    def keeps_resource(self, resource: dict[str, Any]) -> bool:
        """The same filter for one resource (fetched from the FHIR server, page by page)."""
        return is_relevant(resource, self.knowledge)

    def run(
        self, service: ServiceDefinition, request: HookRequest, *, dropped_entries: int = 0
    ) -> HookResult:
        """``dropped_entries``: prefetch entries :meth:`keeps_entry` refused while the body was
        read; like those the FHIR client drops, they count among the chart's ``resources``."""
        limit = self.settings.max_prefetch_keys
        if request.prefetch and len(request.prefetch) > limit:
            raise ContextInvalid([("prefetch", f"more than {limit} keys")])
        context = self.parse_context(request)
        patient_id = context.patientId
        # By the context's type, not by which members it has: unknown members are kept, so a
        # patient-view may carry a stray "draftOrders" and an order-sign a stray "selections".
        draft_resources = (
            context.draftOrders.resources() if isinstance(context, OrderSignContext) else []
        )
        if len(draft_resources) > self.settings.max_draft_orders:
            raise ContextInvalid(
                [("context.draftOrders", f"more than {self.settings.max_draft_orders} orders")]
            )
        token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
        deadline = monotonic() + self.client.limits.deadline_s  # all of this call's fetching
        budget = self.client.budget()  # and all the bytes it may read
        data = gather(
            templates=service.prefetch,
            context=request.context,
            prefetch=request.prefetch,
            fhir_server=request.fhirServer,
            token=token,
            client=self.client,
            allowlist=self.settings.fhir_server_allowlist,
            allow_loopback_http=self.settings.allow_loopback_http,
            keep=self.keeps_resource,
            deadline=deadline,
            budget=budget,
        )
        record = build_record(data.resources, patient_id, self.knowledge)
        drafts = []
        for resource in draft_resources:
            resource_type = resource.get("resourceType")
            if not isinstance(resource_type, str) or resource_type not in DRAFT_TYPES:
                continue
            model = validate(resource, draft=True)
            if model is None:
                record.skipped_invalid += 1
            elif model.get_resource_type() == "Medication":
                record.add(model)
            else:
                drafts.append(model)
        # The Medications of the orders the facts read, and only those, are fetched (a failed
        # read fails the call): the drafts (facts.build.ordered: no doNotPerform one), and the
        # prescriptions on record (facts.build.prescriptions), which the order hooks read only
        # to tell a drafted drug's renewal, so not when no drug is drafted.
        drafted = ordered(d for d in drafts if d.get_resource_type() == "MedicationRequest")
        on_record = (
            prescriptions(record.medication_requests)
            if drafted or service.hook == "patient-view"
            else []
        )
        orders = [*on_record, *drafted]
        missing = missing_medications(orders, record.medications)
        reads = read_medications(
            missing,
            fhir_server=request.fhirServer,
            token=token,
            client=self.client,
            allowlist=self.settings.fhir_server_allowlist,
            allow_loopback_http=self.settings.allow_loopback_http,
            deadline=deadline,
            budget=budget,
        )
        if reads.failed:
            reasons = ", ".join(sorted(set(reads.failed.values())))
            raise DataUnavailable({
                "referenced-medications": f"{len(reads.failed)} Medication(s) that orders name "
                f"could not be read from fhirServer ({reasons})"
            })
        if reads.found:
            build_record(reads.found, patient_id, self.knowledge, into=record)
        unresolved = len(missing_medications(orders, record.medications)) if missing else 0
        selections = context.selections if isinstance(context, OrderSelectContext) else None
        facts = build_facts(
            patient_id=patient_id,
            record=record,
            draft_orders=drafts,
            selected=set(selections) if selections else None,
            now=self.clock(),
            settings=self.settings.guidance,
            knowledge=self.knowledge,
        )
        evaluation = evaluate(
            facts,
            RuleContext(
                hook=request.hook, settings=self.settings.guidance, knowledge=self.knowledge
            ),
            self.rules,
        )
        return HookResult(
            evaluation=evaluation,
            resources=len(data.resources) + data.dropped + dropped_entries,
            skipped_invalid=record.skipped_invalid,
            skipped_other_patient=record.skipped_other_patient,
            prefetch_keys=tuple(data.from_prefetch),
            fetched_keys=tuple(data.fetched),
            medications_read=len(missing) - unresolved,
            unresolved_medications=unresolved,
        )
