"""The knowledge data itself: shape, provenance, and no unverified or excluded codes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cds_service.knowledge import DEFAULT_DATA_DIR, Knowledge, load_knowledge
from cds_service.knowledge.terms import compile_terms

REPO = Path(__file__).resolve().parents[2]
TERMINOLOGY = REPO.parent / "shared" / "clinical" / "terminology.md"
SPECIAL_FILES = {"systems.json", "sources.json", "thresholds.json"}
GENERATED_FILES = {"exemptions.json", "opioids.json"}
STATUSES = {"VERIFIED", "VERIFIED-3P", "PARTIAL", "PROJECT", "CHECKED-PUBLIC"}
PROJECT_SYSTEM = "urn:hypermobility-cds:codes"

# Concept ids other modules code against (the brief's list): they must all exist.
REQUIRED_CONCEPTS = {
    "hypermobility-diagnosis", "eds-or-hypermobility-any-type", "back-pain", "hip-pain",
    "pain-coded-chronic", "chronic-pain-unlocated", "pots", "mast-cell-activation",
    "pelvic-floor-diagnosis", "depression-or-anxiety", "opioid-use-disorder",
    "adrenal-insufficiency", "hip-soft-tissue", "malignant-cancer", "sickle-cell-disease",
    "likely-terminal-condition", "hospice-finding", "hospice-procedure", "end-of-life-therapy",
    "beighton-score", "psych-screen", "orthostatic-heart-rate", "heart-rate-lying-or-sitting",
    "heart-rate-standing", "tilt-table-test", "pelvic-floor-workup", "rehabilitation-order",
    "multidisciplinary-programme", "cognitive-behavioural-therapy", "physical-therapy",
    "radiograph-pelvis-hip", "mri-hip", "mri-lower-extremity-joint-cpt", "lumbar-orthosis",
    "low-level-laser", "interferential-therapy", "opioid-ingredient", "naloxone", "moud-always",
    "moud-if-oud", "systemic-corticosteroid-ingredient", "fludrocortisone", "hydrocortisone",
    "acetaminophen", "nsaid", "dose-form-systemic", "dose-form-not-systemic", "opioid-product",
}


def _concept_files() -> dict[str, dict]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DEFAULT_DATA_DIR.glob("*.json"))
        if path.name not in SPECIAL_FILES
    }


def _all_entries():
    for name, doc in _concept_files().items():
        for concept_id, concept in doc["concepts"].items():
            for entry in concept.get("codes", []):
                yield name, doc, concept_id, entry


def _systems() -> dict:
    return json.loads((DEFAULT_DATA_DIR / "systems.json").read_text(encoding="utf-8"))["systems"]


def test_required_concepts_exist() -> None:
    assert load_knowledge().concept_ids() >= REQUIRED_CONCEPTS


def test_every_code_entry_is_complete_and_cited() -> None:
    systems = _systems()
    count = 0
    for name, doc, concept_id, entry in _all_entries():
        where = f"{name} {concept_id} {entry.get('code')}"
        for key in ("system", "code", "display", "source"):
            assert isinstance(entry.get(key), str) and entry[key].strip(), f"{where}: {key}"
        assert entry["source"] in doc["sources"], f"{where}: unknown source {entry['source']}"
        assert entry.get("match", "exact") in {"exact", "prefix", "range"}, where
        assert ("to" in entry) == (entry.get("match") == "range"), where
        assert entry["system"] in systems, f"{where}: non-canonical system"
        assert entry.get("status", "VERIFIED") in STATUSES, where
        if entry.get("status") == "PROJECT":
            assert entry["system"] == PROJECT_SYSTEM, where
        count += 1
    assert count > 3000  # the derived value sets alone hold about 3,400 codes


def test_every_file_source_names_its_public_origin() -> None:
    """A source cited by a public code names a URL or repository+path; project-only ones cite."""
    public_sources = {
        (name, entry["source"])
        for name, _doc, _concept, entry in _all_entries()
        if entry["system"] != PROJECT_SYSTEM
    }
    for name, doc in _concept_files().items():
        assert doc["title"] and doc["description"], name
        for key, source in doc["sources"].items():
            assert source["citation"], f"{name} {key}"
            if (name, key) in public_sources:
                assert source.get("url") or (source.get("repository") and source.get("path")), (
                    f"{name} {key}: needs a url or repository+path"
                )


def test_derived_concepts_record_their_value_set() -> None:
    for name, doc in _concept_files().items():
        for concept_id, concept in doc["concepts"].items():
            derived = concept.get("derived_from")
            if name in GENERATED_FILES:
                assert derived is not None, f"{name} {concept_id}"
            if derived is None:
                continue
            assert derived["path"].startswith("clinical/valuesets/")
            assert derived["repository"] == "cqframework/opioid-cds-r4"
            assert derived["commit"] == "b29bdcbf"
            if "table" in derived:  # the OMTK table, not a value set
                assert derived["path"].endswith(".csv") and derived["count"] > 0
                continue
            assert derived["url"].startswith("http://fhir.org/guides/cdc/opioid-cds/ValueSet/")
            assert re.match(r"\d{4}-\d\d-\d\dT", derived["expansion"])


def test_known_unverified_or_wrong_codes_are_absent() -> None:
    everywhere = {entry["code"] for *_, entry in _all_entries()}
    # 304891004: CBT concept UNVERIFIED. 74270/74280: barium enema, not defecography.
    # 397016004: systemic mast cell disease, not MCAS. 69737-5: GAD-7 panel, not the total.
    # 713021002: plain X-ray pelvis, PARTIAL with conflicting sources.
    for code in ("304891004", "74270", "74280", "397016004", "69737-5", "713021002"):
        assert code not in everywhere, code


def test_excluded_ingredients_stay_out_of_their_concepts() -> None:
    knowledge = load_knowledge()
    steroid_codes = {entry.code for entry in knowledge.codes("systemic-corticosteroid-ingredient")}
    assert "4452" not in steroid_codes  # fludrocortisone
    assert "fludrocortisone" not in knowledge.concept("systemic-corticosteroid-ingredient").terms
    opioid_terms = knowledge.concept("opioid-ingredient").terms
    assert "naloxone" not in opioid_terms
    expected = {"tramadol", "tapentadol", "codeine", "buprenorphine", "pentazocine"}
    assert set(opioid_terms) >= expected


@pytest.mark.skipif(not TERMINOLOGY.exists(), reason="../shared/clinical/terminology.md missing")
def test_hand_written_codes_are_named_in_terminology_md() -> None:
    text = TERMINOLOGY.read_text(encoding="utf-8")
    for name, _doc, concept_id, entry in _all_entries():
        if name in GENERATED_FILES or "derived_from" in _concept_files()[name]["concepts"][
            concept_id
        ]:
            continue  # derived codes are checked against the value sets themselves
        if entry["system"] == PROJECT_SYSTEM:
            continue  # the project's own codes (Beighton score, override reasons)
        if entry.get("status") == "CHECKED-PUBLIC":
            # Not in terminology.md: checked against the public page or file the source names.
            source = _concept_files()[name]["sources"][entry["source"]]
            assert source.get("url") or (source.get("repository") and source.get("path")), (
                f"{name} {concept_id}: {entry['code']} cites nothing to check it against"
            )
            continue
        for code in (entry["code"], entry.get("to")):
            if code:
                assert _names_code(text, code, prefix=entry.get("match") == "prefix"), (
                    f"{name} {concept_id}: {code} not in terminology.md"
                )


def _names_code(text: str, code: str, *, prefix: bool) -> bool:
    """The code stands in the text as a code of its own, not inside a longer one ("161" is not
    found in "1615" or "M16.1"); a prefix entry may be followed by more ("F11.1" in "F11.1x")."""
    after = "" if prefix else r"(?![0-9A-Za-z])"
    return re.search(rf"(?<![0-9A-Za-z.]){re.escape(code)}{after}", text) is not None


def test_a_code_is_named_only_where_it_stands_on_its_own() -> None:
    text = "| x | RxNorm | 1615 | M16.1 | F11.1x / F32.0 | L0621–L0651 |"
    assert not _names_code(text, "161", prefix=False)
    assert not _names_code(text, "6.1", prefix=False)
    assert not _names_code(text, "F11.1", prefix=False)
    assert _names_code(text, "F11.1", prefix=True)
    assert _names_code(text, "F32.0", prefix=False)
    assert _names_code(text, "L0621", prefix=False) and _names_code(text, "L0651", prefix=False)


@pytest.mark.skipif(not TERMINOLOGY.exists(), reason="../shared/clinical/terminology.md missing")
def test_no_code_from_an_unverified_row_is_used() -> None:
    everywhere = {entry["code"] for *_, entry in _all_entries()}
    unverified = set()
    for line in TERMINOLOGY.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 5 and cells[-2].startswith("**UNVERIFIED**"):
            unverified.update(re.findall(r"\b\d{5,}\b", cells[3]))
    assert "304891004" in unverified  # the parser found the known UNVERIFIED row
    assert not unverified & everywhere


def test_guideline_sources() -> None:
    knowledge = load_knowledge()
    expected = {
        "cdc-opioids-2022", "acp-low-back-pain-2017", "acr-chronic-hip-pain",
        "eds-classification-2017", "source-guidance",
    }
    assert expected <= knowledge.source_keys()
    for key in knowledge.source_keys():
        source = knowledge.source(key)
        assert source.label and source.citation and source.status
        assert source.url is None or source.url.startswith(("http://", "https://"))
    cdc = knowledge.source("cdc-opioids-2022")
    assert cdc.url == "https://www.cdc.gov/mmwr/volumes/71/rr/rr7103a1.htm"
    guidance = knowledge.source("source-guidance")
    assert guidance.url is None and "2026-01-16" in guidance.citation
    assert "no public url" in guidance.status.lower()


def test_threshold_defaults_and_their_sources() -> None:
    knowledge = load_knowledge()
    values = knowledge.thresholds
    assert values["beighton_fixed"] == 4
    assert values["beighton_threshold_mode"] == "fixed"
    assert values["chronicity_days"] == 84
    assert values["programme_min_hours"] == 100
    assert values["rehab_lookback_days"] == 365
    assert values["psych_screen_lookback_days"] == 365
    bands = {(b["min_age"], b["max_age"]): b["threshold"] for b in values["beighton_age_bands"]}
    assert bands == {(0, 17): 6, (18, 50): 5, (51, None): 4}
    for name, detail in knowledge.threshold_details.items():
        source = detail["source"]
        assert source in knowledge.source_keys() or source.startswith("clinical/"), name
    with pytest.raises(TypeError):
        values["beighton_fixed"] = 5  # type: ignore[index]


def test_terms_begin_and_end_with_a_letter_or_digit_and_hold_no_bar():
    """The relevance filter searches a resource's texts joined by "|" in one go: that is the same
    as searching each alone only while no term holds a "|" or starts or ends with punctuation
    (terms match between word boundaries)."""
    knowledge = load_knowledge()
    for concept in knowledge.concept_ids():
        for term in knowledge.concept(concept).terms:
            assert "|" not in term, (concept, term)
            assert term[0].isalnum() and term[-1].isalnum(), (concept, term)


@pytest.mark.parametrize("term", ["low|back", "-hypermobility", "Beighton:", "| x"])
def test_terms_that_would_break_the_joined_search_are_refused_at_load(term):
    with pytest.raises(ValueError, match="must hold no"):
        compile_terms([term])


def test_terms_match_whole_words_unless_the_concept_says_anywhere(tmp_path):
    """Only "whole-words" (the default) and "anywhere" are understood; a term of an "anywhere"
    concept matches inside a word, whole-word terms never do, and a union of both kinds answers
    as each would alone."""
    knowledge = load_knowledge()
    assert knowledge.concept("beighton-score").terms_anywhere
    assert knowledge.text_matches("beighton-score", "BeightonScore (flowsheet)") == "beighton"
    assert not knowledge.concept("opioid-ingredient").terms_anywhere
    assert knowledge.text_matches("opioid-ingredient", "codeinex") is None
    both = ("beighton-score", "opioid-ingredient")
    assert knowledge.text_matches_any(both, "Beighton9")
    assert not knowledge.text_matches_any(both, "codeinex")
    data = tmp_path / "data"
    shutil.copytree(DEFAULT_DATA_DIR, data)
    path = data / "observations.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["concepts"]["beighton-score"]["terms_match"] = "substring"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ValueError, match="terms_match must be whole-words or anywhere"):
        Knowledge(data)


def test_the_hypermobility_specific_diagnoses_are_hypermobility_diagnoses() -> None:
    """Three codes written twice (review): the narrower concept must stay inside the wider."""
    knowledge = load_knowledge()
    specific = {(e.system, e.code) for e in knowledge.codes("hypermobility-specific-diagnosis")}
    assert specific and specific <= {
        (e.system, e.code) for e in knowledge.codes("hypermobility-diagnosis")}
