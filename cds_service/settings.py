"""Service settings: one immutable object, built from the environment or by tests.

Two profiles exist. ``production`` (the default) requires a signed JWT on every call, https FHIR
servers from an explicit allowlist, and nothing else. ``development`` is what the README's run
command uses: it trusts the public CDS Hooks sandbox issuer (whose private key is public!) and
allows plain-http FHIR servers on loopback, so a developer can try the service on one machine.
Everything clinical (thresholds, look-backs, enabled rules) lives in :class:`GuidanceSettings`,
which the pure guidance code receives as an argument.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from cds_service.fhir.client import FetchLimits
from cds_service.guidance.settings import GuidanceSettings

Profile = Literal["production", "development"]
AuthMode = Literal["required", "off"]

DEFAULT_DATABASE_URL = "sqlite:///var/hypermobility-cds.sqlite3"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with. Defaults are the safe production ones."""

    profile: Profile = "production"
    auth: AuthMode = "required"
    public_base_urls: tuple[str, ...] = ()
    trusted_issuers_file: str | None = None
    trusted_issuers_json: str | None = None
    fhir_server_allowlist: tuple[str, ...] = ()
    allow_loopback_http: bool = False
    # Database: see cds_service/storage/database.py. The URL picks SQLite (one machine) or
    # PostgreSQL (several workers/instances); the pool is per worker process; migrations run
    # at startup unless turned off (then `hypermobility-cds db upgrade` must have run);
    # served-card analytics wait in memory at most this long (0: written on the request path).
    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = 5
    database_auto_migrate: bool = True
    served_cards_flush_s: float = 0.5
    # As much as the FHIR fallback takes in for one call (FetchLimits.max_call_bytes): the
    # same chart is answered whether the EHR prefetches it or lets the service fetch it.
    max_body_bytes: int = FetchLimits.max_call_bytes
    max_json_depth: int = 64
    max_prefetch_keys: int = 32
    max_draft_orders: int = 100
    # The FHIR client's own defaults, kept in one place (FetchLimits).
    fhir_timeout_s: float = FetchLimits.timeout_s
    fhir_deadline_s: float = FetchLimits.deadline_s
    fhir_max_pages: int = FetchLimits.max_pages
    fhir_page_size: int = FetchLimits.page_size
    # Threads fetching FHIR data, shared by all hook calls of a worker process. Keep it >=
    # (concurrent hook calls, CDS_THREADS) x (prefetch keys, 7): otherwise the fetches of a call
    # to a healthy EHR queue behind those of calls stuck on a hanging one (tests/reliability).
    fhir_max_workers: int = 64
    cors_origins: tuple[str, ...] = ("*",)
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)

    @classmethod
    def development(cls, **changes: object) -> Settings:
        """Defaults for a developer machine: sandbox issuer trusted, loopback FHIR allowed."""
        base = cls(
            profile="development",
            auth="required",
            public_base_urls=("http://localhost:8000", "http://127.0.0.1:8000"),
            fhir_server_allowlist=("*",),
            allow_loopback_http=True,
        )
        return replace(base, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``CDS_*`` environment variables (documented in the README)."""
        env = os.environ if env is None else env
        profile = env.get("CDS_PROFILE", "production")
        if profile not in ("production", "development"):
            raise SettingsError("CDS_PROFILE must be 'production' or 'development'")
        base = cls.development() if profile == "development" else cls()
        changes: dict[str, object] = {}
        if "CDS_AUTH" in env:
            if env["CDS_AUTH"] not in ("required", "off"):
                raise SettingsError("CDS_AUTH must be 'required' or 'off'")
            changes["auth"] = env["CDS_AUTH"]
        for var, attr in (
            ("CDS_TRUSTED_ISSUERS_FILE", "trusted_issuers_file"),
            ("CDS_TRUSTED_ISSUERS", "trusted_issuers_json"),
            ("CDS_DATABASE_URL", "database_url"),
        ):
            if env.get(var):
                changes[attr] = env[var]
        if "database_url" in changes:
            changes["database_url"] = _database_url(str(changes["database_url"]))
        if "CDS_DATABASE_AUTO_MIGRATE" in env:
            changes["database_auto_migrate"] = _bool(env, "CDS_DATABASE_AUTO_MIGRATE")
        if env.get("CDS_PUBLIC_BASE_URL"):
            changes["public_base_urls"] = tuple(
                url.rstrip("/") for url in _split(env["CDS_PUBLIC_BASE_URL"])
            )
        if "CDS_FHIR_SERVER_ALLOWLIST" in env:
            changes["fhir_server_allowlist"] = _split(env["CDS_FHIR_SERVER_ALLOWLIST"])
        if "CDS_CORS_ORIGINS" in env:
            changes["cors_origins"] = _split(env["CDS_CORS_ORIGINS"])
        for var, attr, least in (
            ("CDS_MAX_BODY_BYTES", "max_body_bytes", 1),
            ("CDS_MAX_DRAFT_ORDERS", "max_draft_orders", 0),
            ("CDS_MAX_PREFETCH_KEYS", "max_prefetch_keys", 0),
            ("CDS_FHIR_MAX_PAGES", "fhir_max_pages", 1),
            ("CDS_FHIR_PAGE_SIZE", "fhir_page_size", 0),  # 0: no _count sent
            ("CDS_FHIR_MAX_WORKERS", "fhir_max_workers", 1),
            ("CDS_DATABASE_POOL_SIZE", "database_pool_size", 1),
        ):
            if var in env:
                changes[attr] = _int(env, var, least)
        # Upper bounds: a hook call's fetching must end inside gunicorn's 30 s worker timeout,
        # and analytics may wait an hour at most (1e10 s overflowed the watchdog's timer).
        for var, attr, zero_allowed, most in (
            ("CDS_FHIR_TIMEOUT_S", "fhir_timeout_s", False, 30.0),
            ("CDS_FHIR_DEADLINE_S", "fhir_deadline_s", False, 30.0),
            ("CDS_SERVED_CARDS_FLUSH_S", "served_cards_flush_s", True, 3600.0),  # 0: in the call
        ):
            if var in env:
                changes[attr] = _float(env, var, zero_allowed=zero_allowed, most=most)
        changes["guidance"] = _guidance(env, base.guidance)
        return replace(base, **changes)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://", "postgres://")


def _database_url(value: str) -> str:
    if not value.startswith(_DATABASE_SCHEMES):
        raise SettingsError(
            "CDS_DATABASE_URL must be sqlite:///path/to/file or postgresql://user@host/db"
        )
    return value


def _bool(env: Mapping[str, str], var: str) -> bool:
    value = env[var].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{var} must be true or false")


# Each variable that changes the guidance settings, and how, in the order they apply.
_GUIDANCE_VARIABLES: tuple[tuple[str, Callable[[str, GuidanceSettings], GuidanceSettings]], ...] = (
    ("CDS_GUIDANCE_FILE", lambda value, _: GuidanceSettings.from_mapping(_read_json(value))),
    ("CDS_ENABLED_RULES",
     lambda value, guidance: replace(guidance, enabled_rules=frozenset(_split(value)))),
    ("CDS_BEIGHTON_THRESHOLD_MODE",
     lambda value, guidance: replace(guidance, beighton_threshold_mode=value)),
)


def _guidance(env: Mapping[str, str], guidance: GuidanceSettings) -> GuidanceSettings:
    """The guidance settings as the environment changes them. GuidanceSettings checks its own
    values (ValueError, or TypeError for a value of the wrong JSON type); a refusal is named
    here by its variable."""
    for var, apply in _GUIDANCE_VARIABLES:
        if not env.get(var):
            continue
        try:
            guidance = apply(env[var], guidance)
        except SettingsError:
            raise
        except (ValueError, TypeError) as error:
            raise SettingsError(f"{var}: {error}") from None
    return guidance


def _int(env: Mapping[str, str], var: str, least: int) -> int:
    return whole_number(env[var], var, least)


def whole_number(text: str, name: str, least: int, most: int | None = None) -> int:
    """``text`` as a whole number from ``least`` to ``most``, or a SettingsError naming
    ``name`` (the settings here, and ``serve``'s own in cli.py)."""
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number") from None
    if value < least or (most is not None and value > most):
        upper = f" and at most {most}" if most is not None else ""
        raise SettingsError(f"{name} must be at least {least}{upper}")
    return value


def _float(env: Mapping[str, str], var: str, *, zero_allowed: bool, most: float) -> float:
    """A number of seconds above 0 (or at least 0), at most ``most``: ``inf`` or 1e10 once killed
    the FHIR deadline's watchdog thread, and 0 or less failed every fetch."""
    try:
        value = float(env[var])
    except ValueError:
        raise SettingsError(f"{var} must be a number") from None
    if not (value > 0 or (zero_allowed and value == 0)) or not value <= most:  # nan fails both
        least = "at least" if zero_allowed else "above"
        raise SettingsError(f"{var} must be a number of seconds {least} 0 and at most {most:g}")
    return value


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read JSON from {path}: {exc}") from None
