"""Database settings from the environment, and the app wiring them into store and replay cache."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cds_service import create_app
from cds_service.security.replay import DatabaseReplayCache
from cds_service.settings import Settings, SettingsError


def test_defaults():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/hypermobility-cds.sqlite3"
    assert settings.database_pool_size == 5
    assert settings.database_auto_migrate is True
    assert settings.served_cards_flush_s == 0.5


def test_environment():
    settings = Settings.from_env(
        {
            "CDS_DATABASE_URL": "postgresql://cds@db:5432/cds",
            "CDS_DATABASE_POOL_SIZE": "8",
            "CDS_DATABASE_AUTO_MIGRATE": "off",
            "CDS_SERVED_CARDS_FLUSH_S": "0",
        }
    )
    assert settings.database_url == "postgresql://cds@db:5432/cds"
    assert settings.database_pool_size == 8
    assert settings.database_auto_migrate is False
    assert settings.served_cards_flush_s == 0.0


@pytest.mark.parametrize(
    "env",
    [
        {"CDS_DATABASE_URL": "mysql://db/cds"},
        {"CDS_DATABASE_URL": "/var/cds.sqlite3"},
        {"CDS_DATABASE_AUTO_MIGRATE": "maybe"},
        {"CDS_DATABASE_POOL_SIZE": "many"},
    ],
)
def test_bad_values_name_the_variable(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env)


def test_app_uses_one_database_for_feedback_and_replay(database_url):
    settings = Settings.development(database_url=database_url)
    app = create_app(settings)
    state = app.extensions["cds"]
    try:
        cache = state.verifier._replay_cache
        assert isinstance(cache, DatabaseReplayCache)
        assert cache.database is state.store.database
        assert state.store.database.backend == database_url.split(":")[0].split("+")[0]
        assert app.test_client().get("/readyz").get_json()["checks"]["database"] is True
    finally:
        state.store.close()


def test_app_refuses_to_start_without_its_schema_when_auto_migrate_is_off(tmp_path):
    settings = Settings(auth="off", database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                        database_auto_migrate=False)
    with pytest.raises(SettingsError, match="db upgrade"):
        create_app(settings)


def test_app_reports_an_unreachable_database_as_a_configuration_error():
    settings = Settings(auth="off", database_url="postgresql://cds:pw@127.0.0.1:1/cds")
    with pytest.raises(SettingsError, match="cannot open the database") as raised:
        create_app(settings)
    assert "pw@" not in str(raised.value)


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["db", "upgrade"]])
def test_the_commands_report_an_unreachable_database_in_one_line(command):
    """`serve` migrates in a child process (`db upgrade`): its failure must read as the app's
    own does, not as a traceback."""
    # Authentication off: the settings are checked before the database (serve refuses a bad
    # configuration before it migrates), and without issuers that check would fail first.
    env = {**os.environ, "CDS_DATABASE_URL": "postgresql://cds:pw@127.0.0.1:1/cds",
           "CDS_AUTH": "off"}
    env.pop("CDS_PROFILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", *command],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: cannot open the database")
    assert "pw@" not in done.stderr and "Traceback" not in done.stderr
