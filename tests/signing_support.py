"""Compliance officers for tests: keys made here, a trust file, and a copy of the
policies pinned and signed by them (never the repository's keys/ or policies/)."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.policy.loader import rules_digest
from engine.signing import Signer, Trust, key_id, public_pem, save_trust
from engine.signing.pin import pin_policy_digest
from engine.signing.verify import sign

__all__ = ["REPO_POLICIES", "Officers", "officers"]

REPO_POLICIES = Path(__file__).resolve().parents[1] / "policies"
SIGNED_AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@dataclass
class Officers:
    """Trusted signers (`keys` holds their public keys and trust.yaml) and a policy
    directory they sign."""

    policies: Path
    keys: Path
    private: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def keyid(self, name: str) -> str:
        return key_id(self.private[name].public_key())

    @property
    def config(self) -> Path:
        return self.policies / "compliance.yaml"

    @property
    def sig_file(self) -> Path:
        return self.policies / "compliance.sig.json"

    def pin(self) -> None:
        """Pin the rules now in the directory."""
        self.config.write_bytes(
            pin_policy_digest(self.config.read_bytes(), rules_digest(self.policies))
        )

    def set_version(self, version: int, expires: str | None = None) -> None:
        text = self.config.read_text("utf-8")
        text = re.sub(r"(?m)^version: .*$", f"version: {version}", text)
        if expires is not None:
            text = re.sub(r"(?m)^expires: .*$", f'expires: "{expires}"', text)
        self.config.write_text(text, "utf-8")

    def sign(self, *names: str, fresh: bool = False) -> None:
        """Add each named officer's signature over compliance.yaml as it is now."""
        current = (
            None if fresh or not self.sig_file.exists() else json.loads(self.sig_file.read_bytes())
        )
        for name in names:
            current, _ = sign(current, self.config.read_bytes(), self.private[name], name,
                              SIGNED_AT)  # fmt: skip
        self.sig_file.write_text(json.dumps(current, indent=2), "utf-8")

    def trust(self, threshold: int, *names: str, revoked: tuple[str, ...] = ()) -> None:
        """Write trust.yaml: `names` trusted (default every officer), `revoked` by name."""
        chosen = names or tuple(self.private)
        signers = tuple(Signer(name=n, keyid=self.keyid(n), pem=f"{n}.pem") for n in chosen)
        save_trust(
            self.keys,
            Trust(threshold=threshold, signers=signers,
                  revoked=tuple(self.keyid(n) for n in revoked)),
        )  # fmt: skip

    def write_private(self, name: str, path: Path) -> Path:
        """The officer's private key as a PKCS#8 PEM file (0600)."""
        pem = self.private[name].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return path


def officers(
    root: Path,
    names: tuple[str, ...] = ("alice", "bob", "carol"),
    threshold: int = 2,
    *,
    signed_by: tuple[str, ...] = ("alice", "bob"),
    source: Path = REPO_POLICIES,
) -> Officers:
    """`root/policies` (a copy of `source`) pinned and signed by `signed_by`, and
    `root/keys` trusting `names` with `threshold`."""
    policies, keys = root / "policies", root / "keys"
    shutil.copytree(source, policies)
    keys.mkdir(parents=True)
    team = Officers(policies, keys)
    for name in names:
        key = Ed25519PrivateKey.generate()
        team.private[name] = key
        (keys / f"{name}.pem").write_bytes(public_pem(key.public_key()))
    team.trust(threshold)
    team.pin()
    if signed_by:
        team.sign(*signed_by, fresh=True)
    return team
