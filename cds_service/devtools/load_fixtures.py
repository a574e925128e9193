"""Write the fixture patients into a real FHIR R4 server, idempotently.

One transaction Bundle per patient, every entry a ``PUT Type/id`` with the fixture's stable id,
so loading twice leaves the server as loading once did (update-as-create must be enabled, as it
is by default on HAPI FHIR). Dates are shifted to today like everywhere else, so a patient's
"pain for 6 months" is 6 months old on the day it is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import requests

from cds_service.devtools.scenarios import list_patients, load_patient


class LoadError(RuntimeError):
    """The FHIR server refused or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class Loaded:
    patient_id: str
    resources: int


def transaction(resources: Iterable[dict]) -> dict:
    """A transaction Bundle that PUTs each resource at its own id (the Patient first)."""
    ordered = sorted(resources, key=lambda r: r["resourceType"] != "Patient")
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in ordered
        ],
    }


def load_fixtures(
    fhir_server: str,
    *,
    patients: Iterable[str] | None = None,
    today: date | None = None,
    session: requests.Session | None = None,
    timeout_s: float = 30.0,
) -> list[Loaded]:
    """PUT every fixture patient (or those named) into ``fhir_server``; raises LoadError."""
    session = session or requests.Session()
    base = fhir_server.rstrip("/")
    loaded = []
    for patient_id in patients or list_patients():
        resources = load_patient(patient_id, today=today)
        try:
            response = session.post(
                base,
                json=transaction(resources),
                headers={
                    "Content-Type": "application/fhir+json",
                    "Accept": "application/fhir+json",
                },
                timeout=timeout_s,
            )
        except requests.RequestException as exc:
            raise LoadError(f"cannot reach {base}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise LoadError(
                f"{base} refused patient {patient_id}: HTTP {response.status_code} "
                f"{_diagnostics(response)}"
            )
        loaded.append(Loaded(patient_id, len(resources)))
    return loaded


def _diagnostics(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    issues = body.get("issue") if isinstance(body, dict) else None
    if issues:
        return "; ".join(
            str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
            for i in issues
        )[:300]
    return ""
