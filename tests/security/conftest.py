"""Shared fixtures for the security tests: throw-away key pairs, a fake clock, verifier factories.

Everything here is exposed as fixtures (not importable helpers) so test modules in other rooms can
never collide with ours on a module name.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.security import (
    AuthError,
    JwtVerifier,
    MemoryReplayCache,
    TrustedIssuer,
    sign_development_token,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SPEC = REPO_ROOT.parent / "shared" / "spec"
SANDBOX_PEM = SHARED_SPEC / "sandbox-ecprivkey.pem"


@dataclass(frozen=True)
class KeyPair:
    alg: str
    kid: str
    private_pem: bytes
    public_jwk: dict[str, Any]

    def jwks(self, **overrides: Any) -> dict[str, Any]:
        return {"keys": [{**self.public_jwk, **overrides}]}


def _pem(private_key: Any) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_keypair(alg: str, kid: str | None = None, *, rsa_bits: int = 2048) -> KeyPair:
    kid = kid or str(uuid.uuid4())
    if alg.startswith("ES"):
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
        private = ec.generate_private_key(curve)
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk = {**jwk, "kid": kid, "use": "sig", "alg": alg}
    return KeyPair(alg, kid, _pem(private), jwk)


@pytest.fixture(scope="session")
def es384() -> KeyPair:
    return make_keypair("ES384")


@pytest.fixture(scope="session")
def rs384() -> KeyPair:
    return make_keypair("RS384")


@pytest.fixture(scope="session")
def keypair_factory() -> Callable[..., KeyPair]:
    return make_keypair


@pytest.fixture(scope="session")
def sandbox_pem() -> bytes:
    if not SANDBOX_PEM.is_file():
        pytest.skip(f"sandbox private key not found at {SANDBOX_PEM} (shared reference missing)")
    return SANDBOX_PEM.read_bytes()


@pytest.fixture(scope="session")
def sandbox_kid() -> str:
    from cds_service.security import sandbox_issuer

    (jwk,) = sandbox_issuer().jwks["keys"]
    return jwk["kid"]


@pytest.fixture(scope="session")
def shared_sandbox_jwks_path() -> Path:
    path = SHARED_SPEC / "sandbox-jwks.json"
    if not path.is_file():
        pytest.skip(f"shared sandbox JWKS not found at {path}")
    return path


class FakeClock:
    """A settable clock starting at the real time, so tokens minted 'now' are valid."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    import time

    return FakeClock(time.time())


@pytest.fixture
def make_verifier() -> Callable[..., JwtVerifier]:
    def factory(issuers: list[TrustedIssuer], **kwargs: Any) -> JwtVerifier:
        kwargs.setdefault("replay_cache", MemoryReplayCache())
        return JwtVerifier(issuers, **kwargs)

    return factory


@pytest.fixture
def sign(request: pytest.FixtureRequest) -> Callable[..., str]:
    """sign(keypair, **kwargs) -> token.

    kid/alg default to the key pair's; iss/aud default to the requesting test module's ``ISS`` and
    ``AUD`` constants (modules define their own, so nothing has to be imported from here).
    """

    def _sign(keypair: KeyPair, **kwargs: Any) -> str:
        kwargs.setdefault("kid", keypair.kid)
        kwargs.setdefault("iss", request.module.ISS)
        kwargs.setdefault("aud", request.module.AUD)
        kwargs.setdefault("alg", keypair.alg)
        return sign_development_token(keypair.private_pem, **kwargs)

    return _sign


@pytest.fixture
def assert_rejected(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Callable[..., AuthError]:
    """Assert verify() raises AuthError(reason) and that nothing leaks the token."""

    def _assert(
        verifier: JwtVerifier, header: str | None, reason: str, audience: str | None = None
    ) -> AuthError:
        caplog.set_level(logging.DEBUG)
        with pytest.raises(AuthError) as info:
            verifier.verify(header, audience or request.module.AUD)
        err = info.value
        assert err.reason == reason
        token = header.split()[-1] if header and header.split() else None
        if token and len(token) > 8:
            assert token not in str(err)
            assert token not in repr(err)
            assert token not in caplog.text
            # Signature segment alone must not leak either.
            sig = token.rsplit(".", 1)[-1]
            if len(sig) > 8:
                assert sig not in str(err) and sig not in caplog.text
        assert err.__cause__ is None
        return err

    return _assert
