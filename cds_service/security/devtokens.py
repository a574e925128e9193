"""Mint CDS Hooks client tokens for tests and the developer CLI.

This signs exactly the header and claims the CDS Hooks sandbox sends (``typ``/``kid``/optional
``jku``; ``iss aud iat exp jti``), so local requests exercise the same verification path as real
ones. It is a development aid: the only private keys it should ever see are throw-away keys and
the sandbox's *public* private key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from .jwks import ALG_KEY_TYPES


def sign_development_token(
    private_key_pem: str | bytes,
    *,
    kid: str,
    iss: str,
    aud: str | list[str],
    alg: str = "ES384",
    lifetime_s: int = 300,
    jku: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Return a compact JWS signed with ``private_key_pem``.

    ``iat`` is now, ``exp`` is ``iat + lifetime_s`` and ``jti`` a fresh uuid4. ``extra_claims`` are
    merged last, so they can override any of these; a value of ``None`` removes that claim (handy
    for negative tests).
    """
    if alg not in ALG_KEY_TYPES:
        raise ValueError(f"algorithm {alg!r} is not an allowed asymmetric JWS algorithm")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "iat": now,
        "exp": now + int(lifetime_s),
        "jti": str(uuid.uuid4()),
    }
    for name, value in (extra_claims or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    headers: dict[str, Any] = {"typ": "JWT", "kid": kid}
    if jku is not None:
        headers["jku"] = jku
    key = private_key_pem.encode("ascii") if isinstance(private_key_pem, str) else private_key_pem
    return jwt.encode(claims, key, algorithm=alg, headers=headers)
