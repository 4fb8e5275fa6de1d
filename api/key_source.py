"""Where the key commands read and write: the trusted public keys and trust
file in `APEX_KEYS` (default `./keys`, as the policies are `./policies`), and a
signer's private key in `$APEX_HOME/private`, outside any repository."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .settings import Settings

__all__ = ["keys_dir", "private_dir"]


def keys_dir(env: Mapping[str, str] | None = None) -> Path:
    """The keys directory: `APEX_KEYS` when set, else `./keys`."""
    return Settings.from_env(None if env is None else dict(env)).keys


def private_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where private keys are kept: `$APEX_HOME/private` (the data directory the
    service uses, default ~/.apex-oms)."""
    return Settings.from_env(None if env is None else dict(env)).home / "private"
