"""Load the synthetic patients and hook scenarios in ``fhir_fixtures/``.

Fixture dates are absolute and written as if today were :data:`FIXTURE_ANCHOR`. Clinical rules
depend on elapsed time (12 weeks of pain, 12-month look-backs), so every loader shifts every FHIR
date by ``today - FIXTURE_ANCHOR`` days: "onset 30 days ago" stays 30 days ago whenever the tests
run. Shifting keeps each value's precision (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or a full
dateTime, whose time of day and offset are kept verbatim).

A scenario is one hook call with its expected outcome (the exact set of rule ids that must fire),
so the same files drive the rule tests, the ``fire`` CLI and end-to-end checks.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cds_service.api.services import SERVICES, ServiceDefinition
from cds_service.devtools import memory_fhir
from cds_service.facts import model as facts_model
from cds_service.guidance.settings import ALL_RULES

FIXTURE_ANCHOR = date(2026, 11, 1)
HOOKS = ("patient-view", "order-select", "order-sign")
ORDER_HOOKS = ("order-select", "order-sign")
DRAFT_ORDER_TYPES = ("MedicationRequest", "ServiceRequest", "DeviceRequest")
DEFAULT_USER_ID = "Practitioner/example"
# Resource types the services' prefetch templates read or search ("Patient/..", "Condition?.."):
# all a fixture patient needs to hold, and all a FHIR server must answer for the service.
QUERIED_TYPES = tuple(
    dict.fromkeys(
        re.split(r"[/?]", template, maxsplit=1)[0]
        for service in SERVICES.values()
        for template in service.prefetch.values()
    )
)

RULE_IDS = frozenset(ALL_RULES)
ASSESSMENT_IDS = frozenset(facts_model.ASSESSMENT_IDS)
PATIENT_ID_RE = re.compile(r"^[a-z0-9-]{1,64}$")

# FHIR elements of type date/dateTime/instant (by name), besides the *Date/*DateTime/*Instant
# suffix rule below. Values are only shifted when they also look like a FHIR date.
_DATE_KEYS = frozenset(
    {
        "issued",
        "authoredOn",
        "lastUpdated",
        "date",
        "start",
        "end",
        "event",
        "timestamp",
        "recorded",
        "created",
        "dateWritten",
        "whenHandedOver",
        "whenPrepared",
        "sent",
        "received",
        "time",
    }
)
_DATE_SUFFIXES = ("Date", "DateTime", "Instant")
_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?P<rest>T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class ScenarioError(ValueError):
    """A fixture or scenario file is missing or malformed."""


def fixtures_dir() -> Path:
    """``$CDS_FIXTURES_DIR``, else ``fhir_fixtures/`` at the repository root."""
    env = os.environ.get("CDS_FIXTURES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "fhir_fixtures"


def _is_date_key(key: str) -> bool:
    return key in _DATE_KEYS or (key.endswith(_DATE_SUFFIXES) and key[:1].islower())


def shift_date_value(value: str, days: int) -> str:
    """Shift one FHIR date/dateTime/instant string by ``days``, keeping its precision.

    A partial date is treated as its first day (``2025`` as 2025-01-01, ``2025-03`` as
    2025-03-01), shifted, and written back at the same precision. A time of day and offset are
    kept as written, so a full dateTime moves by exactly ``days`` x 24 h. Non-date strings are
    returned unchanged.
    """
    match = _DATE_RE.match(value)
    if not match or days == 0:
        return value
    year = int(match["y"])
    month = int(match["m"] or 1)
    day = int(match["d"] or 1)
    try:
        shifted = date(year, month, day) + timedelta(days=days)
    except ValueError:
        return value
    if match["m"] is None:
        return f"{shifted.year:04d}"
    if match["d"] is None:
        return f"{shifted.year:04d}-{shifted.month:02d}"
    return shifted.isoformat() + (match["rest"] or "")


def _shift(node: Any, days: int, date_key: bool) -> Any:
    if isinstance(node, dict):
        return {k: _shift(v, days, _is_date_key(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_shift(item, days, date_key) for item in node]
    if date_key and isinstance(node, str):
        return shift_date_value(node, days)
    return node


def shift_dates(resource: dict, days: int) -> dict:
    """A deep copy of ``resource`` with every FHIR date, dateTime and instant moved by ``days``.

    Elements are recognised by name: ``birthDate``, ``onsetDateTime``, ``recordedDate``,
    ``effectiveDateTime``, ``issued``, ``authoredOn``, period ``start``/``end``, ``date``,
    ``lastUpdated``, ``event``, annotation ``time`` and every other ``*Date``, ``*DateTime`` or
    ``*Instant`` element, including inside contained resources and extensions. Values that do not
    look like a date (a ``start`` integer, say) are left alone.
    """
    return _shift(copy.deepcopy(resource), days, False)


def _days_from_anchor(today: date | None) -> int:
    # UTC, like the service's evaluation time, so boundary scenarios hold around midnight.
    return ((today or datetime.now(UTC).date()) - FIXTURE_ANCHOR).days


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ScenarioError(f"no such fixture file: {path}") from None
    except ValueError as exc:
        raise ScenarioError(f"{path} is not valid JSON: {exc}") from None


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict]:
    """The resources of a Bundle's entries (entries without a resource are skipped)."""
    if bundle.get("resourceType") != "Bundle":
        raise ScenarioError("expected a FHIR Bundle")
    return [
        entry["resource"]
        for entry in bundle.get("entry") or []
        if isinstance(entry, Mapping) and isinstance(entry.get("resource"), dict)
    ]


def load_bundle_file(path: str | os.PathLike[str]) -> list[dict]:
    """Resources from any FHIR Bundle file (collection, searchset, transaction...), unshifted.

    A file holding a single non-Bundle resource is accepted too and returned as one item, so
    ``fire --bundle`` works with a plain exported resource.
    """
    data = _read_json(Path(path))
    if not isinstance(data, dict) or "resourceType" not in data:
        raise ScenarioError(f"{path} is not a FHIR resource")
    if data["resourceType"] != "Bundle":
        return [data]
    return bundle_resources(data)


def patient_path(patient_id: str) -> Path:
    if not PATIENT_ID_RE.match(patient_id):
        raise ScenarioError(f"invalid patient id {patient_id!r}")
    return fixtures_dir() / "patients" / f"{patient_id}.json"


def list_patients() -> list[str]:
    """Ids of every synthetic patient, sorted."""
    return sorted(p.stem for p in (fixtures_dir() / "patients").glob("*.json"))


def load_patient(patient_id: str, *, today: date | None = None) -> list[dict]:
    """The patient's resources (Patient first), with dates shifted so that the anchor is today."""
    resources = bundle_resources(_read_json(patient_path(patient_id)))
    days = _days_from_anchor(today)
    return [shift_dates(r, days) for r in resources]


def list_scenarios() -> list[str]:
    """Names of every scenario (file stems of ``fhir_fixtures/scenarios/*.json``), sorted."""
    return sorted(p.stem for p in (fixtures_dir() / "scenarios").glob("*.json"))


def _reference(resource: Mapping[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


_TOKEN_RE = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


def render_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Substitute CDS Hooks 2.0 prefetch tokens; ``None`` when a token cannot be resolved.

    Supports ``{{context.X}}`` for first-level primitive context fields and the
    ``{{userPractitionerId}}``-style user tokens. An unresolved token means the key is left out
    of the prefetch, as the CDS Hooks sandbox does ("absent" tells the service to query itself).
    """
    unresolved = False

    def replace(match: re.Match[str]) -> str:
        nonlocal unresolved
        token = match.group(1)
        if token.startswith("context."):
            value = context.get(token[len("context.") :])
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
        elif token in _USER_TOKENS:
            user = str(context.get("userId", ""))
            prefix = _USER_TOKENS[token] + "/"
            if user.startswith(prefix):
                return user[len(prefix) :]
        unresolved = True
        return match.group(0)

    rendered = _TOKEN_RE.sub(replace, template)
    return None if unresolved else rendered


@dataclass
class Scenario:
    """One hook call against one synthetic patient, with the cards it must produce."""

    name: str
    description: str
    patient_id: str
    hook: str
    draft_orders: list[dict]
    selections: list[str]
    expected_cards: frozenset[str]
    expected_missing_assessments: frozenset[str] | None
    resources: list[dict] = field(repr=False)
    notes: str = ""

    @property
    def patient(self) -> dict:
        return next(r for r in self.resources if r.get("resourceType") == "Patient")

    @property
    def service(self) -> ServiceDefinition:
        """The service (of :data:`SERVICES`) that answers this scenario's hook."""
        return next(s for s in SERVICES.values() if s.hook == self.hook)

    def context(self) -> dict:
        """The hook's ``context``: ids, plus ``draftOrders`` (and ``selections``) for orders."""
        ctx: dict[str, Any] = {"userId": DEFAULT_USER_ID, "patientId": self.patient_id}
        if self.hook in ORDER_HOOKS:
            if self.hook == "order-select":
                ctx["selections"] = list(self.selections)
            ctx["draftOrders"] = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": copy.deepcopy(r)} for r in self.draft_orders],
            }
        return ctx

    def prefetch(self, prefetch_templates: Mapping[str, str]) -> dict[str, Any]:
        """Run each template against the patient's resources; unresolved tokens drop the key."""
        ctx = self.context()
        out: dict[str, Any] = {}
        for key, template in prefetch_templates.items():
            query = render_template(template, ctx)
            if query is None:
                continue
            out[key] = memory_fhir.search(self.resources, query)
        return out

    def hook_request(
        self,
        prefetch_templates: Mapping[str, str] | None,
        *,
        fhir_server: str | None = None,
        hook_instance: str | None = None,
    ) -> dict:
        """A complete CDS Hooks request body; no ``prefetch`` key when templates are ``None``."""
        request: dict[str, Any] = {
            "hook": self.hook,
            "hookInstance": hook_instance or str(uuid.uuid4()),
        }
        if fhir_server:
            request["fhirServer"] = fhir_server
        request["context"] = self.context()
        if prefetch_templates is not None:
            request["prefetch"] = self.prefetch(prefetch_templates)
        return request


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ScenarioError(f"scenario {name}: {message}")


def load_scenario(name: str, *, today: date | None = None) -> Scenario:
    """Load and check a scenario; its patient's resources and draft orders are date-shifted."""
    if not PATIENT_ID_RE.match(name):
        raise ScenarioError(f"invalid scenario name {name!r}")
    data = _read_json(fixtures_dir() / "scenarios" / f"{name}.json")
    _require(isinstance(data, dict), name, "must be a JSON object")
    hook = data.get("hook")
    _require(hook in HOOKS, name, f"unknown hook {hook!r}")
    patient_id = data.get("patient")
    _require(isinstance(patient_id, str), name, "patient must be a string")
    expect = data.get("expect")
    _require(isinstance(expect, dict), name, "expect must be an object")
    cards = expect.get("cards")
    _require(isinstance(cards, list), name, "expect.cards must be a list")
    unknown = set(cards) - RULE_IDS
    _require(not unknown, name, f"unknown rule ids {sorted(unknown)}")
    missing = expect.get("missing_assessments")
    if missing is not None:
        _require(isinstance(missing, list), name, "missing_assessments must be a list")
        bad = set(missing) - ASSESSMENT_IDS
        _require(not bad, name, f"unknown assessment ids {sorted(bad)}")

    days = _days_from_anchor(today)
    resources = load_patient(patient_id, today=today)
    drafts = [shift_dates(r, days) for r in data.get("draftOrders") or []]
    if hook == "patient-view":
        _require(not drafts, name, "patient-view takes no draftOrders")
    else:
        _require(bool(drafts), name, f"{hook} needs draftOrders")
    for draft in drafts:
        _require(
            draft.get("resourceType") in DRAFT_ORDER_TYPES,
            name,
            f"draft order type {draft.get('resourceType')!r} not allowed",
        )
        _require(bool(draft.get("id")), name, "draft orders need an id")
    selections = data.get("selections")
    if hook == "order-select":
        if selections is None:
            selections = [_reference(d) for d in drafts]
        refs = {_reference(d) for d in drafts}
        _require(
            bool(selections) and set(selections) <= refs,
            name,
            "selections must point into draftOrders",
        )
    else:
        _require(selections is None, name, "selections only apply to order-select")
        selections = []
    return Scenario(
        name=name,
        description=str(data.get("description", "")),
        patient_id=patient_id,
        hook=hook,
        draft_orders=drafts,
        selections=list(selections),
        expected_cards=frozenset(cards),
        expected_missing_assessments=frozenset(missing) if missing is not None else None,
        resources=resources,
        notes=str(data.get("notes", "")),
    )
