"""Which FHIR servers this service may contact (SSRF defence).

A CDS Hooks request names its own ``fhirServer`` and we then send HTTP requests there, sometimes
with a bearer token. Anyone who can reach the service endpoint could otherwise make us call
internal addresses (cloud metadata, admin ports) or hand the EHR's token to a look-alike host.
So every ``fhirServer`` is checked against an operator-configured allowlist before any call.

Prefixes are compared on *parsed* components, never as raw strings: a naive ``startswith``
would let ``https://fhir.example.org.evil.com`` or ``https://fhir.example.orgx`` through an
allowlist entry ``https://fhir.example.org``. The same component comparison
(:func:`is_under_base`) is reused by the FHIR client to decide whether a paging link or a
redirect stays on the server we were allowed to contact.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = [
    "FhirServerRefused",
    "check_fhir_server",
    "is_under_base",
    "validate_allowlist",
]

log = logging.getLogger(__name__)

WILDCARD = "*"
"""Allowlist entry that admits any server passing the scheme rule. Development only: it turns
the allowlist off, so a deployment reachable by untrusted callers must never use it."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
# DNS names only (letters, digits, hyphen, dots). Percent-escapes, backslashes, spaces and the
# like are refused outright: different URL parsers disagree about them, and such disagreement
# is exactly what SSRF bypasses exploit.
_HOSTNAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})(?:\.[a-z0-9](?:[a-z0-9-]{0,62}))*\.?$")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class FhirServerRefused(Exception):
    """The requested FHIR server is not one we may contact.

    ``reason`` is meant for logs and error bodies; it never contains a token and does not echo
    the URL (which the caller already has).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Origin:
    """Parsed, comparison-ready form of a URL: lower-case scheme/host, explicit port, path."""

    scheme: str
    host: str  # lower case; IPv6 without brackets
    port: int
    path: str  # no trailing slash; "" for the root
    explicit_port: bool

    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = ""
        if self.explicit_port and self.port != _DEFAULT_PORTS[self.scheme]:
            port = f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"


def _parse(url: str, *, allow_query: bool) -> _Origin:
    """Parse and sanity-check an absolute http(s) URL, raising FhirServerRefused on anything odd.

    ``allow_query`` is False for base URLs (a query string there would corrupt every relative
    query appended to it) and True for paging/redirect targets, which carry their own queries.
    """
    if not isinstance(url, str) or not url:
        raise FhirServerRefused("the FHIR server URL is empty or not a string")
    if _FORBIDDEN_CHARS.search(url):
        raise FhirServerRefused("the FHIR server URL contains whitespace, control or '\\' chars")
    if "#" in url:
        raise FhirServerRefused("the FHIR server URL must not contain a fragment")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FhirServerRefused(f"the FHIR server URL cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise FhirServerRefused("the FHIR server URL must use https")
    if "@" in parts.netloc:
        raise FhirServerRefused("the FHIR server URL must not contain user info (user:pass@)")
    if parts.query and not allow_query:
        raise FhirServerRefused("the FHIR server base URL must not contain a query string")
    host = (parts.hostname or "").lower()
    if not host:
        raise FhirServerRefused("the FHIR server URL has no host")
    if "%" in host or (not _is_ip_literal(host) and not _HOSTNAME_RE.match(host)):
        raise FhirServerRefused("the FHIR server host name contains characters not allowed")
    path = parts.path
    for segment in path.split("/"):
        # requests/urllib3 remove dot segments before sending, so "/fhir/../admin" would leave
        # the allowed path prefix after our check. Encoded forms are refused for the same reason,
        # and so are the forms servers resolve themselves: a dot segment with path parameters
        # ("..;/", which Tomcat, so HAPI FHIR, reads as "../"), and an encoded "/" or "\"
        # inside a segment ("x%2f..%2fadmin", for servers that decode before routing).
        decoded = unquote(segment)
        if decoded.split(";", 1)[0] in {".", ".."}:
            raise FhirServerRefused("the FHIR server URL path must not contain '.' or '..'")
        if "/" in decoded or "\\" in decoded:
            raise FhirServerRefused("the FHIR server URL path must not encode '/' or '\\'")
    return _Origin(
        scheme=scheme,
        host=host,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        path=path.rstrip("/"),
        explicit_port=port is not None,
    )


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Only literal loopback addresses and the name ``localhost`` count.

    Other names are not resolved here: a DNS answer could change between this check and the
    connection, so resolving would give a false sense of safety.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _path_under(path: str, prefix: str) -> bool:
    """True if ``path`` equals ``prefix`` or continues it after a '/' (segment boundary)."""
    prefix = prefix.rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def _same_origin(a: _Origin, b: _Origin) -> bool:
    return a.scheme == b.scheme and a.host == b.host and a.port == b.port


def _parse_entry(entry: str) -> _Origin | None:
    try:
        return _parse(entry, allow_query=False)
    except FhirServerRefused:
        return None


def validate_allowlist(allowlist: Sequence[str], *, allow_loopback_http: bool) -> list[str]:
    """Return the allowlist entries that can never match (so app start-up can fail loudly):
    those that are no URL prefix, and plain-http ones that :func:`check_fhir_server`'s scheme
    rule refuses whatever the allowlist says.

    An invalid entry is silently ineffective in :func:`check_fhir_server` (it refuses rather
    than crashing a clinical request), which is why configuration should be checked here once.
    """
    if isinstance(allowlist, str):
        return [allowlist]

    def never_matches(entry: str) -> bool:
        origin = _parse_entry(entry)
        return origin is None or (
            origin.scheme == "http" and not (allow_loopback_http and is_loopback(origin.host))
        )

    return [e for e in allowlist if e != WILDCARD and never_matches(e)]


def check_fhir_server(url: str, allowlist: Sequence[str], *, allow_loopback_http: bool) -> str:
    """Return the normalised base URL (no trailing slash) of an allowed FHIR server, or raise.

    Rules: https only, except plain http to a loopback literal/``localhost`` when
    ``allow_loopback_http`` (local development); no user info, fragment or query string; no dot
    segments in the path; and the URL must lie under an allowlist entry, compared on scheme,
    host (case-insensitive), port (default ports made explicit) and path on a segment boundary.
    An entry ``*`` admits anything that passes the scheme rule (development only). An empty
    allowlist refuses everything.

    The normalised form has a lower-case scheme and host, omits a default port, and has no
    trailing slash, so ``base + "/" + relative_query`` is always well formed.
    """
    if isinstance(allowlist, str):
        # A bare string is a configuration mistake (it would be iterated char by char).
        raise TypeError("allowlist must be a sequence of URL prefixes, not a string")
    origin = _parse(url, allow_query=False)
    if origin.scheme == "http" and not (allow_loopback_http and is_loopback(origin.host)):
        if allow_loopback_http:
            raise FhirServerRefused("plain http is only allowed for loopback hosts")
        raise FhirServerRefused("the FHIR server URL must use https")
    if not allowlist:
        raise FhirServerRefused("no FHIR servers are allowed (empty allowlist)")
    for entry in allowlist:
        if entry == WILDCARD:
            return origin.base_url()
        allowed = _parse_entry(entry)
        if allowed is None:
            log.warning("ignoring invalid FHIR server allowlist entry")
            continue
        if _same_origin(origin, allowed) and _path_under(origin.path, allowed.path):
            return origin.base_url()
    raise FhirServerRefused("the FHIR server is not on the allowlist")


def is_under_base(url: str, base_url: str) -> bool:
    """True if absolute ``url`` points at ``base_url`` or below it (same scheme/host/port, path
    under the base path on a segment boundary, no user info or fragment, no dot segments).

    Used before following a ``next`` link or a redirect, so that neither the token nor our
    requests go anywhere the original server check did not approve.
    """
    try:
        target = _parse(url, allow_query=True)
        base = _parse(base_url, allow_query=False)
    except FhirServerRefused:
        return False
    return _same_origin(target, base) and _path_under(target.path, base.path)
