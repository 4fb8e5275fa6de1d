#!/usr/bin/env python3
"""Verify an apex-oms audit export offline, with no access to the service.

    python3 tools/verify_audit.py EXPORT.jsonl --service-key SERVICE.pem \
        [--keys DIR] [--checkpoint FILE]

Needs only the Python standard library and `cryptography`; it imports nothing
from apex-oms, so an auditor can read all of it (docs/audit.md). It checks:

- the chain (SPEC section 7): each record's `hash` is "sha256:" + the hex
  sha256 of the canonical JSON of the record without `hash`, and its
  `prev_hash` the previous record's `hash` ("sha256:" + 64 zeros first);
- every checkpoint record: signed by the service key (`--service-key`, the PEM
  of `apex-oms audit pubkey`) over the canonical JSON of {"hash": head_hash,
  "sequence": sequence, "time": timestamp}, naming the record just before it;
- `--checkpoint FILE` (a checkpoint obtained separately, `apex-oms audit
  checkpoint`): its signature, and that the export reaches its sequence with
  its hash: the only offline defence against a cut tail;
- every `verification` record's signatures, with `--keys DIR` (the public PEM
  files of the compliance signers, `keys/`): each signature recorded `valid`
  must verify over the canonical JSON of the record's `payload` under the key
  with that key id (hex sha256 of the raw 32-byte key), a development
  signature under the record's `development_key` (reported as development,
  never trusted); a signed, valid outcome needs `threshold` such signatures.
  Without `--keys` they are reported as not checked (a warning).

One line per finding, then a summary. Exit 0 all verified, 1 a finding, 2 an
unusable input (a missing file, a malformed PEM, an unreadable export).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "sha256:" + "0" * 64
OK, FINDING, UNUSABLE = 0, 1, 2
MAX_PEM_BYTES = 16 * 1024


class Unusable(Exception):
    """An input the verifier cannot use: exit 2."""


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def parse_public_key(data: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise Unusable(f"{where}: not a PUBLIC KEY (SubjectPublicKeyInfo) PEM") from None
    if not isinstance(key, Ed25519PublicKey):
        raise Unusable(f"{where}: not an Ed25519 key")
    return key


def read_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()[: MAX_PEM_BYTES + 1]
    except OSError as exc:
        raise Unusable(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_public_key(data, str(path))


def read_keys_dir(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Every `*.pem` public key in `directory`, by its key id (computed here)."""
    if not directory.is_dir():
        raise Unusable(f"{directory}: not a directory")
    keys = {}
    for path in sorted(directory.glob("*.pem")):
        key = read_public_key(path)
        keys[key_id(key)] = key
    return keys


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise Unusable(f"{path}: cannot read the {what}: {exc}") from None
    if not isinstance(value, dict):
        raise Unusable(f"{path}: the {what} is not a JSON object")
    return value


def read_export(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Unusable(f"{path}: cannot read the export: {exc}") from None
    records = []
    for number, line in enumerate((ln for ln in text.splitlines() if ln.strip()), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise Unusable(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def verifies(key: Ed25519PublicKey, sig: Any, message: bytes) -> bool:
    if not isinstance(sig, str):
        return False
    try:
        key.verify(base64.b64decode(sig, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


@dataclass
class Audit:
    service_key: Ed25519PublicKey
    keys: dict[str, Ed25519PublicKey] | None  # None: --keys not given
    findings: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoints: int = 0
    verifications: int = 0
    signatures: int = 0

    @property
    def service_id(self) -> str:
        return key_id(self.service_key)

    # --- the chain ---------------------------------------------------------------

    def chain(self, records: list[dict[str, Any]]) -> None:
        previous = GENESIS
        for position, record in enumerate(records, start=1):
            if record.get("prev_hash") != previous:
                self.findings.append(
                    f"record {position}: prev_hash mismatch "
                    f"(want: {previous}, got: {record.get('prev_hash')})"
                )
            actual = record_hash(record)
            if record.get("hash") != actual:
                self.findings.append(
                    f"record {position}: hash mismatch (want: {actual}, got: {record.get('hash')})"
                )
            previous = str(record.get("hash"))
            kind = record.get("kind")
            if kind == "checkpoint":
                before = records[position - 2] if position > 1 else None
                self.checkpoint(position, record, before)
            elif kind == "verification":
                self.verification(position, record)

    # --- checkpoints -------------------------------------------------------------

    def signature_problem(self, checkpoint: dict[str, Any]) -> str | None:
        sequence, head, time = (checkpoint.get(k) for k in ("sequence", "head_hash", "timestamp"))
        if not (isinstance(sequence, int) and not isinstance(sequence, bool) and sequence >= 1):
            return f"sequence is not an integer >= 1 (got: {sequence!r})"
        if not (isinstance(head, str) and isinstance(time, str)):
            return "head_hash and timestamp must be strings"
        if checkpoint.get("keyid") != self.service_id:
            return f"signed by key {checkpoint.get('keyid')}, not the service key {self.service_id}"
        message = canonical({"sequence": sequence, "hash": head, "time": time})
        if not verifies(self.service_key, checkpoint.get("sig"), message):
            return "the signature does not verify under the service key"
        return None

    def checkpoint(
        self, position: int, record: dict[str, Any], before: dict[str, Any] | None
    ) -> None:
        self.checkpoints += 1
        name = f"record {position} (checkpoint {record.get('sequence')!r})"
        problem = self.signature_problem(record)
        if problem is not None:
            self.findings.append(f"{name}: {problem}")
            return
        want = (position - 1, before.get("hash") if before else None)
        if (record["sequence"], record["head_hash"]) != want:
            self.findings.append(
                f"{name}: does not sign the record before it (want: sequence {want[0]} "
                f"hash {want[1]}, got: sequence {record['sequence']} hash {record['head_hash']})"
            )

    def given(self, checkpoint: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """A checkpoint kept apart from the export: the export must reach it and agree."""
        sequence = checkpoint.get("sequence")
        problem = self.signature_problem(checkpoint)
        if problem is not None:
            self.findings.append(f"given checkpoint {sequence!r}: {problem}")
            return
        assert isinstance(sequence, int)
        if len(records) < sequence:
            self.findings.append(
                f"export ends before checkpoint {sequence}: it has {len(records)} records, "
                f"the checkpoint signs record {sequence}"
            )
        elif (found := records[sequence - 1].get("hash")) != checkpoint["head_hash"]:
            self.findings.append(
                f"export disagrees with checkpoint {sequence}: record {sequence} has hash "
                f"{found}, the checkpoint signs {checkpoint['head_hash']}"
            )

    # --- verification records ----------------------------------------------------

    def verification(self, position: int, record: dict[str, Any]) -> None:
        self.verifications += 1
        name = f"record {position} (verification)"
        entries = record.get("signatures")
        if not isinstance(entries, list):
            self.findings.append(f"{name}: signatures is not a list")
            return
        payload = record.get("payload")
        if isinstance(payload, dict):
            for member in ("config_sha256", "version", "expires"):
                if member in record and payload.get(member) != record.get(member):
                    self.findings.append(
                        f"{name}: payload {member} {payload.get(member)!r} differs from the "
                        f"record's {record.get(member)!r}"
                    )
        if not entries:
            return
        if self.keys is None:
            self.warnings.append(f"{name}: {len(entries)} signatures not checked (no --keys)")
            return
        trusted = self.signatures_of(name, entries, payload, record.get("development_key"))
        threshold = record.get("threshold")
        signed_valid = record.get("outcome") == "valid" and record.get("trust") == "signed"
        if signed_valid and isinstance(threshold, int) and len(trusted) < threshold:
            self.findings.append(
                f"{name}: outcome valid (signed) but {len(trusted)} signatures verify under "
                f"keys in the keys dir, threshold {threshold}"
            )

    def signatures_of(
        self, name: str, entries: list[Any], payload: Any, development: Any
    ) -> set[str]:
        """Check each entry; the key ids of the trusted ones that verify."""
        assert self.keys is not None
        dev_key = self.development_key(name, development)
        message = canonical(payload) if isinstance(payload, dict) else None
        trusted: set[str] = set()
        for entry in entries:
            if not isinstance(entry, dict):
                self.findings.append(f"{name}: a signature entry is not an object")
                continue
            self.signatures += 1
            keyid, recorded = entry.get("keyid"), entry.get("result")
            key = self.keys.get(keyid) if isinstance(keyid, str) else None
            is_dev = key is None and dev_key is not None and keyid == key_id(dev_key)
            if is_dev:
                key = dev_key
            true = (
                key is not None and message is not None and verifies(key, entry.get("sig"), message)
            )
            if recorded == "valid":
                if key is None:
                    self.findings.append(f"{name}: key {keyid} not in keys dir")
                elif not true:
                    self.findings.append(
                        f"{name}: the signature by key {keyid} is recorded valid but does not "
                        "verify over the payload"
                    )
                elif is_dev:
                    self.notes.append(f"{name}: key {keyid} is a development key (not trusted)")
                else:
                    trusted.add(str(keyid))
            elif true:
                self.notes.append(
                    f"{name}: the signature by key {keyid} recorded {recorded} verifies"
                )
        return trusted

    def development_key(self, name: str, development: Any) -> Ed25519PublicKey | None:
        if not isinstance(development, dict):
            return None
        pem = development.get("public_key_pem")
        try:
            key = parse_public_key(str(pem).encode("utf-8"), "development_key")
        except Unusable:
            self.findings.append(f"{name}: development_key is not a public key PEM")
            return None
        if development.get("keyid") != key_id(key):
            self.findings.append(
                f"{name}: development_key keyid {development.get('keyid')} is not its key's "
                f"id {key_id(key)}"
            )
            return None
        return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Verify an apex-oms audit export offline: the chain, every checkpoint, "
        "and the signatures of every verification record. Exit 0 all verified, 1 a "
        "finding, 2 unusable input."
    )
    parser.add_argument(
        "export", type=Path, help="the export (JSON Lines), `apex-oms audit export`"
    )
    parser.add_argument(
        "--service-key", type=Path, required=True, help="the service's public key PEM"
    )
    parser.add_argument("--keys", type=Path, help="the signers' public keys (a directory of PEM)")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint (JSON) obtained separately")
    args = parser.parse_args(argv)
    try:
        audit = Audit(
            read_public_key(args.service_key),
            read_keys_dir(args.keys) if args.keys is not None else None,
        )
        given = read_json_object(args.checkpoint, "checkpoint") if args.checkpoint else None
        records = read_export(args.export)
    except Unusable as exc:
        print(f"unusable input: {exc}", file=sys.stderr)
        return UNUSABLE
    audit.chain(records)
    if given is not None:
        audit.given(given, records)
    for line in audit.findings:
        print(f"FINDING {line}")
    for line in audit.warnings:
        print(f"warning: {line}")
    for line in audit.notes:
        print(f"note: {line}")
    print(
        f"{len(records)} records, {audit.checkpoints} checkpoints, {audit.verifications} "
        f"verification records, {audit.signatures} signatures checked"
        + (", the given checkpoint compared" if given is not None else "")
        + f": {len(audit.findings)} findings"
    )
    return FINDING if audit.findings else OK


if __name__ == "__main__":
    sys.exit(main())
