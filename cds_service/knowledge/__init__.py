"""Terminology, guideline sources and thresholds as data, with a fast in-memory index.

Why data and not code: every code the service acts on must be traceable to a public source
(clinical/terminology.md or the CDC value sets), so each code lives in `data/*.json` next to its
citation, and the derived value-set files are regenerated and checked by
`tools/build_knowledge.py`. Rules ask questions by concept id ("is this coding a
`hypermobility-diagnosis`?"), never by literal code, so terminology changes do not touch rules.

Lookups (`concepts_of`, `matches`, `text_matches`) are built once at load and are cheap enough
for the request hot path. Unknown concept ids raise KeyError at call time, so a typo in a rule
fails loudly in its tests instead of silently never matching.

Threshold keys (`Knowledge.thresholds`, defaults; settings may override them):
`beighton_fixed`, `beighton_age_bands`, `beighton_threshold_mode`, `beighton_min`,
`beighton_max`, `chronicity_days`, `programme_min_hours`, `rehab_lookback_days`,
`psych_screen_lookback_days`. `Knowledge.threshold_details` adds each one's source and note.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .model import CodeEntry, Coding, ConceptInfo, GuidelineSource
from .store import Knowledge

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"

__all__ = [
    "DEFAULT_DATA_DIR",
    "CodeEntry",
    "Coding",
    "ConceptInfo",
    "GuidelineSource",
    "Knowledge",
    "load_knowledge",
]


@functools.cache
def _load_default() -> Knowledge:
    return Knowledge(DEFAULT_DATA_DIR)


def load_knowledge(data_dir: Path | None = None) -> Knowledge:
    """The knowledge in `data_dir`; the packaged data (loaded once, then cached) by default."""
    if data_dir is None or Path(data_dir).resolve() == DEFAULT_DATA_DIR:
        return _load_default()
    return Knowledge(Path(data_dir))
