"""JWT verification through the HTTP layer: every endpoint, preflight exempt, 401 without detail."""

from __future__ import annotations

import json
import logging
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy.exc import OperationalError

from cds_service import create_app
from cds_service.api.openapi import openapi_document
from cds_service.security import sign_development_token
from tests.conftest import SHARED

BASE = "http://localhost"
ISS = "https://ehr.example.org"
PV = "/cds-services/hypermobility-pain-patient-view"


@pytest.fixture(scope="module")
def key():
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update(kid="k1", alg="ES384", use="sig")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, {"keys": [jwk]}


@pytest.fixture
def secured(settings, key):
    issuers = json.dumps({"issuers": [{"iss": ISS, "jwks": key[1]}]})
    app = create_app(
        settings.with_overrides(
            auth="required", trusted_issuers_json=issuers, public_base_urls=(BASE,)
        )
    )
    return app.test_client()


def token(key, path, **claims):
    return sign_development_token(key[0], kid="k1", iss=ISS, aud=BASE + path,
                                  extra_claims=claims or None)


def auth(tok):
    return {"Authorization": f"Bearer {tok}"}


def test_signed_calls_succeed_on_every_endpoint(secured, key, make_request):
    discovery = secured.get("/cds-services", headers=auth(token(key, "/cds-services")))
    assert discovery.status_code == 200
    response = secured.post(PV, json=make_request(), headers=auth(token(key, PV)))
    assert response.status_code == 200
    feedback = PV + "/feedback"
    body = {"feedback": [{"card": "c", "outcome": "overridden",
                          "overrideReason": {"userComment": "n/a"},
                          "outcomeTimestamp": "2026-11-20T10:00:00Z"}]}
    assert secured.post(feedback, json=body, headers=auth(token(key, feedback))).status_code == 200


@pytest.mark.parametrize("method,path", [("get", "/cds-services"), ("post", PV),
                                         ("post", PV + "/feedback")])
def test_missing_header_is_401_on_every_endpoint(secured, method, path):
    response = getattr(secured, method)(path, json={})
    assert response.status_code == 401
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"] == "Authentication required."
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_preflight_needs_no_token(secured):
    response = secured.options(PV, headers={"Origin": "https://sandbox.cds-hooks.org",
                                            "Access-Control-Request-Method": "POST"})
    assert response.status_code in (200, 204)


def test_health_needs_no_token(secured):
    assert secured.get("/healthz").status_code == 200


def test_token_for_another_endpoint_is_refused(secured, key, make_request):
    response = secured.post(PV, json=make_request(), headers=auth(token(key, "/cds-services")))
    assert response.status_code == 401


def test_replayed_token_is_refused(secured, key, make_request):
    tok = token(key, PV)
    assert secured.post(PV, json=make_request(), headers=auth(tok)).status_code == 200
    assert secured.post(PV, json=make_request(), headers=auth(tok)).status_code == 401


def test_failure_reason_is_logged_without_the_token(secured, key, caplog):
    tok = token(key, PV, exp=1)
    with caplog.at_level(logging.WARNING, logger="cds_service.auth"):
        assert secured.post(PV, json={}, headers=auth(tok)).status_code == 401
    reasons = [getattr(r, "reason", None) for r in caplog.records]
    assert "expired" in reasons
    assert tok.split(".")[2] not in caplog.text


def test_auth_is_checked_before_the_body(secured):
    response = secured.post(PV, data="not json", content_type="application/json")
    assert response.status_code == 401


def test_production_without_issuers_refuses_to_start(settings):
    from cds_service.settings import SettingsError

    with pytest.raises(SettingsError):
        create_app(settings.with_overrides(auth="required", public_base_urls=(BASE,)))


@pytest.mark.skipif(not (SHARED / "spec" / "sandbox-ecprivkey.pem").exists(),
                    reason="../shared/spec/sandbox-ecprivkey.pem not available")
def test_development_profile_accepts_the_public_sandbox(tmp_path, make_request):
    from cds_service.settings import Settings

    app = create_app(Settings.development(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    pem = (SHARED / "spec" / "sandbox-ecprivkey.pem").read_bytes()
    tok = sign_development_token(
        pem, kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f", iss="https://sandbox.cds-hooks.org",
        aud="http://localhost:8000" + PV,
    )
    client = app.test_client()
    response = client.post(PV, json=make_request(), headers=auth(tok),
                           base_url="http://localhost:8000")
    assert response.status_code == 200


def test_log_context_does_not_leak_between_requests(secured, key, make_request, log_lines):
    body = make_request()
    assert secured.post(PV, json=body, headers=auth(token(key, PV))).status_code == 200
    assert secured.get("/cds-services").status_code == 401
    failure = [line for line in log_lines() if line["message"] == "authentication failed"]
    assert failure and "hookInstance" not in failure[-1] and "service" not in failure[-1]


def test_required_auth_without_public_base_url_refuses_to_start(settings, key):
    from cds_service.settings import SettingsError

    issuers = json.dumps({"issuers": [{"iss": ISS, "jwks": key[1]}]})
    with pytest.raises(SettingsError, match="CDS_PUBLIC_BASE_URL"):
        create_app(settings.with_overrides(auth="required", trusted_issuers_json=issuers))


@pytest.mark.parametrize("url, starts", [
    ("http://cds.example.org", False),  # CDS Hooks requires TLS: such tokens went in the clear
    ("https://cds.example.org", True),
    ("http://localhost:8090", True),  # a TLS proxy on the same host, or a local test
    ("http://127.0.0.1:8000", True),
    ("http://127.0.0.2:8000", True),  # all of 127.0.0.0/8 is loopback
    ("http://[::1]:8000", True),
    ("ftp://cds.example.org", False),
])
def test_production_needs_an_https_public_url(settings, key, url, starts):
    from cds_service.settings import SettingsError

    issuers = json.dumps({"issuers": [{"iss": ISS, "jwks": key[1]}]})
    overrides = settings.with_overrides(auth="required", trusted_issuers_json=issuers,
                                        public_base_urls=(url,))
    assert overrides.profile == "production"
    if starts:
        assert create_app(overrides)
    else:
        with pytest.raises(SettingsError, match="CDS_PUBLIC_BASE_URL must use https"):
            create_app(overrides)


@pytest.mark.parametrize("overrides, needle", [
    ({"trusted_issuers_json": "notjson"}, "CDS_TRUSTED_ISSUERS: "),
    ({"trusted_issuers_file": "/nonexistent/issuers.json"}, "CDS_TRUSTED_ISSUERS_FILE: "),
    ({"trusted_issuers_json": '{"issuers":[{"iss":"https://e.x","jwks":{"keys":[5]}}]}'},
     "CDS_TRUSTED_ISSUERS"),  # a key set that cannot be read (found by review)
])
def test_a_bad_trusted_issuer_setting_names_its_variable(settings, overrides, needle):
    """They came out as tracebacks naming no variable."""
    from cds_service.settings import SettingsError

    with pytest.raises(SettingsError, match=needle):
        create_app(settings.with_overrides(auth="required", public_base_urls=(BASE,),
                                           **overrides))


@pytest.mark.parametrize("entry", ["fhir.example.org", "http://fhir.example.org/r4"])
def test_allowlist_entry_that_can_never_match_refuses_to_start(settings, entry):
    """A plain-http entry passed in production, where the scheme rule refuses every call to it
    (412): found by review."""
    from cds_service.settings import SettingsError

    with pytest.raises(SettingsError, match="ALLOWLIST"):
        create_app(settings.with_overrides(fhir_server_allowlist=(entry,)))


@pytest.mark.parametrize("url", ["https://cds.example.org/x?tenant=1",
                                 "https://cds.example.org/#frag", "https://",
                                 "https://user@cds.example.org"])
def test_a_public_url_no_audience_can_name_refuses_to_start(settings, key, url):
    """The audience is the base URL with the endpoint's path after it: with a query, a
    fragment, user info or no host, no token could ever name it, and every call was a 401
    with no detail (found by review)."""
    from cds_service.settings import SettingsError

    issuers = json.dumps({"issuers": [{"iss": ISS, "jwks": key[1]}]})
    with pytest.raises(SettingsError, match="CDS_PUBLIC_BASE_URL"):
        create_app(settings.with_overrides(auth="required", trusted_issuers_json=issuers,
                                           public_base_urls=(url,)))


def test_token_for_any_public_base_url_is_accepted_once(settings, key, make_request):
    other = "https://cds.example.org"
    issuers = json.dumps({"issuers": [{"iss": ISS, "jwks": key[1]}]})
    app = create_app(settings.with_overrides(
        auth="required", trusted_issuers_json=issuers, public_base_urls=(BASE, other)))
    client = app.test_client()
    tok = sign_development_token(key[0], kid="k1", iss=ISS, aud=other + PV)
    assert client.post(PV, json=make_request(), headers=auth(tok)).status_code == 200
    assert client.post(PV, json=make_request(), headers=auth(tok)).status_code == 401  # replay
    elsewhere = sign_development_token(key[0], kid="k1", iss=ISS, aud="https://x.example" + PV)
    assert client.post(PV, json=make_request(), headers=auth(elsewhere)).status_code == 401


def test_a_locked_database_answers_503_soon_not_401(secured, key, make_request, settings):
    """The replay check cannot run while another process holds the database's write lock: the
    call is refused (checks are never skipped), but as the service's fault, a 503 to retry, and
    after two short attempts rather than the store's half-minute of retries."""
    import sqlite3

    assert secured.post(PV, json=make_request(), headers=auth(token(key, PV))).status_code == 200
    holder = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"),
                             isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    try:
        response = secured.post(PV, json=make_request(), headers=auth(token(key, PV)))
    finally:
        waited = time.monotonic() - started
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503
    # A time budget that is itself the behaviour (README "Testing"), with slack: two waits of
    # half a second take about 1 s; the store's own retries took 25 s (found by review).
    assert waited < 10, waited
    # And the answer is one the API document names, for every CDS Hooks path (found by review).
    assert "503" in openapi_document()["paths"][PV]["post"]["responses"]
    assert response.headers["Retry-After"] == "5"
    assert "WWW-Authenticate" not in response.headers
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "transient"
    assert "Retry later" in issue["diagnostics"]
    # The lock gone, a fresh token is accepted again.
    assert secured.post(PV, json=make_request(), headers=auth(token(key, PV))).status_code == 200


def test_a_discovery_url_with_a_trailing_slash_works_as_the_sandbox_uses_it(secured, key,
                                                                            make_request):
    """The sandbox calls `${discoveryUrl}/${id}`: with "/cds-services/" entered, discovery is
    "/cds-services/" and each service "/cds-services//<id>", and each token's aud the same.
    They answered 404 and a 308 redirect to an HTML page (preflights do not follow it)."""
    discovery = secured.get("/cds-services/", headers=auth(token(key, "/cds-services/")))
    assert discovery.status_code == 200
    assert discovery.get_json()["services"]
    doubled = PV.replace("/cds-services/", "/cds-services//")
    for aud_path in (doubled, PV):  # either spelling of this endpoint's URL is its audience
        response = secured.post(doubled, json=make_request(), headers=auth(token(key, aud_path)))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"cards": []}
    preflight = secured.options(doubled, headers={"Origin": "https://sandbox.cds-hooks.org",
                                                  "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"]
    other = "/cds-services//hypermobility-pain-order-sign"  # another endpoint's URL is not
    wrong = secured.post(doubled, json=make_request(), headers=auth(token(key, other)))
    assert wrong.status_code == 401


def test_feedback_answered_503_may_be_sent_again_with_the_same_token(secured, key, monkeypatch):
    """503 + Retry-After says nothing was done and the same request may come again; its jti
    was already claimed, so the resend was refused as a replay (401) and the feedback lost."""
    store = secured.application.extensions["cds"].store
    real, calls = store.add_feedback, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "add_feedback", fails_once)
    path = PV + "/feedback"
    headers = auth(token(key, path))
    body = {"feedback": [{"card": "c", "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-20T10:00:00Z"}]}
    first = secured.post(path, json=body, headers=headers)
    assert first.status_code == 503 and first.headers["Retry-After"]
    assert secured.post(path, json=body, headers=headers).status_code == 200
    assert secured.post(path, json=body, headers=headers).status_code == 401  # now spent


def test_a_500_keeps_the_jti_spent(secured, key, monkeypatch):
    """Only a 503 says nothing was done; after a fault of ours (500) the effect is unknown, so
    the same token stays refused (a review found nothing checked this)."""
    store = secured.application.extensions["cds"].store

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "add_feedback", broken)
    path = PV + "/feedback"
    headers = auth(token(key, path))
    body = {"feedback": [{"card": "c", "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-20T10:00:00Z"}]}
    assert secured.post(path, json=body, headers=headers).status_code == 500
    monkeypatch.undo()
    assert secured.post(path, json=body, headers=headers).status_code == 401


def test_a_jti_that_cannot_be_given_back_leaves_the_503_as_it_is(secured, key, monkeypatch):
    """README: if the database cannot take the release either, the answer stays a 503 with
    Retry-After (and the resend needs a new token)."""
    state = secured.application.extensions["cds"]

    def broken(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    def cannot_release(claims):  # noqa: ANN001
        raise OperationalError("DELETE", {}, Exception("database is locked"))

    monkeypatch.setattr(state.store, "add_feedback", broken)
    monkeypatch.setattr(state.verifier, "release", cannot_release)
    path = PV + "/feedback"
    headers = auth(token(key, path))
    body = {"feedback": [{"card": "c", "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-20T10:00:00Z"}]}
    first = secured.post(path, json=body, headers=headers)
    assert first.status_code == 503 and first.headers["Retry-After"]
    assert first.get_json()["resourceType"] == "OperationOutcome"
