"""Remote key sets: only allowlisted URLs are ever fetched, and fetching is cached and rate-limited.

``responses`` intercepts every HTTP call; an unregistered URL raises ConnectionError, so
``len(rsps.calls)`` is the exact number of network requests the verifier made.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
import responses

from cds_service.security import SANDBOX_ISS, SANDBOX_JKU, TrustedIssuer, sandbox_issuer

AUD = "https://cds.example.org/cds-services/hypermobility-order-sign"
ISS = "https://ehr.example.org"
OTHER_ISS = "https://other-ehr.example.org"
JKU = "https://ehr.example.org/.well-known/jwks.json"
OTHER_JKU = "https://other-ehr.example.org/.well-known/jwks.json"
JWKS_URL = "https://keys.ehr.example.org/jwks"


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _bearer(token: str) -> str:
    return f"Bearer {token}"


# -- jku off the allowlist: refused, never fetched ----------------------------------------------


@pytest.mark.parametrize(
    "jku",
    [
        "https://evil.example/jwks.json",
        JKU + "?x=1",
        JKU.replace("https", "http"),
        JKU + "/",
        "https://EHR.example.org/.well-known/jwks.json",
        OTHER_JKU,  # allowlisted, but for another issuer
    ],
)
def test_jku_not_on_allowlist_is_never_fetched(
    rsps, es384, make_verifier, sign, assert_rejected, jku
):
    rsps.get(jku, json=es384.jwks())
    verifier = make_verifier(
        [
            TrustedIssuer(iss=ISS, jku_allowlist=(JKU,)),
            TrustedIssuer(iss=OTHER_ISS, jku_allowlist=(OTHER_JKU,)),
        ]
    )
    assert_rejected(verifier, _bearer(sign(es384, jku=jku)), "jku-not-allowed")
    assert len(rsps.calls) == 0


def test_jku_off_allowlist_refused_even_if_kid_is_known_locally(
    rsps, es384, make_verifier, sign, assert_rejected
):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks())])
    token = sign(es384, jku="https://evil.example/jwks.json")
    assert_rejected(verifier, _bearer(token), "jku-not-allowed")
    assert len(rsps.calls) == 0


def test_sandbox_jku_for_a_non_sandbox_issuer(rsps, es384, make_verifier, sign, assert_rejected):
    verifier = make_verifier([sandbox_issuer(), TrustedIssuer(iss=ISS, jwks=es384.jwks())])
    assert_rejected(verifier, _bearer(sign(es384, jku=SANDBOX_JKU)), "jku-not-allowed")
    assert len(rsps.calls) == 0


# -- jku on the allowlist: fetched once, cached ---------------------------------------------------


def test_allowlisted_jku_fetched_once_and_cached(rsps, es384, make_verifier, sign):
    rsps.get(JKU, json=es384.jwks())
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))], fetch_timeout_s=2.5)
    for _ in range(3):
        assert verifier.verify(_bearer(sign(es384, jku=JKU)), AUD)["iss"] == ISS
    assert len(rsps.calls) == 1
    call = rsps.calls[0]
    assert call.request.url == JKU
    assert call.request.req_kwargs["timeout"] == 2.5


def test_concurrent_first_requests_share_one_fetch(rsps, es384, make_verifier, sign):
    rsps.get(JKU, json=es384.jwks())
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))])
    tokens = [sign(es384, jku=JKU) for _ in range(12)]
    barrier = threading.Barrier(len(tokens))
    results: list[str] = []

    def worker(token: str) -> None:
        barrier.wait()
        results.append(verifier.verify(_bearer(token), AUD)["iss"])

    threads = [threading.Thread(target=worker, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [ISS] * len(tokens)
    assert len(rsps.calls) == 1


def test_unknown_kid_refreshes_once_then_rate_limited(
    rsps, es384, keypair_factory, make_verifier, sign, clock, assert_rejected
):
    rotated = keypair_factory("ES384")
    rsps.get(JKU, json=es384.jwks())
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))], clock=clock)
    assert verifier.verify(_bearer(sign(es384, jku=JKU)), AUD)
    assert len(rsps.calls) == 1

    # The client rotates its key; the first token with the new kid triggers one refresh.
    clock.advance(61)
    rsps.replace(responses.GET, JKU, json={"keys": [es384.public_jwk, rotated.public_jwk]})
    assert verifier.verify(_bearer(sign(rotated, jku=JKU)), AUD)
    assert len(rsps.calls) == 2

    # A burst of random kids within the next minute causes no further fetches.
    for i in range(5):
        assert_rejected(verifier, _bearer(sign(es384, kid=f"random-{i}", jku=JKU)), "unknown-kid")
    assert len(rsps.calls) == 2

    # After the interval one more refresh is allowed.
    clock.advance(61)
    assert_rejected(verifier, _bearer(sign(es384, kid="random-x", jku=JKU)), "unknown-kid")
    assert len(rsps.calls) == 3


def test_unknown_kid_right_after_first_fetch_does_not_refetch(
    rsps, es384, make_verifier, sign, assert_rejected
):
    rsps.get(JKU, json=es384.jwks())
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))])
    assert_rejected(verifier, _bearer(sign(es384, kid="nope", jku=JKU)), "unknown-kid")
    assert_rejected(verifier, _bearer(sign(es384, kid="nope2", jku=JKU)), "unknown-kid")
    assert len(rsps.calls) == 1


def test_redirect_is_not_followed(rsps, es384, make_verifier, sign, assert_rejected):
    rsps.get(JKU, status=302, headers={"Location": "https://evil.example/jwks.json"})
    rsps.get("https://evil.example/jwks.json", json=es384.jwks())
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))])
    assert_rejected(verifier, _bearer(sign(es384, jku=JKU)), "jwks-unavailable")
    assert [c.request.url for c in rsps.calls] == [JKU]


@pytest.mark.parametrize(
    "response_kwargs",
    [
        {"status": 500, "json": {}},
        {"status": 404, "body": "not found"},
        {"body": "not json"},
        {"json": {"no": "keys"}},
        {"json": ["a", "list"]},
        {"body": requests.ConnectTimeout("timed out")},
        {"body": json.dumps({"keys": [], "pad": "x" * 300_000})},
    ],
    ids=["500", "404", "not-json", "no-keys", "list", "timeout", "too-large"],
)
def test_fetch_failure_is_jwks_unavailable(
    rsps, es384, make_verifier, sign, assert_rejected, response_kwargs
):
    rsps.get(JKU, **response_kwargs)
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))])
    assert_rejected(verifier, _bearer(sign(es384, jku=JKU)), "jwks-unavailable")


def test_jwks_repeating_a_member_is_not_used(rsps, es384, make_verifier, sign, assert_rejected):
    """A key set whose key names "kty" twice is ambiguous (a reader keeping the last one would
    use the right key, one keeping the first would not): it is not read at all."""
    text = json.dumps(es384.jwks())
    assert text.count('"kty": "EC"') == 1
    rsps.get(JKU, body=text.replace('"kty": "EC"', '"kty": "RSA", "kty": "EC"'))
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))])
    assert_rejected(verifier, _bearer(sign(es384, jku=JKU)), "jwks-unavailable")


def test_failed_fetch_is_retried_only_after_the_interval(
    rsps, es384, make_verifier, sign, clock, assert_rejected
):
    rsps.get(JKU, status=503)
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))], clock=clock)
    assert_rejected(verifier, _bearer(sign(es384, jku=JKU)), "jwks-unavailable")
    assert_rejected(verifier, _bearer(sign(es384, jku=JKU)), "jwks-unavailable")
    assert len(rsps.calls) == 1
    clock.advance(61)
    rsps.replace(responses.GET, JKU, json=es384.jwks())
    assert verifier.verify(_bearer(sign(es384, jku=JKU)), AUD)
    assert len(rsps.calls) == 2


def test_fetched_keys_still_checked_for_alg_fit(
    rsps, es384, rs384, make_verifier, sign, assert_rejected
):
    rsps.get(JKU, json=rs384.jwks(kid=es384.kid))
    verifier = make_verifier([TrustedIssuer(iss=ISS, jku_allowlist=(JKU,))])
    assert_rejected(verifier, _bearer(sign(es384, jku=JKU)), "key-alg-mismatch")


# -- a fixed jwks_url -------------------------------------------------------------------------


def test_jwks_url_fetched_cached_and_refreshed_after_ttl(rsps, es384, make_verifier, sign, clock):
    rsps.get(JWKS_URL, json=es384.jwks())
    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks_url=JWKS_URL)], clock=clock, jwks_cache_ttl_s=600
    )
    assert verifier.verify(_bearer(sign(es384)), AUD)
    assert verifier.verify(_bearer(sign(es384)), AUD)
    assert len(rsps.calls) == 1
    clock.advance(601)
    # Token minted after the clock moved, so it is fresh for the verifier.
    token = sign(es384, extra_claims={"iat": int(clock.now), "exp": int(clock.now) + 300})
    assert verifier.verify(_bearer(token), AUD)
    assert len(rsps.calls) == 2


def test_stale_keys_kept_when_refresh_fails(rsps, es384, make_verifier, sign, clock):
    rsps.get(JWKS_URL, json=es384.jwks())
    verifier = make_verifier(
        [TrustedIssuer(iss=ISS, jwks_url=JWKS_URL)], clock=clock, jwks_cache_ttl_s=600
    )
    assert verifier.verify(_bearer(sign(es384)), AUD)
    clock.advance(601)
    rsps.replace(responses.GET, JWKS_URL, status=500)
    token = sign(es384, extra_claims={"iat": int(clock.now), "exp": int(clock.now) + 300})
    assert verifier.verify(_bearer(token), AUD)
    assert len(rsps.calls) == 2


def test_jwks_url_not_consulted_when_inline_key_matches(rsps, es384, make_verifier, sign):
    verifier = make_verifier([TrustedIssuer(iss=ISS, jwks=es384.jwks(), jwks_url=JWKS_URL)])
    assert verifier.verify(_bearer(sign(es384)), AUD)
    assert len(rsps.calls) == 0


# -- the sandbox issuer -----------------------------------------------------------------------


def test_sandbox_rotated_kid_looked_up_at_its_jku(
    rsps, sandbox_pem, make_verifier, assert_rejected
):
    from cds_service.security import sign_development_token

    rsps.get(SANDBOX_JKU, json=sandbox_issuer().jwks)
    verifier = make_verifier([sandbox_issuer()])
    token = sign_development_token(
        sandbox_pem, kid="rotated-kid", iss=SANDBOX_ISS, aud=AUD, jku=SANDBOX_JKU
    )
    assert_rejected(verifier, _bearer(token), "unknown-kid")
    assert [c.request.url for c in rsps.calls] == [SANDBOX_JKU]
