"""Rows to the port's values and back: orders, controls, tokens, fills.

Datetimes are read through the dialect's `read_when`, since the driver and
SQLAlchemy hand them back in different forms (SQLite: text or naive).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from engine.broker import Fill
from engine.lifecycle import OPEN, OrderStatus
from engine.limits import CODE_LENGTH, IDENTIFIER_LENGTH, SYMBOL_LENGTH
from engine.models import FlowCounts, WorkingOrder
from engine.ports import Controls, Snapshot, StoredOrder, TokenRow
from engine.records import OrderRecord

__all__ = [
    "OPEN_STATUSES",
    "ORDER_COLUMNS",
    "TOKEN_COLUMNS",
    "ReadWhen",
    "accounts_text",
    "controls",
    "fill",
    "json_text",
    "order_values",
    "snapshot",
    "stored_order",
    "token_row",
    "with_book",
    "working_order",
]

ReadWhen = Callable[[Any], datetime]

# The columns a StoredOrder is read from, in this order.
ORDER_COLUMNS = (
    "order_id", "operation", "client_order_id", "account", "symbol", "status", "broker",
    "broker_order_id", "filled_quantity", "average_price", "request", "record",
    "created_at", "updated_at",
)  # fmt: skip
TOKEN_COLUMNS = (
    "token_id",
    "role",
    "accounts",
    "label",
    "created_at",
    "revoked_at",
    "expires_at",
)


def stored_order(row: Sequence[Any], read_when: ReadWhen) -> StoredOrder:
    (order_id, operation, client_order_id, account, symbol, status, broker,
     broker_order_id, filled, average, request, record, created, updated) = row  # fmt: skip
    return StoredOrder(
        order_id=order_id,
        operation=operation,
        client_order_id=client_order_id,
        account=account,
        symbol=symbol,
        status=OrderStatus(status),
        broker=broker,
        broker_order_id=broker_order_id,
        filled_quantity=float(filled or 0.0),
        average_price=float(average) if average is not None else None,
        request=json.loads(request),
        record=OrderRecord.from_dict(stored := json.loads(record)),
        linked=stored,
        created_at=read_when(created),
        updated_at=read_when(updated),
    )


def controls(mode: str | None, states: str | None, omega: str | None) -> Controls:
    """The controls as stored. Once `trading_states` is written it is the whole
    truth; before that, a legacy `omega` setting {"active": true} (written by
    versions before trading states) reads as the global `halted`."""
    by_scope: dict[str, dict[str, Any]] = json.loads(states) if states is not None else {}
    if states is None and omega is not None:
        legacy = json.loads(omega)
        if legacy.get("active") is True:
            by_scope["global"] = {
                "state": "halted",
                "reason": legacy.get("reason", ""),
                "actor": legacy.get("actor"),
                "at": legacy.get("at"),
            }
    return Controls(
        mode=json.loads(mode)["mode"] if mode is not None else "research",
        states=by_scope,
    )


def snapshot(row: Sequence[Any]) -> Snapshot:
    mode, states, omega, position, counted, duplicate, claimed, digest = row
    return Snapshot(
        controls=controls(mode, states, omega),
        position=float(position or 0.0),
        flow=FlowCounts(orders_in_window=int(counted), duplicate_recent=duplicate is not None),
        claim=(claimed, digest) if claimed is not None else None,
    )


# engine.lifecycle.OPEN as the orders table spells it (the book statement's list)
OPEN_STATUSES = frozenset(status.value for status in OPEN)


def with_book(snap: Snapshot, rows: Sequence[Sequence[Any]]) -> Snapshot:
    """The snapshot with the account's book read by the book statement's tagged rows."""
    positions: dict[str, float] = {}
    marks: dict[str, float] = {}
    working: list[WorkingOrder] = []
    executed = 0.0
    for tag, order_id, symbol, side, order_type, quantity, price, stop, request in rows:
        if tag == "w":
            working.append(
                _working(order_id, symbol, side, order_type, quantity, price, stop, request)
            )
        elif tag == "p":
            positions[symbol] = float(quantity or 0.0)
            if price is not None:
                marks[symbol] = float(price)
        else:
            executed += float(quantity or 0.0)
    working.sort(key=lambda o: o.order_id)  # in the order sent, on every backend
    return dataclasses.replace(
        snap, positions=positions, marks=marks, working=tuple(working), executed_today=executed
    )


def working_order(row: dict[str, Any]) -> WorkingOrder:
    """A working order from an orders row this transaction buffers (not written yet)."""
    remaining = float(row["quantity"] or 0.0) - float(row.get("filled_quantity") or 0.0)
    return _working(
        row["order_id"],
        row["symbol"],
        row["side"],
        row["order_type"],
        remaining,
        row["limit_price"],
        row["stop_price"],
        row["request"] if row["order_type"] == "market" else None,
    )


def _working(
    order_id: str,
    symbol: str,
    side: str,
    order_type: str,
    remaining: Any,
    limit_price: Any,
    stop_price: Any,
    request: Any,
) -> WorkingOrder:
    limit = float(limit_price) if limit_price is not None else None
    stop = float(stop_price) if stop_price is not None else None
    price = limit if order_type == "limit" else stop if order_type == "stop" else _touch(request)
    # read from our own table: constructed without validating again on the hot path
    return WorkingOrder.model_construct(
        order_id=order_id,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=max(float(remaining or 0.0), 0.0),
        limit_price=limit,
        stop_price=stop,
        price=price,
    )


def _touch(request: Any) -> float | None:
    """A market order's price as it was judged: the touch of the quote it was
    sent with (ask to buy, bid to sell, else last); None when it had none."""
    try:
        body = json.loads(request) if isinstance(request, str) else request
        quote = body["context"]["quote"]
        touch = quote.get("ask") if body.get("side") == "buy" else quote.get("bid")
        value = touch if touch is not None else quote.get("last")
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def token_row(row: Sequence[Any], read_when: ReadWhen) -> TokenRow:
    token_id, role, accounts, label, created, revoked, expires = row
    return TokenRow(
        token_id=token_id,
        role=role,
        accounts=frozenset(json.loads(accounts)) if accounts is not None else None,
        label=label,
        created_at=read_when(created),
        revoked_at=read_when(revoked) if revoked is not None else None,
        expires_at=read_when(expires) if expires is not None else None,
    )


def accounts_text(accounts: Collection[str] | None) -> str | None:
    return json.dumps(sorted(accounts)) if accounts is not None else None


def fill(row: Sequence[Any], read_when: ReadWhen) -> Fill:
    quantity, price, at, execution_id = row
    return Fill(float(quantity), float(price), read_when(at), execution_id or "")


def order_values(
    record: dict[str, Any], text: str, request: Any, at: Any, time_in_force: str | None
) -> dict[str, Any]:
    """The orders row of a new attempt; `text`: the record as the chain stores it,
    `at`: the time in the dialect's form."""
    return {
        "order_id": record["order_id"],
        "operation": record.get("operation") or "evaluate",
        # a refused attempt about another order (a retry, a conflict: it names
        # `original_order_id`) keeps the client order id in its record only, so
        # that looking an order up by its client order id finds the order, not
        # a `rejected` retry listed before it
        "client_order_id": (
            None
            if record.get("original_order_id")
            else _fits(record.get("client_order_id"), IDENTIFIER_LENGTH)
        ),
        "account": _fits(record.get("account"), IDENTIFIER_LENGTH),
        "symbol": _fits(record.get("symbol"), SYMBOL_LENGTH),
        "side": _fits(record.get("side"), CODE_LENGTH),
        "quantity": record.get("quantity"),
        "order_type": _fits(record.get("order_type"), CODE_LENGTH),
        "limit_price": record.get("limit_price"),
        "stop_price": record.get("stop_price"),
        "time_in_force": _fits(time_in_force, CODE_LENGTH),
        "reduce_only": bool(record.get("reduce_only")),
        "status": str(record["order_status"]),
        "broker": record.get("broker"),
        "broker_order_id": None,
        "filled_quantity": 0.0,
        "average_price": None,
        "request": json_text(request),
        "record": text,
        "created_at": at,
        "updated_at": at,
    }


def _fits(value: Any, width: int) -> str | None:
    """A client's text as an indexed column can hold it, or nothing: a rejected
    request may carry anything, and its record (which keeps every byte, escaped)
    must still be written. A NUL, which PostgreSQL text cannot hold, or a value
    wider than the column leaves the column empty."""
    if not isinstance(value, str) or len(value) > width or "\x00" in value:
        return None
    return value


def json_text(value: Any) -> str:
    """A request body as stored: ASCII escapes keep a client's lone surrogate
    storable, and nothing is lost; a body JSON cannot hold is kept as its repr."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(repr(value))
