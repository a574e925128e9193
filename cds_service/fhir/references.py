"""Medications that an order names only by reference, read from the FHIR server.

rules.md recognises an opioid "in a contained or referenced Medication resource". A contained one
travels with its order; a referenced one (``medicationReference: {"reference":
"Medication/123"}``) may be in the prefetch Bundle (an EHR's server may add it) but often is not,
and a CDS Hooks 2.0 prefetch template cannot ask for it (``_include`` is not among the query
features 2.0 allows). So once the patient's record is built, each Medication that a
MedicationRequest (on record or drafted) names by a relative reference and that is not already at
hand is read from ``fhirServer`` with the same token, within the same time budget. Working on the
record, not the raw data, keeps this to the few orders the rules read.

Only relative references are read: an absolute URL could point at another server, and the token
must never go anywhere but ``fhirServer``. A Medication that cannot be had (no ``fhirServer``, a
refused server, 404, a failure, the deadline, more than :data:`MAX_READS` of them) leaves its
order unclassified, as before; the call still answers, and the log line counts them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from cds_service.fhir.client import FhirClient
from cds_service.fhir.models import ID_CHARACTERS
from cds_service.fhir.server_policy import FhirServerRefused, check_fhir_server

_RELATIVE_MEDICATION = re.compile(rf"^Medication/({ID_CHARACTERS})$")
# Reads per hook call, at most: a patient's active orders seldom name more than a few
# Medications by reference; the cap bounds what one call can ask of the EHR's server.
MAX_READS = 32


def missing_medications(orders: Iterable[Any], have: Mapping[str, Any]) -> list[str]:
    """Ids of the Medications that the validated MedicationRequest models ``orders`` reference
    relatively and that are not in ``have`` (keyed ``"Medication/<id>"``, as
    :attr:`PatientRecord.medications` is), each once, in order of first reference."""
    missing: list[str] = []
    for order in orders:
        reference = order.medicationReference.reference if order.medicationReference else None
        found = _RELATIVE_MEDICATION.match(reference) if reference else None
        if found and f"Medication/{found[1]}" not in have and found[1] not in missing:
            missing.append(found[1])
    return missing


def read_medications(
    ids: list[str],
    *,
    fhir_server: str | None,
    token: str | None,
    client: FhirClient,
    allowlist: tuple[str, ...],
    allow_loopback_http: bool,
    deadline: float,
) -> tuple[list[dict[str, Any]], int]:
    """(the Medications read, how many of ``ids`` could not be had)."""
    if not ids:
        return [], 0
    if not fhir_server:
        return [], len(ids)
    try:
        base = check_fhir_server(fhir_server, allowlist, allow_loopback_http=allow_loopback_http)
    except FhirServerRefused:
        return [], len(ids)
    wanted = ids[:MAX_READS]
    reads = {f"medication-{n}": f"Medication/{each}" for n, each in enumerate(wanted)}
    results = client.fetch(base, reads, token=token, deadline=deadline)
    found = [result[0] for result in results.values() if isinstance(result, list) and result]
    return found, len(ids) - len(found)
