"""Every third-party package the service imports is declared in pyproject.toml.

A package that arrives only as another's dependency arrives in whatever version that one allows:
urllib3, imported by the FHIR client, came with requests (any 1.21 to 2.x), though the client
needs 2's response API and urllib3 2.6's bounded decompression (before it, one read of a gzip
bomb could unpack to about 64 MB, whatever the client's byte budget).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "cds_service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"cds_service", "__future__"}


def test_every_imported_package_is_a_declared_dependency():
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    distributions = packages_distributions()
    modules = imported_top_level_modules()
    assert {"flask", "urllib3", "jwt"} <= modules  # the scan sees the imports
    undeclared = {
        module: names
        for module in modules
        if not (names := {_name(d) for d in distributions.get(module, [module])}) & declared
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_urllib3_is_at_least_the_version_that_bounds_decompression():
    [urllib3] = [r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "urllib3"]
    floor = re.search(r">=\s*(\d+)\.(\d+)", urllib3)
    assert floor and (int(floor.group(1)), int(floor.group(2))) >= (2, 6), urllib3
