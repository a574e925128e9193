"""JSON Web Key Sets: parsing, turning a JWK into a verification key, and fetching over https.

Kept apart from the verifier because each piece is a separate trust decision:
- which JWKs are usable at all (public signing keys only),
- whether a JWK fits the algorithm the token claims (so an RSA key can never be used for an ES384
  token, nor a P-256 key for ES384),
- how remote key sets are fetched (https, timeout, no redirects, size cap, rate-limited refresh).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import requests
from urllib3.exceptions import HTTPError

from cds_service import strict_json
from cds_service.outbound_http import WatchedAdapter, deadline, pieces

from .errors import AuthError

log = logging.getLogger(__name__)

# Asymmetric JWS algorithms we know how to check, with the JWK kty (and curve) each one needs.
# Anything else ("none", HS*, ES256K, ...) cannot be configured.
ALG_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
}

# Private-key members of EC/RSA/OKP JWKs. A published key set must not contain them; if one does,
# the publisher has leaked its private key and the key must not be trusted.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")

MAX_JWKS_BYTES = 256 * 1024
MIN_RSA_BITS = 2048  # NIST SP 800-131A; PyJWT warns below this too

KeyIndex = dict[str, list[dict[str, Any]]]


def index_jwks(data: Any) -> KeyIndex:
    """Index a JWKS document by ``kid``.

    Keys without a string ``kid`` are skipped: CDS Hooks requires ``kid`` in every token header, so
    such keys can never be selected. Several keys under one ``kid`` are kept here and refused at
    use time (the spec says ``kid`` MUST be unique within the set).
    """
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('a JWKS must be a JSON object {"keys": [...]}')
    index: KeyIndex = {}
    for jwk in data["keys"]:
        if not isinstance(jwk, dict):
            raise ValueError("every JWKS entry must be a JSON object")
        kid = jwk.get("kid")
        if isinstance(kid, str) and kid:
            index.setdefault(kid, []).append(jwk)
    return index


def merge_indexes(*indexes: KeyIndex) -> KeyIndex:
    merged: KeyIndex = {}
    for index in indexes:
        for kid, jwks in index.items():
            merged.setdefault(kid, []).extend(jwks)
    return merged


def verification_key(jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
    """Build a PyJWK bound to ``alg`` after checking that the JWK is fit for it.

    Raises ``AuthError("key-alg-mismatch")`` when the key type, curve or the JWK's own ``alg`` does
    not fit, and ``AuthError("bad-key")`` for keys that are not public signature keys.
    """
    kty, crv = ALG_KEY_TYPES[alg]
    if jwk.get("kty") != kty:
        raise AuthError("key-alg-mismatch")
    if crv is not None and jwk.get("crv") != crv:
        raise AuthError("key-alg-mismatch")
    if "alg" in jwk and jwk["alg"] != alg:
        raise AuthError("key-alg-mismatch")
    if "use" in jwk and jwk["use"] != "sig":
        raise AuthError("bad-key")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise AuthError("bad-key")
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise AuthError("bad-key")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise AuthError("bad-key") from None
    # Checked here as well as by PyJWT (enforce_minimum_key_length), whose option only exists in
    # recent releases.
    if kty == "RSA" and getattr(key.key, "key_size", 0) < MIN_RSA_BITS:
        raise AuthError("bad-key")
    return key


@dataclass
class _CachedSet:
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: KeyIndex | None = None
    fetched_at: float = float("-inf")  # last successful fetch
    attempted_at: float = float("-inf")  # last attempt, successful or not


class _FetchError(Exception):
    pass


def key_set_session() -> requests.Session:
    """The session key sets are fetched with: its connections stop waiting for headers at the
    fetch's deadline (outbound_http), so a key server dripping them cannot hold a request."""
    session = requests.Session()
    session.mount("https://", WatchedAdapter())
    session.mount("http://", WatchedAdapter())
    return session


class JwksFetcher:
    """Fetches and caches remote key sets, one cache entry per URL.

    - A set is fetched on first use and kept for ``ttl_s``; after that it is re-fetched on the next
      use (a failed re-fetch keeps the stale set, so a client's JWKS outage does not become ours).
    - A ``kid`` missing from the cached set triggers one re-fetch (key rotation), but no URL is
      fetched more than once per ``min_refresh_interval_s``: otherwise a flood of tokens with random
      ``kid`` values would turn us into a request amplifier against the client's server.
    - Fetches use https only (checked at config time), the timeout, no redirects (a redirect could
      lead off the allowlisted URL) and a size cap.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout_s: float,
        ttl_s: float,
        min_refresh_interval_s: float,
        clock: Callable[[], float] = time.time,
        max_bytes: int = MAX_JWKS_BYTES,
    ) -> None:
        self._session = session
        self._timeout_s = timeout_s
        self._ttl_s = ttl_s
        self._min_refresh_interval_s = min_refresh_interval_s
        self._clock = clock
        self._max_bytes = max_bytes
        self._sets: dict[str, _CachedSet] = {}
        self._sets_lock = threading.Lock()

    def _entry(self, url: str) -> _CachedSet:
        with self._sets_lock:
            entry = self._sets.get(url)
            if entry is None:
                entry = self._sets[url] = _CachedSet()
            return entry

    def lookup(self, url: str, kid: str) -> list[dict[str, Any]]:
        """JWKs under ``kid`` at ``url`` (possibly empty); AuthError if the set cannot be had."""
        entry = self._entry(url)
        cached = entry.keys
        # One lock per URL: concurrent requests wait for one fetch instead of each starting one.
        # Those whose key is already held do not wait: a slow key server then holds up only the
        # request that refreshes the set, not every call of its issuer.
        if not entry.lock.acquire(blocking=cached is None or kid not in cached):
            return list(cached[kid])  # type: ignore[index]
        try:
            now = self._clock()
            refreshed = False
            if entry.keys is None or now - entry.fetched_at >= self._ttl_s:
                refreshed = self._maybe_refresh(url, entry, now)
            if entry.keys is None:
                raise AuthError("jwks-unavailable")
            if kid not in entry.keys and not refreshed:
                self._maybe_refresh(url, entry, now)
            return list(entry.keys.get(kid, ()))
        finally:
            entry.lock.release()

    def _maybe_refresh(self, url: str, entry: _CachedSet, now: float) -> bool:
        if now - entry.attempted_at < self._min_refresh_interval_s:
            return False
        entry.attempted_at = now
        try:
            entry.keys = self._fetch(url)
        except _FetchError as exc:
            log.warning("JWKS fetch from %s failed: %s", url, exc)
            return False
        entry.fetched_at = now
        log.info("JWKS fetched from %s (%d kid(s))", url, len(entry.keys))
        return True

    def _fetch(self, url: str) -> KeyIndex:
        started = time.monotonic()
        try:
            # The timeout bounds the whole fetch: headers through the session's watched
            # connections (outbound_http), the body below.
            with deadline(started + self._timeout_s):
                resp = self._session.get(
                    url,
                    timeout=self._timeout_s,
                    allow_redirects=False,
                    stream=True,
                    headers={"Accept": "application/jwk-set+json, application/json"},
                )
        except requests.RequestException as exc:
            raise _FetchError(type(exc).__name__) from None
        try:
            if resp.status_code != 200:
                raise _FetchError(f"HTTP {resp.status_code}")
            body = bytearray()
            try:
                for chunk in pieces(resp):
                    body.extend(chunk)
                    if len(body) > self._max_bytes:
                        raise _FetchError("response too large")
                    # The timeout bounds the whole body, not each read: a server dripping a
                    # byte at a time held the verifying request for minutes.
                    if time.monotonic() - started > self._timeout_s:
                        raise _FetchError("too slow")
            except (requests.RequestException, HTTPError, OSError) as exc:
                raise _FetchError(type(exc).__name__) from None
        finally:
            resp.close()
        try:
            return index_jwks(strict_json.loads(bytes(body)))
        except ValueError as exc:  # not JSON, a repeated member name, or not a key set
            raise _FetchError(f"not a JWKS: {type(exc).__name__}") from None
