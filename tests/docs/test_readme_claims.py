"""The README's factual claims that no other test holds to the code: variables and defaults,
services and prefetch templates, the layout, and which make targets CI runs.

Each test reads the README section that makes the claim, so an edit to either side that breaks
the agreement fails here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from cds_service.api.hooks import FEEDBACK_MAX_BYTES
from cds_service.api.services import SERVICES
from cds_service.cli import build_parser
from cds_service.devtools.scenarios import list_scenarios
from cds_service.guidance.settings import ALL_RULES, GuidanceSettings
from cds_service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")
CI = (REPO / ".ci" / "run").read_text(encoding="utf-8")
SERVE_VARIABLES = ("CDS_HOST", "CDS_PORT", "CDS_WORKERS", "CDS_THREADS")


def section(title: str) -> str:
    """The README text under the heading ``title``, up to the next heading."""
    match = re.search(rf"^#+ {re.escape(title)}\n", README, re.MULTILINE)
    assert match, f"README has no section {title!r}"
    rest = README[match.end():]
    end = re.search(r"^#+ ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def table(text: str) -> list[list[str]]:
    """Rows (header and separator left out) of the Markdown tables in ``text``."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    return [row for row in cells if not set("".join(row)) <= set("-: ")][1:]


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def serve_defaults(monkeypatch: pytest.MonkeyPatch):
    for name in SERVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return build_parser().parse_args(["serve"])


def shown(value: object) -> str:
    """A default as the README writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def config_rows() -> dict[str, str]:
    """variable -> the default column (before any *dev* note), from the configuration table."""
    defaults: dict[str, str] = {}
    for names_cell, default_cell, _meaning in table(section("Configuration")):
        production = default_cell.split("(", 1)[0]
        names, values = ticked(names_cell), ticked(production) or [production.strip()]
        if len(values) == 1:
            values = values * len(names)
        assert len(names) == len(values), (names_cell, default_cell)
        defaults.update(zip(names, values, strict=True))
    return defaults


def test_every_variable_the_code_reads_is_documented_and_no_other():
    read = set()
    for path in (REPO / "cds_service").rglob("*.py"):
        read |= set(re.findall(r"[\"'](CDS_[A-Z_]+)[\"']", path.read_text(encoding="utf-8")))
    documented = set(config_rows()) | set(re.findall(r"`(CDS_[A-Z_]+)`", section("Configuration")))
    assert read == documented


def test_configuration_defaults_are_the_code_defaults(monkeypatch):
    settings, guidance, serve = Settings(), GuidanceSettings(), serve_defaults(monkeypatch)
    code = {
        "CDS_PROFILE": settings.profile,
        "CDS_AUTH": settings.auth,
        "CDS_DATABASE_URL": settings.database_url,
        "CDS_DATABASE_POOL_SIZE": settings.database_pool_size,
        "CDS_DATABASE_AUTO_MIGRATE": settings.database_auto_migrate,
        "CDS_SERVED_CARDS_FLUSH_S": settings.served_cards_flush_s,
        "CDS_MAX_BODY_BYTES": settings.max_body_bytes,
        "CDS_MAX_DRAFT_ORDERS": settings.max_draft_orders,
        "CDS_MAX_PREFETCH_KEYS": settings.max_prefetch_keys,
        "CDS_FHIR_TIMEOUT_S": settings.fhir_timeout_s,
        "CDS_FHIR_DEADLINE_S": settings.fhir_deadline_s,
        "CDS_FHIR_MAX_PAGES": settings.fhir_max_pages,
        "CDS_FHIR_PAGE_SIZE": settings.fhir_page_size,
        "CDS_FHIR_MAX_WORKERS": settings.fhir_max_workers,
        "CDS_CORS_ORIGINS": settings.cors_origins,
        "CDS_BEIGHTON_THRESHOLD_MODE": guidance.beighton_threshold_mode,
        "CDS_HOST": serve.host,
        "CDS_PORT": serve.port,
        "CDS_WORKERS": serve.workers,
        "CDS_THREADS": serve.threads,
    }
    unset = {
        "CDS_PUBLIC_BASE_URL": settings.public_base_urls,
        "CDS_TRUSTED_ISSUERS_FILE": settings.trusted_issuers_file,
        "CDS_TRUSTED_ISSUERS": settings.trusted_issuers_json,
        "CDS_FHIR_SERVER_ALLOWLIST": settings.fhir_server_allowlist,
        "CDS_GUIDANCE_FILE": None,
    }
    readme = config_rows()
    assert set(readme) == set(code) | set(unset) | {"CDS_ENABLED_RULES"}
    assert {name: readme[name] for name in code} == {k: shown(v) for k, v in code.items()}
    assert {name: readme[name] for name in unset} == dict.fromkeys(unset, "none")
    assert not any(unset.values())
    assert readme["CDS_ENABLED_RULES"] == "all" and guidance.enabled_rules == frozenset(ALL_RULES)


def test_development_profile_defaults():
    rows = {ticked(r[0])[0]: r[1] for r in table(section("Configuration"))}
    dev = Settings.development()
    assert "`http://localhost:PORT,http://127.0.0.1:PORT`" in rows["CDS_PUBLIC_BASE_URL"]
    assert dev.public_base_urls == ("http://localhost:8000", "http://127.0.0.1:8000")
    assert "*dev*: `*`" in rows["CDS_FHIR_SERVER_ALLOWLIST"]
    assert dev.fhir_server_allowlist == ("*",) and dev.allow_loopback_http


def test_clinical_settings_keys_and_defaults():
    text = section("Configuration").split("Clinical settings", 1)[1].split("\n\n", 1)[0]
    keys = [k for k in ticked(text) if k != "CDS_GUIDANCE_FILE" and "/" not in k]
    assert set(keys) == {f.name for f in fields(GuidanceSettings)}
    guidance = GuidanceSettings()
    documented = dict(re.findall(r"`(\w+)` \((\d+)\)", text))
    assert documented, text
    for key, value in documented.items():
        assert getattr(guidance, key) == int(value), key


def test_limits_in_the_errors_table_are_the_defaults():
    errors = section("API").split("**Errors.**", 1)[1]
    settings = Settings()
    assert f"nested deeper than {settings.max_json_depth} levels" in errors
    assert settings.max_body_bytes == 32 * 1024 * 1024 and "(32 MiB by default;" in errors
    assert FEEDBACK_MAX_BYTES == 256 * 1024 and "for feedback, 256 KiB)" in errors


def test_production_serve_defaults(monkeypatch):
    serve = serve_defaults(monkeypatch)
    text = section("Production")
    assert f"`serve` runs {serve.workers} gunicorn workers × {serve.threads}\nthreads" in text


def test_fhir_worker_pool_covers_every_thread_fetching_at_once(monkeypatch):
    """'Keep CDS_FHIR_MAX_WORKERS at least CDS_THREADS × 7': 7 is the most prefetch keys."""
    factor = int(re.search(r"`CDS_THREADS` × (\d+)", section("Reliability")).group(1))
    assert factor == max(len(s.prefetch) for s in SERVICES.values())
    assert f"all {factor} queries in flight" in section("Performance")
    assert Settings().fhir_max_workers >= serve_defaults(monkeypatch).threads * factor


def test_service_table_and_prefetch_templates():
    api = section("API")
    hooks = {ticked(row[0])[0]: ticked(row[1])[0] for row in table(api)
             if row[0].startswith("`hypermobility-")}
    assert hooks == {s.id: s.hook for s in SERVICES.values()}
    prefetch = api.split("Prefetch templates", 1)[1].split("**Data.**", 1)[0]
    documented = {q for q in ticked(prefetch) if "?" in q or q.startswith("Patient/")}
    templates = {
        t.replace("{{context.patientId}}", "…") if "?" in t else t
        for s in SERVICES.values()
        for t in s.prefetch.values()
    }
    assert documented == templates


def test_layout_table_paths_exist_and_scenarios_are_counted():
    rows = table(section("How the code is laid out"))
    for row in rows:
        assert (REPO / ticked(row[0])[0]).exists(), row[0]
        for path in ticked(row[0]):
            assert (REPO / path).exists(), (row[0], path)
    fixtures = next(row[1] for row in rows if row[0] == "`fhir_fixtures/`")
    assert f"{len(list_scenarios())} hook scenarios" in fixtures


def test_python_version():
    text = section("The two commands")
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11" and "Python 3.11+" in text


def test_try_it_path_is_what_ci_runs():
    commands = re.findall(r"^(\S.*?)\s*(?:#.*)?$",
                          section("Try it in five minutes").split("```sh\n", 1)[1].split("```")[0],
                          re.MULTILINE)
    smoke = (REPO / "tools" / "try_it_smoke.sh").read_text(encoding="utf-8")
    assert commands and "bash tools/try_it_smoke.sh" in CI
    for command in commands:
        assert command in smoke, command


def test_testing_table_matches_the_makefile_and_ci():
    for command, _what, in_ci in table(section("Testing and measuring")):
        target = ticked(command)[0].removeprefix("make ")
        assert re.search(rf"^{target}:", MAKEFILE, re.MULTILINE), target
        run_by_ci = re.search(rf"^make {target}\b", CI, re.MULTILINE)
        assert bool(run_by_ci) == (in_ci != "no"), (target, in_ci)
    assert "make soak SOAK_SECONDS=30" in CI
    assert re.search(r"^make fuzz .*FUZZ_RANDOM=0", CI, re.MULTILINE)


def test_soak_and_fuzz_defaults():
    reliability = section("Reliability")
    assert "5 minutes at 20 requests/s by default" in reliability
    assert "SOAK_SECONDS ?= 300" in MAKEFILE and "SOAK_RATE ?= 20" in MAKEFILE
    for name in ("FUZZ_EXAMPLES", "FUZZ_MIN_REQUESTS", "SOAK_SECONDS", "SOAK_RATE"):
        assert f"`{name}`" in reliability and f"{name} ?=" in MAKEFILE


def test_performance_targets_are_the_benchmarks_targets():
    """The limits the README's target table states are the ones `make bench` checks."""
    from benchmarks.__main__ import TARGETS

    stated = sorted(
        (row[1].startswith("≥"), float(re.search(r"[\d.]+", row[1]).group()))
        for row in table(section("Performance"))
        if len(row) > 1 and row[1][:1] in ("≤", "≥")
    )
    assert stated == sorted((higher, limit) for _, _, limit, higher in TARGETS)
