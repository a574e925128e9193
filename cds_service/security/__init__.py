"""CDS Hooks JWT verification (CDS Hooks 2.0 "Trusting CDS Clients"), free of any web framework.

The HTTP layer calls ``JwtVerifier.verify(request.headers.get("Authorization"), audience)`` and
answers 401 without detail on ``AuthError`` (503 on ``AuthUnavailable``, the service's own failure);
``AuthError.reason`` is what goes to the log.
"""

from .devtokens import sign_development_token
from .errors import AuthError, AuthUnavailable
from .issuers import (
    SANDBOX_ISS,
    SANDBOX_JKU,
    TrustedIssuer,
    issuers_from_env,
    load_trusted_issuers,
    sandbox_issuer,
)
from .replay import MemoryReplayCache, ReplayCache, SqliteReplayCache
from .verifier import JwtVerifier

__all__ = [
    "SANDBOX_ISS",
    "SANDBOX_JKU",
    "AuthError",
    "AuthUnavailable",
    "JwtVerifier",
    "MemoryReplayCache",
    "ReplayCache",
    "SqliteReplayCache",
    "TrustedIssuer",
    "issuers_from_env",
    "load_trusted_issuers",
    "sandbox_issuer",
    "sign_development_token",
]
