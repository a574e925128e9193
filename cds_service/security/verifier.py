"""Verification of the ``Authorization: Bearer <JWT>`` that CDS Clients send (CDS Hooks 2.0).

Order of checks, cheapest and least trusting first:

1. ``Bearer <compact JWS>`` syntax, size cap, header and payload are JSON objects (duplicate JSON
   members refused, so no two parsers can disagree about a claim).
2. Unverified header: ``alg`` on the allowlist, ``typ`` is ``JWT``, ``kid`` present, no ``crit``.
3. Unverified ``iss``, used only to pick a trusted issuer (never trusted beyond that).
4. ``jku``: if present it must be on that issuer's allowlist (exact string), else refused without
   any fetch.
5. Key by ``kid`` from the issuer's own key sets, then from the allowlisted ``jku``; the JWK must
   fit the token's ``alg``; signature checked by PyJWT with exactly that algorithm.
6. Claims (now authenticated): ``iss aud exp iat jti`` required; ``aud`` contains one of the
   accepted audiences exactly; ``exp``/``iat``/``nbf`` with leeway; lifetime ``exp - iat`` capped.
7. ``jti`` replay check last, so a forged token can never burn a legitimate ``jti``.

Every failure raises ``AuthError(reason)``. Reasons (stable, for logs and tests):
``missing-authorization``, ``not-bearer``, ``malformed``, ``alg-not-allowed``, ``missing-typ``,
``bad-typ``, ``unsupported-header``, ``missing-kid``, ``missing-claim:<name>``,
``malformed-claim:<name>``, ``untrusted-issuer``, ``jku-not-allowed``, ``jwks-unavailable``,
``unknown-kid``, ``ambiguous-kid``, ``key-alg-mismatch``, ``bad-key``, ``bad-signature``,
``wrong-audience``, ``expired``, ``iat-in-future``, ``not-yet-valid``, ``lifetime-too-long``,
``replay``, ``replay-cache-error`` (raised as :class:`AuthUnavailable`: the service's fault).

``typ``: CDS Hooks 2.0 makes ``typ`` REQUIRED with the value ``JWT`` and the sandbox sends it, so it
is required by default (compared case-insensitively, per RFC 7515 §4.1.9). ``require_typ=False``
relaxes this to "if present it must be JWT" for clients that omit it.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import requests

from cds_service import strict_json

from .errors import AuthError, AuthUnavailable
from .issuers import TrustedIssuer
from .jwks import (
    ALG_KEY_TYPES,
    JwksFetcher,
    KeyIndex,
    index_jwks,
    key_set_session,
    merge_indexes,
    verification_key,
)
from .replay import ReplayCache

MAX_TOKEN_CHARS = 16 * 1024
MAX_JTI_CHARS = 256
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")

_B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class _IssuerKeys:
    issuer: TrustedIssuer
    static_keys: KeyIndex  # inline jwks + jwks_file, loaded once at construction


def _b64url_json(segment: str) -> dict[str, Any]:
    if not segment or not set(segment) <= _B64URL_CHARS:
        raise AuthError("malformed")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = strict_json.loads(raw)
    except (binascii.Error, ValueError):
        raise AuthError("malformed") from None
    if not isinstance(value, dict):
        raise AuthError("malformed")
    return value


def _numeric(payload: dict[str, Any], claim: str) -> float:
    value = payload[claim]  # strict_json refuses NaN, Infinity and numbers beyond a double
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"malformed-claim:{claim}")
    return float(value)


def _load_jwks_file(path: str) -> KeyIndex:
    return index_jwks(strict_json.loads(Path(path).read_bytes()))


class JwtVerifier:
    """Verifies CDS Hooks bearer tokens against a fixed set of trusted issuers.

    Configuration errors (an HS*/none algorithm, duplicate issuers, an unreadable ``jwks_file``)
    raise ``ValueError``/``OSError`` at construction, so a bad deployment fails at start-up.
    Instances are thread-safe.
    """

    def __init__(
        self,
        issuers: Sequence[TrustedIssuer],
        *,
        algorithms: Sequence[str] = ("ES384", "RS384"),
        leeway_s: float = 30,
        max_lifetime_s: float = 3600,
        replay_cache: ReplayCache,
        session: requests.Session | None = None,
        fetch_timeout_s: float = 3.0,
        clock: Callable[[], float] = time.time,
        require_typ: bool = True,
        jwks_cache_ttl_s: float = 3600.0,
        jwks_min_refresh_interval_s: float = 60.0,
    ) -> None:
        if isinstance(algorithms, str):
            raise ValueError("algorithms must be a sequence of names, not a string")
        algs = tuple(algorithms)
        if not algs:
            raise ValueError("at least one algorithm must be allowed")
        for alg in algs:
            if not isinstance(alg, str) or alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(
                    f"algorithm {alg!r} is refused: CDS Hooks forbids 'none' and symmetric "
                    "algorithms"
                )
            if alg not in ALG_KEY_TYPES:
                raise ValueError(f"unsupported algorithm {alg!r}")
        if leeway_s < 0 or max_lifetime_s <= 0 or fetch_timeout_s <= 0:
            raise ValueError("leeway_s must be >= 0, max_lifetime_s and fetch_timeout_s > 0")
        if replay_cache is None:
            raise ValueError("a replay cache is required")
        if not issuers:
            raise ValueError("at least one trusted issuer is required")

        self._algorithms = frozenset(algs)
        self._leeway_s = float(leeway_s)
        self._max_lifetime_s = float(max_lifetime_s)
        self._replay_cache = replay_cache
        self._clock = clock
        self._require_typ = require_typ
        self._issuers: dict[str, _IssuerKeys] = {}
        for issuer in issuers:
            if issuer.iss in self._issuers:
                raise ValueError(f"duplicate trusted issuer {issuer.iss!r}")
            parts: list[KeyIndex] = []
            if issuer.jwks is not None:
                parts.append(index_jwks(issuer.jwks))
            if issuer.jwks_file is not None:
                parts.append(_load_jwks_file(issuer.jwks_file))
            self._issuers[issuer.iss] = _IssuerKeys(issuer, merge_indexes(*parts))
        self._fetcher = JwksFetcher(
            session if session is not None else key_set_session(),
            timeout_s=fetch_timeout_s,
            ttl_s=jwks_cache_ttl_s,
            min_refresh_interval_s=jwks_min_refresh_interval_s,
            clock=clock,
        )

    # -- public ---------------------------------------------------------------------------------

    def verify(
        self, authorization_header: str | None, audience: str | Sequence[str]
    ) -> dict[str, Any]:
        """Return the token's claims, or raise ``AuthError``.

        ``audience`` must be the exact public URL of the endpoint being invoked (discovery, service
        or feedback URL), or several, one per public base URL the service is reachable at (the
        token must name one of them); the caller derives them from configuration, not from the
        request's Host. The token is checked once, whatever their number.
        """
        accepted = (audience,) if isinstance(audience, str) else tuple(audience)
        if not accepted or not all(isinstance(a, str) and a for a in accepted):
            raise ValueError("audience must be a non-empty string or a sequence of them")
        token = self._bearer_token(authorization_header)
        header, payload = self._parse(token)
        alg, kid = self._check_header(header)
        issuer_keys = self._trusted_issuer(payload)
        jwk = self._select_key(issuer_keys, header, kid)
        key = verification_key(jwk, alg)
        self._check_signature(token, key, alg)
        exp = self._check_claims(payload, accepted)
        self._check_replay(issuer_keys.issuer.iss, payload["jti"], exp)
        return payload

    def release(self, claims: dict[str, Any]) -> None:
        """Give back the ``jti`` of claims :meth:`verify` returned: their request did nothing
        (it was answered 503, "retry later"), so the same token may be sent again."""
        self._replay_cache.forget(claims["iss"], claims["jti"])

    # -- steps ----------------------------------------------------------------------------------

    @staticmethod
    def _bearer_token(authorization_header: str | None) -> str:
        if authorization_header is None:
            raise AuthError("missing-authorization")
        if not isinstance(authorization_header, str):
            raise AuthError("malformed")
        if not authorization_header.strip():
            raise AuthError("missing-authorization")
        parts = authorization_header.split()
        # The auth scheme is case-insensitive (RFC 7235 §2.1).
        if parts[0].lower() != "bearer":
            raise AuthError("not-bearer")
        if len(parts) != 2:
            raise AuthError("malformed")
        token = parts[1]
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("malformed")
        return token

    @staticmethod
    def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        segments = token.split(".")
        if len(segments) != 3:
            raise AuthError("malformed")  # also refuses JWE (5 segments)
        header = _b64url_json(segments[0])
        payload = _b64url_json(segments[1])
        # An empty signature segment is left to the alg check (so `alg: none` is reported as such)
        # and the signature check.
        if not set(segments[2]) <= _B64URL_CHARS:
            raise AuthError("malformed")
        return header, payload

    def _check_header(self, header: dict[str, Any]) -> tuple[str, str]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError("alg-not-allowed")
        if "typ" in header:
            typ = header["typ"]
            if not isinstance(typ, str) or typ.upper() != "JWT":
                raise AuthError("bad-typ")
        elif self._require_typ:
            raise AuthError("missing-typ")
        # We implement no JWS extensions; RFC 7515 says to reject tokens that need one. `b64: false`
        # (RFC 7797) would change what is signed, so refuse it too.
        if "crit" in header or "b64" in header:
            raise AuthError("unsupported-header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("missing-kid")
        return alg, kid

    def _trusted_issuer(self, payload: dict[str, Any]) -> _IssuerKeys:
        if "iss" not in payload:
            raise AuthError("missing-claim:iss")
        iss = payload["iss"]
        if not isinstance(iss, str):
            raise AuthError("malformed-claim:iss")
        issuer_keys = self._issuers.get(iss)
        if issuer_keys is None:
            raise AuthError("untrusted-issuer")
        return issuer_keys

    def _select_key(
        self, issuer_keys: _IssuerKeys, header: dict[str, Any], kid: str
    ) -> dict[str, Any]:
        issuer = issuer_keys.issuer
        jku: str | None = None
        if "jku" in header:
            jku = header["jku"]
            # Exact match only: no normalisation, no prefix match. A URL not on the list is never
            # fetched, whatever keys we may already hold.
            if not isinstance(jku, str) or jku not in issuer.jku_allowlist:
                raise AuthError("jku-not-allowed")

        # The issuer's own keys first (inline/file, then its fixed URL), then the allowlisted jku.
        candidates = issuer_keys.static_keys.get(kid, [])
        unavailable = False
        for url in (issuer.jwks_url, jku):
            if candidates or url is None:
                continue
            try:
                candidates = self._fetcher.lookup(url, kid)
            except AuthError:
                unavailable = True
        if not candidates:
            raise AuthError("jwks-unavailable" if unavailable else "unknown-kid")
        if len(candidates) > 1:
            raise AuthError("ambiguous-kid")
        return candidates[0]

    @staticmethod
    def _check_signature(token: str, key: jwt.PyJWK, alg: str) -> None:
        try:
            jwt.PyJWS().decode_complete(
                token,
                key=key,
                algorithms=[alg],
                options={"verify_signature": True, "enforce_minimum_key_length": True},
            )
        except jwt.InvalidSignatureError:
            raise AuthError("bad-signature") from None
        except jwt.InvalidKeyError:
            raise AuthError("bad-key") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("key-alg-mismatch") from None
        except jwt.PyJWTError:
            raise AuthError("malformed") from None

    def _check_claims(self, payload: dict[str, Any], accepted: tuple[str, ...]) -> float:
        for claim in REQUIRED_CLAIMS:
            if claim not in payload:
                raise AuthError(f"missing-claim:{claim}")
        exp = _numeric(payload, "exp")
        iat = _numeric(payload, "iat")
        jti = payload["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise AuthError("malformed-claim:jti")

        aud = payload["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if (
            not isinstance(audiences, list)
            or not audiences
            or not all(isinstance(a, str) for a in audiences)
        ):
            raise AuthError("malformed-claim:aud")
        if not any(a in audiences for a in accepted):
            raise AuthError("wrong-audience")

        now = self._clock()
        leeway = self._leeway_s
        if now >= exp + leeway:
            raise AuthError("expired")
        if iat > now + leeway:
            raise AuthError("iat-in-future")
        if "nbf" in payload and _numeric(payload, "nbf") > now + leeway:
            raise AuthError("not-yet-valid")
        if exp < iat:
            raise AuthError("malformed-claim:exp")
        if exp - iat > self._max_lifetime_s:
            raise AuthError("lifetime-too-long")
        return exp

    def _check_replay(self, iss: str, jti: str, exp: float) -> None:
        try:
            is_new = self._replay_cache.add_if_new(iss, jti, exp + self._leeway_s)
        except Exception as exc:  # fail closed: an unusable cache must not disable replay checks
            # Logged once, by the HTTP layer, with the error's type (never its message).
            raise AuthUnavailable("replay-cache-error", error=type(exc).__name__) from None
        if not is_new:
            raise AuthError("replay")
