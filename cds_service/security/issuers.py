"""Configuration of the CDS Clients (JWT issuers) this service trusts.

CDS Hooks 2.0 says a service SHOULD keep an allowlist of ``iss`` values and of ``jku`` URLs and
must never fetch a ``jku`` that is not on it. ``TrustedIssuer`` is that allowlist entry: where the
issuer's public keys come from (inline, a file, or a fixed URL) and which ``jku`` URLs its tokens
may name. Validation happens here, at load time, so a typo fails at start-up rather than turning
into a stream of 401s.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cds_service import strict_json

SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"

_FIELDS = ("iss", "jwks", "jwks_file", "jwks_url", "jku_allowlist")


def _check_https_url(url: Any, what: str) -> None:
    """Key-set URLs must be absolute https URLs: keys fetched over http could be swapped."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{what} must be a non-empty string")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL: {url!r}")
    if parts.username or parts.password:
        raise ValueError(f"{what} must not contain credentials")


@dataclass(frozen=True)
class TrustedIssuer:
    """One trusted CDS Client.

    ``iss`` is compared by exact string equality with the token's ``iss`` claim. Keys are looked up
    by ``kid`` in ``jwks`` (inline), ``jwks_file`` and ``jwks_url`` (in that order); a token's
    ``jku`` header is honoured only when it names one of ``jku_allowlist`` exactly.
    """

    iss: str
    jwks: dict | None = None
    jwks_file: str | None = None
    jwks_url: str | None = None
    jku_allowlist: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.iss, str) or not self.iss.strip():
            raise ValueError("TrustedIssuer.iss must be a non-empty string")
        if isinstance(self.jku_allowlist, str):
            # tuple("https://...") would silently become a tuple of characters.
            raise ValueError("TrustedIssuer.jku_allowlist must be a list of URLs, not a string")
        allow = tuple(self.jku_allowlist)
        object.__setattr__(self, "jku_allowlist", allow)
        for url in allow:
            _check_https_url(url, "jku_allowlist entry")
        if self.jwks_url is not None:
            _check_https_url(self.jwks_url, "jwks_url")
        if self.jwks is not None and not isinstance(self.jwks, dict):
            raise ValueError("TrustedIssuer.jwks must be a JWKS object ({'keys': [...]})")
        if self.jwks_file is not None and (
            not isinstance(self.jwks_file, str) or not self.jwks_file
        ):
            raise ValueError("TrustedIssuer.jwks_file must be a non-empty path string")
        if self.jwks is None and self.jwks_file is None and self.jwks_url is None and not allow:
            raise ValueError(f"trusted issuer {self.iss!r} has no key source")


def _issuer_from_obj(obj: Any, base_dir: Path | None) -> TrustedIssuer:
    if not isinstance(obj, dict):
        raise ValueError("each issuer must be a JSON object")
    unknown = sorted(set(obj) - set(_FIELDS))
    if unknown:
        # Rejecting unknown fields catches typos such as "jwks_uri" that would otherwise leave an
        # issuer without keys.
        raise ValueError(f"unknown issuer field(s): {', '.join(unknown)}")
    if "iss" not in obj:
        raise ValueError("issuer entry without 'iss'")
    jwks_file = obj.get("jwks_file")
    if isinstance(jwks_file, str) and jwks_file and base_dir is not None:
        path = Path(jwks_file)
        if not path.is_absolute():
            jwks_file = str(base_dir / path)
    allow = obj.get("jku_allowlist", ())
    if not isinstance(allow, list | tuple):
        raise ValueError("jku_allowlist must be a JSON array of URLs")
    return TrustedIssuer(
        iss=obj["iss"],
        jwks=obj.get("jwks"),
        jwks_file=jwks_file,
        jwks_url=obj.get("jwks_url"),
        jku_allowlist=tuple(allow),
    )


def _issuers_from_obj(data: Any, base_dir: Path | None) -> list[TrustedIssuer]:
    if not isinstance(data, dict) or not isinstance(data.get("issuers"), list):
        raise ValueError('trusted issuer config must be {"issuers": [...]}')
    issuers = [_issuer_from_obj(item, base_dir) for item in data["issuers"]]
    seen: set[str] = set()
    for issuer in issuers:
        if issuer.iss in seen:
            raise ValueError(f"duplicate trusted issuer {issuer.iss!r}")
        seen.add(issuer.iss)
    return issuers


def _read_config(raw: bytes) -> Any:
    """The config's JSON value; a ValueError that says what is wrong (key material is never
    read from ambiguous JSON: a repeated member name stops startup)."""
    try:
        return strict_json.loads(raw)
    except strict_json.DuplicateKey as dup:
        raise ValueError(f"trusted issuer config repeats the member {str(dup)!r}") from None
    except ValueError as exc:
        raise ValueError(f"trusted issuer config is not valid JSON: {exc}") from None


def load_trusted_issuers(path: str | Path) -> list[TrustedIssuer]:
    """Read ``{"issuers": [{...}, ...]}`` from a JSON file.

    A relative ``jwks_file`` is resolved against the config file's directory, so a config and its
    key files can be moved together.
    """
    path = Path(path)
    return _issuers_from_obj(_read_config(path.read_bytes()), path.resolve().parent)


def issuers_from_env(value: str) -> list[TrustedIssuer]:
    """Parse the same JSON document given inline (e.g. an environment variable).

    A relative ``jwks_file`` here is relative to the process working directory.
    """
    return _issuers_from_obj(_read_config(value.encode("utf-8", "surrogatepass")), None)


def sandbox_issuer() -> TrustedIssuer:
    """The public CDS Hooks sandbox, with its published key set bundled (development/test only).

    The sandbox's private key is public, so anyone can mint tokens this issuer accepts: never enable
    it in production. The bundled key set lets the sandbox work offline; a rotated sandbox key is
    still found through the allowlisted ``jku``.
    """
    raw = resources.files("cds_service.security").joinpath("keys/sandbox-jwks.json").read_bytes()
    return TrustedIssuer(
        iss=SANDBOX_ISS, jwks=strict_json.loads(raw), jku_allowlist=(SANDBOX_JKU,)
    )
