"""Signed checkpoints of the audit chain (issue 9, item 6): the service signs the
chain head with its own Ed25519 key, so that an auditor who keeps one checkpoint
can later show that a log, or an export of it, was cut short or rewritten.

A checkpoint is itself a chain record, appended in the transaction that reads
the head it signs, so it always names the record just before it:

    {"kind": "checkpoint", "timestamp": T, "actor": "system",
     "sequence": N, "head_hash": H, "keyid": <service key id>,
     "sig": <base64 Ed25519 signature over the canonical JSON of
             {"hash": H, "sequence": N, "time": T}>}

`sequence` is the 1-based position of the signed record in the chain, `head_hash`
its `hash`, `time` the checkpoint's own `timestamp` (when the service saw that
head). The same transaction keeps the linked checkpoint record in the store's
`checkpoint` setting, outside the chain rows, so that deleting the chain's tail
also has to rewrite that setting to go unseen. Anyone can check one signature
with OpenSSL alone (docs/audit.md).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .audit import Finding
from .canonical import canonical_json
from .clock import format_utc, parse_utc
from .errors import InvalidArgument
from .ports import CHECKPOINT_SETTING, Store, Writer
from .signing.keys import key_id

__all__ = [
    "CHECKPOINT_KIND",
    "Cadence",
    "CheckpointWatch",
    "checkpoint_problems",
    "due_by_time",
    "kept_sequence",
    "message",
    "new_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_KIND = "checkpoint"
_FIELDS = ("sequence", "head_hash", "keyid", "sig", "timestamp")


def message(sequence: int, digest: str, time: str) -> bytes:
    """The bytes a checkpoint signs: the canonical JSON of {sequence, hash, time}."""
    return canonical_json({"sequence": sequence, "hash": digest, "time": time})


def new_checkpoint(head: tuple[int, str], now: datetime, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The checkpoint record (unlinked) that signs `head` (position, hash) at `now`."""
    sequence, digest = head
    timestamp = format_utc(now)
    sig = key.sign(message(sequence, digest, timestamp))
    return {
        "kind": CHECKPOINT_KIND,
        "timestamp": timestamp,
        "actor": "system",
        "sequence": sequence,
        "head_hash": digest,
        "keyid": key_id(key.public_key()),
        "sig": base64.b64encode(sig).decode("ascii"),
    }


@dataclass(frozen=True)
class Cadence:
    """When a checkpoint is due: `records` appended since the last one, or
    `seconds` since it with at least one record appended."""

    records: int = 1000
    seconds: float = 60.0


def write_checkpoint(
    store: Store,
    key: Ed25519PrivateKey,
    now: datetime,
    cadence: Cadence | None = None,
    started: datetime | None = None,
) -> dict[str, Any] | None:
    """Append a checkpoint of the head if one is due (`cadence`; None: whenever
    anything was appended since the last one, as on shutdown). Decided under the
    chain lock, against the kept checkpoint, so replicas never sign one head
    twice; with none kept yet, the time counts from `started`. The linked record,
    or None when none was due."""

    def work(w: Writer) -> dict[str, Any] | None:
        sequence, digest = w.head()
        last = w.setting(CHECKPOINT_SETTING)
        # the last checkpoint sits right after the record it signs
        since = sequence - (_int(last, "sequence") + 1) if isinstance(last, dict) else sequence
        if since <= 0:
            return None  # nothing appended since: an idle service adds nothing
        if (
            cadence is not None
            and since < cadence.records
            and not due_by_time(last, now, cadence, started)
        ):
            return None
        linked = w.append(new_checkpoint((sequence, digest), now, key), "checkpoint", now)
        w.set_setting(CHECKPOINT_SETTING, linked, now)
        return linked

    return store.transact(work)


def due_by_time(
    last: Any, now: datetime, cadence: Cadence, started: datetime | None = None
) -> bool:
    """Whether `cadence.seconds` have passed since the kept checkpoint `last`
    (or, with none kept, since `started`; with neither, it is due)."""
    since = _time(last) if last is not None else started
    return since is None or (now - since).total_seconds() >= cadence.seconds


def checkpoint_problems(
    record: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey] | None
) -> list[tuple[str, str]]:
    """What is wrong with one checkpoint on its own: its fields, its key (among
    `keys`, by key id) and its signature, as (code, message) pairs. `keys` None:
    no service key is known, and the fields alone are checked."""
    missing = [name for name in _FIELDS if name not in record]
    if missing:
        return [("checkpoint_malformed", "missing " + ", ".join(missing))]
    sequence, digest = record["sequence"], record["head_hash"]
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        return [("checkpoint_malformed", f"sequence: want an integer >= 1, got {sequence!r}")]
    if not all(
        isinstance(record[name], str) for name in ("head_hash", "keyid", "sig", "timestamp")
    ):
        return [("checkpoint_malformed", "head_hash, keyid, sig and timestamp must be strings")]
    if keys is None:
        return []
    public = keys.get(record["keyid"])
    if public is None:
        return [("checkpoint_key_unknown", f"key {record['keyid']} is not the service key")]
    try:
        sig = base64.b64decode(record["sig"], validate=True)
    except (binascii.Error, ValueError):
        return [("checkpoint_signature_invalid", "sig is not base64")]
    try:
        public.verify(sig, message(sequence, digest, record["timestamp"]))
    except InvalidSignature:
        return [("checkpoint_signature_invalid", "the signature does not verify")]
    return []


@dataclass
class CheckpointWatch:
    """Checks every checkpoint as the chain streams past (`watch`), and keeps the
    hash at each position a checkpoint kept elsewhere names (`expect`), so one
    pass over the chain answers both."""

    keys: Mapping[str, Ed25519PublicKey] | None
    expect: set[int] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)
    seen: dict[int, str] = field(default_factory=dict)
    count: int = 0
    last: dict[str, Any] | None = None  # the chain's last checkpoint

    def watch(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        previous: dict[str, Any] | None = None
        for position, record in enumerate(records, start=1):
            if position in self.expect:
                self.seen[position] = str(record.get("hash"))
            if record.get("kind") == CHECKPOINT_KIND:
                self.count += 1
                self.last = record
                self._check(position, record, previous)
            previous = record
            yield record

    def _check(
        self, position: int, record: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        subject = f"checkpoint {record.get('sequence')!r} (record {position})"
        for code, text in checkpoint_problems(record, self.keys):
            self.findings.append(Finding(subject, code, None, text))
        if self.findings and self.findings[-1].subject == subject:
            return
        want = {"sequence": position - 1, "hash": previous.get("hash") if previous else None}
        got = {"sequence": record["sequence"], "hash": record["head_hash"]}
        if got != want:
            self.findings.append(Finding(subject, "checkpoint_head_mismatch", want, got))

    def kept_findings(self, kept: Any, records: int) -> list[Finding]:
        """The store's kept checkpoint (its `checkpoint` setting) against the chain:
        it must be the chain's last checkpoint, and the chain must reach it."""
        if kept is None:
            if self.last is None:
                return []
            want = {"sequence": self.last.get("sequence"), "hash": self.last.get("hash")}
            return [Finding("kept checkpoint", "checkpoint_not_kept", want, None)]
        findings = self.against(kept, "kept", records)
        last = self.last or {}
        if not findings and kept.get("hash") != last.get("hash"):
            want = {"sequence": last.get("sequence"), "hash": last.get("hash")}
            got = {"sequence": kept.get("sequence"), "hash": kept.get("hash")}
            subject = f"kept checkpoint {kept.get('sequence')!r}"
            findings.append(Finding(subject, "checkpoint_kept_differs", want, got))
        return findings

    def against(self, kept: Any, label: str, records: int) -> list[Finding]:
        """Findings for a checkpoint kept outside the chain (the store's setting,
        or one an auditor holds): its signature, and that the chain reaches its
        sequence with its hash. Call after the chain was read, with `expect`
        holding its sequence from before."""
        if not isinstance(kept, dict):
            return [Finding(label, "checkpoint_malformed", "a JSON object", type(kept).__name__)]
        sequence = kept.get("sequence")
        subject = f"{label} checkpoint {sequence!r}"
        problems = checkpoint_problems(kept, self.keys)
        findings = [Finding(subject, code, None, text) for code, text in problems]
        if problems and problems[0][0] == "checkpoint_malformed":
            return findings
        assert isinstance(sequence, int)
        if records < sequence:
            findings.append(
                Finding(
                    subject,
                    "chain_ends_before_checkpoint",
                    {"records": f">= {sequence}"},
                    {"records": records},
                )
            )
        elif self.seen.get(sequence) != kept["head_hash"]:
            findings.append(
                Finding(
                    subject,
                    "checkpoint_disagrees",
                    {"hash": kept["head_hash"]},
                    {"hash": self.seen.get(sequence)},
                )
            )
        return findings


def kept_sequence(kept: Any) -> int | None:
    """The sequence a kept checkpoint names, when it has one."""
    value = kept.get("sequence") if isinstance(kept, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _int(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(record: Any) -> datetime | None:
    text = record.get("timestamp") if isinstance(record, dict) else None
    if not isinstance(text, str):
        return None
    try:
        return parse_utc(text)
    except (ValueError, InvalidArgument):
        return None
