"""JSON objects without repeated members, for everything we parse from outside.

RFC 8259 leaves a repeated member name's meaning open (most parsers keep the last one), so two
readers of the same text can disagree. Request bodies and token headers and claims are parsed
with :func:`no_duplicates` as ``object_pairs_hook`` and refused when a name repeats.
"""

from __future__ import annotations

from typing import Any


class DuplicateKey(ValueError):
    """A JSON object names the same member twice; ``str(error)`` is the name."""


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result
