"""Building records: order records from decisions, the records that are not
about one order, and the small conversions the gateway's parts share."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from ..broker import BrokerAdapter, BrokerOrder
from ..canonical import sha256_digest
from ..clock import format_utc
from ..judged import judged_on, no_broker
from ..lifecycle import OrderStatus
from ..models import EngineState, OrderRequest
from ..policy.decision import Decision, Reason, sort_triggers
from ..records import OrderRecord, current_request_id

__all__ = [
    "broker_order",
    "digest",
    "event",
    "judged",
    "no_broker",
    "order_record",
    "with_broker_error",
]


def order_record(
    decision: Decision,
    *,
    operation: str,
    mode: str,
    actor: str,
    order_id: str | None = None,
    broker: str | None = None,
    status: OrderStatus | None = None,
) -> OrderRecord:
    """The order log record of a decision (SPEC section 7)."""
    data = decision.record(order_id=order_id, mode=mode, broker=broker, actor=actor)
    data["operation"] = operation
    if (request_id := current_request_id()) is not None:
        data["request_id"] = request_id
    if status is not None:
        data["order_status"] = status
    return OrderRecord.from_dict(data)


def judged(record: OrderRecord, raw: Any, state: EngineState | None) -> OrderRecord:
    """`record` with what its decision was judged on (engine/judged.py), when the
    policies judged it: so it can be judged again, under its own rules or others."""
    if state is None or not isinstance(raw, dict):
        return record
    kept = judged_on(raw, vars(record), state)  # its fields, without building its dict
    return dataclasses.replace(record, judged_on=kept)


def with_broker_error(
    record: OrderRecord,
    *,
    code: str,
    detail: str,
    response: dict[str, Any],
    at: datetime,
    actor: str,
    operation: str,
    status: OrderStatus,
) -> OrderRecord:
    """The record, blocked (or kept at `status`) with one more reason: the broker's."""
    reason = Reason("broker", "error", code, "broker_api_error", detail)
    return record.evolve(
        timestamp=format_utc(at),
        actor=actor,
        operation=operation,
        order_status=status,
        fail_closed_triggers=sort_triggers({*record.fail_closed_triggers, "broker_api_error"}),
        reasons=(*record.reasons, reason.as_dict()),
        broker_response=response,
    )


def event(kind: str, at: datetime, actor: str, **fields: Any) -> dict[str, Any]:
    """A record that is not about one order (SPEC section 7: each has a `kind`);
    one written for an HTTP request names it."""
    record = {"kind": kind, "timestamp": format_utc(at), "actor": actor, **fields}
    if (request_id := current_request_id()) is not None:
        record["request_id"] = request_id
    return record


def broker_order(order_id: str, order: OrderRequest, broker: BrokerAdapter) -> BrokerOrder:
    """The order as `broker` is sent it. A broker without native reduce-only whose
    reduce-only the gate emulates (the policies' reduce_only_check proved the order
    only reduces the position) is sent a plain order."""
    return BrokerOrder(
        order_id=order_id,
        account=order.account,
        symbol=order.symbol,
        side=order.side,
        quantity=order.quantity,
        order_type=order.order_type,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        time_in_force=order.time_in_force,
        reduce_only=order.reduce_only and broker.capabilities.reduce_only,
        quote=order.context.quote,
        short_sale=order.short_sale,
        locate_id=order.locate_id,
    )


def digest(raw: Any) -> str:
    try:
        return sha256_digest(raw)
    except (TypeError, ValueError):
        return sha256_digest(repr(raw))
