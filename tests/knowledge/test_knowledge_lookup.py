"""Lookup behaviour of the Knowledge index: normalisation, prefixes, ranges, aliases, terms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cds_service.knowledge import DEFAULT_DATA_DIR, CodeEntry, Coding, Knowledge, load_knowledge

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"


@pytest.fixture(scope="module")
def k() -> Knowledge:
    return load_knowledge()


@pytest.mark.parametrize("code", ["M54.50", "M5450", "m54.50", " M54.50 ", "M54.59", "M5459",
                                  "M54.5", "M54.41", "M5442"])
def test_icd_dotted_undotted_and_headers(k: Knowledge, code: str) -> None:
    assert "back-pain" in k.concepts_of(ICD, code)


@pytest.mark.parametrize("code", ["M54", "M54.9", "M54.6", "M5"])
def test_icd_prefix_does_not_match_siblings_or_parents(k: Knowledge, code: str) -> None:
    assert "back-pain" not in k.concepts_of(ICD, code)


def test_q79_6_is_exact_for_hypermobility_but_prefix_for_any_eds(k: Knowledge) -> None:
    for code in ("Q79.6", "Q796", "Q79.60", "Q79.62", "Q7962"):
        assert "hypermobility-diagnosis" in k.concepts_of(ICD, code), code
    for code in ("Q79.61", "Q7961", "Q79.63", "Q79.69"):
        assert "hypermobility-diagnosis" not in k.concepts_of(ICD, code), code
        assert "eds-or-hypermobility-any-type" in k.concepts_of(ICD, code), code
    assert "hypermobility-diagnosis" in k.concepts_of(ICD, "M35.7")
    assert k.concepts_of(SCT, "30652003") >= {
        "hypermobility-diagnosis", "eds-or-hypermobility-any-type",
    }
    assert "hypermobility-diagnosis" not in k.concepts_of(SCT, "83470009")  # EDS type 1


def test_other_headers(k: Knowledge) -> None:
    assert k.concepts_of(ICD, "M25.551") == {"hip-pain"}
    assert "mast-cell-activation" in k.concepts_of(ICD, "D89.40")
    assert "mast-cell-activation" in k.concepts_of(ICD, "D8949")
    assert "opioid-use-disorder" in k.concepts_of(ICD, "F11.20")
    assert "opioid-use-disorder" not in k.concepts_of(ICD, "F11.90")  # use, unspecified
    assert "depression-or-anxiety" in k.concepts_of(ICD, "F32.A")
    assert "depression-or-anxiety" in k.concepts_of(ICD, "F41.1")
    assert "hip-soft-tissue" in k.concepts_of(ICD, "M70.61")
    assert "hip-soft-tissue" in k.concepts_of(ICD, "M76.12")
    assert "adrenal-insufficiency" not in k.concepts_of(ICD, "E27.4")  # header not listed
    assert "adrenal-insufficiency" in k.concepts_of(ICD, "E2740")


def test_hcpcs_range_is_inclusive_and_bounded(k: Knowledge) -> None:
    for code in ("L0621", "L0625", "L0637", "L0651", "l0650"):
        assert "lumbar-orthosis" in k.concepts_of(HCPCS, code), code
    for code in ("L0620", "L0652", "L06210", "L062", "K0625"):
        assert "lumbar-orthosis" not in k.concepts_of(HCPCS, code), code


def test_system_aliases(k: Knowledge) -> None:
    assert "lumbar-orthosis" in k.concepts_of(
        "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "L0630"
    )
    assert "back-pain" in k.concepts_of("urn:oid:2.16.840.1.113883.6.90", "M5450")
    assert "back-pain" in k.concepts_of("http://hl7.org/fhir/sid/icd-10", "M54.5")
    assert "pain-coded-chronic" in k.concepts_of("urn:oid:2.16.840.1.113883.6.96", "278860009")
    assert "psych-screen" in k.concepts_of("urn:oid:2.16.840.1.113883.6.1", "44261-6")
    assert "opioid-ingredient" in k.concepts_of("urn:oid:2.16.840.1.113883.6.88", "7804")
    assert "pots" in k.concepts_of("http://snomed.info/sct/", "371073003")  # trailing slash


def test_unknown_or_missing_inputs_give_nothing(k: Knowledge) -> None:
    assert k.concepts_of("http://example.org/local", "M54.50") == frozenset()
    assert k.concepts_of(None, "M54.50") == frozenset()
    assert k.concepts_of(ICD, None) == frozenset()
    assert k.concepts_of(ICD, "") == frozenset()
    assert k.concepts_of(SCT, "M54.50") == frozenset()  # code in the wrong system
    assert isinstance(k.concepts_of(ICD, "Z00.00"), frozenset)


def test_matches(k: Knowledge) -> None:
    codings = [("http://example.org/local", "LBP"), (SCT, "279039007")]
    assert k.matches("back-pain", codings)
    assert not k.matches("hip-pain", codings)
    assert not k.matches("hip-pain", [])
    assert k.matches("beighton-score", [("urn:hypermobility-cds:codes", "beighton-score")])


def test_unknown_concept_fails_loudly(k: Knowledge) -> None:
    with pytest.raises(KeyError):
        k.matches("back-pian", [(ICD, "M54.50")])
    with pytest.raises(KeyError):
        k.text_matches("opioid-ingredients", "tramadol")
    with pytest.raises(KeyError):
        k.codes("nope")
    with pytest.raises(KeyError):
        k.concept("nope")
    with pytest.raises(KeyError):
        k.coding("nope", "7804")
    with pytest.raises(KeyError):
        k.coding("opioid-ingredient", "161")  # acetaminophen is not an opioid
    with pytest.raises(KeyError):
        k.source("nope")


@pytest.mark.parametrize(
    ("concept", "text", "term"),
    [
        ("opioid-ingredient", "traMADol 50 mg tab", "tramadol"),
        ("opioid-ingredient", "oxycodone-acetaminophen 5/325", "oxycodone"),
        ("opioid-ingredient", "APAP/HYDROcodone bitartrate", "hydrocodone"),
        ("opioid-ingredient", "morphine sulfate 4 mg/mL injection", "morphine"),
        ("opioid-ingredient", "naloxone 0.5 MG / pentazocine 50 MG", "pentazocine"),
        ("systemic-corticosteroid-ingredient", "methylPREDNISolone 4 mg dose pack",
         "methylprednisolone"),
        ("dose-form-not-systemic", "triamcinolone 40 mg intra-articular injection",
         "intra-articular"),
        ("dose-form-systemic", "prednisolone oral solution 15 mg/5 mL", "oral solution"),
        ("low-level-laser", "Low Level  Laser therapy, lumbar", "low-level laser"),
        ("lumbar-orthosis", "LSO / Lumbar-Support belt", "lumbar support"),
        ("multidisciplinary-programme", "Interdisciplinary pain programme", "interdisciplinary"),
        ("interferential-therapy", "IFC (interferential current) 15 min", "interferential"),
        ("beighton-score", "Beighton's score (local flowsheet)", "beighton"),
        ("acetaminophen", "Paracetamol 1 g", "paracetamol"),
    ],
)
def test_text_terms_match_whole_words(k: Knowledge, concept: str, text: str, term: str) -> None:
    assert k.text_matches(concept, text) == term


@pytest.mark.parametrize(
    ("concept", "text"),
    [
        ("opioid-ingredient", "codeinex syrup"),
        ("opioid-ingredient", "naloxone 4 mg nasal spray"),
        ("opioid-ingredient", "acetaminophen 500 mg"),
        ("systemic-corticosteroid-ingredient", "fludrocortisone 0.1 mg tablet"),
        ("systemic-corticosteroid-ingredient", "hydrocortisonex"),
        ("dose-form-systemic", "Orally disintegrating"),
        ("multidisciplinary-programme", "physical therapy"),
        ("opioid-ingredient", None),
        ("opioid-ingredient", ""),
        ("opioid-product", "oxycodone 5 mg"),  # a concept without terms never text-matches
    ],
)
def test_text_terms_do_not_match(k: Knowledge, concept: str, text: str | None) -> None:
    assert k.text_matches(concept, text) is None


def test_naloxone_is_never_an_opioid_ingredient(k: Knowledge) -> None:
    for entry in k.codes("naloxone"):
        found = k.concepts_of(entry.system, entry.code)
        assert "opioid-ingredient" not in found
        if k.text_matches("opioid-ingredient", entry.display) is None:  # naloxone alone
            assert "opioid-product" not in found, entry.display
            assert "moud-if-oud" not in found, entry.display
    assert "opioid-product" in k.concepts_of(RXNORM, "312289")  # pentazocine / naloxone
    assert k.opioid_ingredient("312289") == Coding(RXNORM, "8001", "Pentazocine")


def test_fludrocortisone_is_never_a_systemic_corticosteroid(k: Knowledge) -> None:
    assert k.concepts_of(RXNORM, "4452") == {"fludrocortisone"}
    assert k.concepts_of(RXNORM, "5492") == {"hydrocortisone", "systemic-corticosteroid-ingredient"}


def test_opioid_ingredient_of_products(k: Knowledge) -> None:
    oxycodone = Coding(RXNORM, "7804", "Oxycodone")
    assert k.opioid_ingredient("1049621") == oxycodone  # oxycodone HCl 5 mg oral tablet
    assert k.opioid_ingredient("7804") == oxycodone  # an ingredient maps to itself
    assert k.opioid_ingredient("2670390") is None  # newer than the OMTK table
    assert k.opioid_ingredient("161") is None
    assert k.opioid_ingredient(None) is None


def test_coding_codes_and_concept_info(k: Knowledge) -> None:
    assert k.coding("rehabilitation-order", "52052004") == Coding(
        SCT, "52052004", "Rehabilitation therapy"
    )
    entries = k.codes("lumbar-orthosis")
    assert all(isinstance(e, CodeEntry) for e in entries)
    ranged = [e for e in entries if e.match == "range"]
    assert [(e.code, e.to) for e in ranged] == [("L0621", "L0651")]
    info = k.concept("opioid-ingredient")
    assert info.file == "medications.json" and info.derived_from is None
    assert "tramadol" in info.terms
    derived = k.concept("malignant-cancer")
    assert derived.file == "exemptions.json" and derived.derived_from is not None


def test_default_knowledge_is_loaded_once(tmp_path: Path) -> None:
    assert load_knowledge() is load_knowledge()
    assert load_knowledge(DEFAULT_DATA_DIR) is load_knowledge()
    copy = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, copy)
    other = load_knowledge(copy)
    assert other is not load_knowledge()
    assert other.concepts_of(ICD, "M54.50") == load_knowledge().concepts_of(ICD, "M54.50")


def _write_broken(tmp_path: Path, change) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, data)
    path = data / "conditions.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return data


def test_loader_rejects_bad_data(tmp_path: Path) -> None:
    def unknown_source(doc):
        doc["concepts"]["pots"]["codes"][0]["source"] = "NOPE"

    def bad_match(doc):
        doc["concepts"]["pots"]["codes"][0]["match"] = "fuzzy"

    def alias_system(doc):
        doc["concepts"]["pots"]["codes"][0]["system"] = "urn:oid:2.16.840.1.113883.6.90"

    def duplicate_concept(doc):
        doc["concepts"]["opioid-ingredient"] = {"description": "dup", "codes": []}

    for number, change in enumerate((unknown_source, bad_match, alias_system, duplicate_concept)):
        data = _write_broken(tmp_path / str(number), change)
        with pytest.raises(ValueError):
            Knowledge(data)
