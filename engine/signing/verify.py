"""Sign and verify the compliance configuration (SPEC section 12).

`policies/compliance.sig.json` holds a `payload` (the hex sha256 of
compliance.yaml's bytes, its `version` and its `expires`) and Ed25519
signatures over the canonical JSON of that payload (engine/canonical.py: sorted
keys, no spaces, UTF-8), base64 in `sig`. Nothing else is signed, so OpenSSL
alone checks one signature:

    openssl pkeyutl -verify -pubin -inkey keys/alice.pem -rawin \\
        -in payload.json -sigfile sig.bin

where payload.json is the canonical JSON of `payload` and sig.bin the decoded
`sig`.

Verification follows The Update Framework: a signature counts when it verifies
under a trusted, unrevoked key, each key at most once; the configuration is
valid when at least `threshold` keys count, its payload matches the YAML, it
has not expired, its version is not below the highest accepted one, and its
`policy_digest` pins the loaded rules. A problem with one signature (invalid,
untrusted, revoked, repeated) only stops that signature from counting, so a
revoked key cannot veto a configuration the others still carry; every other
finding makes the configuration invalid. The verdict is a value
(`VerifyReport`), never an exception. Want/got in messages: want is what was
signed or pinned, got is what is there (as OPA's bundle verifier says it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..canonical import canonical_json, sha256_hex
from ..clock import format_utc, parse_utc
from ..errors import ApexError
from ..policy._yaml import load_yaml
from .keys import KeyFileError, key_id
from .trust import Trust, TrustFileError

__all__ = [
    "CODES",
    "PER_SIGNATURE",
    "UNUSABLE",
    "Finding",
    "PayloadError",
    "SigFileError",
    "SignatureResult",
    "VerifyReport",
    "dump_sig_file",
    "payload_of",
    "pinned_digest",
    "sign",
    "verify",
]

# Every finding's code. Stable: scripts, audit records and tests match on them.
CODES = (
    "signature_invalid",
    "key_untrusted",
    "key_revoked",
    "key_counted_twice",
    "threshold_not_met",
    "expired",
    "rollback",
    "policy_digest_mismatch",
    "payload_mismatch",
    "unsigned",
    "sig_file_malformed",
    "key_file_malformed",
    "config_malformed",
)
# about one signature only: it does not count, and the threshold decides
PER_SIGNATURE = frozenset(
    {"signature_invalid", "key_untrusted", "key_revoked", "key_counted_twice"}
)
# the input cannot be judged at all: `compliance verify` exits 2 for these
UNUSABLE = frozenset({"sig_file_malformed", "key_file_malformed", "config_malformed"})

_PAYLOAD_KEYS = ("config_sha256", "version", "expires")
_SIGNATURE_KEYS = ("keyid", "signer", "signed_at", "sig")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SIGNATURE_BYTES = 64


class PayloadError(ApexError, ValueError):
    """compliance.yaml cannot give a payload (not YAML, no valid version or expires)."""

    code = "config_malformed"


class SigFileError(ApexError, ValueError):
    """A signature file cannot be signed onto: it is malformed (every problem listed)."""

    code = "sig_file_malformed"

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Finding:
    """One reason, with a stable code; `keyid` when it is about one key."""

    code: str
    message: str
    keyid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "keyid": self.keyid}


@dataclass(frozen=True)
class SignatureResult:
    """What became of one entry of `signatures`: `valid` or the code that stopped it."""

    index: int
    keyid: str | None
    signer: str | None  # the signer's own claim, from the signature file
    name: str | None  # the trusted signer that key id belongs to, if any
    result: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "keyid": self.keyid,
            "signer": self.signer,
            "name": self.name,
            "result": self.result,
        }


@dataclass(frozen=True)
class VerifyReport:
    """The verdict on one configuration and its signatures."""

    ok: bool
    valid_signers: tuple[str, ...]  # trusted names whose signature counted, in file order
    findings: tuple[Finding, ...]
    threshold: int
    trusted: int  # trusted, unrevoked signers: the n of "k of n"
    config_sha256: str | None
    version: int | None
    expires: str | None
    policy_digest: str | None  # the configuration's pin
    signatures: tuple[SignatureResult, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        """0 valid, 1 invalid, 2 the input cannot be judged."""
        if self.ok:
            return 0
        return 2 if any(f.code in UNUSABLE for f in self.findings) else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "valid_signers": list(self.valid_signers),
            "threshold": self.threshold,
            "trusted": self.trusted,
            "config_sha256": self.config_sha256,
            "version": self.version,
            "expires": self.expires,
            "policy_digest": self.policy_digest,
            "signatures": [s.to_json() for s in self.signatures],
            "findings": [f.to_json() for f in self.findings],
        }


# --- the payload ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    """What verification reads from compliance.yaml."""

    sha256: str
    version: int
    expires: str
    policy_digest: str | None

    @property
    def payload(self) -> dict[str, Any]:
        return {"config_sha256": self.sha256, "version": self.version, "expires": self.expires}


def payload_of(yaml_bytes: bytes) -> dict[str, Any]:
    """The payload that signs these exact bytes of compliance.yaml; `PayloadError` when
    the YAML has no usable `version` or `expires`."""
    return _read_config(yaml_bytes).payload


def pinned_digest(yaml_bytes: bytes) -> str | None:
    """The `policy_digest` compliance.yaml pins, None when none (or no usable YAML)."""
    try:
        return _read_config(yaml_bytes).policy_digest
    except PayloadError:
        return None


def _read_config(yaml_bytes: bytes) -> _Config:
    try:
        text = yaml_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"compliance.yaml is not UTF-8: {exc}") from exc
    # the loader's parser: a duplicate key (a second `version:` hiding the first) is refused
    data, _, issues = load_yaml(text, "compliance.yaml")
    if issues:
        first = issues[0]
        where = f" (line {first.line})" if first.line else ""
        raise PayloadError(f"compliance.yaml: {first.message}{where}")
    if not isinstance(data, dict):
        raise PayloadError("compliance.yaml is not a mapping")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PayloadError(f"compliance.yaml: version must be an integer >= 1 (got: {version!r})")
    expires = _utc_text(data.get("expires"))
    if expires is None:
        raise PayloadError(
            "compliance.yaml: expires must be an ISO-8601 time with a zone "
            f"(got: {data.get('expires')!r})"
        )
    pin = data.get("policy_digest")
    return _Config(sha256_hex(yaml_bytes), version, expires, pin if isinstance(pin, str) else None)


def _utc_text(value: Any) -> str | None:
    """`expires` as `2027-01-31T00:00:00Z`, quoted or not in the YAML; None if unusable."""
    if isinstance(value, datetime):
        return format_utc(value) if value.tzinfo is not None else None
    if not isinstance(value, str):
        return None
    try:
        return format_utc(parse_utc(value))
    except ValueError:
        return None


# --- the signature file ---------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    index: int
    keyid: str
    signer: str
    signature: bytes


@dataclass
class _Parsed:
    payload: dict[str, Any] | None = None
    entries: list[_Entry] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)
    raw_entries: list[Any] = field(default_factory=list)

    def bad(self, message: str, keyid: Any = None) -> None:
        self.problems.append(
            Finding("sig_file_malformed", message, keyid if isinstance(keyid, str) else None)
        )


_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _parse_sig_file(raw: Mapping[str, Any] | str | bytes) -> _Parsed:
    parsed = _Parsed()
    data: Any = raw
    if isinstance(raw, str | bytes):
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            parsed.bad(f"not JSON: {exc}")
            return parsed
    if not isinstance(data, Mapping):
        parsed.bad(f"wrong type (want: object, got: {_type_name(data)})")
        return parsed
    for key in data:
        if key not in ("payload", "signatures"):
            parsed.bad(f"{key}: unknown field (allowed: payload, signatures)")
    for key in ("payload", "signatures"):
        if key not in data:
            parsed.bad(f"missing field {key!r}")
    if "payload" in data:
        parsed.payload = _parse_payload(data["payload"], parsed)
    signatures = data.get("signatures", [])
    if not isinstance(signatures, list):
        parsed.bad(f"signatures: wrong type (want: array, got: {_type_name(signatures)})")
        return parsed
    parsed.raw_entries = list(signatures)
    for index, item in enumerate(signatures):
        entry = _parse_entry(index, item, parsed)
        if entry is not None:
            parsed.entries.append(entry)
    return parsed


def _parse_payload(value: Any, parsed: _Parsed) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        parsed.bad(f"payload: wrong type (want: object, got: {_type_name(value)})")
        return None
    before = len(parsed.problems)
    for key in value:
        if key not in _PAYLOAD_KEYS:
            parsed.bad(f"payload.{key}: unknown field (allowed: {', '.join(_PAYLOAD_KEYS)})")
    for key, want in (("config_sha256", str), ("version", int), ("expires", str)):
        if key not in value:
            parsed.bad(f"payload: missing field {key!r}")
        elif type(value[key]) is not want:  # bool is an int to isinstance; not here
            parsed.bad(
                f"payload.{key}: wrong type (want: {_TYPE_NAMES[want]}, "
                f"got: {_type_name(value[key])})"
            )
    return dict(value) if len(parsed.problems) == before else None


def _parse_entry(index: int, item: Any, parsed: _Parsed) -> _Entry | None:
    where = f"signatures[{index}]"
    if not isinstance(item, Mapping):
        parsed.bad(f"{where}: wrong type (want: object, got: {_type_name(item)})")
        return None
    keyid = item.get("keyid")
    before = len(parsed.problems)
    for key in item:
        if key not in _SIGNATURE_KEYS:
            parsed.bad(
                f"{where}.{key}: unknown field (allowed: {', '.join(_SIGNATURE_KEYS)})", keyid
            )
    for key in _SIGNATURE_KEYS:
        if key not in item:
            parsed.bad(f"{where}: missing field {key!r}", keyid)
        elif not isinstance(item[key], str):
            parsed.bad(
                f"{where}.{key}: wrong type (want: string, got: {_type_name(item[key])})", keyid
            )
    if len(parsed.problems) > before:
        return None
    keyid = str(item["keyid"])
    if not _HEX64.match(keyid):
        parsed.bad(f"{where}.keyid: not a key id (want: 64 lowercase hex, got: {keyid!r})")
    try:
        parse_utc(item["signed_at"])
    except ValueError:
        parsed.bad(
            f"{where}.signed_at: not an ISO-8601 time with a zone (got: {item['signed_at']!r})",
            keyid,
        )
    signature = _decode_sig(item["sig"])
    if signature is None:
        parsed.bad(f"{where}.sig: not base64", keyid)
    elif len(signature) != _SIGNATURE_BYTES:
        parsed.bad(
            f"{where}.sig: wrong length (want: {_SIGNATURE_BYTES} bytes, got: {len(signature)})",
            keyid,
        )
    if len(parsed.problems) > before or signature is None:
        return None
    return _Entry(index, keyid, str(item["signer"]), signature)


def _decode_sig(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def dump_sig_file(sig_file: Mapping[str, Any]) -> str:
    """The signature file as written to disk: indented JSON, one trailing newline."""
    return json.dumps(sig_file, indent=2, ensure_ascii=False) + "\n"


# --- signing --------------------------------------------------------------------------


def sign(
    sig_file: Mapping[str, Any] | None,
    yaml_bytes: bytes,
    private_key: Ed25519PrivateKey,
    signer: str,
    now: datetime,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Add `private_key`'s signature over the payload of `yaml_bytes`.

    The payload is refreshed from the YAML. Signatures over another payload no longer
    sign this file: they are dropped and returned, so the caller can say so. An earlier
    signature by the same key is replaced. A malformed `sig_file` raises `SigFileError`
    rather than being overwritten unseen.
    """
    payload = payload_of(yaml_bytes)
    keyid = key_id(private_key.public_key())
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    if sig_file is not None:
        parsed = _parse_sig_file(sig_file)
        if parsed.problems:
            raise SigFileError([p.message for p in parsed.problems])
        for entry in parsed.raw_entries:
            if parsed.payload != payload:
                dropped.append(dict(entry))
            elif entry["keyid"] != keyid:
                kept.append(dict(entry))
    signature = private_key.sign(canonical_json(payload))
    kept.append(
        {
            "keyid": keyid,
            "signer": signer,
            "signed_at": format_utc(now),
            "sig": base64.b64encode(signature).decode("ascii"),
        }
    )
    return {"payload": payload, "signatures": kept}, dropped


# --- verifying ------------------------------------------------------------------------


def verify(
    yaml_bytes: bytes,
    sig_file: Mapping[str, Any] | str | bytes | None,
    trust: Trust | KeyFileError | TrustFileError,
    now: datetime,
    accepted_version: int | None = None,
    loaded_policy_digest: str | None = None,
) -> VerifyReport:
    """Judge compliance.yaml (`yaml_bytes`) and its signature file.

    `sig_file`: the parsed file, its raw text (so that a file that is not JSON is
    reported like any other malformation), or None when there is none. `trust`: what
    `load_trust` returned, or the error it raised, so that the report names it.
    `accepted_version`: the highest version accepted so far (rollback); and
    `loaded_policy_digest`: the digest of the rules that would be judged under this
    configuration. Either None skips its check.
    """
    findings: list[Finding] = []
    config: _Config | None = None
    try:
        config = _read_config(yaml_bytes)
    except PayloadError as exc:
        findings.append(Finding("config_malformed", str(exc)))

    usable_trust: Trust | None = None
    if isinstance(trust, KeyFileError):
        findings.append(
            Finding("key_file_malformed", f"{trust.path}: {trust.code}: {trust.detail}")
        )
    elif isinstance(trust, TrustFileError):
        findings.append(Finding("key_file_malformed", str(trust)))
    else:
        usable_trust = trust

    parsed: _Parsed | None = None
    if sig_file is None:
        findings.append(Finding("unsigned", "no signature file (compliance.sig.json)"))
    else:
        parsed = _parse_sig_file(sig_file)
        findings.extend(parsed.problems)

    results: list[SignatureResult] = []
    valid: list[str] = []
    if parsed is not None and parsed.payload is not None and usable_trust is not None:
        message = canonical_json(parsed.payload)
        results, valid = _judge_signatures(parsed.entries, usable_trust, message, findings)

    if config is not None:
        if parsed is not None and parsed.payload is not None:
            findings.extend(_payload_mismatches(parsed.payload, config.payload))
        findings.extend(_config_findings(config, now, accepted_version, loaded_policy_digest))

    threshold = usable_trust.threshold if usable_trust is not None else 0
    trusted = len(usable_trust.trusted()) if usable_trust is not None else 0
    if usable_trust is not None and len(valid) < threshold:
        findings.append(
            Finding("threshold_not_met", f"{threshold} of {trusted} needed, {len(valid)} valid")
        )
    ok = not any(f.code not in PER_SIGNATURE for f in findings)
    return VerifyReport(
        ok=ok,
        valid_signers=tuple(valid),
        findings=tuple(findings),
        threshold=threshold,
        trusted=trusted,
        config_sha256=config.sha256 if config else None,
        version=config.version if config else None,
        expires=config.expires if config else None,
        policy_digest=config.policy_digest if config else None,
        signatures=tuple(results),
    )


def _judge_signatures(
    entries: Sequence[_Entry], trust: Trust, message: bytes, findings: list[Finding]
) -> tuple[list[SignatureResult], list[str]]:
    """Each well-formed signature's result; the trusted names that count, each once."""
    results: list[SignatureResult] = []
    valid: list[str] = []
    first_at: dict[str, int] = {}
    for entry in entries:
        signer = trust.signer(entry.keyid)
        name = signer.name if signer is not None else None
        who = f"key {entry.keyid} (signer {entry.signer!r})"
        finding: Finding | None = None
        if entry.keyid in first_at:
            finding = Finding(
                "key_counted_twice",
                f"{who} signed again in signatures[{entry.index}] "
                f"(first in signatures[{first_at[entry.keyid]}]); a key counts once",
                entry.keyid,
            )
        else:
            first_at[entry.keyid] = entry.index
            finding = _judge_one(entry, trust, message, who)
        if finding is None:
            valid.append(name or entry.signer)
        else:
            findings.append(finding)
        result = "valid" if finding is None else finding.code
        results.append(SignatureResult(entry.index, entry.keyid, entry.signer, name, result))
    return results, valid


def _judge_one(entry: _Entry, trust: Trust, message: bytes, who: str) -> Finding | None:
    status = trust.status_of(entry.keyid)
    if status == "revoked":
        return Finding(
            "key_revoked", f"{who} is revoked; its signature does not count", entry.keyid
        )
    if status != "trusted":
        return Finding("key_untrusted", f"{who} is not a trusted signer", entry.keyid)
    public = trust.public_key(entry.keyid)
    if public is None:
        return Finding("key_file_malformed", f"{who}: its public key was not loaded", entry.keyid)
    try:
        public.verify(entry.signature, message)
    except InvalidSignature:
        return Finding(
            "signature_invalid",
            f"signatures[{entry.index}] by {who} does not verify over the payload",
            entry.keyid,
        )
    return None


def _payload_mismatches(signed: Mapping[str, Any], actual: Mapping[str, Any]) -> list[Finding]:
    return [
        Finding(
            "payload_mismatch",
            f"payload {key} does not match compliance.yaml "
            f"(want: {signed[key]}, got: {actual[key]})",
        )
        for key in _PAYLOAD_KEYS
        if signed[key] != actual[key]
    ]


def _config_findings(
    config: _Config, now: datetime, accepted_version: int | None, loaded_digest: str | None
) -> list[Finding]:
    findings: list[Finding] = []
    if loaded_digest is not None and config.policy_digest != loaded_digest:
        want = config.policy_digest or "none pinned"
        findings.append(
            Finding(
                "policy_digest_mismatch",
                f"policy digest mismatch (want: {want}, got: {loaded_digest})",
            )
        )
    if now >= parse_utc(config.expires):
        findings.append(Finding("expired", f"expired at {config.expires} (now: {format_utc(now)})"))
    if accepted_version is not None and config.version < accepted_version:
        findings.append(
            Finding("rollback", f"version {config.version} < accepted {accepted_version}")
        )
    return findings
