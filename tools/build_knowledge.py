#!/usr/bin/env python3
"""Regenerate the knowledge files derived from the shared CDC value sets.

Why a script: the value-set concepts (opioid products, MOUD, naloxone, opioid exemptions) must be
faithful copies of the published expansions, with their source recorded. Copying them by hand
would drift; this script rebuilds them deterministically (sorted codes, one canonical JSON
layout) from /work/shared/clinical/valuesets, and `--check` fails when the committed files
differ, so CI catches both hand edits and upstream updates.

Fully generated: data/exemptions.json, data/opioids.json. In data/medications.json only the
concepts carrying `derived_from` (naloxone, moud-always, moud-if-oud) and the OVS source entry
are rewritten; the hand-written concepts are kept as they are.

Usage:
    python tools/build_knowledge.py            # rewrite the derived files
    python tools/build_knowledge.py --check    # exit 1 if a committed file is out of date
    python tools/build_knowledge.py --shared /path/to/shared --data-dir /tmp/out
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO.parent / "shared"
DEFAULT_DATA_DIR = REPO / "cds_service" / "knowledge" / "data"
VALUESETS = "clinical/valuesets"
UPSTREAM_REPOSITORY = "cqframework/opioid-cds-r4"
UPSTREAM_COMMIT = "b29bdcbf"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

OVS_SOURCE = {
    "citation": "CDC Opioid Prescribing Support IG value set expansions (CC0); local unmodified "
    "copies in clinical/valuesets/",
    "repository": UPSTREAM_REPOSITORY,
    "commit": UPSTREAM_COMMIT,
    "path": "input/vocabulary/valueset/",
    "terminology_key": "[OVS]",
}
OMTK_SOURCE = {
    "citation": "OMTKData 3.0.0 DrugIngredients table (generated 2020-10-20 from RxNav), "
    "extracted unchanged to clinical/valuesets/opioid-drug-ingredients.csv; maps an opioid "
    "product RxCUI to its opioid ingredient",
    "repository": UPSTREAM_REPOSITORY,
    "commit": UPSTREAM_COMMIT,
    "path": "input/cql/OMTKData.cql",
    "terminology_key": "[OMTK]",
}

MOUD_ALWAYS_RULE = (
    "Products of buprenorphine-and-methadone-medications whose RxNorm display names "
    "buprenorphine and (a) naloxone, in any dose form, or (b) a Sublingual dose form, or (c) a "
    "Prefilled Syringe, which in this value set is only the monthly extended-release injection "
    "(Sublocade and its generic, 200 MG/ML; RxNorm names do not say 'extended-release'). "
    "Brand names in square brackets of the selected products become text terms."
)


def _load_jsonfmt() -> Callable[[Any], str]:
    """Import the formatter by path, so this script does not import the service package."""
    path = REPO / "cds_service" / "knowledge" / "jsonfmt.py"
    spec = importlib.util.spec_from_file_location("_knowledge_jsonfmt", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dumps


def _system_names() -> dict[str, str]:
    """Each code system's name, as the knowledge files' systems.json gives it."""
    with (DEFAULT_DATA_DIR / "systems.json").open(encoding="utf-8") as handle:
        return {uri: system["name"] for uri, system in json.load(handle)["systems"].items()}


def _excluded(compose: Mapping[str, Any]) -> list[str]:
    """The codes whose descendants a value set's compose leaves out ("is-a" filters of its
    excludes, the only form the shared value sets use: any other is refused, not skipped)."""
    names = _system_names()
    excluded = []
    for part in compose.get("exclude", []):
        if set(part) - {"system", "version", "filter"}:
            raise ValueError(f"an exclude this script cannot describe: {sorted(part)}")
        for each in part.get("filter", []):
            if each.get("op") != "is-a":
                raise ValueError(f"an exclude filter this script cannot describe: {each}")
            excluded.append(f"{names.get(part['system'], part['system'])} {each['value']}")
    return excluded


class ValueSet:
    """One shared ValueSet expansion, checked for duplicates and its declared total."""

    def __init__(self, shared: Path, filename: str) -> None:
        self.filename = filename
        with (shared / VALUESETS / filename).open(encoding="utf-8") as handle:
            doc = json.load(handle)
        expansion = doc["expansion"]
        self.url: str = doc["url"]
        self.excluded = _excluded(doc.get("compose", {}))
        self.timestamp: str = expansion["timestamp"]
        self.contains: list[dict[str, str]] = sorted(
            (
                {"system": item["system"], "code": item["code"], "display": item["display"]}
                for item in expansion["contains"]
            ),
            key=lambda item: (item["system"], item["code"]),
        )
        keys = [(item["system"], item["code"]) for item in self.contains]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{filename}: duplicate codes in expansion")
        total = expansion.get("total")
        if total is not None and total != len(keys):
            raise ValueError(f"{filename}: expansion.total {total} != {len(keys)} codes")

    def derived_from(self, **extra: Any) -> dict[str, Any]:
        return {
            "path": f"{VALUESETS}/{self.filename}",
            "url": self.url,
            "expansion": self.timestamp,
            "repository": UPSTREAM_REPOSITORY,
            "commit": UPSTREAM_COMMIT,
            "count": len(self.contains),
            **extra,
        }

    def entries(self, keep: Callable[[Mapping[str, str]], bool] = lambda _: True) -> list[dict]:
        return [{**item, "source": "OVS"} for item in self.contains if keep(item)]


def _brands(entries: list[dict[str, Any]]) -> list[str]:
    found = {m.group(1) for e in entries for m in re.finditer(r"\[([^\]]+)\]", e["display"])}
    return sorted(found, key=str.casefold)


def _is_moud_always(item: Mapping[str, str]) -> bool:
    display = item["display"].lower()
    if "buprenorphine" not in display:
        return False
    return "naloxone" in display or "sublingual" in display or "prefilled syringe" in display


def _omtk_products(shared: Path) -> dict[str, dict[str, Any]]:
    """The OMTK table by product RxCUI: its name and its one opioid ingredient."""
    table: dict[str, dict[str, Any]] = {}
    with (shared / VALUESETS / "opioid-drug-ingredients.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            found = {
                "display": row["drug_name"],
                "ingredient": {"code": row["ingredient_rxcui"], "name": row["ingredient_name"]},
            }
            if table.setdefault(row["drug_rxcui"], found) != found:
                raise ValueError(f"drug {row['drug_rxcui']} has two opioid ingredients")
    return table


def build_exemptions(shared: Path) -> dict[str, Any]:
    specs = [
        ("malignant-cancer", "cdc-malignant-cancer-conditions.json",
         "Malignant cancer (ICD-10-CM). Opioid-exempt patient (rules.md): outside the scope of "
         "the opioid guidance, as in the CDC 2022 guideline."),
        ("sickle-cell-disease", "sickle-cell-diseases.json",
         "Sickle cell disease (SNOMED CT and ICD-10-CM). Opioid-exempt patient (rules.md)."),
        ("likely-terminal-condition", "conditions-likely-terminal-for-opioid-prescribing.json",
         "Conditions likely terminal for opioid prescribing (SNOMED CT and ICD-10-CM). "
         "Opioid-exempt patient (rules.md)."),
        ("hospice-finding", "hospice-finding.json",
         "Findings of hospice care (SNOMED CT). Opioid-exempt patient (rules.md)."),
        ("hospice-procedure", "hospice-procedure.json",
         "Hospice referral or admission procedures (SNOMED CT). Opioid-exempt patient "
         "(rules.md)."),
        ("end-of-life-therapy", "therapies-indicating-end-of-life-care.json",
         "Terminal, hospice and palliative care therapies (SNOMED CT). Opioid-exempt patient "
         "(rules.md)."),
    ]
    concepts = {}
    for concept_id, filename, description in specs:
        vs = ValueSet(shared, filename)
        # Stated, so that a reader of the catalogue sees what the CDC chose to leave out (for
        # sickle cell disease: ICD-10-CM D57.1, without crisis), not only what it kept.
        excluded = (
            f" The value set's definition excludes {', '.join(vs.excluded)} and every code under "
            f"{'it' if len(vs.excluded) == 1 else 'them'}, so these do not exempt a patient."
            if vs.excluded
            else ""
        )
        concepts[concept_id] = {
            "description": description + " Exact copy of the CDC value set expansion; codes "
            "are matched exactly (the expansion already lists every descendant)." + excluded,
            "derived_from": vs.derived_from(),
            "codes": vs.entries(),
        }
    return {
        "title": "Opioid exemptions",
        "description": "Conditions, procedures and therapies that make the opioid rules stay "
        "silent (rules.md 'Opioid-exempt patient'). GENERATED by tools/build_knowledge.py from "
        "clinical/valuesets; do not edit by hand.",
        "sources": {"OVS": OVS_SOURCE},
        "concepts": concepts,
    }


def build_opioids(shared: Path) -> dict[str, Any]:
    vs = ValueSet(shared, "opioid-analgesics-with-ambulatory-misuse-potential.json")
    products = _omtk_products(shared)
    codes = []
    for entry in vs.entries():
        product = products.get(entry["code"]) if entry["system"] == RXNORM else None
        codes.append({**entry, "ingredient": product["ingredient"]} if product else entry)
    matched = sum("ingredient" in entry for entry in codes)
    in_value_set = {entry["code"] for entry in codes if entry["system"] == RXNORM}
    others = [
        {"system": RXNORM, "code": code, "display": product["display"], "source": "OMTK",
         "ingredient": product["ingredient"]}
        for code, product in products.items()
        if code not in in_value_set
    ]
    return {
        "title": "Opioid products",
        "description": "Opioid analgesic products (RxNorm SCD/SBD) with ambulatory misuse "
        "potential, each with its opioid ingredient where the OMTK table knows it. GENERATED "
        "by tools/build_knowledge.py from clinical/valuesets; do not edit by hand.",
        "sources": {"OVS": OVS_SOURCE, "OMTK": OMTK_SOURCE},
        "concepts": {
            "opioid-product": {
                "description": "An opioid by code (rules.md 'Opioid'): the CDC value set "
                "'opioid analgesics with ambulatory misuse potential'. It leaves out "
                "injectables and cough/antispasmodic products, which the opioid-ingredient "
                "text terms still catch. MOUD products in it are exempted by the moud-* "
                "concepts. 'ingredient' comes from the OMTK table (OMTK source); products "
                "newer than that table (2020) have none.",
                "derived_from": vs.derived_from(
                    ingredients={
                        "path": f"{VALUESETS}/opioid-drug-ingredients.csv",
                        "table": "OMTKData 3.0.0 DrugIngredients",
                        "matched": matched,
                    }
                ),
                "codes": codes,
            },
            "opioid-product-omtk": {
                "description": "An opioid by code beyond that value set (rules.md 'Opioid': "
                "any dose form, an injectable the value set leaves out included): every other "
                "product of the OMTK table, which lists RxNorm products with an opioid "
                "ingredient (injectables, cough and antispasmodic products among them), each "
                "with that ingredient. Without it, such a product coded without a name would "
                "be no opioid at all. MOUD products in it are exempted by the moud-* concepts.",
                "derived_from": {
                    "path": f"{VALUESETS}/opioid-drug-ingredients.csv",
                    "table": "OMTKData 3.0.0 DrugIngredients",
                    "repository": UPSTREAM_REPOSITORY,
                    "commit": UPSTREAM_COMMIT,
                    "count": len(others),
                },
                "codes": others,
            },
        },
    }


def derived_medication_concepts(shared: Path) -> dict[str, dict[str, Any]]:
    naloxone = ValueSet(shared, "naloxone-medications.json")
    moud = ValueSet(shared, "buprenorphine-and-methadone-medications.json")
    always = moud.entries(_is_moud_always)
    every = moud.entries()
    return {
        "naloxone": {
            "description": "Naloxone-containing products (CDC value set), including "
            "buprenorphine/naloxone and pentazocine/naloxone. Naloxone alone is never an "
            "opioid (rules.md); combinations are judged by their opioid. The naloxone "
            "ingredient RxCUI is not in terminology.md, so only its name is a text term.",
            "derived_from": naloxone.derived_from(),
            "codes": naloxone.entries(),
            "terms": ["naloxone"],
        },
        "moud-always": {
            "description": "MOUD products never flagged by any opioid rule (rules.md 'MOUD' (a)): "
            "buprenorphine with naloxone in any form, sublingual buprenorphine, and "
            "extended-release injectable buprenorphine. The terms are the brand names of the "
            "selected products: an order typed as text that names one is MOUD. Without a brand, "
            "a text order is MOUD (a) when it names buprenorphine (buprenorphine-ingredient) "
            "beside naloxone or a sublingual or extended-release injectable form "
            "(buprenorphine-moud-form). Derivation rule: " + MOUD_ALWAYS_RULE,
            "derived_from": moud.derived_from(selected=len(always), rule=MOUD_ALWAYS_RULE),
            "codes": always,
            "terms": _brands(always),
        },
        "moud-if-oud": {
            "description": "Every product of the CDC buprenorphine/methadone value set: MOUD, "
            "never flagged, when the patient has an active opioid-use-disorder diagnosis "
            "(rules.md 'MOUD' (b)). Without it, methadone or transdermal/buccal buprenorphine "
            "for pain is an opioid like any other. Terms: the two ingredient names and the "
            "brand names of the value set's products.",
            "derived_from": moud.derived_from(),
            "codes": every,
            "terms": ["buprenorphine", "methadone", *_brands(every)],
        },
    }


def build_medications(shared: Path, current: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(current))  # deep copy; keeps key order
    doc.setdefault("sources", {})["OVS"] = OVS_SOURCE
    concepts = doc.setdefault("concepts", {})
    for concept_id, concept in derived_medication_concepts(shared).items():
        concepts[concept_id] = concept
    return doc


def render(shared: Path, data_dir: Path) -> dict[Path, str]:
    """Every derived file's expected text, keyed by path."""
    dumps = _load_jsonfmt()
    medications_path = data_dir / "medications.json"
    current = json.loads(medications_path.read_text(encoding="utf-8"))
    return {
        data_dir / "exemptions.json": dumps(build_exemptions(shared)),
        data_dir / "opioids.json": dumps(build_opioids(shared)),
        medications_path: dumps(build_medications(shared, current)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                        help=f"shared reference folder (default: {DEFAULT_SHARED})")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="knowledge data folder to write or check")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a derived file is out of date")
    args = parser.parse_args(argv)

    if not (args.shared / VALUESETS).is_dir():
        print(f"error: no {VALUESETS} under {args.shared}", file=sys.stderr)
        return 2
    stale = []
    for path, text in render(args.shared, args.data_dir).items():
        on_disk = path.read_text(encoding="utf-8") if path.exists() else None
        if on_disk == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "out of date" if args.check else "written"
        print(f"{path.name}: {verb}")
    if args.check and stale:
        print("run: python tools/build_knowledge.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
