"""Code-system aliases and code normalisation.

EHRs send the same code system under several names (OIDs, http vs https, the WHO ICD-10 URI for
ICD-10-CM content) and ICD-10-CM codes with or without the dot. Both the data and every incoming
code pass through the same normalisation, so a lookup is a plain dict access.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Normalisation styles named in data/systems.json.
_STYLES = frozenset({"icd10", "upper", "strip"})


def _normalise(style: str, code: str) -> str:
    code = code.strip()
    if style == "icd10":
        return code.replace(".", "").upper()
    if style == "upper":
        return code.upper()
    return code


def _alias_key(uri: str) -> str:
    return uri.strip().rstrip("/").lower()


class SystemTable:
    """Resolves a system URI (or alias) to its canonical URI and normalises codes for it."""

    __slots__ = ("_canonical", "_loose", "_style")

    def __init__(self, systems: Mapping[str, Mapping[str, Any]]) -> None:
        self._canonical: dict[str, str] = {}
        self._loose: dict[str, str] = {}
        self._style: dict[str, str] = {}
        for uri, spec in systems.items():
            style = spec.get("normalise", "strip")
            if style not in _STYLES:
                raise ValueError(f"systems.json: unknown normalise style {style!r} for {uri}")
            self._style[uri] = style
            for name in (uri, *spec.get("aliases", ())):
                for table, key in ((self._canonical, name), (self._loose, _alias_key(name))):
                    if table.get(key, uri) != uri:
                        raise ValueError(f"systems.json: alias {name!r} is claimed twice")
                    table[key] = uri

    def canonical(self, system: str | None) -> str | None:
        """The canonical URI for `system`, or None when the service does not know the system."""
        if not system:
            return None
        found = self._canonical.get(system)
        if found is None:
            found = self._loose.get(_alias_key(system))
        return found

    def normalise(self, canonical: str, code: str) -> str:
        """The code as indexed: ICD-10 without dots, upper case; HCPCS/CPT upper case."""
        return _normalise(self._style.get(canonical, "strip"), code)
