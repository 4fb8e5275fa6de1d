"""The order log record (SPEC section 7) as a typed, frozen value.

`as_dict` gives exactly the record the chain stores (without `prev_hash` and
`hash`, which linking adds); `from_dict` reads one back. Changes make a new
record with `evolve`, so no code edits a record in place.

`request_id` names the HTTP request a record was written for (SPEC section 7,
optional). It comes from a context variable rather than a parameter: the API
sets it once per request, and every record built while that request is served
carries it, whichever part of the gateway builds it, while the sweeper's and
the tools' records carry none. Absent, it is left out of the record, so older
records and their hashes are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .lifecycle import OrderStatus

__all__ = ["REQUEST_ID", "OrderRecord", "current_request_id"]

# The request being served, in this context (asyncio task or gateway thread);
# set by the API's access log middleware, None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("apex_request_id", default=None)


def current_request_id() -> str | None:
    return REQUEST_ID.get()


@dataclass(frozen=True)
class OrderRecord:
    # the source design's fields
    order_id: str | None
    symbol: str | None
    timestamp: str
    side: str | None
    quantity: int | float | None
    order_type: str | None
    limit_price: int | float | None
    decision_reason: str | None
    risk_checks_run: tuple[str, ...]
    risk_check_results: Mapping[str, str]
    fail_closed_triggers: tuple[str, ...]
    order_status: OrderStatus
    broker_response: Mapping[str, Any] | None
    # ours (SPEC section 7: the extra fields)
    client_order_id: str | None
    mode: str
    broker: str | None
    policy_digest: str
    compliance_digest: str
    actor: str | None
    operation: str = "evaluate"
    account: str | None = None
    stop_price: int | float | None = None
    reduce_only: bool = False
    reasons: tuple[Mapping[str, str], ...] = ()
    errors: tuple[Mapping[str, str], ...] = ()
    # only present when set: why compliance or an admin acted on the order
    comment: str | None = field(default=None)
    # only present when set: the HTTP request this record was written for
    request_id: str | None = field(default=None)
    # only present when set: the compliance configuration's `version` the order was
    # judged under (records written before it existed have none)
    compliance_version: int | None = field(default=None)
    # only present when set: the sale is marked short (Reg SHO), and its locate
    short_sale: bool = field(default=False)
    locate_id: str | None = field(default=None)
    # only on a judged decision's own record: what it was judged on (engine/judged.py)
    judged_on: Mapping[str, Any] | None = field(default=None)

    @property
    def approved(self) -> bool:
        return not self.fail_closed_triggers and self.order_status not in (
            OrderStatus.BLOCKED,
            OrderStatus.REJECTED,
        )

    def evolve(self, **changes: Any) -> OrderRecord:
        """A new record, written for the request being served (or for none): an
        earlier request's id never carries over into it."""
        changes.setdefault("request_id", REQUEST_ID.get())
        # what a decision was judged on belongs to the decision's record alone
        changes.setdefault("judged_on", None)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "order_id": self.order_id,
            "symbol": self.symbol,
            "timestamp": self.timestamp,
            "side": self.side,
            "quantity": self.quantity,
            "order_type": self.order_type,
            "limit_price": self.limit_price,
            "decision_reason": self.decision_reason,
            "risk_checks_run": list(self.risk_checks_run),
            "risk_check_results": dict(self.risk_check_results),
            "fail_closed_triggers": list(self.fail_closed_triggers),
            "order_status": str(self.order_status),
            "broker_response": dict(self.broker_response)
            if self.broker_response is not None
            else None,
            "client_order_id": self.client_order_id,
            "mode": self.mode,
            "broker": self.broker,
            "policy_digest": self.policy_digest,
            "compliance_digest": self.compliance_digest,
            "actor": self.actor,
            "operation": self.operation,
            "account": self.account,
            "stop_price": self.stop_price,
            "reduce_only": self.reduce_only,
            "reasons": [dict(r) for r in self.reasons],
            "errors": [dict(e) for e in self.errors],
        }
        if self.comment is not None:
            out["comment"] = self.comment
        if self.request_id is not None:
            out["request_id"] = self.request_id
        if self.compliance_version is not None:
            out["compliance_version"] = self.compliance_version
        if self.short_sale:
            out["short_sale"] = True
        if self.locate_id is not None:
            out["locate_id"] = self.locate_id
        if self.judged_on is not None:
            out["judged_on"] = self.judged_on
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderRecord:
        """A stored record (its `prev_hash` and `hash` are ignored)."""
        return cls(
            order_id=data.get("order_id"),
            symbol=data.get("symbol"),
            timestamp=data["timestamp"],
            side=data.get("side"),
            quantity=data.get("quantity"),
            order_type=data.get("order_type"),
            limit_price=data.get("limit_price"),
            decision_reason=data.get("decision_reason"),
            risk_checks_run=tuple(data.get("risk_checks_run") or ()),
            risk_check_results=dict(data.get("risk_check_results") or {}),
            fail_closed_triggers=tuple(data.get("fail_closed_triggers") or ()),
            order_status=OrderStatus(data["order_status"]),
            broker_response=data.get("broker_response"),
            client_order_id=data.get("client_order_id"),
            mode=data.get("mode") or "research",
            broker=data.get("broker"),
            policy_digest=data.get("policy_digest") or "",
            compliance_digest=data.get("compliance_digest") or "",
            actor=data.get("actor"),
            operation=data.get("operation") or "evaluate",
            account=data.get("account"),
            stop_price=data.get("stop_price"),
            reduce_only=data.get("reduce_only") is True,
            reasons=tuple(data.get("reasons") or ()),
            errors=tuple(data.get("errors") or ()),
            comment=data.get("comment"),
            request_id=data.get("request_id"),
            compliance_version=data.get("compliance_version"),
            short_sale=data.get("short_sale") is True,
            locate_id=data.get("locate_id"),
            judged_on=data.get("judged_on"),
        )
