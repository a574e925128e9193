"""Tokens a legitimate CDS Client would send are accepted, with the token's own claims returned."""

from __future__ import annotations

import json
import time

import jwt
import pytest
import responses

from cds_service.security import (
    SANDBOX_ISS,
    SANDBOX_JKU,
    AuthError,
    TrustedIssuer,
    load_trusted_issuers,
    sandbox_issuer,
    sign_development_token,
)

AUD = "https://cds.example.org/cds-services/hypermobility-patient-view"
ISS = "https://ehr.example.org"
OTHER_ISS = "https://other-ehr.example.org"


def test_sandbox_token_verifies_with_bundled_keys_and_no_network(
    sandbox_pem, sandbox_kid, make_verifier
):
    # Exactly what the sandbox sends: ES384, typ JWT, its kid, its jku, aud = called URL.
    token = sign_development_token(
        sandbox_pem, kid=sandbox_kid, iss=SANDBOX_ISS, aud=AUD, jku=SANDBOX_JKU
    )
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES384", "typ": "JWT", "kid": sandbox_kid, "jku": SANDBOX_JKU}
    verifier = make_verifier([sandbox_issuer()])
    with responses.RequestsMock() as rsps:  # any HTTP call would raise ConnectionError
        claims = verifier.verify(f"Bearer {token}", AUD)
        assert len(rsps.calls) == 0
    assert claims["iss"] == SANDBOX_ISS
    assert claims["aud"] == AUD
    assert claims["exp"] - claims["iat"] == 300
    assert claims == jwt.decode(token, options={"verify_signature": False})


def test_sandbox_token_without_jku_also_verifies(sandbox_pem, sandbox_kid, make_verifier):
    token = sign_development_token(sandbox_pem, kid=sandbox_kid, iss=SANDBOX_ISS, aud=AUD)
    assert make_verifier([sandbox_issuer()]).verify(f"Bearer {token}", AUD)["iss"] == SANDBOX_ISS


@pytest.mark.parametrize("alg_fixture", ["es384", "rs384"])
def test_fresh_key_pair_inline_jwks(request, alg_fixture, make_verifier, sign):
    keypair = request.getfixturevalue(alg_fixture)
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=keypair.jwks())])
    token = sign(keypair, extra_claims={"tenant": "clinic-7"})
    claims = verifier.verify(f"Bearer {token}", AUD)
    assert jwt.get_unverified_header(token)["alg"] == keypair.alg
    assert claims["iss"] == ISS and claims["tenant"] == "clinic-7"


@pytest.mark.parametrize("alg_fixture", ["es384", "rs384"])
def test_fresh_key_pair_from_config_file(request, alg_fixture, tmp_path, make_verifier, sign):
    keypair = request.getfixturevalue(alg_fixture)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ehr.json").write_text(json.dumps(keypair.jwks()))
    (tmp_path / "issuers.json").write_text(
        json.dumps({"issuers": [{"iss": ISS, "jwks_file": "keys/ehr.json"}]})
    )
    verifier = make_verifier(load_trusted_issuers(tmp_path / "issuers.json"))
    assert verifier.verify(f"Bearer {sign(keypair)}", AUD)["iss"] == ISS


def test_both_algorithms_and_two_issuers_side_by_side(es384, rs384, make_verifier, sign):
    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks=es384.jwks()), TrustedIssuer(iss=OTHER_ISS, jwks=rs384.jwks())]
    )
    assert verifier.verify(f"Bearer {sign(es384)}", AUD)["iss"] == ISS
    assert verifier.verify(f"Bearer {sign(rs384, iss=OTHER_ISS)}", AUD)["iss"] == OTHER_ISS


def test_aud_list_containing_our_url(es384, make_verifier, sign):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())])
    token = sign(es384, aud=["https://elsewhere.example/x", AUD])
    assert verifier.verify(f"Bearer {token}", AUD)["aud"][1] == AUD


def test_scheme_is_case_insensitive(es384, make_verifier, sign):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())])
    assert verifier.verify(f"bearer {sign(es384)}", AUD)["iss"] == ISS


def test_leeway_accepts_small_clock_skew(es384, make_verifier, sign, clock):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())], clock=clock, leeway_s=30)
    now = int(clock.now)
    # Expired 10 s ago, and another token issued 10 s "in the future": both inside 30 s leeway.
    late = sign(es384, extra_claims={"iat": now - 310, "exp": now - 10})
    early = sign(es384, extra_claims={"iat": now + 10, "exp": now + 310})
    assert verifier.verify(f"Bearer {late}", AUD)
    assert verifier.verify(f"Bearer {early}", AUD)


def test_typ_optional_when_configured(es384, make_verifier):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())], require_typ=False)
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 60, "jti": "j-1"}
    # PyJWT adds typ=JWT unless told to drop it with typ=None.
    token = jwt.encode(
        claims, es384.private_pem, algorithm="ES384", headers={"kid": es384.kid, "typ": None}
    )
    assert "typ" not in jwt.get_unverified_header(token)
    assert verifier.verify(f"Bearer {token}", AUD)["jti"] == "j-1"


def test_devtoken_defaults_and_claim_removal(es384):
    token = sign_development_token(
        es384.private_pem, kid=es384.kid, iss=ISS, aud=AUD, extra_claims={"jti": None, "x": 1}
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert "jti" not in claims and claims["x"] == 1
    token = sign_development_token(es384.private_pem, kid=es384.kid, iss=ISS, aud=AUD)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300 and len(claims["jti"]) == 36


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_devtoken_refuses_symmetric_and_none(es384, alg):
    with pytest.raises(ValueError):
        sign_development_token(es384.private_pem, kid="k", iss=ISS, aud=AUD, alg=alg)


def test_any_of_several_accepted_audiences(es384, make_verifier, sign, assert_rejected):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())])
    accepted = ["https://other.example/cds-services/x", AUD]
    assert verifier.verify(f"Bearer {sign(es384)}", accepted)["aud"] == AUD
    with pytest.raises(ValueError):
        verifier.verify(f"Bearer {sign(es384)}", [])
    with pytest.raises(AuthError, match="wrong-audience"):
        verifier.verify(f"Bearer {sign(es384)}", ["https://other.example/cds-services/x"])
