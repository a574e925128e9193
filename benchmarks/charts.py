"""Synthetic charts of ~100, 1,000 and 10,000 resources, grown from the fixture scenarios.

Why synthetic: the fixture patients hold a dozen resources each, while a real chart for a patient
with years of history holds thousands, and almost all of them (vital signs, routine scores, other
problems, other drugs) are things no rule reads. A benchmark on fixture-sized charts would hide
exactly the cost that matters. So a chart here is:

* the scenario's own patient, unchanged (so the expected cards are known);
* *history*: older copies of that patient's own relevant resources (earlier PHQ-9 screens,
  orthostatic heart rates, Beighton scores, refilled and completed prescriptions, resolved
  problem-list entries), about :data:`RELEVANT_FRACTION` of the chart. They pass the cheap
  relevance filter and pay for validation, but they are older than the originals or no longer
  active, so the cards do not change;
* *noise*: the rest, resources the rules ignore. Codes are taken only from VERIFIED rows of
  ``clinical/terminology.md`` that no knowledge concept lists (heart rate 8867-4, pain scores,
  PEG, fibromyalgia, therapeutic exercise...) or are text only (body weight, blood pressure with
  components, "ibuprofen 400 mg oral tablet"): no code is invented.

Everything is deterministic (a seeded RNG and dates relative to the scenario's shifted dates), and
:func:`check_chart` proves the cards are those of the fixture scenario: the benchmark refuses to
time a chart whose answer differs.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds_service.devtools.scenarios import Scenario, load_scenario, shift_dates
from cds_service.fhir.record import is_relevant
from cds_service.knowledge import load_knowledge

SIZES = (100, 1_000, 10_000)
PATIENT_VIEW_SCENARIO = "pv-many-findings"  # five patient-view cards at once
ORDER_SIGN_SCENARIO = "sign-opioid-steroid-brace"  # three draft orders, three cards
RELEVANT_FRACTION = 0.05
HISTORY_YEARS = 10

LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# (system, code, display) from VERIFIED rows of clinical/terminology.md that no concept lists.
SCORE_CODES = (
    (LOINC, "8867-4", "Heart rate", "vital-signs", "/min", (55, 110)),
    (LOINC, "72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
     "survey", None, (0, 10)),
    (LOINC, "38208-5", "Pain severity - Reported", "survey", None, (0, 10)),
    (LOINC, "91147-9", "Mean score [PEG]", "survey", None, (0, 10)),
    (LOINC, "75893-8", "Pain severity in the past week - 0-10 numeric rating [Reported]",
     "survey", None, (0, 10)),
    (LOINC, "91351-7", "Total score [STarT Back]", "survey", None, (0, 9)),
)
# Text-only vital signs (no code at all, as many flowsheet rows arrive).
TEXT_VITALS = (
    ("Body weight", "kg", (50, 95)),
    ("Body temperature", "Cel", (36, 38)),
    ("Respiratory rate", "/min", (12, 20)),
    ("Oxygen saturation", "%", (94, 100)),
)
OTHER_CONDITIONS = (
    (ICD10CM, "M79.7", "Fibromyalgia"),
    (ICD10CM, "R00.0", "Tachycardia, unspecified"),
    (ICD10CM, "R55", "Syncope and collapse"),
    (ICD10CM, "I95.1", "Orthostatic hypotension"),
    (ICD10CM, "K59.04", "Chronic idiopathic constipation"),
    (ICD10CM, "M54.9", "Dorsalgia, unspecified"),
    (SNOMED, "128196005", "Sciatica"),
)
OTHER_PROCEDURES = (
    (CPT, "97110", "Therapeutic exercise, each 15 minutes"),
    (CPT, "97161", "Physical therapy evaluation, low complexity"),
    (CPT, "90834", "Psychotherapy, 45 minutes"),
    (CPT, "96158", "Health behaviour intervention, initial 30 minutes"),
)
OTHER_DRUG_TEXTS = (
    "ibuprofen 400 mg oral tablet",
    "naproxen 500 mg oral tablet",
    "cetirizine 10 mg oral tablet",
    "cholecalciferol 1000 unit oral tablet",
    "amoxicillin 500 mg oral capsule",
    "propranolol 10 mg oral tablet",
)
OTHER_SERVICES = ((CPT, "72148", "MRI lumbar spine without contrast"),)
OTHER_REPORTS = ((LOINC, "30679-5", "MR Lumbar spine WO contrast"),)

# Share of each noise kind (a long chart is mostly vital signs and scores).
NOISE_MIX = (
    ("score", 0.40),
    ("vital", 0.25),
    ("blood-pressure", 0.10),
    ("condition", 0.06),
    ("medication", 0.09),
    ("procedure", 0.07),
    ("service", 0.02),
    ("report", 0.01),
)


@dataclass(frozen=True)
class Chart:
    """A scenario whose patient now has ``size`` resources, and what they are made of."""

    scenario: Scenario
    size: int
    composition: dict[str, int]  # "base", "history", "noise", plus a count per resource type
    relevant: int  # resources that pass the cheap relevance filter (pay for validation)


def _ref(patient_id: str) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id}"}


def _instant(day: date, rng: random.Random) -> str:
    return f"{day.isoformat()}T{rng.randint(7, 18):02d}:{rng.randint(0, 59):02d}:00Z"


def _concept(system: str | None, code: str | None, display: str) -> dict[str, Any]:
    if system is None:
        return {"text": display}
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _noise(kind: str, n: int, pid: str, day: date, rng: random.Random) -> dict[str, Any]:
    rid = f"{pid}-noise-{n}"
    if kind in ("score", "vital", "blood-pressure"):
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "subject": _ref(pid),
            "effectiveDateTime": _instant(day, rng),
        }
        if kind == "score":
            system, code, display, category, unit, (low, high) = rng.choice(SCORE_CODES)
            resource["code"] = _concept(system, code, display)
            if unit:
                resource["valueQuantity"] = {
                    "value": rng.randint(low, high), "unit": unit, "system": UCUM, "code": unit
                }
            else:
                resource["valueInteger"] = rng.randint(low, high)
        elif kind == "vital":
            category = "vital-signs"
            display, unit, (low, high) = rng.choice(TEXT_VITALS)
            resource["code"] = _concept(None, None, display)
            resource["valueQuantity"] = {
                "value": round(rng.uniform(low, high), 1), "unit": unit, "system": UCUM,
                "code": unit,
            }
        else:
            category = "vital-signs"
            resource["code"] = _concept(None, None, "Blood pressure panel")
            resource["component"] = [
                {
                    "code": _concept(None, None, name),
                    "valueQuantity": {
                        "value": rng.randint(low, high), "unit": "mm[Hg]", "system": UCUM,
                        "code": "mm[Hg]",
                    },
                }
                for name, low, high in (("Systolic", 95, 145), ("Diastolic", 55, 95))
            ]
        resource["category"] = [{"coding": [{"system": OBS_CATEGORY, "code": category}]}]
        return resource
    if kind == "condition":
        system, code, display = rng.choice(OTHER_CONDITIONS)
        status = rng.choice(("active", "resolved", "resolved", "inactive"))
        return {
            "resourceType": "Condition",
            "id": rid,
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
            "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
            "code": _concept(system, code, display),
            "subject": _ref(pid),
            "onsetDateTime": day.isoformat(),
            "recordedDate": day.isoformat(),
        }
    if kind == "medication":
        text = rng.choice(OTHER_DRUG_TEXTS)
        return {
            "resourceType": "MedicationRequest",
            "id": rid,
            "status": rng.choice(("completed", "completed", "stopped", "active")),
            "intent": "order",
            "medicationCodeableConcept": {"text": text},
            "subject": _ref(pid),
            "authoredOn": day.isoformat(),
            "dosageInstruction": [{"text": "1 tablet by mouth daily"}],
        }
    if kind == "procedure":
        system, code, display = rng.choice(OTHER_PROCEDURES)
        return {
            "resourceType": "Procedure",
            "id": rid,
            "status": "completed",
            "code": _concept(system, code, display),
            "subject": _ref(pid),
            "performedDateTime": day.isoformat(),
        }
    if kind == "service":
        system, code, display = rng.choice(OTHER_SERVICES)
        return {
            "resourceType": "ServiceRequest",
            "id": rid,
            "status": "completed",
            "intent": "order",
            "code": _concept(system, code, display),
            "subject": _ref(pid),
            "authoredOn": day.isoformat(),
        }
    system, code, display = rng.choice(OTHER_REPORTS)
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "code": _concept(system, code, display),
        "subject": _ref(pid),
        "effectiveDateTime": day.isoformat(),
        "conclusion": "Mild degenerative change.",
    }


def _history(original: dict[str, Any], n: int, days_back: int) -> dict[str, Any]:
    """An older copy of one of the patient's relevant resources that changes no card."""
    clone = shift_dates(original, -days_back)  # the fixture loader's own date shifter
    clone["id"] = f"{original['id']}-h{n}"
    kind = clone["resourceType"]
    if kind == "Condition":  # an earlier, resolved episode of the same problem
        clone["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": "resolved"}]}
    elif kind in ("MedicationRequest", "ServiceRequest"):  # earlier, finished orders
        clone["status"] = "completed"
    return clone


def _weighted(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    for kind, share in NOISE_MIX:
        total += share
        if roll < total:
            return kind
    return NOISE_MIX[-1][0]


def build_chart(
    scenario_name: str,
    size: int,
    *,
    relevant_fraction: float = RELEVANT_FRACTION,
    seed: int = 7,
    today: date | None = None,
) -> Chart:
    """The scenario with its patient's chart grown to ``size`` resources (deterministic)."""
    knowledge = load_knowledge()
    scenario = load_scenario(scenario_name, today=today)
    pid = scenario.patient_id
    base = list(scenario.resources)
    rng = random.Random(f"{scenario_name}:{size}:{seed}")
    today = today or datetime.now(UTC).date()
    originals = [
        r for r in base if r.get("resourceType") != "Patient" and is_relevant(r, knowledge)
    ]
    history_count = max(0, round(size * relevant_fraction) - len(base))
    history_count = min(history_count, max(0, size - len(base)))
    history = []
    for n in range(history_count):
        original = originals[n % len(originals)]
        # Spread the copies over the years before the originals: oldest last.
        days_back = 30 + (n * HISTORY_YEARS * 365) // max(history_count, 1)
        history.append(_history(original, n, days_back))
    noise = []
    for n in range(max(0, size - len(base) - len(history))):
        day = today - timedelta(days=rng.randint(1, HISTORY_YEARS * 365))
        noise.append(_noise(_weighted(rng), n, pid, day, rng))
    resources = [*base, *history, *noise]
    composition: Counter[str] = Counter(r["resourceType"] for r in resources)
    composition.update(base=len(base), history=len(history), noise=len(noise))
    relevant = sum(1 for r in resources if is_relevant(r, knowledge))
    return Chart(
        scenario=dataclasses.replace(scenario, resources=resources),
        size=len(resources),
        composition=dict(composition),
        relevant=relevant,
    )


def card_signature(cards: Iterable[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(rule id, summary, indicator) of each card: what must not change when a chart grows."""
    return sorted(
        (c["source"]["topic"]["code"], c["summary"], c["indicator"]) for c in cards
    )
