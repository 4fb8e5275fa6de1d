"""Signing of the compliance configuration: keys and trust (this package's
`keys` and `trust`), and signing and verifying (`verify`)."""

from __future__ import annotations

from .keys import (
    KeyFileError,
    generate,
    key_id,
    load_private_pem,
    load_public_pem,
    parse_public_pem,
    public_pem,
)
from .trust import (
    Signer,
    Status,
    Trust,
    TrustFileError,
    load_trust,
    locked,
    save_trust,
    trust_path,
)

__all__ = [
    "KeyFileError",
    "Signer",
    "Status",
    "Trust",
    "TrustFileError",
    "generate",
    "key_id",
    "load_private_pem",
    "load_public_pem",
    "load_trust",
    "locked",
    "parse_public_pem",
    "public_pem",
    "save_trust",
    "trust_path",
]
