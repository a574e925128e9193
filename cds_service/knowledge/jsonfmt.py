"""The one JSON layout used for every knowledge file.

Stable output is what lets `tools/build_knowledge.py --check` compare bytes. Objects inside
lists (code entries) go on one line each, so a value-set update shows as a readable line diff;
everything else is indented by one space per level.
"""

from __future__ import annotations

import json
from typing import Any

_SCALARS = (str, int, float, bool, type(None))


def _flat(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, dict):
        return all(
            isinstance(v, _SCALARS) or (isinstance(v, dict) and _flat(v)) for v in value.values()
        )
    if isinstance(value, list):
        return all(isinstance(v, _SCALARS) for v in value)
    return False


def _one_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _format(value: Any, level: int, in_list: bool) -> str:
    pad = " " * level
    if isinstance(value, dict):
        if not value or (in_list and _flat(value)):
            return _one_line(value)
        items = [f"{pad} {json.dumps(k, ensure_ascii=False)}: {_format(v, level + 1, False)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value or (_flat(value) and len(_one_line(value)) <= 96):
            return _one_line(value)
        items = [f"{pad} {_format(v, level + 1, True)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return _one_line(value)


def dumps(document: Any) -> str:
    """Serialise a knowledge document in the canonical layout (with a final newline)."""
    return _format(document, 0, False) + "\n"
