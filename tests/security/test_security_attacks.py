"""Every way of forging, stretching or misdirecting a token is refused, with a precise reason.

Each test also checks (through ``assert_rejected``) that the token never appears in the error or
in the logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from cds_service.security import JwtVerifier, MemoryReplayCache, TrustedIssuer

AUD = "https://cds.example.org/cds-services/hypermobility-patient-view"
ISS = "https://ehr.example.org"
OTHER_ISS = "https://other-ehr.example.org"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": f"j-{time.time_ns()}"}
    claims.update(overrides)
    return claims


def _raw_sign(keypair, header: dict[str, Any], payload: bytes | dict[str, Any]) -> str:
    """Sign arbitrary header/payload bytes with a real key: malformed-but-signed tokens."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return jwt.PyJWS().encode(body, keypair.private_pem, algorithm=keypair.alg, headers=header)


@pytest.fixture
def verifier(es384, rs384, make_verifier) -> JwtVerifier:
    return make_verifier(
        [TrustedIssuer(iss=ISS, jwks={"keys": [es384.public_jwk, rs384.public_jwk]})]
    )


# -- the Authorization header itself ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing-authorization"),
        ("", "missing-authorization"),
        ("   ", "missing-authorization"),
        ("Basic dXNlcjpwYXNz", "not-bearer"),
        ("Token abc.def.ghi", "not-bearer"),
        ("Bearer", "malformed"),
        ("Bearer a b", "malformed"),
        ("Bearer garbage", "malformed"),
        ("Bearer a.b.c", "malformed"),
        ("Bearer ...", "malformed"),
        ("Bearer " + "A" * 20000 + ".e30.sig", "malformed"),
        ("Bearer eyJhbGciOiJFUzM4NCJ9.e30.sig.extra.parts", "malformed"),  # JWE-shaped
        ("Bearer " + _b64(b"[1,2]") + "." + _b64(b"{}") + ".c2ln", "malformed"),
        ("Bearer " + _b64(b'{"alg":"ES384"}') + "." + _b64(b"not json") + ".c2ln", "malformed"),
        ("Bearer " + _b64(b'{"alg":"ES384"}') + "." + _b64(b"{}") + ".c2l+", "malformed"),
    ],
)
def test_bad_authorization_header(verifier, assert_rejected, header, reason):
    assert_rejected(verifier, header, reason)


def test_token_in_basic_scheme_is_not_accepted(verifier, es384, sign, assert_rejected):
    assert_rejected(verifier, f"Basic {sign(es384)}", "not-bearer")


# -- algorithm attacks --------------------------------------------------------------------------


def test_alg_none_unsigned(verifier, assert_rejected):
    token = jwt.encode(_claims(), None, algorithm="none", headers={"kid": "k"})
    assert token.endswith(".")
    assert_rejected(verifier, f"Bearer {token}", "alg-not-allowed")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_with_garbage_signature(verifier, es384, assert_rejected, alg):
    header = {"alg": alg, "typ": "JWT", "kid": es384.kid}
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims()).encode())}.c2ln"
    assert_rejected(verifier, f"Bearer {token}", "alg-not-allowed")


@pytest.mark.parametrize("key_fixture", ["es384", "rs384"])
def test_hs256_signed_with_public_key_as_secret(request, verifier, assert_rejected, key_fixture):
    """The classic key-confusion attack: HMAC keyed with the verifier's own public key bytes."""
    keypair = request.getfixturevalue(key_fixture)
    public_pem = jwt.PyJWK(keypair.public_jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": keypair.kid}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert_rejected(verifier, f"Bearer {header}.{payload}.{_b64(mac)}", "alg-not-allowed")


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "HS384", "hs512", "ES256K", "foo"])
def test_verifier_refuses_to_be_configured_with_bad_algorithms(es384, alg):
    with pytest.raises(ValueError):
        JwtVerifier(
            [TrustedIssuer(iss=ISS, jwks=es384.jwks())],
            algorithms=("ES384", alg),
            replay_cache=MemoryReplayCache(),
        )


def test_algorithm_not_on_this_verifiers_list(
    keypair_factory, make_verifier, sign, assert_rejected
):
    es256 = keypair_factory("ES256")
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es256.jwks())])  # ES384/RS384 only
    assert_rejected(verifier, f"Bearer {sign(es256)}", "alg-not-allowed")


# -- header checks ------------------------------------------------------------------------------


def test_missing_kid(verifier, es384, assert_rejected):
    token = jwt.encode(_claims(), es384.private_pem, algorithm="ES384")
    assert_rejected(verifier, f"Bearer {token}", "missing-kid")


def test_missing_typ_refused_by_default(verifier, es384, assert_rejected):
    token = jwt.encode(
        _claims(), es384.private_pem, algorithm="ES384", headers={"kid": es384.kid, "typ": None}
    )
    assert_rejected(verifier, f"Bearer {token}", "missing-typ")


@pytest.mark.parametrize("typ", ["at+jwt", "JOSE", "dpop+jwt"])
def test_wrong_typ(verifier, es384, assert_rejected, typ):
    token = _raw_sign(es384, {"kid": es384.kid, "typ": typ}, _claims())
    assert_rejected(verifier, f"Bearer {token}", "bad-typ")


def test_crit_header_refused(verifier, es384, assert_rejected):
    token = _raw_sign(es384, {"kid": es384.kid, "crit": ["exp"], "exp": 1}, _claims())
    assert_rejected(verifier, f"Bearer {token}", "unsupported-header")


def test_duplicate_claim_members_refused(verifier, es384, assert_rejected):
    # Two "aud" members: parsers that keep the first and the last would disagree.
    c = _claims()
    body = (
        f'{{"iss":"{ISS}","aud":"https://evil.example","aud":"{AUD}",'
        f'"iat":{c["iat"]},"exp":{c["exp"]},"jti":"dup"}}'
    ).encode()
    token = _raw_sign(es384, {"kid": es384.kid}, body)
    assert_rejected(verifier, f"Bearer {token}", "malformed")


# -- issuer and key selection -------------------------------------------------------------------


def test_untrusted_issuer(verifier, es384, sign, assert_rejected):
    assert_rejected(
        verifier, f"Bearer {sign(es384, iss='https://evil.example')}", "untrusted-issuer"
    )


@pytest.mark.parametrize("iss", [ISS + "/", ISS.upper(), " " + ISS])
def test_issuer_compared_exactly(verifier, es384, sign, assert_rejected, iss):
    assert_rejected(verifier, f"Bearer {sign(es384, iss=iss)}", "untrusted-issuer")


def test_missing_iss(verifier, es384, sign, assert_rejected):
    assert_rejected(
        verifier, f"Bearer {sign(es384, extra_claims={'iss': None})}", "missing-claim:iss"
    )


def test_unknown_kid(verifier, es384, sign, assert_rejected):
    assert_rejected(verifier, f"Bearer {sign(es384, kid='no-such-kid')}", "unknown-kid")


def test_wrong_key_with_right_kid(verifier, es384, keypair_factory, sign, assert_rejected):
    impostor = keypair_factory("ES384", kid=es384.kid)
    assert_rejected(verifier, f"Bearer {sign(impostor)}", "bad-signature")


def test_tampered_payload(verifier, es384, sign, assert_rejected):
    header, _, signature = sign(es384).split(".")
    forged = _b64(json.dumps(_claims(aud=AUD, tenant="admin")).encode())
    assert_rejected(verifier, f"Bearer {header}.{forged}.{signature}", "bad-signature")


def test_key_of_another_trusted_issuer_is_not_usable(
    es384, rs384, make_verifier, sign, assert_rejected
):
    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks=es384.jwks()), TrustedIssuer(iss=OTHER_ISS, jwks=rs384.jwks())]
    )
    # Signed with OTHER_ISS's key and kid, but claiming to be ISS.
    assert_rejected(verifier, f"Bearer {sign(rs384, iss=ISS)}", "unknown-kid")


def test_duplicate_kid_in_jwks_is_ambiguous(
    es384, keypair_factory, make_verifier, sign, assert_rejected
):
    twin = keypair_factory("ES384", kid=es384.kid)
    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks={"keys": [es384.public_jwk, twin.public_jwk]})]
    )
    assert_rejected(verifier, f"Bearer {sign(es384)}", "ambiguous-kid")


# -- JWK / alg fit ------------------------------------------------------------------------------


def test_rsa_jwk_for_es384_token(es384, rs384, make_verifier, sign, assert_rejected):
    # The issuer's key under this kid is RSA (no "alg" member to give it away); token says ES384.
    jwk = {k: v for k, v in rs384.public_jwk.items() if k != "alg"} | {"kid": es384.kid}
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks={"keys": [jwk]})])
    assert_rejected(verifier, f"Bearer {sign(es384)}", "key-alg-mismatch")


def test_ec_jwk_for_rs384_token(es384, rs384, make_verifier, sign, assert_rejected):
    jwk = {k: v for k, v in es384.public_jwk.items() if k != "alg"} | {"kid": rs384.kid}
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks={"keys": [jwk]})])
    assert_rejected(verifier, f"Bearer {sign(rs384)}", "key-alg-mismatch")


def test_p256_jwk_for_es384_token(es384, keypair_factory, make_verifier, sign, assert_rejected):
    p256 = keypair_factory("ES256")
    jwk = {**p256.public_jwk, "kid": es384.kid}
    jwk.pop("alg")
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks={"keys": [jwk]})])
    assert_rejected(verifier, f"Bearer {sign(es384)}", "key-alg-mismatch")


def test_jwk_alg_member_must_match_header(rs384, make_verifier, sign, assert_rejected):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=rs384.jwks(alg="RS256"))])
    assert_rejected(verifier, f"Bearer {sign(rs384)}", "key-alg-mismatch")


def test_oct_jwk_never_usable(es384, make_verifier, sign, assert_rejected):
    oct_jwk = {"kty": "oct", "kid": es384.kid, "k": _b64(b"secret")}
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks={"keys": [oct_jwk]})])
    assert_rejected(verifier, f"Bearer {sign(es384)}", "key-alg-mismatch")


@pytest.mark.parametrize(
    "overrides", [{"use": "enc"}, {"key_ops": ["encrypt"]}, {"d": _b64(b"\x01" * 48)}]
)
def test_jwk_not_a_public_signing_key(es384, make_verifier, sign, assert_rejected, overrides):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks(**overrides))])
    assert_rejected(verifier, f"Bearer {sign(es384)}", "bad-key")


def test_short_rsa_key_refused(keypair_factory, make_verifier, sign, assert_rejected):
    weak = keypair_factory("RS384", rsa_bits=1024)
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=weak.jwks())])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recent PyJWT warns when signing with a short key
        token = sign(weak)
    assert_rejected(verifier, f"Bearer {token}", "bad-key")


# -- claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["aud", "exp", "iat", "jti"])
def test_missing_required_claim(verifier, es384, sign, assert_rejected, claim):
    token = sign(es384, extra_claims={claim: None})
    assert_rejected(verifier, f"Bearer {token}", f"missing-claim:{claim}")


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", "tomorrow"),
        ("exp", True),
        ("iat", [1]),
        ("jti", 12345),
        ("jti", ""),
        ("jti", "x" * 1000),
        ("aud", 7),
        ("aud", []),
        ("aud", [AUD, 7]),
    ],
)
def test_malformed_claim(verifier, es384, sign, assert_rejected, claim, value):
    token = sign(es384, extra_claims={claim: value})
    assert_rejected(verifier, f"Bearer {token}", f"malformed-claim:{claim}")


@pytest.mark.parametrize("raw", [b"1" + b"0" * 400, b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_or_huge_exp(verifier, es384, assert_rejected, raw):
    """RFC 8259 has no NaN or Infinity, and a number beyond a double is no time: the claims are
    not read as JSON at all."""
    c = _claims()
    body = (
        f'{{"iss":"{ISS}","aud":"{AUD}","iat":{c["iat"]},"jti":"{c["jti"]}","exp":'.encode()
        + raw
        + b"}"
    )
    token = _raw_sign(es384, {"kid": es384.kid}, body)
    assert_rejected(verifier, f"Bearer {token}", "malformed")
    # The same hand-built claims with a real expiry are accepted: only the number was refused.
    good = body.replace(b'"exp":' + raw, b'"exp":' + str(c["exp"]).encode())
    assert good != body
    assert verifier.verify(f"Bearer {_raw_sign(es384, {'kid': es384.kid}, good)}", AUD)


def test_non_string_iss(verifier, es384, assert_rejected):
    token = _raw_sign(es384, {"kid": es384.kid, "typ": "JWT"}, _claims(iss=42))
    assert_rejected(verifier, f"Bearer {token}", "malformed-claim:iss")


def test_expired(verifier, es384, sign, assert_rejected):
    now = int(time.time())
    token = sign(es384, extra_claims={"iat": now - 400, "exp": now - 100})
    assert_rejected(verifier, f"Bearer {token}", "expired")


def test_expired_just_past_leeway(es384, make_verifier, sign, clock, assert_rejected):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())], clock=clock, leeway_s=30)
    exp = int(clock.now) + 60
    token = sign(es384, extra_claims={"iat": exp - 300, "exp": exp})
    clock.now = exp + 30  # exactly at the end of the leeway: no longer valid
    assert_rejected(verifier, f"Bearer {token}", "expired")


def test_iat_in_future(verifier, es384, sign, assert_rejected):
    now = int(time.time())
    token = sign(es384, extra_claims={"iat": now + 120, "exp": now + 400})
    assert_rejected(verifier, f"Bearer {token}", "iat-in-future")


def test_nbf_in_future(verifier, es384, sign, assert_rejected):
    token = sign(es384, extra_claims={"nbf": int(time.time()) + 120})
    assert_rejected(verifier, f"Bearer {token}", "not-yet-valid")


def test_lifetime_too_long(verifier, es384, sign, assert_rejected):
    now = int(time.time())
    token = sign(es384, extra_claims={"iat": now, "exp": now + 3601})
    assert_rejected(verifier, f"Bearer {token}", "lifetime-too-long")


def test_exp_before_iat(verifier, es384, sign, assert_rejected):
    now = int(time.time())
    token = sign(es384, extra_claims={"iat": now + 20, "exp": now + 10})
    assert_rejected(verifier, f"Bearer {token}", "malformed-claim:exp")


@pytest.mark.parametrize(
    "aud",
    [
        "https://cds.example.org/cds-services/other-service",
        AUD + "/",
        AUD + "/feedback",
        AUD.replace("https", "http"),
        AUD.upper(),
    ],
)
def test_wrong_audience(verifier, es384, sign, assert_rejected, aud):
    assert_rejected(verifier, f"Bearer {sign(es384, aud=aud)}", "wrong-audience")


def test_aud_list_not_containing_ours(verifier, es384, sign, assert_rejected):
    token = sign(es384, aud=["https://a.example/cds-services/x", AUD + "/"])
    assert_rejected(verifier, f"Bearer {token}", "wrong-audience")


def test_discovery_token_not_valid_for_service_call(verifier, es384, sign, assert_rejected):
    token = sign(es384, aud="https://cds.example.org/cds-services")
    assert_rejected(verifier, f"Bearer {token}", "wrong-audience")


# -- replay -------------------------------------------------------------------------------------


def test_replayed_jti_memory(verifier, es384, sign, assert_rejected):
    token = sign(es384)
    assert verifier.verify(f"Bearer {token}", AUD)
    assert_rejected(verifier, f"Bearer {token}", "replay")


def test_same_jti_in_a_fresh_token_is_a_replay(verifier, es384, sign, assert_rejected):
    assert verifier.verify(f"Bearer {sign(es384, extra_claims={'jti': 'fixed'})}", AUD)
    assert_rejected(verifier, f"Bearer {sign(es384, extra_claims={'jti': 'fixed'})}", "replay")


def test_forged_token_does_not_burn_a_jti(verifier, es384, keypair_factory, sign, assert_rejected):
    impostor = keypair_factory("ES384", kid=es384.kid)
    forged = sign(impostor, extra_claims={"jti": "victim"})
    assert_rejected(verifier, f"Bearer {forged}", "bad-signature")
    assert verifier.verify(f"Bearer {sign(es384, extra_claims={'jti': 'victim'})}", AUD)


def test_failed_claims_do_not_burn_a_jti(verifier, es384, sign, assert_rejected):
    wrong = sign(es384, aud="https://elsewhere.example", extra_claims={"jti": "j"})
    assert_rejected(verifier, f"Bearer {wrong}", "wrong-audience")
    assert verifier.verify(f"Bearer {sign(es384, extra_claims={'jti': 'j'})}", AUD)


def test_replay_cache_failure_fails_closed(es384, make_verifier, sign, assert_rejected):
    class BrokenCache:
        def add_if_new(self, iss: str, jti: str, expires_at: float) -> bool:
            raise OSError("disk full")

    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks=es384.jwks())], replay_cache=BrokenCache()
    )
    assert_rejected(verifier, f"Bearer {sign(es384)}", "replay-cache-error")


def test_jti_stored_until_exp_plus_leeway(es384, make_verifier, sign):
    seen: list[tuple[str, str, float]] = []

    class RecordingCache:
        def add_if_new(self, iss: str, jti: str, expires_at: float) -> bool:
            seen.append((iss, jti, expires_at))
            return True

    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks=es384.jwks())], replay_cache=RecordingCache(), leeway_s=30
    )
    claims = verifier.verify(f"Bearer {sign(es384)}", AUD)
    assert seen == [(ISS, claims["jti"], claims["exp"] + 30)]
