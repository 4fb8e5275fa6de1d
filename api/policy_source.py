"""Which policy set a command uses: `APEX_POLICIES` when set, else `./policies`
when it exists, else the default set shipped inside the package.

The shipped set is `api/default_policies`: in the repository a symbolic link to
`policies/` (one source of truth), in a built wheel a copy made at build time
(package data in pyproject.toml)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PACKAGED", "note_if_packaged", "policies_dir", "policies_problem"]

PACKAGED = Path(__file__).resolve().parent / "default_policies"


def policies_dir(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """The policy directory a command uses when it is given none."""
    env = os.environ if env is None else env
    if env.get("APEX_POLICIES"):
        return Path(env["APEX_POLICIES"]).expanduser()
    local = Path("policies") if cwd is None else cwd / "policies"
    return local if local.is_dir() else PACKAGED


def policies_problem(directory: Path, env: Mapping[str, str] | None = None) -> str | None:
    """Why `directory` cannot be used, with what to do about it; None when it exists."""
    if directory.is_dir():
        return None
    env = os.environ if env is None else env
    configured = env.get("APEX_POLICIES")
    if configured and Path(configured).expanduser() == directory:
        return (
            f"APEX_POLICIES={configured}: policy directory does not exist; point it at a "
            f"policy directory, or unset it to use ./policies or the packaged defaults "
            f"({PACKAGED})"
        )
    return f"{directory}: policy directory does not exist; the packaged defaults are in {PACKAGED}"


def note_if_packaged(directory: Path) -> None:
    """Say on standard error that the packaged defaults are in use: a user outside
    the repository should know which rules judge their orders."""
    if directory == PACKAGED:
        print(f"apex-oms: policies: packaged defaults ({PACKAGED})", file=sys.stderr)
