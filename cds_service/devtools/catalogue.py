"""Generate ``docs/rules.md``: the rule catalogue a clinician can review without reading Python.

Built only from the rule objects and the knowledge files, so it cannot drift from what runs; a
test fails when the committed document is out of date. Regenerate with
``python -m cds_service.devtools.catalogue > docs/rules.md``.
"""

from __future__ import annotations

import sys

from cds_service.guidance.rules import ALL
from cds_service.guidance.settings import GuidanceSettings
from cds_service.knowledge import Knowledge, load_knowledge

SYSTEM_NAMES = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://snomed.info/sct": "SNOMED CT",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.ama-assn.org/go/cpt": "CPT",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS",
    "urn:hypermobility-cds:codes": "project code",
}
MAX_LISTED = 12  # large value sets are summarised, not printed in full


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _codes(knowledge: Knowledge, concept: str) -> list[str]:
    info = knowledge.concept(concept)
    entries = knowledge.codes(concept)
    lines = [f"- **{concept}**: {_cell(info.description)}"]
    if info.terms:
        lines.append(f"  - words matched in text: {', '.join(info.terms)}")
    shown = entries[:MAX_LISTED]
    for entry in shown:
        system = SYSTEM_NAMES.get(entry.system, entry.system)
        match = f" ({entry.match})" if entry.match != "exact" else ""
        lines.append(f"  - {system} `{entry.code}`{match} {entry.display or ''}".rstrip())
    if len(entries) > MAX_LISTED:
        lines.append(f"  - … and {len(entries) - MAX_LISTED} more codes (see the knowledge file)")
    return lines


def render(knowledge: Knowledge | None = None) -> str:
    knowledge = knowledge or load_knowledge()
    defaults = GuidanceSettings()
    out = [
        "# Rule catalogue",
        "",
        "Generated from the rule modules (`cds_service/guidance/rules/`) and the knowledge",
        "files (`cds_service/knowledge/data/`) by `python -m cds_service.devtools.catalogue`.",
        "Do not edit by hand: a test fails when this file is out of date.",
        "",
        "Every rule fires only for patients **in cohort**: evidence of hypermobility (an active",
        "hypermobility diagnosis, or a most recent Beighton score at or above the threshold) and",
        "active chronic low back or hip pain. Each card carries its rule id in `source.topic`.",
        "",
        "## Settings and their defaults",
        "",
        "| setting | default |",
        "|---|---|",
    ]
    for name, value in defaults.to_mapping().items():
        if name == "enabled_rules":
            value = "all rules"
        elif name == "indicators":
            value = "each rule's own (below)"
        out.append(f"| `{name}` | {_cell(value)} |")
    out.append("")
    for rule in ALL:
        out += [
            f"## `{rule.id}`: {rule.title}",
            "",
            f"- **Hooks:** {', '.join(sorted(rule.hooks))}",
            f"- **Indicator:** {rule.indicator}",
            f"- **When:** {rule.when}",
            f"- **Then:** {rule.then}",
            "- **Sources:**",
        ]
        for key in rule.sources:
            source = knowledge.source(key)
            link = f" <{source.url}>" if source.url else ""
            out.append(f"  - {source.citation}{link}")
        if rule.concepts:
            out.append("- **Codes and words it reads:**")
            for concept in rule.concepts:
                out += ["  " + line for line in _codes(knowledge, concept)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
