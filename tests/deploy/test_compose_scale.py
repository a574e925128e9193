"""docker-compose.yml, checked structurally (there is no Docker engine in CI).

The `scale` profile must be a working shape: PostgreSQL, replicas that share it and agree on
the public URL (the JWT audience), readiness on /readyz, and nginx in front with an upstream for
every replica. The default development stack must keep working alongside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
SANDBOX_JWKS = REPO / "cds_service" / "security" / "keys" / "sandbox-jwks.json"
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _defaults(value: str) -> str:
    """Interpolate ``${VAR:-default}`` as compose would with VAR unset."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    with (REPO / "docker-compose.yml").open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def _scale(services: dict[str, dict]) -> dict[str, dict]:
    return {name: s for name, s in services.items() if "scale" in s.get("profiles", [])}


def _replicas(services: dict[str, dict]) -> dict[str, dict]:
    """Scale-profile services that run the CDS service itself (built here, no command)."""
    return {
        name: s
        for name, s in _scale(services).items()
        if s.get("build") == "." and "command" not in s
    }


def test_every_service_names_an_image_or_a_build(services):
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name


def test_host_ports_do_not_clash(services):
    seen: dict[str, str] = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            host = str(mapping).rsplit(":", 1)[0]
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name


def test_the_default_stack_is_untouched_by_the_profile(services):
    for name in ("cds", "hapi", "fixtures", "sandbox"):
        assert "profiles" not in services[name], name
    assert services["cds"]["ports"] == ["8000:8000"]
    # No default-profile service may depend on a profile-only one (compose would refuse).
    for name, service in services.items():
        if "profiles" in service:
            continue
        for dependency in service.get("depends_on", {}):
            assert "profiles" not in services[dependency], (name, dependency)


def test_dependencies_exist(services):
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)


def test_scale_profile_has_postgres_and_at_least_two_replicas(services):
    scale = _scale(services)
    assert scale, "no service in the scale profile"
    postgres = [n for n, s in scale.items() if str(s.get("image", "")).startswith("postgres")]
    assert postgres == ["postgres"]
    assert "pg_isready" in " ".join(scale["postgres"]["healthcheck"]["test"])
    assert len(_replicas(services)) >= 2


def test_replicas_share_one_database_and_one_public_url(services):
    database = services["postgres"]["environment"]
    replicas = _replicas(services)
    urls = set()
    audiences = set()
    for name, replica in replicas.items():
        env = replica["environment"]
        url = make_url(_defaults(env["CDS_DATABASE_URL"]))
        assert url.get_backend_name() == "postgresql", name
        assert url.host == "postgres" and url.port == 5432, name
        assert url.username == database["POSTGRES_USER"], name
        assert url.database == database["POSTGRES_DB"], name
        assert url.password == _defaults(database["POSTGRES_PASSWORD"]), name
        urls.add(str(url))
        audiences.add(_defaults(env["CDS_PUBLIC_BASE_URL"]))
        assert "ports" not in replica, f"{name}: replicas are reached through the balancer"
    assert len(urls) == 1 and len(audiences) == 1


def test_schema_is_migrated_once_before_replicas_start(services):
    migrate = services["cds-migrate"]
    assert migrate["command"] == ["hypermobility-cds", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert _defaults(migrate["environment"]["CDS_DATABASE_URL"]) == _defaults(
        services["cds-1"]["environment"]["CDS_DATABASE_URL"]
    )
    for name, replica in _replicas(services).items():
        assert replica["environment"]["CDS_DATABASE_AUTO_MIGRATE"] == "false", name
        condition = replica["depends_on"]["cds-migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_replicas_are_ready_only_through_readyz(services):
    for name, replica in _replicas(services).items():
        check = " ".join(replica["healthcheck"]["test"])
        assert "/readyz" in check, name


def test_nginx_balances_over_every_replica(services):
    lb = next(s for s in _scale(services).values() if "nginx" in str(s.get("image", "")))
    mount = next(v for v in lb["volumes"] if v.endswith("/etc/nginx/conf.d/default.conf:ro"))
    config = (REPO / mount.split(":", 1)[0]).read_text(encoding="utf-8")
    upstream = re.search(r"upstream\s+\w+\s*\{(.*?)\}", config, re.S)
    assert upstream
    servers = set(re.findall(r"^\s*server\s+([\w-]+):8000\b", upstream.group(1), re.M))
    assert servers == set(_replicas(services))
    listen = re.search(r"^\s*listen\s+(\d+);", config, re.M)
    assert listen and lb["ports"] == [f"{listen.group(1)}:{listen.group(1)}"]
    for name in servers:
        assert lb["depends_on"][name]["condition"] == "service_healthy"
    # The JWT audience the replicas expect is the balancer's own address.
    audience = _defaults(services["cds-1"]["environment"]["CDS_PUBLIC_BASE_URL"])
    assert f"localhost:{listen.group(1)}" in audience
    # POSTs that reached a replica are never resent to another (their jti is spent).
    assert "non_idempotent" not in config


def test_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)


def test_readme_ports_and_loader(services):
    """README: the default stack serves the service on 8000, HAPI on 8080, a one-shot loader runs
    load-fixtures into it, the sandbox is on 8081; the scale profile's nginx is on 8090."""
    published = {
        name: [port.split(":", 1)[0] for port in service.get("ports", [])]
        for name, service in services.items()
    }
    assert published["cds"] == ["8000"] and published["sandbox"] == ["8081"]
    assert published["hapi"] == ["8080"] and "hapi" in services["hapi"]["image"]
    assert published["lb"] == ["8090"] and "scale" in services["lb"]["profiles"]
    loader = services["fixtures"]
    assert "profiles" not in loader and "ports" not in loader
    assert "hypermobility-cds load-fixtures --fhir-server http://hapi:8080/fhir" in " ".join(
        loader["command"] if isinstance(loader["command"], list) else [loader["command"]]
    )


def _interpolate(value: str, env: dict[str, str]) -> str:
    """``${VAR:-default}`` as compose interpolates it with ``env`` set."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", value)


def test_the_documented_production_switch_gives_settings_the_service_accepts(
    services, tmp_path
):
    """The replicas' comment says how to run the stack in production. A review found that the
    replicas then refused to start: their FHIR allowlist was a fixed plain-http URL, which the
    production profile can never use (startup now refuses such entries)."""
    from cds_service.app import checked_configuration
    from cds_service.settings import Settings

    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [
        {"iss": "https://ehr.example.org", "jwks_file": str(SANDBOX_JWKS)}]}))
    switch = {
        "CDS_SCALE_PROFILE": "production",
        "CDS_TRUSTED_ISSUERS_FILE": str(issuers),
        "CDS_SCALE_PUBLIC_URL": "https://cds.example.org",
        "CDS_SCALE_FHIR_ALLOWLIST": "https://fhir.example.org/r4",
    }
    comment = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    for variable in switch:
        assert variable in comment  # each is named where the stack is described
    for name, service in _scale(services).items():
        if not name.startswith("cds-") or name == "cds-migrate":
            continue
        env = {k: _interpolate(str(v), switch) for k, v in service["environment"].items()}
        settings = Settings.from_env(env)
        assert settings.profile == "production", name
        checked_configuration(settings)  # raises SettingsError if the replica would not start
