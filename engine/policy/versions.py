"""Every policy version ever in force, kept by its digests, so that an old
decision can be judged again under its own rules (`apex-oms audit replay`).

A version is the rule files' text and `compliance.yaml`'s, exactly as read: the
policy digest is taken over the rule files' names and bytes and the compliance
digest over `compliance.yaml`'s bytes (engine/policy/loader.py), so writing the
texts back into a directory and loading it gives the same digests, which
`load_version` checks. The store keeps them (`PolicyArchive`, implemented by
adapters/sql/policy_versions.py); nothing here knows SQL.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ..canonical import sha256_hex
from .loader import COMPLIANCE_FILE, LoadedPolicies, load_policies, rule_files

__all__ = ["PolicyArchive", "PolicyVersion", "VersionUnusable", "load_version", "read_version"]


class VersionUnusable(Exception):
    """A kept version that cannot be loaded again (its digests, or the loader)."""


@dataclass(frozen=True)
class PolicyVersion:
    policy_digest: str
    compliance_digest: str
    files: dict[str, str]  # rule file name -> its text
    compliance: str  # compliance.yaml's text

    @property
    def key(self) -> tuple[str, str]:
        return self.policy_digest, self.compliance_digest


class PolicyArchive(Protocol):
    """The store's policy versions, by (policy digest, compliance digest)."""

    def keep(self, version: PolicyVersion, at: datetime) -> bool:
        """Keep `version` unless kept already; whether it was new."""
        ...

    def get(self, policy_digest: str, compliance_digest: str) -> PolicyVersion | None: ...


def read_version(directory: Path, loaded: LoadedPolicies) -> PolicyVersion | None:
    """The texts of the set `loaded` was read from `directory`, or None when the
    directory no longer holds exactly that set (it changed since it was loaded)
    or a file is not UTF-8 text."""
    try:
        compliance_raw = (directory / COMPLIANCE_FILE).read_bytes()
        raws = {path.name: path.read_bytes() for path in rule_files(directory)}
        files = {name: raw.decode("utf-8") for name, raw in raws.items()}
        compliance = compliance_raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    version = PolicyVersion(
        policy_digest=_rules_digest(raws),
        compliance_digest="sha256:" + sha256_hex(compliance_raw),
        files=files,
        compliance=compliance,
    )
    policies = loaded.policies
    if version.key != (policies.policy_digest, policies.compliance_digest):
        return None
    return version


def _rules_digest(raws: dict[str, bytes]) -> str:
    # as the loader's: each file's name and the sha256 of its bytes, in name order
    digest = hashlib.sha256()
    for name in sorted(raws):
        digest.update(f"{name}\n{sha256_hex(raws[name])}\n".encode())
    return "sha256:" + digest.hexdigest()


def load_version(version: PolicyVersion) -> LoadedPolicies:
    """The kept version loaded again, with its own digests; `VersionUnusable` when
    it does not load or its digests are not the ones it was kept under. Loaded
    without the required checks of today: it judged under those of its day."""
    with tempfile.TemporaryDirectory(prefix="apex-policy-") as name:
        directory = Path(name)
        for file, text in version.files.items():
            if "/" in file or "\\" in file or file.startswith("."):
                raise VersionUnusable(f"a kept rule file has an unsafe name: {file!r}")
            (directory / file).write_text(text, encoding="utf-8", newline="")
        (directory / COMPLIANCE_FILE).write_text(version.compliance, encoding="utf-8", newline="")
        try:
            loaded = load_policies(directory, require=())
        except Exception as exc:
            raise VersionUnusable(f"does not load again: {exc}") from exc
    got = (loaded.policies.policy_digest, loaded.policies.compliance_digest)
    if got != version.key:
        raise VersionUnusable(f"digests differ (want: {version.key}, got: {got})")
    return loaded
