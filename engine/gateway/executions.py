"""Broker truth: every answer or report a broker gives about an order is booked
here, in one transaction, against the lifecycle's transition table.

Broker truth wins: what the broker reports is booked as it reported it, and
positions follow the broker. What the table does not expect is booked all the
same, and named: a fill on an order held as cancelled, fills beyond the order's
quantity (an overfill), the same execution reported twice, or any transition
the table does not allow each append an `execution_anomaly` record, are told to
the listener (metrics), and move the account to `reducing`, so that until
compliance looks, the account can only reduce its positions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..broker import BrokerAck, Fill
from ..clock import format_utc
from ..errors import OrderUnknown
from ..lifecycle import TERMINAL, OrderStatus, allowed
from ..policy.calendar import trading_day
from ..ports import Controls, StoredOrder, Writer
from ..records import OrderRecord
from ._records import event
from .desk import Desk

__all__ = ["Applied", "Executions"]

log = logging.getLogger("apex.gateway")

_EPSILON = 1e-9


@dataclass(frozen=True)
class Applied:
    record: dict[str, Any]  # the order's new record, linked
    anomalies: tuple[dict[str, Any], ...] = ()
    changed: bool = True  # False: the report said nothing new; nothing was written


class Executions:
    def __init__(self, desk: Desk) -> None:
        self._desk = desk

    def apply(
        self,
        order_id: str,
        ack: BrokerAck,
        actor: str,
        operation: str,
        *,
        terms: dict[str, Any] | None = None,
        comment: str | None = None,
        only_if_changed: bool = False,
        anomaly: dict[str, Any] | None = None,
    ) -> Applied:
        """Book what the broker says of an order: its status, its new fills and their
        positions, and any anomaly. `terms`: the new quantity and prices a confirmed
        replace brings; `anomaly`: one the caller found (an order the broker does not
        know). Raises StoreUnavailable (the broker has acted: the caller
        must be loud) or KeyError if the order is unknown."""
        now = self._desk.clock()
        session = self._desk.evaluator.policy.config.session

        def day_of(at: datetime) -> str:  # the trading day a fill's notional counts on
            return trading_day(session, at)

        def work(w: Writer) -> Applied:
            stored = w.order(order_id)
            if stored is None:
                raise OrderUnknown(order_id)
            # nothing filled yet: no fill to read back (the common first report)
            booked = w.fills(order_id) if stored.filled_quantity > 0 else []
            new, duplicates = _new_fills(ack.fills, booked)
            quantity = float((terms or {}).get("quantity") or stored.record.quantity or 0.0)
            total = sum(f.quantity for f in booked) + sum(f.quantity for f in new)
            status = OrderStatus(ack.status)
            if only_if_changed and not new and status == stored.status:
                return Applied(stored.linked or stored.record.as_dict(), changed=False)
            anomalies = _anomalies(stored, status, new, duplicates, total, quantity, ack)
            if anomaly is not None:
                anomalies.append({**anomaly, "broker_order_id": ack.broker_order_id})
            record = stored.record.evolve(
                timestamp=format_utc(now),
                order_status=status,
                broker_response=ack.response(),
                actor=actor,
                operation=operation,
                comment=comment,
                **_record_terms(terms),
            )
            linked = _book(w, stored, record, ack, new, total, terms, now, day_of)
            found = tuple(
                w.append(
                    event(
                        "execution_anomaly",
                        now,
                        actor,
                        order_id=order_id,
                        account=stored.account,
                        symbol=stored.symbol,
                        broker=stored.broker,
                        **anomaly,
                    ),
                    "anomaly",
                    now,
                )
                for anomaly in anomalies
            )
            if found:
                _reduce(w, stored.account or "default", order_id, now)
            return Applied(linked, found)

        applied = self._desk.store.transact(work)
        for anomaly in applied.anomalies:
            log.warning("execution anomaly on %s: %s", order_id, anomaly.get("anomaly"))
            self._desk.tell("execution_anomaly", anomaly)
        return applied


def _new_fills(reported: tuple[Fill, ...], booked: list[Fill]) -> tuple[list[Fill], list[Fill]]:
    """The fills not booked yet, and the duplicates among those reported. A report
    lists every fill so far; fills with an execution id are matched by it (an id
    listed twice in one report is a duplicate execution), fills without one by
    cumulative quantity (only what goes beyond the booked total is new)."""
    seen = {f.execution_id for f in booked if f.execution_id}
    new: list[Fill] = []
    duplicates: list[Fill] = []
    in_report: set[str] = set()
    anonymous_booked = sum(f.quantity for f in booked if not f.execution_id)
    running = 0.0
    for fill in reported:
        if fill.execution_id:
            if fill.execution_id in in_report:
                duplicates.append(fill)
                continue
            in_report.add(fill.execution_id)
            if fill.execution_id not in seen:
                new.append(fill)
            continue
        running += fill.quantity
        if running <= anonymous_booked + _EPSILON:
            continue
        part = min(fill.quantity, running - anonymous_booked)
        new.append(Fill(part, fill.price, fill.at))
    return new, duplicates


def _anomalies(
    stored: StoredOrder,
    status: OrderStatus,
    new: list[Fill],
    duplicates: list[Fill],
    total: float,
    quantity: float,
    ack: BrokerAck,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    before = stored.status
    filled_now = sum(f.quantity for f in new)
    if new and before in TERMINAL:
        name = "fill_after_cancel" if before == OrderStatus.CANCELLED else "fill_after_close"
        found.append(
            _anomaly(name, f"no fill on an order held as {before}", f"fill of {filled_now:g}", ack)
        )
    elif not allowed(before, status):
        found.append(
            _anomaly("unexpected_transition", f"a status after {before}", str(status), ack)
        )
    if total > quantity + _EPSILON and new:
        found.append(
            _anomaly(
                "overfill",
                f"cumulative quantity <= {quantity:g}",
                f"cumulative quantity {total:g}",
                ack,
            )
        )
    for fill in duplicates:
        found.append(
            _anomaly(
                "duplicate_execution",
                f"execution {fill.execution_id} reported once",
                f"execution {fill.execution_id} again: {fill.quantity:g} at {fill.price:g}",
                ack,
            )
        )
    return found


def _anomaly(name: str, expected: str, got: str, ack: BrokerAck) -> dict[str, Any]:
    return {
        "anomaly": name,
        "expected": expected,
        "got": got,
        "broker_order_id": ack.broker_order_id,
        "broker_status": str(ack.status),
    }


def _record_terms(terms: dict[str, Any] | None) -> dict[str, Any]:
    """The terms a confirmed replace brings into the record (its checks came with
    the `pending_replace` record it evolves from)."""
    given = terms or {}
    return {k: given[k] for k in ("quantity", "limit_price", "stop_price") if k in given}


def _book(
    w: Writer,
    stored: StoredOrder,
    record: OrderRecord,
    ack: BrokerAck,
    new: list[Fill],
    total: float,
    terms: dict[str, Any] | None,
    now: datetime,
    day_of: Callable[[datetime], str],
) -> dict[str, Any]:
    linked = w.append(record.as_dict(), "order", now)
    row_terms = None
    if terms:
        row_terms = {k: terms[k] for k in ("quantity", "limit_price", "stop_price", "request")}
    w.update_order(
        stored.order_id,
        linked,
        now,
        broker_order_id=ack.broker_order_id or stored.broker_order_id,
        filled_quantity=total,
        average_price=ack.average_price if ack.average_price is not None else stored.average_price,
        terms=row_terms,
    )
    w.event(stored.order_id, str(record.order_status), ack.response(), now)
    side = stored.record.side
    for fill in new:
        w.fill(stored.order_id, fill)
        signed = fill.quantity if side == "buy" else -fill.quantity
        account = stored.account or "default"
        w.move_position(account, stored.symbol or "", signed, fill.price)
        w.add_executed(account, day_of(fill.at), fill.quantity * fill.price)
    return linked


def _reduce(w: Writer, account: str, order_id: str, now: datetime) -> None:
    """An anomaly moves an active account to `reducing` (a halted one stays halted)."""
    controls = w.controls()
    if controls.state_of(account) != "active":
        return
    entry = {
        "state": "reducing",
        "reason": f"execution anomaly on {order_id}",
        "actor": "system",
        "at": format_utc(now),
    }
    w.set_controls(Controls(controls.mode, {**controls.states, account: entry}), now)
    w.append(
        event(
            "trading_state_changed",
            now,
            "system",
            scope=account,
            previous="active",
            state="reducing",
            reason=entry["reason"],
        ),
        "state",
        now,
    )
