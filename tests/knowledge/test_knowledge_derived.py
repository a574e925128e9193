"""The derived concepts are faithful copies of the shared CDC value sets."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service.knowledge import DEFAULT_DATA_DIR, load_knowledge

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
VALUESETS = SHARED / "clinical" / "valuesets"
BUILD = REPO / "tools" / "build_knowledge.py"

pytestmark = pytest.mark.skipif(
    not VALUESETS.is_dir(), reason=f"shared value sets not found at {VALUESETS}"
)

FAITHFUL = [
    ("opioid-product", "opioid-analgesics-with-ambulatory-misuse-potential.json", 557),
    ("moud-if-oud", "buprenorphine-and-methadone-medications.json", 85),
    ("naloxone", "naloxone-medications.json", 50),
    ("malignant-cancer", "cdc-malignant-cancer-conditions.json", 1668),
    ("sickle-cell-disease", "sickle-cell-diseases.json", 81),
    ("likely-terminal-condition", "conditions-likely-terminal-for-opioid-prescribing.json", 991),
    ("hospice-finding", "hospice-finding.json", 5),
    ("hospice-procedure", "hospice-procedure.json", 6),
    ("end-of-life-therapy", "therapies-indicating-end-of-life-care.json", 9),
]


def _expansion(filename: str) -> tuple[dict, dict[tuple[str, str], str]]:
    doc = json.loads((VALUESETS / filename).read_text(encoding="utf-8"))
    codes = {(c["system"], c["code"]): c["display"] for c in doc["expansion"]["contains"]}
    return doc, codes


@pytest.mark.parametrize(("concept", "filename", "count"), FAITHFUL)
def test_value_set_copied_exactly(concept: str, filename: str, count: int) -> None:
    knowledge = load_knowledge()
    doc, expected = _expansion(filename)
    entries = knowledge.codes(concept)
    ours = {(e.system, e.code): e.display for e in entries}
    assert len(entries) == len(ours) == len(expected) == count
    assert ours == expected
    assert all(e.match == "exact" and e.source == "OVS" for e in entries)
    derived = knowledge.concept(concept).derived_from
    assert derived is not None
    assert derived["url"] == doc["url"]
    assert derived["expansion"] == doc["expansion"]["timestamp"]
    assert derived["path"] == f"clinical/valuesets/{filename}"
    # Every copied code is found by the index, whatever its system.
    for system, code in expected:
        assert concept in knowledge.concepts_of(system, code)


def test_opioid_ingredients_come_from_the_omtk_table() -> None:
    knowledge = load_knowledge()
    with (VALUESETS / "opioid-drug-ingredients.csv").open(encoding="utf-8") as handle:
        table = {row["drug_rxcui"]: row for row in csv.DictReader(handle)}
    with_ingredient = 0
    for entry in knowledge.codes("opioid-product"):
        found = knowledge.opioid_ingredient(entry.code)
        row = table.get(entry.code)
        if row is None:
            assert found is None, entry.code
            continue
        with_ingredient += 1
        assert found is not None
        assert (found.code, found.display) == (row["ingredient_rxcui"], row["ingredient_name"])
    assert with_ingredient == 530  # terminology.md: 530 of the 557 are in OMTK


def test_moud_always_follows_its_documented_rule() -> None:
    knowledge = load_knowledge()
    always = {e.code: e.display for e in knowledge.codes("moud-always")}
    every = {e.code for e in knowledge.codes("moud-if-oud")}
    assert set(always) < every
    assert len(always) == 36
    for display in always.values():
        low = display.lower()
        assert "buprenorphine" in low
        assert "naloxone" in low or "sublingual" in low or "prefilled syringe" in low
    assert "1010603" in always  # Suboxone 2/0.5 mg sublingual film
    assert "1542396" in always  # Bunavail buccal film: buprenorphine with naloxone, any form
    assert "351264" in always  # buprenorphine 2 mg sublingual tablet
    assert "1996189" in always  # Sublocade extended-release injection
    assert "205533" not in always  # Buprenex 0.3 mg/mL injection (analgesic)
    assert "1716079" not in always  # Belbuca buccal film (pain)
    assert "904882" not in always  # BuTrans transdermal (pain)
    assert "864706" not in always  # methadone tablet: MOUD only with an OUD diagnosis
    assert set(knowledge.concept("moud-always").terms) == {
        "Bunavail", "Sublocade", "Suboxone", "Zubsolv",
    }


def test_committed_derived_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD), "--check", "--shared", str(SHARED)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_detects_a_hand_edit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, data)
    path = data / "opioids.json"
    path.write_text(path.read_text(encoding="utf-8").replace("Oxycodone", "Oxycodon", 1))
    args = [sys.executable, str(BUILD), "--shared", str(SHARED), "--data-dir", str(data)]
    stale = subprocess.run([*args, "--check"], capture_output=True, text=True, check=False)
    assert stale.returncode == 1
    assert "opioids.json: out of date" in stale.stdout
    subprocess.run(args, check=True, capture_output=True)  # regenerate
    assert path.read_bytes() == (DEFAULT_DATA_DIR / "opioids.json").read_bytes()
    medications = (data / "medications.json").read_bytes()
    assert medications == (DEFAULT_DATA_DIR / "medications.json").read_bytes()


def test_an_exclude_the_builder_cannot_describe_is_refused_not_skipped() -> None:
    """The concept descriptions name each value set's exclusions; an exclude of another form
    (a list of concepts, another filter) was silently left out of them (found by review)."""
    from tools.build_knowledge import _excluded

    snomed = "http://snomed.info/sct"
    is_a = {"property": "concept", "op": "is-a", "value": "127040003"}
    assert _excluded({"exclude": [{"system": snomed, "filter": [is_a]}]}) == [
        "SNOMED CT 127040003"]
    for exclude in (
        {"system": snomed, "concept": [{"code": "127040003"}]},
        {"system": snomed, "filter": [{**is_a, "op": "descendent-of"}]},
        {"valueSet": ["http://example.org/ValueSet/x"]},
    ):
        with pytest.raises(ValueError, match="cannot describe"):
            _excluded({"exclude": [exclude]})
