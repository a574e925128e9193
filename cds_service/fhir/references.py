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
must never go anywhere but ``fhirServer``. A read that fails (an error, the deadline) makes the
call a 412 like any data that cannot be had (CDS Hooks 2.0: the service SHALL say so rather
than answer without it). A Medication that cannot be asked for (no ``fhirServer``, one the policy
refuses, past :data:`MAX_READS`), or that the server does not hold (404), leaves its order
unclassified, as before the Medication reads existed; the call answers and its log line counts
it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.fhir.client import ByteBudget, FetchError, FhirClient
from cds_service.fhir.models import ID_CHARACTERS, unversioned
from cds_service.fhir.server_policy import FhirServerRefused, check_fhir_server

# "Medication/<id>", once any version is cut off (models.unversioned): the Medication is read,
# and matched, by its id (a Medication's versions name the same drug).
_RELATIVE_MEDICATION = re.compile(rf"^Medication/({ID_CHARACTERS})$")
# Reads per hook call, at most: a patient's active orders seldom name more than a few
# Medications by reference; the cap bounds what one call can ask of the EHR's server.
MAX_READS = 32
# Reads in flight at once, like a call's prefetch searches (7), so that the README's sizing of
# the shared fetch threads (CDS_THREADS x 7) still keeps a hanging EHR from delaying others.
IN_FLIGHT = 7


def missing_medications(orders: Iterable[Any], have: Mapping[str, Any]) -> list[str]:
    """Ids of the Medications that the validated MedicationRequest models ``orders`` reference
    relatively and that are not in ``have`` (keyed ``"Medication/<id>"``, as
    :attr:`PatientRecord.medications` is), each once, in order of first reference."""
    missing: list[str] = []
    for order in orders:
        reference = order.medicationReference.reference if order.medicationReference else None
        found = _RELATIVE_MEDICATION.match(unversioned(reference)) if reference else None
        if found and f"Medication/{found[1]}" not in have and found[1] not in missing:
            missing.append(found[1])
    return missing


@dataclass
class MedicationReads:
    """What reading the missing Medications gave: those found, and the reason each read that
    failed did (a 404 is neither: the server holds no such Medication)."""

    found: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def read_medications(
    ids: list[str],
    *,
    fhir_server: str | None,
    token: str | None,
    client: FhirClient,
    allowlist: tuple[str, ...],
    allow_loopback_http: bool,
    deadline: float,
    budget: ByteBudget | None = None,
) -> MedicationReads:
    """Read the first :data:`MAX_READS` of ``ids`` from ``fhirServer``, at most
    :data:`IN_FLIGHT` at a time (so one call holds no more of the shared fetch threads than its
    prefetch searches do). Nothing is read without a ``fhirServer`` the policy admits."""
    reads = MedicationReads()
    if not ids or not fhir_server:
        return reads
    try:
        base = check_fhir_server(fhir_server, allowlist, allow_loopback_http=allow_loopback_http)
    except FhirServerRefused:
        return reads
    wanted = ids[:MAX_READS]
    for start in range(0, len(wanted), IN_FLIGHT):
        # Keys name no id: the client logs its keys.
        chunk = wanted[start : start + IN_FLIGHT]
        batch = {f"medication-{n}": each for n, each in enumerate(chunk)}
        queries = {key: f"Medication/{each}" for key, each in batch.items()}
        results = client.fetch(base, queries, token=token, deadline=deadline, budget=budget)
        for key, medication_id in batch.items():
            result = results.get(key)
            if isinstance(result, FetchError):
                reads.failed[medication_id] = result.reason
            elif result:
                reads.found.append(result[0])
    return reads
