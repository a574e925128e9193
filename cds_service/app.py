"""The application factory: settings in, a ready Flask app out.

Everything with state (knowledge, FHIR client, database, JWT verifier) is created here once per
process and hung on ``app.extensions["cds"]``; nothing is built at import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from cds_service.api.errors import ApiError, register_error_handlers, try_again_later
from cds_service.api.health import bp as health_bp
from cds_service.api.hooks import bp as hooks_bp
from cds_service.api.large_bodies import install_large_body_gate
from cds_service.api.metrics import MeteredFhirClient, Metrics
from cds_service.api.metrics import install as install_metrics
from cds_service.api.openapi import bp as openapi_bp
from cds_service.api.paths import CollapseSlashes, requested_path
from cds_service.fhir.client import FetchLimits
from cds_service.fhir.server_policy import is_loopback, validate_allowlist
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.logs import hook_instance_var, keep_url_loggers_quiet, service_id_var
from cds_service.pipeline import HookPipeline
from cds_service.security import (
    AuthError,
    AuthUnavailable,
    JwtVerifier,
    issuers_from_env,
    load_trusted_issuers,
    sandbox_issuer,
)
from cds_service.security.replay import DatabaseReplayCache
from cds_service.settings import Settings, SettingsError
from cds_service.storage.database import Database, DatabaseConfigError, cannot_open
from cds_service.storage.feedback import FeedbackStore

logger = logging.getLogger("cds_service.auth")


@dataclass
class ServiceState:
    settings: Settings
    knowledge: Knowledge
    pipeline: HookPipeline
    store: FeedbackStore
    verifier: JwtVerifier | None


def build_verifier(settings: Settings, database: Database) -> JwtVerifier | None:
    """The JWT verifier for ``CDS_AUTH=required``; None when authentication is off.

    Its ``jti`` replay table lives in the service database, so a token replayed to another
    worker or instance sharing that database is refused too.
    """
    if settings.auth == "off":
        return None
    issuers = []
    try:
        if settings.trusted_issuers_file:
            issuers += load_trusted_issuers(settings.trusted_issuers_file)
    except (OSError, ValueError, TypeError) as error:
        raise SettingsError(f"CDS_TRUSTED_ISSUERS_FILE: {error}") from None
    try:
        if settings.trusted_issuers_json:
            issuers += issuers_from_env(settings.trusted_issuers_json)
    except (ValueError, TypeError) as error:
        raise SettingsError(f"CDS_TRUSTED_ISSUERS: {error}") from None
    if settings.profile == "development":
        from cds_service.devtools.devkeys import dev_issuer

        issuers += [sandbox_issuer(), dev_issuer()]
        logger.warning(
            "DEVELOPMENT PROFILE: trusting the public CDS Hooks sandbox issuer, whose private "
            "key is published. Never use this profile in production."
        )
    if not issuers:
        raise SettingsError(
            "CDS_AUTH=required needs trusted issuers (CDS_TRUSTED_ISSUERS_FILE or "
            "CDS_TRUSTED_ISSUERS), or CDS_AUTH=off"
        )
    if not settings.public_base_urls:
        raise SettingsError("CDS_AUTH=required needs CDS_PUBLIC_BASE_URL (the JWT audience)")
    unusable = [url for url in settings.public_base_urls if not _a_base_url(url)]
    if unusable:
        # The audience is the base URL with the endpoint's path after it: none of these could
        # ever be named by a token, and every call would be a 401.
        raise SettingsError(
            f"CDS_PUBLIC_BASE_URL must be a base URL (scheme, host, optional port and path; no "
            f"query, fragment or user info): {unusable}"
        )
    plain = [url for url in settings.public_base_urls if not _over_tls_or_loopback(url)]
    if plain and settings.profile == "production":
        # CDS Hooks requires TLS for every call: a token whose aud is a plain-http URL was sent
        # in the clear, and could be replayed by whoever read it.
        raise SettingsError(
            f"CDS_PUBLIC_BASE_URL must use https in the production profile (loopback may use "
            f"http, for a TLS proxy on the same host): {plain}"
        )
    try:  # the issuers' key sets are read here
        return JwtVerifier(issuers, replay_cache=DatabaseReplayCache(database, migrate=False))
    except (ValueError, TypeError) as error:
        raise SettingsError(f"CDS_TRUSTED_ISSUERS(_FILE): {error}") from None


def _a_base_url(url: str) -> bool:
    """A URL that an endpoint's path can follow: a host, and no user info, query or fragment."""
    parsed = urlsplit(url)
    return bool(parsed.hostname) and "@" not in parsed.netloc and not any(c in url for c in "?#")


def _over_tls_or_loopback(url: str) -> bool:
    """https, or plain http to a loopback host (the FHIR server policy's own test)."""
    parsed = urlsplit(url)
    if parsed.scheme == "https":
        return True
    return parsed.scheme == "http" and is_loopback(parsed.hostname or "")


def checked_configuration(settings: Settings) -> tuple[Database, JwtVerifier | None]:
    """The database (not yet opened) and the JWT verifier, once every setting that can be
    checked without the database has been: the FHIR server allowlist, the database URL, the
    trusted issuers and their key sets, the public base URLs. ``serve`` runs this before it
    migrates, so that a release that cannot start leaves a shared database as it found it.
    """
    bad_entries = validate_allowlist(
        settings.fhir_server_allowlist, allow_loopback_http=settings.allow_loopback_http
    )
    if bad_entries:
        raise SettingsError(
            f"CDS_FHIR_SERVER_ALLOWLIST has entries that can never match (not an https URL "
            f"prefix; plain http only to loopback, in the development profile): {bad_entries}"
        )
    try:
        database = Database(settings.database_url, pool_size=settings.database_pool_size)
    except DatabaseConfigError as error:
        raise SettingsError(str(error)) from None
    return database, build_verifier(settings, database)


def prepare_schema(settings: Settings, database: Database) -> None:
    """Bring the schema up to date, or check that it is, before anything is served.

    Runs in the gunicorn master before workers fork; connections are opened per worker later.
    """
    try:
        if settings.database_auto_migrate:
            database.upgrade()
        else:
            database.require_current()
    except DatabaseConfigError as error:
        raise SettingsError(str(error)) from None
    except SQLAlchemyError as error:  # unreachable server, bad credentials, read-only file...
        raise SettingsError(cannot_open(database, error)) from None


def create_app(
    settings: Settings | None = None,
    configuration: tuple[Database, JwtVerifier | None] | None = None,
) -> Flask:
    """The service. ``configuration`` is what :func:`checked_configuration` gave for these
    settings, when the caller (``serve``) already checked them."""
    settings = settings or Settings.from_env()
    keep_url_loggers_quiet()  # no patient id in logs, even through a library's warning
    database, verifier = configuration or checked_configuration(settings)
    knowledge = load_knowledge()
    app = Flask(__name__)
    # JSON answers (discovery, OperationOutcomes) keep their members in the order written.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    metrics = Metrics()
    client = MeteredFhirClient(
        metrics=metrics,
        limits=FetchLimits(
            timeout_s=settings.fhir_timeout_s,
            deadline_s=settings.fhir_deadline_s,
            max_pages=settings.fhir_max_pages,
            page_size=settings.fhir_page_size,
        ),
        max_workers=settings.fhir_max_workers,
    )
    prepare_schema(settings, database)
    app.extensions["cds"] = ServiceState(
        settings=settings,
        knowledge=knowledge,
        pipeline=HookPipeline(settings, knowledge, client),
        store=FeedbackStore(
            database, served_flush_s=settings.served_cards_flush_s, migrate=False
        ),
        verifier=verifier,
    )
    register_error_handlers(app)
    install_metrics(app, metrics)  # first: its timer starts before authentication runs
    app.register_blueprint(hooks_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(openapi_bp)
    app.before_request(_reset_log_context)
    app.before_request(_authenticate)
    install_large_body_gate(app)
    app.after_request(_cors)
    app.after_request(_release_jti_of_a_503)
    app.wsgi_app = CollapseSlashes(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _reset_log_context() -> None:
    """Worker threads serve many requests: start each one without the last one's log ids."""
    hook_instance_var.set(None)
    service_id_var.set(None)


def _authenticate() -> None:
    """Check the EHR's JWT on every CDS Hooks call (never on CORS preflight or health checks)."""
    if request.method == "OPTIONS" or not request.path.startswith("/cds-services"):
        return
    state: ServiceState = current_app.extensions["cds"]
    if state.verifier is None:
        return
    # The audience is this endpoint's URL under any public base URL; the token is checked once.
    # A path asked for with doubled slashes (see api.paths) may be named either way.
    paths = dict.fromkeys((request.path, requested_path(request)))
    audiences = [base + path for base in state.settings.public_base_urls for path in paths]
    try:
        claims = state.verifier.verify(request.headers.get("Authorization"), audiences)
    except AuthUnavailable as error:
        logger.error(
            "authentication unavailable", extra={"reason": error.reason, "error": error.error}
        )
        raise try_again_later(
            "The request could not be authenticated just now; nothing was done. Retry later."
        ) from None
    except AuthError as error:
        logger.warning(
            "authentication failed", extra={"reason": error.reason, "path": request.path}
        )
        raise ApiError(
            401,
            "Authentication required.",
            code="login",
            headers={"WWW-Authenticate": 'Bearer realm="cds-services"'},
        ) from None
    g.verified_claims = claims
    logger.debug("authenticated", extra={"iss": claims.get("iss")})


def _release_jti_of_a_503(response: Response) -> Response:
    """A 503 ("retry later") says that nothing was done and the same request may be sent again;
    its token's ``jti``, claimed on the way in, is given back so that the resend is no replay.
    Best effort: the database that failed the request may fail this too (then the EHR's resend
    needs a new token, as most EHRs sign one per request anyway)."""
    claims = g.pop("verified_claims", None)
    if response.status_code == 503 and claims is not None:
        try:
            current_app.extensions["cds"].verifier.release(claims)
        except Exception as error:  # the answer is already a 503: it stays one
            logger.warning("jti not released", extra={"error": type(error).__name__})
    return response


def _cors(response: Response) -> Response:
    """CORS for browser clients such as the CDS Hooks sandbox (preflight needs no JWT)."""
    origins = current_app.extensions["cds"].settings.cors_origins
    origin = request.headers.get("Origin")
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    else:  # the answer now depends on Origin, whatever it is (or its absence)
        response.vary.add("Origin")
        if origin and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
    response.headers["Access-Control-Max-Age"] = "600"
    return response
