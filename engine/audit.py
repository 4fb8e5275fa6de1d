"""The hash chain of the audit log (SPEC section 7), as pure functions.

Anyone can re-check an export with a few lines of any language:
hash = "sha256:" + sha256(canonical JSON of the record without `hash`),
and each record's `prev_hash` is the previous record's `hash`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .canonical import canonical_json, sha256_hex

__all__ = [
    "GENESIS",
    "ChainBreak",
    "ChainReport",
    "Finding",
    "link",
    "link_text",
    "record_hash",
    "verify_chain",
]

GENESIS = "sha256:" + "0" * 64


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return "sha256:" + sha256_hex(canonical_json(body))


def link(record: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    """The record with `prev_hash` and `hash` set, ready to append."""
    return link_text(record, prev_hash)[0]


def link_text(record: dict[str, Any], prev_hash: str) -> tuple[dict[str, Any], str]:
    """`link`, and the linked record's canonical JSON text, encoding the record once:
    canonical JSON lists keys in sorted order, so the keys before "hash" and the
    keys after it encode apart, and their texts joined with or without the hash
    member are the canonical texts of the record with or without its hash."""
    body = {k: v for k, v in record.items() if k not in ("prev_hash", "hash")}
    body["prev_hash"] = prev_hash
    before = {k: v for k, v in body.items() if k < "hash"}
    after = {k: v for k, v in body.items() if k > "hash"}
    head, tail = _members(before), _members(after)
    digest = "sha256:" + sha256_hex(("{" + ",".join(filter(None, (head, tail))) + "}").encode())
    member = canonical_json({"hash": digest}).decode("utf-8")[1:-1]
    text = "{" + ",".join(filter(None, (head, member, tail))) + "}"
    return {**body, "hash": digest}, text


def _members(part: dict[str, Any]) -> str:
    """The members of `part` as canonical JSON, without the braces."""
    return canonical_json(part).decode("utf-8")[1:-1]


@dataclass(frozen=True)
class ChainBreak:
    position: int  # 1-based position in chain order
    order_id: str | None
    reason: str


@dataclass(frozen=True)
class Finding:
    """One thing the store holds that the chain does not vouch for: `subject`
    names it (`chain_head`, an order id and column, `account/symbol`), `code`
    says how it differs, `want` is what the chain implies, `got` what is stored."""

    subject: str
    code: str
    want: Any
    got: Any

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "code": self.code, "want": self.want, "got": self.got}

    def describe(self) -> str:
        return f"{self.subject}: {self.code} (want: {self.want!r}, got: {self.got!r})"


@dataclass(frozen=True)
class ChainReport:
    """The chain's own check (`first_break`) and, when a store was read with it,
    the comparison with the stored head and rows (`findings`). `scope`: `chain`
    (records given, links and hashes), `store` (with the stored head and rows)
    or `export` (a file, which carries no head: a deleted tail cannot show)."""

    records: int
    head: str
    first_break: ChainBreak | None
    scope: str = "chain"
    head_compared: bool = False
    stored_head: tuple[int, str] | None = None  # chain_head's seq and hash
    rows_compared: bool = False
    findings: tuple[Finding, ...] = ()
    checkpoints: int = 0  # signed checkpoints in the chain (engine/checkpoints.py)
    notes: tuple[str, ...] = ()  # what was not checked, and why (never a failure)

    @property
    def ok(self) -> bool:
        return self.first_break is None and not self.findings

    def as_dict(self) -> dict[str, Any]:
        broken = self.first_break
        stored = self.stored_head
        body: dict[str, Any] = {
            "ok": self.ok,
            "records": self.records,
            "head": self.head,
            "first_break": None
            if broken is None
            else {
                "position": broken.position,
                "order_id": broken.order_id,
                "reason": broken.reason,
            },
        }
        if self.scope == "chain":
            return body
        body = {
            **body,
            "scope": self.scope,
            "head_compared": self.head_compared,
            "stored_head": None if stored is None else {"seq": stored[0], "hash": stored[1]},
            "rows_compared": self.rows_compared,
            "findings": [f.as_dict() for f in self.findings],
        }
        if self.checkpoints or self.notes:  # a chain with checkpoints says how many
            body.update(checkpoints=self.checkpoints, notes=list(self.notes))
        return body


def verify_chain(records: Iterable[dict[str, Any]]) -> ChainReport:
    """Recompute every hash in order; name the first record that does not fit."""
    expected_prev = GENESIS
    count = 0
    for count, record in enumerate(records, start=1):
        order_id = record.get("order_id") if isinstance(record.get("order_id"), str) else None
        if record.get("prev_hash") != expected_prev:
            reason = f"prev_hash mismatch (want: {expected_prev}, got: {record.get('prev_hash')})"
            return ChainReport(count, expected_prev, ChainBreak(count, order_id, reason))
        actual = record_hash(record)
        if record.get("hash") != actual:
            reason = f"hash mismatch (want: {actual}, got: {record.get('hash')})"
            return ChainReport(count, expected_prev, ChainBreak(count, order_id, reason))
        expected_prev = actual
    return ChainReport(count, expected_prev, None)
