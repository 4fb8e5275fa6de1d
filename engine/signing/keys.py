"""Ed25519 keys of compliance signers: key ids, PEM files, and new key pairs.

A key id is the hex sha256 of the raw 32-byte public key (SPEC section 12), so
anyone can recompute it from a PEM file with OpenSSL alone:
`openssl pkey -pubin -in keys/alice.pem -outform DER | tail -c 32 | sha256sum`.

Private keys are PKCS#8 PEM, encrypted when a passphrase is given, created with
mode 0600 from the first byte (never chmod after the fact: a reader could open
the file in between), and a private key that group or others may read is
refused, as ssh refuses one: a key that others could have copied proves nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..errors import ApexError

__all__ = [
    "KEY_NAME",
    "MAX_KEY_FILE_BYTES",
    "KeyFileError",
    "generate",
    "key_id",
    "load_private_pem",
    "load_public_pem",
    "parse_public_pem",
    "public_pem",
]

# a signer's name: also its file name (NAME.pem), so never a path
KEY_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# an Ed25519 PEM is a few hundred bytes; anything much larger is not a key
MAX_KEY_FILE_BYTES = 16 * 1024


class KeyFileError(ApexError):
    """A key file cannot be used. `code` says why (stable), `path` names the file:
    key_file_malformed, key_file_missing, key_not_ed25519, key_file_permissions,
    key_passphrase, key_exists, key_name_invalid."""

    code = "key_file_malformed"

    def __init__(self, code: str, path: Path | str, detail: str) -> None:
        self.code = code
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{path}: {code}: {detail}")


def key_id(public_key: Ed25519PublicKey) -> str:
    """The hex sha256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of a public key (what `keys/NAME.pem` holds)."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def parse_public_pem(data: bytes, path: Path | str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes; `path` only names them in errors."""
    if b"PRIVATE KEY" in data:
        # never echo it back, and say plainly what went wrong
        raise KeyFileError(
            "key_file_malformed", path, "holds a private key; a public key file holds "
            "a PUBLIC KEY (SubjectPublicKeyInfo) PEM"
        )  # fmt: skip
    try:
        key = serialization.load_pem_public_key(data)
    except UnsupportedAlgorithm as exc:
        raise KeyFileError("key_not_ed25519", path, f"want an Ed25519 key, got {exc}") from None
    except (ValueError, TypeError):
        raise KeyFileError(
            "key_file_malformed", path, "not a PUBLIC KEY (SubjectPublicKeyInfo) PEM"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError("key_not_ed25519", path, f"want an Ed25519 key, got {_kind(key)}")
    return key


def load_public_pem(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a SubjectPublicKeyInfo PEM file."""
    return parse_public_pem(_read(path), path)


def load_private_pem(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PKCS#8 PEM file that only its owner can read.
    A passphrase given for an unencrypted key is not needed and is ignored."""
    data = _read(path, private=True)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    if encrypted and not passphrase:
        raise KeyFileError("key_passphrase", path, "the key is encrypted; give its passphrase")
    try:
        key = serialization.load_pem_private_key(data, passphrase if encrypted else None)
    except UnsupportedAlgorithm as exc:
        raise KeyFileError("key_not_ed25519", path, f"want an Ed25519 key, got {exc}") from None
    except (ValueError, TypeError):
        if encrypted:
            raise KeyFileError(
                "key_passphrase", path, "wrong passphrase (or a damaged encrypted key)"
            ) from None
        raise KeyFileError("key_file_malformed", path, "not a PKCS#8 PRIVATE KEY PEM") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError("key_not_ed25519", path, f"want an Ed25519 key, got {_kind(key)}")
    return key


def generate(
    name: str, private_dir: Path, keys_dir: Path, passphrase: bytes | None
) -> tuple[str, Path, Path]:
    """A new key pair: the private key to `private_dir/NAME.pem` (mode 0600,
    PKCS#8, encrypted when a passphrase is given) and the public key to
    `keys_dir/NAME.pem`. Refuses to overwrite either file. Returns the key id
    and both paths."""
    if not KEY_NAME.fullmatch(name) or name in {".", ".."}:
        raise KeyFileError(
            "key_name_invalid", name, "a key name is 1 to 64 of A-Z a-z 0-9 . _ -"
        )  # fmt: skip
    private_path = private_dir / f"{name}.pem"
    public_path = keys_dir / f"{name}.pem"
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise KeyFileError("key_exists", path, "a key of this name exists; never overwritten")
    _make_dir(private_dir, 0o700)
    _make_dir(keys_dir, 0o755)
    private_key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _write_new(private_path, pem, 0o600)
    try:
        _write_new(public_path, public_pem(private_key.public_key()), 0o644)
    except BaseException:
        private_path.unlink()  # ours, just made: no half pair left behind
        raise
    return key_id(private_key.public_key()), private_path, public_path


def _make_dir(path: Path, mode: int) -> None:
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError("key_file_missing", path, f"cannot create the directory: {exc}") from exc


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start; fail if anything is there already
    (O_EXCL, O_NOFOLLOW: not even a dangling link is followed)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise KeyFileError(
            "key_exists", path, "a key of this name exists; never overwritten"
        ) from None
    except OSError as exc:
        raise KeyFileError("key_file_missing", path, f"cannot create: {exc}") from exc
    try:
        # the umask may have narrowed the mode; a private key must be exactly 0600
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink()
        raise
    os.close(fd)


def _read(path: Path, private: bool = False) -> bytes:
    """The bytes of a key file. The checks (a regular file, its size, and for a
    private key its mode) are made on the open descriptor, so the file checked is
    the file read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise KeyFileError("key_file_missing", path, "no such file") from None
    except OSError as exc:
        raise KeyFileError("key_file_missing", path, f"cannot read: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise KeyFileError("key_file_malformed", path, "not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if private and info.st_mode & 0o077:
            raise KeyFileError(
                "key_file_permissions",
                path,
                f"mode {stat.S_IMODE(info.st_mode):04o} lets group or others read it; want "
                f"0600 (chmod 600 {path}), and treat the key as exposed if it was shared",
            )
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(
                "key_file_malformed",
                path,
                f"{info.st_size} bytes; a key file is at most {MAX_KEY_FILE_BYTES} bytes",
            )
        try:
            return handle.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise KeyFileError("key_file_missing", path, f"cannot read: {exc.strerror}") from None


def _kind(key: object) -> str:
    """A key's algorithm as a person reads it: 'RSAPublicKey' -> 'RSA'."""
    name = type(key).__name__.lstrip("_")
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    return name or "an unknown key type"
