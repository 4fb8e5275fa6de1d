"""The trust root: `keys/trust.yaml`, who may sign the compliance configuration
and how many of them must.

    threshold: 2            # k; 1 <= k <= number of trusted (non-revoked) signers
    signers:
      - name: alice         # [A-Za-z0-9._-]{1,64}, unique
        keyid: <64 hex>     # sha256 of the raw 32-byte Ed25519 public key
        pem: alice.pem      # SubjectPublicKeyInfo PEM, a file in the keys directory
    revoked: [<64 hex>, ...]

A missing file is an empty trust (threshold 1, no signers): nothing verifies
against it. Everything else is checked on load, before any signature is: a
signer whose PEM does not hash to its key id is refused (a swapped PEM file
must not inherit a trusted name), and so is a threshold that no set of trusted
signers can meet. Revocation is never blocked: revoking the k-th trusted key
leaves a file whose threshold cannot be met, which refuses every verification
(fail closed) until an officer lowers the threshold or adds a key; the
maintenance commands read it with `check_threshold=False` to allow that.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ..errors import ApexError
from ..policy._yaml import Lines, line_of, load_yaml
from .keys import key_id, load_public_pem

__all__ = [
    "KEYID_PATTERN",
    "MAX_TRUST_FILE_BYTES",
    "TRUST_FILE",
    "Signer",
    "Status",
    "Trust",
    "TrustFileError",
    "load_trust",
    "locked",
    "save_trust",
    "trust_path",
]

TRUST_FILE = "trust.yaml"
KEYID_PATTERN = r"^[0-9a-f]{64}$"
MAX_TRUST_FILE_BYTES = 1024 * 1024
Status = Literal["trusted", "revoked", "unknown"]


class TrustFileError(ApexError):
    """The trust file cannot be used. `code` (stable): trust_file_malformed,
    trust_threshold_invalid, trust_duplicate_signer, trust_keyid_mismatch;
    `path` and, where known, `line` locate it."""

    code = "trust_file_malformed"

    def __init__(self, code: str, path: Path | str, detail: str, line: int | None = None) -> None:
        self.code = code
        self.path = str(path)
        self.line = line
        self.detail = detail
        where = str(path) if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {code}: {detail}")


class Signer(BaseModel):
    """One compliance officer's public key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    keyid: StrictStr = Field(pattern=KEYID_PATTERN)
    # a file name inside the keys directory: never a path that leaves it
    pem: StrictStr = Field(pattern=r"^[A-Za-z0-9._-]{1,64}\.pem$")


class Trust(BaseModel):
    """The parsed trust file. `public_key` answers only for a Trust returned by
    `load_trust`, which has read and checked every signer's PEM (a Trust built
    in memory holds no keys: save it and load it back). Equality includes the
    loaded keys; compare `model_dump()` to compare what the files say."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: StrictInt = 1
    signers: tuple[Signer, ...] = ()
    revoked: tuple[Annotated[StrictStr, Field(pattern=KEYID_PATTERN)], ...] = ()

    _keys: dict[str, Ed25519PublicKey] = PrivateAttr(default_factory=dict)

    def status_of(self, keyid: str) -> Status:
        """ "revoked" when listed as revoked (whether or not it is a signer),
        "trusted" when a signer's key id, else "unknown"."""
        if keyid in self.revoked:
            return "revoked"
        if any(s.keyid == keyid for s in self.signers):
            return "trusted"
        return "unknown"

    def signer(self, keyid: str) -> Signer | None:
        """The signer with this key id, revoked or not."""
        return next((s for s in self.signers if s.keyid == keyid), None)

    def public_key(self, keyid: str) -> Ed25519PublicKey | None:
        """The loaded public key of a signer (revoked or not), None when unknown."""
        return self._keys.get(keyid)

    def trusted(self) -> tuple[Signer, ...]:
        """The signers whose keys are not revoked."""
        return tuple(s for s in self.signers if s.keyid not in self.revoked)

    def with_signer(self, signer: Signer) -> Trust:
        """A copy with one more signer (checked when loaded back)."""
        return Trust(
            threshold=self.threshold, signers=(*self.signers, signer), revoked=self.revoked
        )

    def with_threshold(self, threshold: int) -> Trust:
        return Trust(threshold=threshold, signers=self.signers, revoked=self.revoked)

    def with_revoked(self, keyid: str) -> Trust:
        """A copy with `keyid` revoked (once)."""
        revoked = self.revoked if keyid in self.revoked else (*self.revoked, keyid)
        return Trust(threshold=self.threshold, signers=self.signers, revoked=revoked)

    def threshold_problem(self) -> str | None:
        """Why no set of trusted signers can meet the threshold, or None."""
        n = len(self.trusted())
        if self.threshold < 1:
            return f"threshold {self.threshold} < 1; want 1 <= threshold <= {max(n, 1)}"
        if self.threshold > n:
            return (
                f"threshold {self.threshold} > {n} trusted signer(s); add or trust more "
                f"keys, or lower the threshold (1 <= threshold <= {n})"
            )
        return None


def trust_path(keys_dir: Path) -> Path:
    return keys_dir / TRUST_FILE


def load_trust(keys_dir: Path, *, check_threshold: bool = True) -> Trust:
    """Read and check `keys_dir/trust.yaml` and every signer's PEM. Raises
    TrustFileError (or KeyFileError for a signer's unreadable, malformed or
    non-Ed25519 PEM). `check_threshold=False` is for the commands that repair a
    file whose threshold cannot be met; verification never uses it."""
    path = trust_path(keys_dir)
    text = _read(path)
    if text is None:
        return Trust()
    data, lines = _parse(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TrustFileError("trust_file_malformed", path, "want a mapping at the top", 1)
    try:
        trust = Trust.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        field = ".".join(str(p) for p in loc) or "(top)"
        detail = f"{field}: {error['msg']}"
        if len(exc.errors()) > 1:
            detail += f" (and {len(exc.errors()) - 1} more)"
        raise TrustFileError("trust_file_malformed", path, detail, line_of(lines, loc)) from None
    _check_unique(trust, path, lines)
    keys = _load_keys(trust, keys_dir, path, lines)
    if check_threshold:
        problem = trust.threshold_problem()
        if problem is not None:
            line = line_of(lines, ("threshold",))
            raise TrustFileError("trust_threshold_invalid", path, problem, line)
    trust._keys.update(keys)
    return trust


def save_trust(keys_dir: Path, trust: Trust) -> Path:
    """Write the trust file atomically (a temporary file in the same directory,
    then os.replace): a reader sees the old file or the new one, never half."""
    path = trust_path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        "threshold": trust.threshold,
        "signers": [s.model_dump() for s in trust.signers],
        "revoked": list(trust.revoked),
    }
    text = (
        "# Trusted compliance signers. Written by `apex-oms keys`; see docs/compliance.md.\n"
        + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
    )
    fd, temp = tempfile.mkstemp(prefix=".trust.", suffix=".tmp", dir=keys_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return path


@contextlib.contextmanager
def locked(keys_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the keys directory while a trust file is read,
    changed and written, so two officers' concurrent `keys` commands do not lose
    one another's change. The directory itself is locked: no lock file is left
    in it."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(keys_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        if size > MAX_TRUST_FILE_BYTES:
            raise TrustFileError(
                "trust_file_malformed",
                path,
                f"{size} bytes; a trust file is at most {MAX_TRUST_FILE_BYTES} bytes",
            )
        return path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise TrustFileError("trust_file_malformed", path, f"not UTF-8: {exc.reason}") from None
    except OSError as exc:
        raise TrustFileError("trust_file_malformed", path, f"cannot read: {exc}") from None


def _parse(text: str, path: Path) -> tuple[Any, Lines]:
    # anchors and aliases have no use here, and nested aliases expand exponentially
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                line = event.start_mark.line + 1 if event.start_mark else None
                raise TrustFileError(
                    "trust_file_malformed", path, "YAML anchors and aliases are not allowed", line
                )
    except yaml.YAMLError:
        pass  # load_yaml below reports it with its line
    data, lines, issues = load_yaml(text, str(path))
    if issues:
        first = issues[0]
        raise TrustFileError("trust_file_malformed", path, first.message, first.line)
    return data, lines


def _check_unique(trust: Trust, path: Path, lines: Lines) -> None:
    for field in ("name", "keyid", "pem"):
        seen: set[str] = set()
        for index, signer in enumerate(trust.signers):
            value = getattr(signer, field)
            if value in seen:
                raise TrustFileError(
                    "trust_duplicate_signer",
                    path,
                    f"signers[{index}].{field}: {value!r} is listed twice; one key counts once",
                    line_of(lines, ("signers", index, field)),
                )
            seen.add(value)


def _load_keys(
    trust: Trust, keys_dir: Path, path: Path, lines: Lines
) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for index, signer in enumerate(trust.signers):
        public = load_public_pem(keys_dir / signer.pem)  # KeyFileError names the file
        got = key_id(public)
        if got != signer.keyid:
            raise TrustFileError(
                "trust_keyid_mismatch",
                path,
                f"signers[{index}] ({signer.name}): {signer.pem} hashes to {got}, "
                f"want {signer.keyid}",
                line_of(lines, ("signers", index, "keyid")),
            )
        keys[signer.keyid] = public
    return keys
