"""The single exception type the security package raises for untrusted tokens.

One type keeps the HTTP layer simple (any ``AuthError`` -> 401 with no detail, as the CDS Hooks
best-practice page recommends), while ``reason`` still lets operators see *why* in their logs.
"""

from __future__ import annotations


class AuthError(Exception):
    """A bearer token was missing or must not be trusted.

    ``reason`` is a short, machine-readable string such as ``"bad-signature"`` or
    ``"missing-claim:jti"``. It is safe to log: it never contains the token or any value copied
    from it. The exception message is the reason itself, for the same reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
