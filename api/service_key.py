"""The service's own Ed25519 key, which signs the audit checkpoints
(engine/checkpoints.py): `$APEX_HOME/private/service.pem`, PKCS#8 PEM, mode 0600,
in a directory of mode 0700, created on the service's first start.

Replicas that share one database should share this key too (copy the file into
each replica's home before its first start): an auditor is given one public key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.signing.keys import KeyFileError, load_private_pem

__all__ = ["SERVICE_KEY_FILE", "load_service_key", "service_key", "service_key_path"]

SERVICE_KEY_FILE = "service.pem"


def service_key_path(home: Path) -> Path:
    return home / "private" / SERVICE_KEY_FILE


def service_key(home: Path) -> Ed25519PrivateKey:
    """The service key, created if there is none yet. Concurrent first starts
    agree on one key: each writes a complete key to a file of its own and links
    it into place, which fails for all but the first (no reader ever sees a
    half-written key); the others then read the winner's."""
    path = service_key_path(home)
    if not path.exists() and not path.is_symlink():
        _create(path)
    return load_private_pem(path, None)


def load_service_key(home: Path) -> Ed25519PublicKey | None:
    """The service's public key, or None when the service never started here
    (never creates one: a verifier must not mint the key it checks against)."""
    path = service_key_path(home)
    if not path.exists() and not path.is_symlink():
        return None
    return load_private_pem(path, None).public_key()


def _create(path: Path) -> None:
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError("key_file_missing", directory, f"cannot create: {exc}") from exc
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    draft = directory / f".{SERVICE_KEY_FILE}.{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(draft, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask may have narrowed it; exactly 0600
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)  # exclusive: another first start may have won
    except OSError as exc:
        raise KeyFileError("key_file_missing", path, f"cannot create: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            draft.unlink()
