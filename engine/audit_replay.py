"""Verification that the database alone cannot fool (issue 8, item 4), as pure
functions over what the store read in one snapshot (`ports.AuditState`).

Four checks, after the chain's own links and hashes (`audit.verify_chain`):
- the head: the chain must end exactly at the stored `chain_head` (its seq is
  the number of records, its hash the last record's), so a deleted tail or a
  forged record appended with a recomputed hash shows;
- the orders rows: each row's record must be the order's current record in
  the chain, and its `status`, `quantity`, `limit_price` and `stop_price`
  columns that record's; every order in the chain must have its row;
- the checkpoints (engine/checkpoints.py): each one's signature and the record
  it names, and the latest one as the store keeps it outside the chain rows
  (and one obtained separately, when given), which the chain must reach;
- the positions: each order's filled quantity (its records' largest
  `broker_response.filled_quantity`: fills only grow, and a record that
  reports none, such as a refused attempt, leaves it), signed by side and
  summed per (account, symbol), must be the stored position.

An order's current record is its latest record that moved the row, replayed
as the gateway writes rows: a refused cancel or replace (`blocked`) and a
broker's failure to cancel or replace (`broker_api_error`, the order keeping
its status) are logged without moving it, and such a failure after a
`pending_cancel` or `pending_replace` puts the row back to the record before
the pending one. The terms columns follow the current record except while it
is a `pending_replace`: a replace's terms reach the row when it is confirmed.

A refused attempt about another order (a retry, a conflict, a refused cancel
or replace, a refused role: `rejected`, naming that order in
`original_order_id`) has an order id and a row of its own. It is replayed as
an order of its own, keyed by its own id, never as a record of the order it
names: it cannot move that order's row, status, terms or position, and its own
row is checked like any other (`rejected`, never filled).

Every stored position change is a fill of an order booked with its record, or
a broker's position sync (`position_sync`, engine/gateway/portfolio.py), which
sets the position to the broker's `after`: the replay keeps it as an offset
over the fills, so the fills that follow still add up. Its `price` member,
present when the broker gave one, is the holding's mark and moves nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .audit import ChainBreak, ChainReport, Finding, verify_chain
from .checkpoints import CheckpointWatch, kept_sequence
from .ports import AuditState, OrderRow, Store

__all__ = ["TOLERANCE", "ServiceKeys", "verify_export", "verify_state", "verify_store"]

ServiceKeys: TypeAlias = Mapping[str, Ed25519PublicKey]  # by key id

TOLERANCE = 1e-9  # positions and prices are floats: sums of fills drift below this
_PENDING = ("pending_cancel", "pending_replace")
_AMENDS = ("cancel", "replace")
_TERMS = ("quantity", "limit_price", "stop_price")


def verify_store(
    store: Store, keys: ServiceKeys | None = None, checkpoint: Any = None
) -> ChainReport:
    """Read the store in one snapshot and verify it."""
    with store.audit_state() as state:
        return verify_state(state, keys, checkpoint)


def verify_state(
    state: AuditState, keys: ServiceKeys | None = None, checkpoint: Any = None
) -> ChainReport:
    """The chain's check, then the head, the checkpoints and the rows compared
    with the chain. A broken chain is reported alone: what it would derive is not
    evidence. `keys`: the service keys by key id that checkpoints must be signed
    with (None: their signatures are not checked); `checkpoint`: one obtained
    separately, which the chain must reach and agree with."""
    replay = _Replay()
    watch = _watch(keys, state.checkpoint, checkpoint)
    report = verify_chain(watch.watch(replay.watch(state.records)))
    report = replace(report, scope="store", stored_head=state.head)
    if not report.ok:
        return report
    findings = [
        *_head_findings(report, state.head),
        *watch.findings,
        *watch.kept_findings(state.checkpoint, report.records),
        *_given_findings(watch, checkpoint, report.records),
        *replay.order_findings(state.orders),
        *replay.position_findings(state.positions),
    ]
    report = replace(report, head_compared=True, rows_compared=True, findings=tuple(findings))
    return _counted(report, watch)


def verify_export(
    lines: Iterable[str], keys: ServiceKeys | None = None, checkpoint: Any = None
) -> ChainReport:
    """An export (one record per line, in chain order) by its links and hashes,
    and its checkpoints (`keys` as for `verify_state`); an export carries no
    head, so a deleted tail shows only against a `checkpoint` obtained
    separately. A line that is not a JSON object breaks the chain there."""
    unreadable: list[int] = []
    watch = _watch(keys, None, checkpoint)

    def records() -> Iterator[dict[str, Any]]:
        for number, line in enumerate((ln for ln in lines if ln.strip()), start=1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                unreadable.append(number)
                return
            yield record

    report = replace(verify_chain(watch.watch(records())), scope="export")
    if unreadable and report.first_break is None:
        position = unreadable[0]
        broken = ChainBreak(position, None, "not a JSON object")
        return replace(report, records=position, first_break=broken)
    if not report.ok:
        return report
    findings = (*watch.findings, *_given_findings(watch, checkpoint, report.records))
    return _counted(replace(report, findings=findings), watch)


def _counted(report: ChainReport, watch: CheckpointWatch) -> ChainReport:
    notes: tuple[str, ...] = ()
    if watch.keys is None and watch.count:
        notes = (f"{watch.count} checkpoint signatures not checked: no service key given",)
    return replace(report, checkpoints=watch.count, notes=notes)


def _watch(keys: ServiceKeys | None, *kept: Any) -> CheckpointWatch:
    expect = {seq for seq in map(kept_sequence, kept) if seq is not None}
    return CheckpointWatch(keys, expect)


def _given_findings(watch: CheckpointWatch, checkpoint: Any, records: int) -> list[Finding]:
    return [] if checkpoint is None else watch.against(checkpoint, "given", records)


def _head_findings(report: ChainReport, head: tuple[int, str] | None) -> list[Finding]:
    got = {"records": report.records, "hash": report.head}
    if head is None:
        return [Finding("chain_head", "head_missing", None, got)]
    seq, digest = head
    want = {"records": seq, "hash": digest}
    if report.records < seq:
        return [Finding("chain_head", "chain_truncated", want, got)]
    if report.records > seq:
        return [Finding("chain_head", "chain_past_head", want, got)]
    if report.head != digest:
        return [Finding("chain_head", "head_mismatch", want, got)]
    return []


@dataclass
class _Order:
    """One order as its records in the chain imply its row and its fills."""

    current: dict[str, Any]  # the record the row holds
    before: dict[str, Any] | None  # the one before it, for a failed pending amend
    terms: dict[str, Any]  # the terms columns
    filled: float = 0.0
    side: Any = None
    account: Any = None
    symbol: Any = None


class _Replay:
    def __init__(self) -> None:
        self.orders: dict[str, _Order] = {}
        # (account, symbol) -> what position syncs added beyond the fills
        self.synced: dict[tuple[str, str], float] = {}

    def watch(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """`records`, unchanged, each replayed as it passes."""
        for record in records:
            self.see(record)
            yield record

    def see(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "position_sync":
            self.sync(record)
            return
        order_id = record.get("order_id")
        if "kind" in record or not isinstance(order_id, str):
            return  # not an order record
        order = self.orders.get(order_id)
        if order is None:
            order = self.orders[order_id] = _Order(record, None, _terms(record))
        elif _moves_row(record):
            order.before, order.current = order.current, record
            if record.get("order_status") != "pending_replace":
                order.terms = _terms(record)
        elif (
            _failed_amend(record)
            and order.current.get("order_status") in _PENDING
            and order.before is not None
        ):
            order.current, order.before = order.before, None
        order.filled = max(order.filled, self.position_change(record))
        order.side = record.get("side", order.side)
        order.account = record.get("account", order.account)
        order.symbol = record.get("symbol", order.symbol)

    @staticmethod
    def position_change(record: dict[str, Any]) -> float:
        """The order's filled quantity as this record reports it (0: none). The one
        place a future position-moving record (a broker's position sync) must
        be taught to this replay."""
        response = record.get("broker_response")
        filled = response.get("filled_quantity") if isinstance(response, dict) else None
        if isinstance(filled, int | float) and not isinstance(filled, bool):
            return float(filled)
        return 0.0

    def order_findings(self, rows: list[OrderRow]) -> list[Finding]:
        findings: list[Finding] = []
        stored = {row.order_id: row for row in rows}
        for order_id, row in sorted(stored.items(), key=lambda item: _order_key(item[0])):
            order = self.orders.get(order_id)
            if order is None:
                findings.append(Finding(order_id, "order_not_in_chain", None, row.status))
                continue
            want = order.current
            if row.record != want:
                expected, got = _differing(want, row.record)
                findings.append(Finding(f"{order_id}.record", "record_differs", expected, got))
            status = want.get("order_status")
            if row.status != status:
                findings.append(Finding(f"{order_id}.status", "column_differs", status, row.status))
            for column in _TERMS:
                expected, got = order.terms[column], getattr(row, column)
                if not _same_column(expected, got):
                    findings.append(
                        Finding(f"{order_id}.{column}", "column_differs", expected, got)
                    )
        for order_id in sorted(self.orders.keys() - stored.keys(), key=_order_key):
            status = self.orders[order_id].current.get("order_status")
            findings.append(Finding(order_id, "order_row_missing", status, None))
        return findings

    def sync(self, record: dict[str, Any]) -> None:
        """A broker's position sync: from here on the position is the broker's
        `after` plus the fills that follow (kept as an offset over the fills)."""
        account, symbol, after = record.get("account"), record.get("symbol"), record.get("after")
        if not isinstance(account, str) or not isinstance(symbol, str):
            return
        if isinstance(after, bool) or not isinstance(after, int | float):
            return
        key = (account, symbol)
        filled = self.filled_positions().get(key, 0.0)
        self.synced[key] = float(after) - filled

    def filled_positions(self) -> dict[tuple[str, str], float]:
        want: dict[tuple[str, str], float] = {}
        for order in self.orders.values():
            if not order.filled:
                continue
            key = (_text(order.account) or "default", _text(order.symbol) or "")
            signed = order.filled if order.side == "buy" else -order.filled
            want[key] = want.get(key, 0.0) + signed
        return want

    def position_findings(self, stored: dict[tuple[str, str], float]) -> list[Finding]:
        want = self.filled_positions()
        for key, offset in self.synced.items():
            want[key] = want.get(key, 0.0) + offset
        findings = []
        for key in sorted(want.keys() | stored.keys()):
            expected, got = want.get(key, 0.0), stored.get(key, 0.0)
            if not math.isclose(expected, got, rel_tol=0.0, abs_tol=TOLERANCE):
                findings.append(Finding(f"{key[0]}/{key[1]}", "position_differs", expected, got))
        return findings


def _moves_row(record: dict[str, Any]) -> bool:
    if record.get("operation") not in _AMENDS:
        return True
    return record.get("order_status") != "blocked" and not _failed_amend(record)


def _failed_amend(record: dict[str, Any]) -> bool:
    """A broker's failure to cancel or replace: logged, the order keeping its status."""
    triggers = record.get("fail_closed_triggers")
    return (
        record.get("operation") in _AMENDS
        and record.get("order_status") not in ("blocked", *_PENDING)
        and isinstance(triggers, list)
        and "broker_api_error" in triggers
    )


def _terms(record: dict[str, Any]) -> dict[str, Any]:
    return {column: record.get(column) for column in _TERMS}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_column(want: Any, got: Any) -> bool:
    """A column against the record's value: numbers within the tolerance; a
    client's value that is not a number may have been left out of the column."""
    if _is_number(want):
        return _is_number(got) and math.isclose(want, got, rel_tol=0.0, abs_tol=TOLERANCE)
    return got is None or got == want


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _order_key(order_id: str) -> tuple[int, str]:
    # the id alone would sort ORD-2026-1000000 before ORD-2026-999999
    return (len(order_id), order_id)


def _differing(want: dict[str, Any], got: Any) -> tuple[Any, Any]:
    """The members in which a stored record differs from the chain's, not whole."""
    if not isinstance(got, dict):
        return {"hash": want.get("hash")}, got
    keys = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    return {k: want.get(k) for k in keys}, {k: got.get(k) for k in keys}
