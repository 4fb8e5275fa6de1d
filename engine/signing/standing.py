"""Which compliance configuration is in force, and on whose word (SPEC sections 3, 12).

`judge` verifies a loaded policy set's configuration (`compliance.yaml`, the
bytes the loader read) and its signatures (`compliance.sig.json`) against the
trust root (`keys/trust.yaml`) and the highest version accepted so far, and
says what follows for orders: a `Standing`, with the facts the compliance
checks judge (`ComplianceFacts`) and the verification record the audit chain
keeps.

The trust level:
- `signed`: a threshold of trusted compliance officers signed it. Only this
  level can satisfy live.
- `development`: `keys/trust.yaml` names no signer at all (a fresh clone, a
  team that has not set up keys). The data directory's development root
  (`$APEX_HOME/development/root.pem`, made on first use, never in the
  repository) pins the loaded rules and signs the configuration as edited, so
  that research, simulation and paper work with no compliance officer. It can
  never satisfy live (`live_trust_check`). Once the trust file names a signer,
  the development root is never used again: an edited or unsigned
  configuration is then not in force, whatever the mode.
- `none`: neither; the configuration is not in force.

A verification that fails for the signatures, the payload or a rollback makes
`compliance_verified` false; a pin that is not the loaded rules' makes
`policy_digest_ok` false; expiry is judged against the clock on every order
(`compliance_expired`), so the configuration stops being in force the instant
it expires, not at the next verification.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..clock import format_utc, parse_utc
from ..models import ComplianceFacts, Mode, Trust
from ..policy.loader import LoadedPolicies
from .keys import KeyFileError, key_id, load_private_pem, public_pem
from .trust import Signer, TrustFileError, load_trust
from .trust import Trust as TrustRoot
from .verify import PER_SIGNATURE, Finding, VerifyReport, sign, verify

__all__ = [
    "ACCEPTED_VERSION",
    "DEVELOPMENT",
    "SIG_FILE",
    "DevelopmentRoot",
    "Standing",
    "judge",
    "no_signers",
    "read_trust",
    "standing_of",
]

SIG_FILE = "compliance.sig.json"
# the store setting that holds the highest version ever accepted (rollback)
ACCEPTED_VERSION = "compliance.accepted_version"
DEVELOPMENT = "development"
_MAX_SIG_FILE = 1024 * 1024
# findings that are their own check, judged apart from the signatures
_OWN_CHECK = frozenset({"policy_digest_mismatch", "expired"})


class DevelopmentRoot:
    """The data directory's development trust root: an Ed25519 key made on first
    use at `HOME/development/root.pem` (0600), never in the repository."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path) -> None:
        self._key = private_key
        self.path = path
        self.keyid = key_id(private_key.public_key())
        self.public_pem = public_pem(private_key.public_key()).decode("ascii")

    @classmethod
    def open(cls, home: Path) -> DevelopmentRoot:
        """The root of `home`, made now when there is none (two processes starting
        together make one: the file is created exclusively, then read back)."""
        directory = home / DEVELOPMENT
        path = directory / "root.pem"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            data = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, flags, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
        return cls(load_private_pem(path, None), path)

    def sign(self, yaml_bytes: bytes, now: datetime) -> dict[str, Any]:
        """A signature file over `yaml_bytes` by this root alone."""
        return sign(None, yaml_bytes, self._key, DEVELOPMENT, now)[0]

    def trust(self) -> TrustRoot:
        """A trust root holding only this key, threshold 1."""
        root = TrustRoot(
            threshold=1,
            signers=(Signer(name=DEVELOPMENT, keyid=self.keyid, pem="development.pem"),),
        )
        root._keys[self.keyid] = self._key.public_key()
        return root


@dataclass(frozen=True)
class Standing:
    """The verdict on the configuration of one loaded policy set."""

    in_force: bool
    trust: Trust
    code: str | None  # the first finding that keeps it out of force, None when in force
    message: str
    version: int | None
    expires: datetime | None
    config_sha256: str | None
    policy_digest: str | None  # what it pins (the development root pins the loaded rules)
    loaded_policy_digest: str
    signers: tuple[str, ...]
    threshold: int
    facts: ComplianceFacts
    # the verification record's fields (SPEC section 7, kind `verification`)
    record: Mapping[str, Any] = field(default_factory=dict)
    # findings that must be rechecked before it is in force again
    findings: tuple[Finding, ...] = ()
    # the signature file as verified (None: there was none)
    sig_text: bytes | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def lapsed(self, code: str, message: str) -> Standing:
        """This standing, out of force for `code` (a revocation, a newer version)."""
        facts = self.facts.model_copy(update={"verified": False, "verified_note": message[:500]})
        return Standing(
            in_force=False,
            trust=self.trust,
            code=code,
            message=message,
            version=self.version,
            expires=self.expires,
            config_sha256=self.config_sha256,
            policy_digest=self.policy_digest,
            loaded_policy_digest=self.loaded_policy_digest,
            signers=(),
            threshold=self.threshold,
            facts=facts,
            record=self.record,
            findings=(Finding(code, message),),
        )

    def view(self) -> dict[str, Any]:
        """What `GET /v1/compliance` and `/readyz` show."""
        return {
            "in_force": self.in_force,
            "trust": self.trust,
            "code": self.code,
            "message": self.message,
            "version": self.version,
            "expires": format_utc(self.expires) if self.expires is not None else None,
            "config_sha256": self.config_sha256,
            "policy_digest": self.policy_digest,
            "loaded_policy_digest": self.loaded_policy_digest,
            "signers": list(self.signers),
            "threshold": self.threshold,
        }


def read_trust(keys_dir: Path) -> TrustRoot | KeyFileError | TrustFileError:
    """The trust root, or why it cannot be used (verification reports it)."""
    try:
        return load_trust(keys_dir)
    except (KeyFileError, TrustFileError) as exc:
        return exc


def no_signers(keys_dir: Path) -> bool:
    """The trust file names no signer at all (missing, or an empty list): the
    deployment has no compliance keys yet, and the development root stands in."""
    try:
        return not load_trust(keys_dir, check_threshold=False).signers
    except (KeyFileError, TrustFileError):
        return False  # a broken trust file is a problem to report, never a fallback


def _sig_text(directory: Path) -> bytes | None:
    path = directory / SIG_FILE
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_SIG_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read: {exc}".encode()  # reported as a malformed file
    return data if len(data) <= _MAX_SIG_FILE else b"(larger than 1 MiB)"


def judge(
    loaded: LoadedPolicies,
    directory: Path,
    keys_dir: Path,
    development: DevelopmentRoot | None,
    now: datetime,
    accepted_version: int | None,
    kept: Standing | None = None,
) -> Standing:
    """Verify the configuration of `loaded` (compliance.yaml as the loader read it
    from `directory`) against the trust root in `keys_dir` and the highest
    accepted version. `kept`: this configuration's earlier standing, to judge the
    signature file as it was read then (the configuration in force is rechecked
    after its files may have been replaced on disk); otherwise it is read now."""
    config_bytes = loaded.config_bytes
    loaded_policy_digest = loaded.policies.policy_digest
    modes = list(loaded.config.modes) if loaded.config.modes is not None else None
    sig_text = kept.sig_text if kept is not None else _sig_text(directory)
    if development is not None and no_signers(keys_dir):
        sig_file: Mapping[str, Any] | bytes | None = development.sign(config_bytes, now)
        report = verify(config_bytes, sig_file, development.trust(), now, accepted_version)
        standing = standing_of(
            report, "development", loaded_policy_digest, modes, sig_file, development
        )
        return replace(standing, sig_text=sig_text)
    report = verify(config_bytes, sig_text, read_trust(keys_dir), now, accepted_version,
                    loaded_policy_digest)  # fmt: skip
    return replace(
        standing_of(report, "signed", loaded_policy_digest, modes, sig_text, None),
        sig_text=sig_text,
    )


def standing_of(
    report: VerifyReport,
    level: Trust,
    loaded: str,
    modes: list[Mode] | None,
    sig_file: Mapping[str, Any] | bytes | None,
    development: DevelopmentRoot | None,
) -> Standing:
    blocking = [f for f in report.findings if f.code not in PER_SIGNATURE]
    signature_problems = [f for f in blocking if f.code not in _OWN_CHECK]
    digest = [f for f in blocking if f.code == "policy_digest_mismatch"]
    verified = not signature_problems
    trust: Trust = level if verified else "none"
    expires = parse_utc(report.expires) if report.expires is not None else None
    first = blocking[0] if blocking else None
    facts = ComplianceFacts(
        verified=verified,
        verified_note=_note(signature_problems),
        digest_ok=not digest,
        digest_note=_note(digest),
        expires=expires,
        trust=trust,
        modes=modes,
    )
    pin = loaded if development is not None else report.policy_digest
    standing = Standing(
        in_force=report.ok,
        trust=trust,
        code=first.code if first else None,
        message=first.message if first else _valid_text(report, level),
        version=report.version,
        expires=expires,
        config_sha256=report.config_sha256,
        policy_digest=pin,
        loaded_policy_digest=loaded,
        signers=report.valid_signers if report.ok else (),
        threshold=report.threshold,
        facts=facts,
        findings=tuple(blocking),
    )
    return replace(standing, record=_record(standing, report, sig_file, development))


def _note(findings: list[Finding]) -> str:
    text = "; ".join(f"{f.code}: {f.message}" for f in findings)
    return text if len(text) <= 500 else text[:497] + "..."


def _valid_text(report: VerifyReport, level: Trust) -> str:
    if level == "development":
        return "signed by the development root of this data directory (never valid for live)"
    counted = f"{report.threshold} of {report.trusted} needed, {len(report.valid_signers)} valid"
    return f"{counted} ({', '.join(report.valid_signers)})"


def _record(
    standing: Standing,
    report: VerifyReport,
    sig_file: Mapping[str, Any] | bytes | None,
    development: DevelopmentRoot | None,
) -> dict[str, Any]:
    """The verification record's fields, beside kind, time, actor and trigger: what
    was verified, each signature with its result, and the verdict. The payload and
    each `sig` are kept, so that an auditor can check every signature offline."""
    parsed: Any = sig_file
    if isinstance(sig_file, bytes):
        try:
            parsed = json.loads(sig_file)
        except ValueError:
            parsed = None
    payload = parsed.get("payload") if isinstance(parsed, Mapping) else None
    raw = parsed.get("signatures") if isinstance(parsed, Mapping) else None
    entries = raw if isinstance(raw, list) else []
    signatures = []
    for result in report.signatures:
        entry = entries[result.index] if result.index < len(entries) else {}
        signatures.append(
            {
                "keyid": result.keyid,
                "signer": result.signer,
                "signed_at": _text(entry.get("signed_at")) if isinstance(entry, Mapping) else None,
                "sig": _text(entry.get("sig")) if isinstance(entry, Mapping) else None,
                "result": result.result,
            }
        )
    return {
        "outcome": "valid" if standing.in_force else "invalid",
        "code": standing.code,
        "message": standing.message,
        "trust": standing.trust,
        "in_force": standing.in_force,
        "config_sha256": standing.config_sha256,
        "version": standing.version,
        "expires": format_utc(standing.expires) if standing.expires is not None else None,
        "policy_digest": standing.policy_digest,
        "loaded_policy_digest": standing.loaded_policy_digest,
        "threshold": report.threshold,
        "trusted": report.trusted,
        "payload": dict(payload) if isinstance(payload, Mapping) else None,
        "signatures": signatures,
        "development_key": (
            {"keyid": development.keyid, "public_key_pem": development.public_pem}
            if development is not None
            else None
        ),
        "findings": [f.to_json() for f in report.findings],
    }


def _text(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) else None
