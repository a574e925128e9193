"""The service's OpenAPI 3.1 document, built from the service catalogue and served at
``/openapi.json``.

Why it is built in code and not kept as a file: the paths and request schemas come from
:data:`cds_service.api.services.SERVICES` (one path per service, ``hook`` fixed to that service's
hook, its prefetch keys listed), so a new service or prefetch key cannot be forgotten here.

Why OpenAPI 3.1: its schemas are plain JSON Schema 2020-12, so the tests validate real response
bodies against them with ``jsonschema`` unchanged, and schemathesis generates requests from them.

Response schemas are strict (``additionalProperties: false``): they say exactly what this service
sends, so a test fails if a response grows a field nobody documented. Request schemas are as
lenient as the CDS Hooks standard (unknown members and ``extension`` are allowed).

``/openapi.json`` needs no authentication, like ``/healthz``: it holds no patient data and no
secret, and integrators need it before they have credentials.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from flask import Blueprint, Response, jsonify

from cds_service.api.hooks import FEEDBACK_MAX_BYTES
from cds_service.api.models import BEARER_TOKEN, FHIR_ID, REFERENCE, USER_ID
from cds_service.api.services import SERVICES
from cds_service.settings import Settings

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
HOOKS = ("patient-view", "order-select", "order-sign")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _strict(properties: dict[str, Any], required: list[str] | None = None, **more: Any) -> dict:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    schema.update(more)
    return schema


_TEXT = {"type": "string", "minLength": 1}


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Optional request members may be sent as null (read as absent), as real clients do."""
    return {"anyOf": [schema, {"type": "null"}]}


_OPTIONAL_TEXT = {"type": ["string", "null"]}

# ---------------------------------------------------------------------------- response schemas

_RESPONSE_SCHEMAS: dict[str, Any] = {
    "OperationOutcome": _strict(
        {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {
                "type": "array",
                "minItems": 1,
                "items": _strict(
                    {
                        "severity": {"enum": ["fatal", "error", "warning", "information"]},
                        "code": {"type": "string", "pattern": "^[a-z][a-z-]*$"},
                        "diagnostics": {"type": "string"},
                        "expression": {"type": "array", "items": {"type": "string"}},
                    },
                    ["severity", "code"],
                ),
            },
        },
        ["resourceType", "issue"],
        description="Every non-2xx answer: what was wrong, never a stack trace.",
    ),
    "Coding": _strict(
        {"system": _TEXT, "code": _TEXT, "display": _TEXT}, ["system", "code"]
    ),
    "Source": _strict(
        {"label": _TEXT, "url": _TEXT, "icon": _TEXT, "topic": _ref("Coding")},
        ["label"],
        description="topic.code is the id of the rule that made the card "
        "(system urn:hypermobility-cds:rules).",
    ),
    "Link": _strict(
        {
            "label": _TEXT,
            "url": _TEXT,
            "type": {"enum": ["absolute", "smart"]},
            "appContext": _TEXT,
        },
        ["label", "url", "type"],
    ),
    "Action": _strict(
        {
            "type": {"enum": ["create", "update", "delete"]},
            "description": _TEXT,
            "resource": {"type": "object", "required": ["resourceType"]},
            "resourceId": _TEXT,
        },
        ["type", "description"],
    ),
    "Suggestion": _strict(
        {
            "label": _TEXT,
            "uuid": {"type": "string", "format": "uuid"},
            "isRecommended": {"type": "boolean"},
            "actions": {"type": "array", "minItems": 1, "items": _ref("Action")},
        },
        ["label", "uuid"],
    ),
    "Card": _strict(
        {
            "uuid": {"type": "string", "format": "uuid"},
            "summary": {"type": "string", "minLength": 1, "maxLength": 139},
            "detail": _TEXT,
            "indicator": {"enum": ["info", "warning", "critical"]},
            "source": _ref("Source"),
            "suggestions": {"type": "array", "minItems": 1, "items": _ref("Suggestion")},
            "selectionBehavior": {"enum": ["at-most-one", "any"]},
            "overrideReasons": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "allOf": [_ref("Coding")],
                    "required": ["display"],
                },
            },
            "links": {"type": "array", "minItems": 1, "items": _ref("Link")},
        },
        ["uuid", "summary", "indicator", "source"],
        dependentRequired={"suggestions": ["selectionBehavior"]},
    ),
    "CdsServiceResponse": _strict(
        {"cards": {"type": "array", "items": _ref("Card")}},
        ["cards"],
        description="Cards, at most one per rule; an empty list when no rule applies.",
    ),
    "Discovery": _strict(
        {
            "services": {
                "type": "array",
                "items": _strict(
                    {
                        "hook": {"enum": list(HOOKS)},
                        "id": {"enum": list(SERVICES)},
                        "title": _TEXT,
                        "description": _TEXT,
                        "prefetch": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                    },
                    ["hook", "id", "description", "prefetch"],
                ),
            }
        },
        ["services"],
    ),
    "FeedbackResponse": _strict({}, description="An empty object: the feedback was stored."),
    "Health": _strict({"status": {"const": "ok"}}, ["status"]),
    "Readiness": _strict(
        {
            "status": {"enum": ["ready", "not-ready"]},
            "checks": _strict(
                {"knowledge": {"type": "boolean"}, "database": {"type": "boolean"}},
                ["knowledge", "database"],
            ),
        },
        ["status", "checks"],
    ),
}

# ---------------------------------------------------------------------------- request schemas

_FHIR_RESOURCE = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
    # A Bundle's entries must be a list; anything else in a resource is FHIR's business and
    # is checked (invalid resources are skipped) after the request is accepted.
    "if": {"properties": {"resourceType": {"const": "Bundle"}}},
    "then": {"properties": {"entry": {"type": ["array", "null"]}}},
}

# CDS Hooks 2.0 "Extensions": on a CDS Hooks object, ``extension`` is a JSON object.
_EXTENSION = {"type": "object"}

_REQUEST_SCHEMAS: dict[str, Any] = {
    "FhirResource": _FHIR_RESOURCE,
    "PrefetchValue": {
        "description": "A resource, a searchset Bundle (a `next` link is followed on "
        "fhirServer), null (the client found no data), or an OperationOutcome (the client "
        "failed: the key is fetched from fhirServer).",
        "oneOf": [{"type": "null"}, _ref("FhirResource")],
    },
    "FhirAuthorization": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope", "subject"],
        "properties": {
            "access_token": {"type": "string", "pattern": BEARER_TOKEN},
            "token_type": {"type": "string", "pattern": "^[Bb][Ee][Aa][Rr][Ee][Rr]$",
                           "description": "Bearer, in any case (RFC 6749 section 5.1)"},
            "expires_in": {"type": "integer", "minimum": 0},
            "scope": _TEXT,
            "subject": _TEXT,
            "patient": _OPTIONAL_TEXT,
            "extension": _EXTENSION,
        },
    },
    "DraftOrders": {
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "entry": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"resource": {"type": ["object", "null"]}},
                },
            },
        },
    },
    "Coding": {
        "type": "object",
        "required": ["system", "code"],
        "properties": {"system": _TEXT, "code": _TEXT, "display": {"type": "string"}},
    },
    "OverrideReason": {
        "type": "object",
        "properties": {
            "reason": _or_null(_ref("Coding")),
            "userComment": _OPTIONAL_TEXT,
            "extension": _EXTENSION,
        },
        "anyOf": [
            {"required": ["reason"]},
            {"required": ["userComment"], "properties": {"userComment": _TEXT}},
        ],
    },
    "FeedbackEntry": {
        "type": "object",
        "required": ["card", "outcome", "outcomeTimestamp"],
        "properties": {
            "card": {"type": "string", "minLength": 1, "maxLength": 128},
            "outcome": {"enum": ["accepted", "overridden"]},
            "outcomeTimestamp": {
                "type": "string",
                "format": "date-time",
                "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                r"(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$",
            },
            "acceptedSuggestions": {
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": _TEXT, "extension": _EXTENSION},
                },
            },
            "overrideReason": _or_null(_ref("OverrideReason")),
            "extension": _EXTENSION,
        },
        "if": {"properties": {"outcome": {"const": "accepted"}}, "required": ["outcome"]},
        "then": {
            "required": ["acceptedSuggestions"],
            "properties": {"acceptedSuggestions": {"minItems": 1}},
        },
    },
    "FeedbackRequest": {
        "type": "object",
        "required": ["feedback"],
        "properties": {
            "feedback": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": _ref("FeedbackEntry"),
            },
            "extension": _EXTENSION,
        },
        "description": "Repeated entries (same service and content) are stored once.",
    },
}


def _context_schema(hook: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "userId": {"type": "string", "pattern": USER_ID},
        "patientId": {"type": "string", "pattern": FHIR_ID},
        "encounterId": _OPTIONAL_TEXT,
        "extension": _EXTENSION,
    }
    required = ["userId", "patientId"]
    if hook in ("order-select", "order-sign"):
        properties["draftOrders"] = _ref("DraftOrders")
        required.append("draftOrders")
    if hook == "order-select":
        properties["selections"] = {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "pattern": REFERENCE},
        }
        required.append("selections")
    return {"type": "object", "required": required, "properties": properties}


def _hook_request_schema(hook: str, prefetch_keys: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["hook", "hookInstance", "context"],
        "properties": {
            "hook": {"const": hook},
            "hookInstance": {"type": "string", "format": "uuid"},
            "fhirServer": _or_null({"type": "string", "format": "uri", "minLength": 1}),
            "fhirAuthorization": _or_null(_ref("FhirAuthorization")),
            "context": _context_schema(hook),
            "prefetch": {
                "type": ["object", "null"],
                "properties": {key: _ref("PrefetchValue") for key in prefetch_keys},
            },
            "extension": _EXTENSION,
        },
        "dependentRequired": {"fhirAuthorization": ["fhirServer"]},
    }


# ---------------------------------------------------------------------------- operations


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _outcome(description: str) -> dict[str, Any]:
    return _json(_ref("OperationOutcome"), description)


_COMMON_ERRORS = {
    "400": _outcome(
        "Not valid: not JSON, repeated keys, nested too deep, or a member fails the schema. "
        "`issue[].expression` names the member."
    ),
    "401": _outcome("No valid CDS Hooks JWT (when authentication is required)."),
    "413": _outcome(
        f"The body is larger than the configured limit ({Settings.max_body_bytes >> 20} MiB by "
        f"default; for feedback, {FEEDBACK_MAX_BYTES >> 10} KiB)."
    ),
    "415": _outcome("The body is not JSON."),
    "500": _outcome("The service failed; logged with the hookInstance, details not disclosed."),
    "503": _outcome(
        "The JWT could not be checked against the replay cache just now (its database "
        "unavailable); nothing was done. Retry after Retry-After."
    ),
}

_SECURITY = [{"cdsHooksJwt": []}]


def _service_call(service_id: str) -> dict[str, Any]:
    service = SERVICES[service_id]
    schema_name = f"HookRequest-{service.hook}-{service_id}"
    return {
        "post": {
            "operationId": f"call-{service_id}",
            "summary": service.title,
            "description": service.description,
            "tags": ["CDS Hooks"],
            "security": _SECURITY,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref(schema_name)}},
            },
            "responses": {
                "200": _json(_ref("CdsServiceResponse"), "The cards (possibly none)."),
                **_COMMON_ERRORS,
                "404": _outcome("No such service."),
                "412": _outcome(
                    "Required data is missing: a prefetch key was absent and could not be "
                    "fetched from fhirServer (not given, not allowed, timed out, answered an "
                    "error, HTML or invalid FHIR, or paged without end) within the FHIR "
                    "deadline (CDS_FHIR_DEADLINE_S, 2 s by default). One issue per missing "
                    "key, `diagnostics` starting with the key's name. No cards are computed "
                    "from partial data."
                ),
            },
        }
    }, schema_name


def _feedback(service_id: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"feedback-{service_id}",
            "summary": "Feedback on this service's cards (accepted or overridden).",
            "tags": ["CDS Hooks"],
            "security": _SECURITY,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("FeedbackRequest")}},
            },
            "responses": {
                "200": _json(_ref("FeedbackResponse"), "Stored (durably, before answering)."),
                **_COMMON_ERRORS,
                "404": _outcome("No such service."),
                "503": _outcome(
                    "Not stored, or the JWT not checked (database unavailable); retry after "
                    "Retry-After."
                ),
            },
        }
    }


def _get(operation_id: str, summary: str, responses: dict[str, Any], **more: Any) -> dict:
    return {"get": {"operationId": operation_id, "summary": summary, **more,
                    "responses": responses}}


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/cds-services": _get(
            "discovery",
            "CDS Hooks discovery: the services offered, with their prefetch templates.",
            {
                "200": _json(_ref("Discovery"), "The service catalogue."),
                "401": _COMMON_ERRORS["401"],
            },
            tags=["CDS Hooks"],
            security=_SECURITY,
        )
    }
    schemas = {**_RESPONSE_SCHEMAS, **_REQUEST_SCHEMAS}
    for service_id, service in SERVICES.items():
        path_item, schema_name = _service_call(service_id)
        paths[f"/cds-services/{service_id}"] = path_item
        paths[f"/cds-services/{service_id}/feedback"] = _feedback(service_id)
        schemas[schema_name] = _hook_request_schema(service.hook, list(service.prefetch))
    paths["/healthz"] = _get(
        "healthz",
        "Liveness: the process answers requests.",
        {"200": _json(_ref("Health"), "Alive.")},
        tags=["Operations"],
    )
    paths["/readyz"] = _get(
        "readyz",
        "Readiness: knowledge loaded and the feedback database writable.",
        {
            "200": _json(_ref("Readiness"), "Ready to serve."),
            "503": _json(_ref("Readiness"), "Not ready: `checks` says which check failed."),
        },
        tags=["Operations"],
    )
    paths["/metrics"] = _get(
        "metrics",
        "Prometheus metrics (text format 0.0.4) of the worker process that answers.",
        {
            "200": {
                "description": "Request counts and latencies per service, cards per rule, "
                "rule failures, FHIR fetch errors, feedback entries, process RSS/CPU.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        tags=["Operations"],
    )
    paths["/openapi.json"] = _get(
        "openapi",
        "This document.",
        {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
        tags=["Operations"],
    )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "hypermobility-cds",
            "version": "0.1.0",
            "summary": "CDS Hooks 2.0 service for hypermobility-related chronic low back and "
            "hip pain.",
            "description": "CDS Hooks calls and feedback need a signed JWT "
            "(`Authorization: Bearer`) unless the operator set CDS_AUTH=off. /healthz, "
            "/readyz, /metrics and /openapi.json need none and carry no patient data: "
            "restrict them at the network edge if they must not be public. Every error "
            "answer is a FHIR OperationOutcome.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "CDS Hooks", "description": "Discovery, service calls and feedback."},
            {"name": "Operations", "description": "Health, readiness, metrics, this document."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "cdsHooksJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The CDS Hooks client's JWT, signed with a key from its "
                    "trusted JWKS; audience is this service's URL.",
                }
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may modify it)."""
    return copy.deepcopy(_document())


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(_document())
