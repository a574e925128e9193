"""Settings from the environment: documented variables, clear errors, guidance overrides."""

import json

import pytest

from cds_service.guidance.settings import ALL_RULES, GuidanceSettings
from cds_service.settings import Settings, SettingsError


def test_production_defaults_are_safe():
    settings = Settings.from_env({})
    assert settings.profile == "production"
    assert settings.auth == "required"
    assert settings.fhir_server_allowlist == ()
    assert settings.allow_loopback_http is False
    assert settings.max_body_bytes == 32 * 1024 * 1024


def test_development_profile():
    settings = Settings.from_env({"CDS_PROFILE": "development"})
    assert settings.allow_loopback_http is True
    assert settings.fhir_server_allowlist == ("*",)


def test_environment_overrides():
    settings = Settings.from_env({
        "CDS_AUTH": "off",
        "CDS_PUBLIC_BASE_URL": "https://cds.example.org/, https://cds2.example.org",
        "CDS_FHIR_SERVER_ALLOWLIST": "https://a.example.org/fhir,https://b.example.org/r4",
        "CDS_MAX_BODY_BYTES": "2048",
        "CDS_MAX_PREFETCH_KEYS": "8",
        "CDS_FHIR_DEADLINE_S": "1.25",
        "CDS_DATABASE_URL": "sqlite:///tmp/x.sqlite3",
        "CDS_ENABLED_RULES": "opioid-order, rehab-referral",
        "CDS_BEIGHTON_THRESHOLD_MODE": "age-bands",
    })
    assert settings.auth == "off"
    assert settings.public_base_urls == ("https://cds.example.org", "https://cds2.example.org")
    assert settings.fhir_server_allowlist == ("https://a.example.org/fhir",
                                              "https://b.example.org/r4")
    assert settings.max_body_bytes == 2048
    assert settings.max_prefetch_keys == 8
    assert settings.fhir_deadline_s == 1.25
    assert settings.guidance.enabled_rules == {"opioid-order", "rehab-referral"}
    assert settings.guidance.beighton_threshold_mode == "age-bands"


@pytest.mark.parametrize("env,needle", [
    ({"CDS_PROFILE": "staging"}, "CDS_PROFILE"),
    ({"CDS_AUTH": "maybe"}, "CDS_AUTH"),
    ({"CDS_MAX_BODY_BYTES": "lots"}, "CDS_MAX_BODY_BYTES"),
    ({"CDS_FHIR_TIMEOUT_S": "soon"}, "CDS_FHIR_TIMEOUT_S"),
    ({"CDS_FHIR_PAGE_SIZE": "-5"}, "CDS_FHIR_PAGE_SIZE must be at least 0"),
    ({"CDS_FHIR_MAX_PAGES": "0"}, "CDS_FHIR_MAX_PAGES must be at least 1"),
    ({"CDS_MAX_BODY_BYTES": "-1"}, "CDS_MAX_BODY_BYTES must be at least 1"),
    ({"CDS_GUIDANCE_FILE": "/nonexistent/guidance.json"}, "cannot read"),
    # Checked by GuidanceSettings; they came out as tracebacks naming no variable.
    ({"CDS_ENABLED_RULES": "bogus-rule"}, "CDS_ENABLED_RULES: unknown rule ids"),
    ({"CDS_BEIGHTON_THRESHOLD_MODE": "median"}, "CDS_BEIGHTON_THRESHOLD_MODE: "),
    ({"CDS_FHIR_DEADLINE_S": "inf"}, "CDS_FHIR_DEADLINE_S must be a number of seconds above 0"),
    ({"CDS_FHIR_DEADLINE_S": "nan"}, "CDS_FHIR_DEADLINE_S must be a number of seconds above 0"),
    ({"CDS_FHIR_DEADLINE_S": "-5"}, "CDS_FHIR_DEADLINE_S must be a number of seconds above 0"),
    ({"CDS_FHIR_DEADLINE_S": "1e10"}, "CDS_FHIR_DEADLINE_S .* at most 30"),  # overflowed a timer
    ({"CDS_FHIR_DEADLINE_S": "31"}, "CDS_FHIR_DEADLINE_S .* at most 30"),
    ({"CDS_FHIR_TIMEOUT_S": "0"}, "CDS_FHIR_TIMEOUT_S must be a number of seconds above 0"),
    ({"CDS_SERVED_CARDS_FLUSH_S": "-1"}, "CDS_SERVED_CARDS_FLUSH_S must be a number of seconds at"),
    ({"CDS_SERVED_CARDS_FLUSH_S": "1e10"}, "CDS_SERVED_CARDS_FLUSH_S .* at most 3600"),
])
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env(env)


def test_served_cards_may_be_written_during_the_call():
    assert Settings.from_env({"CDS_SERVED_CARDS_FLUSH_S": "0"}).served_cards_flush_s == 0


def test_guidance_file(tmp_path):
    path = tmp_path / "guidance.json"
    path.write_text(json.dumps({
        "programme_min_hours": 120,
        "beighton_fixed_threshold": 5,
        "indicators": {"rehab-referral": "warning"},
        "enabled_rules": ["rehab-referral", "opioid-order"],
    }))
    guidance = Settings.from_env({"CDS_GUIDANCE_FILE": str(path)}).guidance
    assert guidance.programme_min_hours == 120
    assert guidance.beighton_fixed_threshold == 5
    assert guidance.indicator("rehab-referral", "info") == "warning"
    assert guidance.indicator("opioid-order", "warning") == "warning"


@pytest.mark.parametrize("data", [
    {"programme_min_hour": 120},
    {"enabled_rules": ["no-such-rule"]},
    {"beighton_threshold_mode": "vibes"},
    {"indicators": {"rehab-referral": "loud"}},
])
def test_bad_guidance_is_refused(data):
    with pytest.raises(ValueError):
        GuidanceSettings.from_mapping(data)


def test_defaults_come_from_the_knowledge_thresholds():
    defaults = GuidanceSettings()
    assert defaults.beighton_fixed_threshold == 4
    assert defaults.chronic_pain_days == 84
    assert defaults.programme_min_hours == 100
    assert defaults.beighton_age_bands == ((51, 4), (18, 5), (0, 6))
    assert defaults.enabled_rules == frozenset(ALL_RULES)


def test_indicator_override_changes_the_card(make_request, tmp_path):
    from cds_service import create_app
    from tests.builders import bundle, cohort_conditions, patient

    settings = Settings(
        auth="off",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        guidance=GuidanceSettings(enabled_rules=frozenset({"rehab-referral"}),
                                  indicators={"rehab-referral": "warning"}),
    )
    client = create_app(settings).test_client()
    body = make_request()
    body["prefetch"].update(patient=patient("p1"), conditions=bundle(*cohort_conditions("p1")))
    cards = client.post("/cds-services/hypermobility-pain-patient-view", json=body).get_json()
    assert [c["indicator"] for c in cards["cards"]] == ["warning"]


@pytest.mark.parametrize("content", [
    {"bogus_key": 1}, {"enabled_rules": 5}, {"indicators": 5}, {"enabled_rules": [["a"]]}, 5,
    # These started the service, then failed calls (a 500, or a rule silently dropped):
    {"beighton_fixed_threshold": "4"}, {"programme_min_hours": "100"},
    {"beighton_age_bands": [[1e400, 2]]}, {"beighton_age_bands": [[18, "5"]]},
    {"chronic_pain_days": -1}, {"beighton_fixed_threshold": True},
    # A second review: these crashed every call, or put everyone with a score in the cohort.
    {"rehab_lookback_days": 1_000_000}, {"beighton_age_bands": [[0, -1]]},
    {"beighton_age_bands": [[-3, 6]]}, {"beighton_age_bands": [[18, 5], [18, 6]]},
    {"beighton_age_bands": [[0, 6], ["18", 5]]}, {"beighton_age_bands": [[0, 6], [None, 5]]},
    # A third review: a fixed threshold above the score's 9 meant no one was ever hypermobile.
    {"beighton_fixed_threshold": 10}, {"beighton_fixed_threshold": 50},
])
def test_a_bad_guidance_file_names_the_variable(tmp_path, content):
    """Values of the wrong JSON type came out as TypeError tracebacks (found by review)."""
    path = tmp_path / "guidance.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SettingsError, match="CDS_GUIDANCE_FILE: "):
        Settings.from_env({"CDS_GUIDANCE_FILE": str(path)})


@pytest.mark.parametrize("env, needle", [
    ({"CDS_PORT": "abc"}, "--port / CDS_PORT must be a whole number"),
    ({"CDS_PORT": "70000"}, "--port / CDS_PORT must be at least 1 and at most 65535"),
    ({"CDS_WORKERS": "0"}, "--workers / CDS_WORKERS must be at least 1"),  # served nothing
    ({"CDS_THREADS": "0"}, "--threads / CDS_THREADS must be at least 1"),
])
def test_serve_refuses_a_bad_port_worker_or_thread_count(monkeypatch, capsys, env, needle):
    from cds_service.cli import build_parser

    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["serve"])
    assert stop.value.code == 2
    assert needle in capsys.readouterr().err
    assert build_parser().parse_args(["scenarios"])  # other commands do not read them


def test_a_guidance_file_may_write_whole_numbers_as_decimals_and_bands_in_any_order(tmp_path):
    """A review of the type checks: 365.0 and bands lowest age first were refused, or read in
    the wrong order (a 60-year-old got the youngest band's threshold)."""
    path = tmp_path / "guidance.json"
    path.write_text(json.dumps({"rehab_lookback_days": 365.0,
                                "beighton_age_bands": [[0, 6], [18.0, 5], [51, 4]]}))
    guidance = Settings.from_env({"CDS_GUIDANCE_FILE": str(path)}).guidance
    assert guidance.rehab_lookback_days == 365
    assert guidance.beighton_age_bands == ((51, 4), (18, 5), (0, 6))
    assert GuidanceSettings.from_mapping(guidance.to_mapping()) == guidance


def test_age_bands_built_in_code_are_checked_too():
    with pytest.raises(ValueError, match="beighton_age_bands"):
        GuidanceSettings(beighton_age_bands=((18, "5"),))
    with pytest.raises(ValueError, match="highest first"):
        GuidanceSettings(beighton_age_bands=((0, 6), (18, 5)))
