"""The fixture files themselves: valid FHIR R4, consistent ids, coherent scenarios, coverage."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service.devtools import scenarios as sc

FIXTURES = sc.fixtures_dir()
PATIENT_FILES = sorted((FIXTURES / "patients").glob("*.json"))
SCENARIO_FILES = sorted((FIXTURES / "scenarios").glob("*.json"))
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "clinical"

# Which hooks each rule lists in rules.md.
RULE_HOOKS = {
    "rehab-referral": {"patient-view"},
    "opioid-active": {"patient-view"},
    "opioid-order": {"order-select", "order-sign"},
    "corticosteroid-order": {"order-select", "order-sign"},
    "passive-modality-order": {"order-select", "order-sign"},
    "rehab-intensity": {"order-select", "order-sign"},
    "imaging-radiograph-first": {"patient-view", "order-select", "order-sign"},
    "imaging-mri-hip": {"patient-view"},
    "assessment-gaps": {"patient-view"},
    "pots-management": {"patient-view"},
    "possible-hypermobility": {"patient-view"},
}
CLINICAL_SYSTEMS = {
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://snomed.info/sct",
    "http://loinc.org",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://www.ama-assn.org/go/cpt",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
}
PROJECT_SYSTEM = "urn:hypermobility-cds:codes"
LOCAL_SYSTEM = "http://example.org/fhir/CodeSystem/local-flowsheet"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _validate(resource: dict) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def _codings(node: Any):
    if isinstance(node, dict):
        if "system" in node and "code" in node and isinstance(node.get("code"), str):
            yield node["system"], node["code"]
        for value in node.values():
            yield from _codings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _codings(item)


def test_there_are_fixtures() -> None:
    assert len(PATIENT_FILES) >= 40
    assert len(SCENARIO_FILES) >= 80
    assert sc.list_patients() == sorted(p.stem for p in PATIENT_FILES)
    assert sc.list_scenarios() == sorted(p.stem for p in SCENARIO_FILES)


@pytest.mark.parametrize("path", PATIENT_FILES, ids=lambda p: p.stem)
def test_patient_bundle_is_valid_r4_and_consistent(path: Path) -> None:
    pid = path.stem
    assert sc.PATIENT_ID_RE.match(pid)
    bundle = _load(path)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    _validate(bundle)
    resources = [entry["resource"] for entry in bundle["entry"]]
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert len(patients) == 1 and patients[0]["id"] == pid
    assert resources[0]["resourceType"] == "Patient"
    for resource in resources:
        _validate(resource)
        assert resource["resourceType"] in sc.QUERIED_TYPES
        if resource["resourceType"] != "Patient":
            assert resource["id"].startswith(f"{pid}-"), resource["id"]
            assert resource["subject"] == {"reference": f"Patient/{pid}"}
            assert len(resource["id"]) <= 64
            assert re.match(r"^[A-Za-z0-9\-.]{1,64}$", resource["id"])


def test_resource_ids_are_globally_unique() -> None:
    """The loader PUTs every patient into one FHIR server, so Type/id must not collide."""
    seen: dict[str, str] = {}
    for path in PATIENT_FILES:
        for entry in _load(path)["entry"]:
            ref = f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
            assert ref not in seen, f"{ref} in {path.stem} and {seen[ref]}"
            seen[ref] = path.stem


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.stem)
def test_scenario_file_is_coherent(path: Path) -> None:
    data = _load(path)
    assert set(data) <= {
        "description",
        "patient",
        "hook",
        "draftOrders",
        "selections",
        "expect",
        "notes",
    }
    assert data["description"] and data["notes"]
    assert (FIXTURES / "patients" / f"{data['patient']}.json").exists()
    assert set(data["expect"]["cards"]) <= sc.RULE_IDS
    assert len(set(data["expect"]["cards"])) == len(data["expect"]["cards"])
    for card in data["expect"]["cards"]:
        assert data["hook"] in RULE_HOOKS[card], f"{card} cannot fire on {data['hook']}"
    missing = data["expect"].get("missing_assessments")
    if missing is not None:
        assert "assessment-gaps" in data["expect"]["cards"]
        assert missing and set(missing) <= sc.ASSESSMENT_IDS
    elif "assessment-gaps" in data["expect"]["cards"]:
        pytest.fail("assessment-gaps scenarios must say which assessments are missing")
    ids = set()
    for draft in data.get("draftOrders", []):
        _validate(draft)
        assert draft["status"] == "draft"
        assert draft["subject"] == {"reference": f"Patient/{data['patient']}"}
        ids.add(f"{draft['resourceType']}/{draft['id']}")
    assert len(ids) == len(data.get("draftOrders", []))
    assert set(data.get("selections", [])) <= ids
    scenario = sc.load_scenario(path.stem, today=sc.FIXTURE_ANCHOR)
    assert scenario.expected_cards == frozenset(data["expect"]["cards"])


def test_every_rule_fires_in_every_hook_it_lists() -> None:
    positives: dict[str, set[str]] = defaultdict(set)
    negatives: set[str] = set()
    for path in SCENARIO_FILES:
        data = _load(path)
        for card in data["expect"]["cards"]:
            positives[card].add(data["hook"])
        if not data["expect"]["cards"]:
            negatives.add(data["hook"])
    for rule, hooks in RULE_HOOKS.items():
        assert hooks <= positives[rule], f"{rule} lacks a positive scenario for {hooks}"
    assert negatives == {"patient-view", "order-select", "order-sign"}


def test_every_assessment_can_be_reported_missing_alone_or_together() -> None:
    seen: set[str] = set()
    for path in SCENARIO_FILES:
        seen |= set(_load(path)["expect"].get("missing_assessments", []))
    assert seen == sc.ASSESSMENT_IDS


def _terminology_corpus() -> str:
    parts = [(SHARED / "terminology.md").read_text(encoding="utf-8")]
    for path in sorted((SHARED / "valuesets").glob("*")):
        parts.append(path.read_text(encoding="utf-8"))
    return "\n".join(parts)


@pytest.mark.skipif(not (SHARED / "terminology.md").exists(), reason="shared/ not beside repo")
def test_every_clinical_code_comes_from_terminology_or_value_sets() -> None:
    """House rule: never invent a medical code."""
    corpus = _terminology_corpus()
    unknown = set()
    for path in [*PATIENT_FILES, *SCENARIO_FILES]:
        for system, code in _codings(_load(path)):
            if system in (PROJECT_SYSTEM, LOCAL_SYSTEM) or system.startswith(
                "http://terminology.hl7.org/CodeSystem/"
            ):
                continue
            if system == "http://unitsofmeasure.org":
                continue
            assert system in CLINICAL_SYSTEMS, f"unexpected system {system} in {path.name}"
            dotted = code
            if system.endswith("icd-10-cm") and "." not in code and len(code) > 3:
                dotted = f"{code[:3]}.{code[3:]}"
            candidates = {dotted, f"{dotted[:-1]}x"}
            if not any(re.search(rf"(?<![\w.]){re.escape(c)}(?![\w])", corpus) for c in candidates):
                unknown.add((system, code))
    assert not unknown, sorted(unknown)


def test_project_beighton_code_matches_the_knowledge_files() -> None:
    """The project-code-only Beighton fixture is only meaningful if the system URI is right."""
    knowledge = Path(sc.__file__).resolve().parents[1] / "knowledge" / "data"
    observations = knowledge / "observations.json"
    if not observations.exists():
        pytest.skip("knowledge files not present")
    assert PROJECT_SYSTEM in observations.read_text(encoding="utf-8")
    resources = sc.load_patient("beighton-project-code", today=sc.FIXTURE_ANCHOR)
    beighton = next(r for r in resources if r["id"] == "beighton-project-code-beighton")
    assert beighton["code"] == {"coding": [{"system": PROJECT_SYSTEM, "code": "beighton-score"}]}


def test_fixture_names_are_obviously_fake() -> None:
    for path in PATIENT_FILES:
        patient = _load(path)["entry"][0]["resource"]
        assert patient["name"][0]["family"] == "Fixture"


def _status_code(concept: dict | None) -> str | None:
    return concept["coding"][0]["code"] if concept else None


def test_condition_invariants_that_pydantic_does_not_check() -> None:
    """con-3/4/5: a real FHIR server would reject the loader's PUT otherwise."""
    for path in PATIENT_FILES:
        for entry in _load(path)["entry"]:
            r = entry["resource"]
            if r["resourceType"] != "Condition":
                continue
            clinical = _status_code(r.get("clinicalStatus"))
            verification = _status_code(r.get("verificationStatus"))
            if verification == "entered-in-error":
                assert clinical is None, r["id"]  # con-5
            else:
                assert clinical is not None, r["id"]  # con-3 (problem-list items)
            if "abatementDateTime" in r:
                assert clinical in {"inactive", "resolved", "remission"}, r["id"]  # con-4


def test_dates_are_not_in_the_future_of_the_anchor() -> None:
    for path in PATIENT_FILES:
        for resource in sc.load_patient(path.stem, today=sc.FIXTURE_ANCHOR):
            for key in ("onsetDateTime", "recordedDate", "effectiveDateTime", "authoredOn"):
                if key in resource:
                    assert resource[key][:10] <= sc.FIXTURE_ANCHOR.isoformat(), resource["id"]
