"""Trusted-issuer configuration and verifier construction fail loudly on mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cds_service.security as security_pkg
from cds_service.security import (
    SANDBOX_ISS,
    SANDBOX_JKU,
    JwtVerifier,
    MemoryReplayCache,
    TrustedIssuer,
    issuers_from_env,
    load_trusted_issuers,
    sandbox_issuer,
)

AUD = "https://cds.example.org/cds-services/hypermobility-patient-view"
ISS = "https://ehr.example.org"
KEYS_DIR = Path(security_pkg.__file__).parent / "keys"


def test_sandbox_issuer():
    issuer = sandbox_issuer()
    assert issuer.iss == "https://sandbox.cds-hooks.org" == SANDBOX_ISS
    assert issuer.jku_allowlist == ("https://sandbox.cds-hooks.org/.well-known/jwks.json",)
    assert issuer.jku_allowlist == (SANDBOX_JKU,)
    (jwk,) = issuer.jwks["keys"]
    # The kid the sandbox sends (cds-hooks-notes.md §3).
    assert jwk["kid"] == "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-384", "ES384")
    assert "d" not in jwk


def test_bundled_sandbox_jwks_is_the_shared_copy(shared_sandbox_jwks_path):
    bundled = json.loads((KEYS_DIR / "sandbox-jwks.json").read_text())
    assert bundled == json.loads(shared_sandbox_jwks_path.read_text())


def test_keys_readme_states_provenance_and_that_private_key_is_public():
    text = (KEYS_DIR / "README.md").read_text()
    assert "sandbox-jwks.json" in text
    assert "PUBLIC" in text and "development" in text


def test_load_trusted_issuers_resolves_relative_jwks_file(tmp_path, es384):
    (tmp_path / "ehr-jwks.json").write_text(json.dumps(es384.jwks()))
    config = {
        "issuers": [
            {"iss": ISS, "jwks_file": "ehr-jwks.json", "jku_allowlist": [ISS + "/jwks"]},
            {"iss": "https://b.example", "jwks_url": "https://b.example/jwks"},
        ]
    }
    (tmp_path / "issuers.json").write_text(json.dumps(config))
    first, second = load_trusted_issuers(tmp_path / "issuers.json")
    assert first.jwks_file == str(tmp_path / "ehr-jwks.json")
    assert first.jku_allowlist == (ISS + "/jwks",)
    assert second.jwks_url == "https://b.example/jwks"


def test_issuers_from_env(es384):
    value = json.dumps({"issuers": [{"iss": ISS, "jwks": es384.jwks()}]})
    (issuer,) = issuers_from_env(value)
    assert issuer == TrustedIssuer(iss=ISS, jwks=es384.jwks())


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "[]",
        '{"issuer": []}',
        '{"issuers": [{"iss": "https://a.example", "jwks_uri": "https://a.example/j"}]}',
        '{"issuers": [{"jwks_url": "https://a.example/j"}]}',
        '{"issuers": [{"iss": "https://a.example"}]}',
        '{"issuers": [{"iss": "", "jwks_url": "https://a.example/j"}]}',
        '{"issuers": [{"iss": "https://a.example", "jwks_url": "http://a.example/j"}]}',
        '{"issuers": [{"iss": "https://a.example", "jku_allowlist": "https://a.example/j"}]}',
        '{"issuers": [{"iss": "https://a.example", "jku_allowlist": ["ftp://a.example/j"]}]}',
        '{"issuers": [{"iss": "https://a.example", "jku_allowlist": ["https://u:p@a.example/"]}]}',
        '{"issuers": [{"iss": "https://a.example", "jwks": [1]}]}',
        '{"issuers": [{"iss": "https://a", "jwks_url": "https://a/j"},'
        ' {"iss": "https://a", "jwks_url": "https://a/k"}]}',
    ],
)
def test_bad_issuer_config_rejected(value):
    with pytest.raises(ValueError):
        issuers_from_env(value)


def test_trusted_issuer_rejects_string_allowlist():
    with pytest.raises(ValueError):
        TrustedIssuer(iss=ISS, jku_allowlist="https://ehr.example.org/jwks")  # type: ignore[arg-type]


def _verifier(issuers, **kwargs):
    return JwtVerifier(issuers, replay_cache=MemoryReplayCache(), **kwargs)


def test_verifier_rejects_duplicate_or_no_issuers(es384):
    issuer = TrustedIssuer(iss=ISS, jwks=es384.jwks())
    with pytest.raises(ValueError):
        _verifier([issuer, issuer])
    with pytest.raises(ValueError):
        _verifier([])


@pytest.mark.parametrize("algorithms", [(), "ES384", ("ES384", "HS256"), ("none",)])
def test_verifier_rejects_bad_algorithm_lists(es384, algorithms):
    with pytest.raises(ValueError):
        _verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())], algorithms=algorithms)


def test_verifier_requires_a_replay_cache(es384):
    with pytest.raises(ValueError):
        JwtVerifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())], replay_cache=None)  # type: ignore[arg-type]


def test_missing_jwks_file_fails_at_construction(tmp_path):
    with pytest.raises(OSError):
        _verifier([TrustedIssuer(iss=ISS, jwks_file=str(tmp_path / "missing.json"))])


def test_issuer_config_repeating_a_member_is_refused(es384, tmp_path):
    """Key material is never ambiguous: a repeated name in the issuer config stops startup."""
    jwks = json.dumps(es384.jwks())
    config = f'{{"issuers": [{{"iss": "{ISS}", "iss": "https://other.example", "jwks": {jwks}}}]}}'
    with pytest.raises(ValueError, match="repeats the member 'iss'"):
        issuers_from_env(config)
    path = Path(tmp_path) / "issuers.json"
    path.write_text(config, encoding="utf-8")
    with pytest.raises(ValueError, match="repeats the member 'iss'"):
        load_trusted_issuers(path)


def test_invalid_inline_jwks_fails_at_construction():
    with pytest.raises(ValueError):
        _verifier([TrustedIssuer(iss=ISS, jwks={"not": "a jwks"})])


def test_audience_argument_must_be_given(es384):
    verifier = _verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())])
    with pytest.raises(ValueError):
        verifier.verify("Bearer x.y.z", "")
