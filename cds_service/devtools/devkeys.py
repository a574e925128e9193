"""A local development issuer: a key pair made on first use, never committed, never shipped.

The development profile trusts it (beside the public CDS Hooks sandbox), and ``hypermobility-cds
fire`` signs its requests with it, so a developer can exercise the real JWT path on one machine
without anyone's private key in the repository. Production never loads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_service.security import TrustedIssuer, sign_development_token

DEV_ISSUER = "urn:hypermobility-cds:development-client"
DEV_KID = "hypermobility-cds-dev-1"
DEFAULT_DIR = Path("var") / "dev-issuer"


def key_dir() -> Path:
    return Path(os.environ.get("CDS_DEV_KEY_DIR", DEFAULT_DIR))


def ensure_dev_keys(directory: Path | None = None) -> Path:
    """Create ``private.pem`` and ``jwks.json`` in ``directory`` unless they exist."""
    directory = directory or key_dir()
    private_path, jwks_path = directory / "private.pem", directory / "jwks.json"
    if private_path.exists() and jwks_path.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_path.touch(mode=0o600)
    private_path.write_bytes(pem)
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update(kid=DEV_KID, alg="ES384", use="sig")
    jwks_path.write_text(json.dumps({"keys": [jwk]}, indent=1))
    return directory


def dev_issuer(directory: Path | None = None) -> TrustedIssuer:
    directory = ensure_dev_keys(directory)
    return TrustedIssuer(iss=DEV_ISSUER, jwks_file=str((directory / "jwks.json").resolve()))


def dev_token(audience: str, directory: Path | None = None) -> str:
    directory = ensure_dev_keys(directory)
    pem = (directory / "private.pem").read_bytes()
    return sign_development_token(pem, kid=DEV_KID, iss=DEV_ISSUER, aud=audience)
