"""The CDS Hooks endpoints: discovery, service calls and feedback.

The views are thin: read and validate the body, hand the request to the pipeline, turn its
exceptions into OperationOutcome responses, log counts and timings (never patient data).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from cds_service.api.body import read_hook_body, read_json_object
from cds_service.api.errors import ApiError, try_again_later
from cds_service.api.metrics import record_evaluation, record_feedback
from cds_service.api.models import FeedbackRequest, HookRequest, problems
from cds_service.api.services import SERVICES, ServiceDefinition
from cds_service.fhir.prefetch import DataUnavailable, PrefetchInvalid
from cds_service.guidance.cards import response_json
from cds_service.logs import hook_instance_var, service_id_var
from cds_service.pipeline import ContextInvalid

logger = logging.getLogger("cds_service.api")

bp = Blueprint("cds_hooks", __name__)

# A feedback body is a few hundred bytes a card; the hook calls' cap (CDS_MAX_BODY_BYTES, sized
# for long prefetched charts) would let one feedback POST hold a worker's memory, or a comment
# of megabytes be stored.
FEEDBACK_MAX_BYTES = 256 * 1024


def _invalid(errors: list[tuple[str, str]]) -> ApiError:
    """A 400 with one issue per (where, message); ``where`` ("" for the body) is the expression."""
    return ApiError(
        400,
        [f"{where}: {message}" if where else message for where, message in errors],
        expressions=[where or None for where, _ in errors],
    )


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES.get(service_id)
    if service is None:
        raise ApiError(404, f"No CDS service with id {service_id[:80]!r}.", code="not-found")
    return service


def _feedback_body() -> dict[str, Any]:
    settings = current_app.extensions["cds"].settings
    return read_json_object(
        request,
        max_bytes=min(settings.max_body_bytes, FEEDBACK_MAX_BYTES),
        max_depth=settings.max_json_depth,
    )


def _hook_body() -> tuple[dict[str, Any], int]:
    """The hook call's body, less the prefetch entries no rule reads (counted) when it is long.

    A hook call's prefetch is most of its bytes (a long chart), and nothing walks it recursively:
    the relevance filter and the patient check read fixed paths, and the models the rules read
    have a fixed depth and ignore every element they do not name. Walking it only to bound its
    nesting cost about a third of a 10,000-resource call, so the limit applies to the rest.
    """
    cds = current_app.extensions["cds"]
    return read_hook_body(
        request,
        max_bytes=cds.settings.max_body_bytes,
        max_depth=cds.settings.max_json_depth,
        keep_entry=cds.pipeline.keeps_entry,
    )


def _sandbox_pama_sign(profile: str, service_hook: str, body_hook: str) -> bool:
    """The CDS Hooks sandbox's PAMA tab signs imaging orders with a body saying "order-select"
    (a known sandbox bug: shared notes, "Tabs -> hooks"), so order-sign's imaging checks could
    not be tried in it at all. The development profile, which trusts the sandbox anyway, answers
    such a call as the order-sign it is; production refuses it, as the standard says."""
    return (
        profile == "development" and service_hook == "order-sign" and body_hook == "order-select"
    )


@bp.get("/cds-services", strict_slashes=False)  # "/cds-services/" too, with no redirect
def discovery() -> Response:
    return jsonify({"services": [s.discovery() for s in SERVICES.values()]})


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    started = time.perf_counter()
    service = _service(service_id)
    service_id_var.set(service.id)
    body, dropped = _hook_body()
    try:
        hook_request = HookRequest.model_validate(body)
    except ValidationError as exc:
        raise _invalid(problems(exc)) from None
    hook_instance_var.set(hook_request.hookInstance)
    cds = current_app.extensions["cds"]
    if hook_request.hook != service.hook:
        if not _sandbox_pama_sign(cds.settings.profile, service.hook, hook_request.hook):
            raise ApiError(
                400,
                f"This service answers the {service.hook!r} hook, "
                f"not {hook_request.hook[:40]!r}.",
                expressions=["hook"],
            )
        logger.info("order-select body answered as order-sign (sandbox PAMA tab)")
        hook_request = hook_request.model_copy(update={"hook": service.hook})
    try:
        result = cds.pipeline.run(service, hook_request, dropped_entries=dropped)
    except ContextInvalid as exc:
        raise _invalid(exc.errors) from None
    except PrefetchInvalid as exc:
        raise ApiError(400, str(exc), expressions=[f"prefetch.{exc.key}"]) from None
    except DataUnavailable as exc:
        logger.warning("data unavailable", extra={"status": 412, "reason": sorted(exc.problems)})
        raise ApiError(
            412,
            [f"{key}: {why}" for key, why in exc.problems.items()],
            code="incomplete",
        ) from None
    cards = result.evaluation.cards
    record_evaluation([c.rule_id or "" for c in cards], result.evaluation.failed_rules)
    cds.store.record_served(
        service.id, hook_request.hook, [(c.uuid, c.rule_id or "") for c in cards]
    )
    logger.info(
        "hook answered",
        extra={
            "hook": hook_request.hook,
            "status": 200,
            "cards": len(cards),
            "rules": [c.rule_id for c in cards],
            "failed_rules": list(result.evaluation.failed_rules),
            "resources": result.resources,
            "skipped_invalid": result.skipped_invalid,
            "skipped_other_patient": result.skipped_other_patient,
            "prefetch_keys": list(result.prefetch_keys),
            "fetched_keys": list(result.fetched_keys),
            "medications_read": result.medications_read,
            "unresolved_medications": result.unresolved_medications,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return Response(response_json(cards), mimetype="application/json")


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    service = _service(service_id)
    service_id_var.set(service.id)
    body = _feedback_body()
    try:
        parsed = FeedbackRequest.model_validate(body)
    except ValidationError as exc:
        raise _invalid(problems(exc)) from None
    entries = [e.model_dump(mode="json", exclude_none=True) for e in parsed.feedback]
    try:
        added = current_app.extensions["cds"].store.add_feedback(service.id, entries)
    except SQLAlchemyError as error:
        # Not acknowledged, so the EHR keeps the feedback; 503 + Retry-After says "try again".
        logger.error("feedback not stored", extra={"error": type(error).__name__})
        raise try_again_later(
            "Feedback could not be stored just now; nothing was recorded. Retry later."
        ) from None
    record_feedback(len(entries), added)
    logger.info("feedback stored", extra={"entries": len(entries), "new_entries": added})
    return jsonify({})
