"""The exception types the security package raises for tokens it cannot trust.

One type keeps the HTTP layer simple (any ``AuthError`` -> 401 with no detail, as the CDS Hooks
best-practice page recommends), while ``reason`` still lets operators see *why* in their logs.
The one exception is :class:`AuthUnavailable`: the service, not the token, failed, so the answer
is a 503 "retry later" rather than a 401 that tells the EHR its credentials are bad.
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


class AuthUnavailable(AuthError):
    """The token could not be checked because the service's own replay cache failed (its
    database locked, down or broken): refused, since checks must never be skipped, but as the
    service's fault. ``error`` is the failure's type name, for the log (never its message)."""

    def __init__(self, reason: str, *, error: str) -> None:
        super().__init__(reason)
        self.error = error
