"""Working orders: cancel (never blocked by the kill switch), cancel/replace
(judged like a new order), and market data that fills resting orders.

A replace is judged inside the write transaction, as a submit is; an approved
replace is logged `pending_replace` before the broker is asked, so that its
approval is in the chain before anything that should have blocked it. If the
broker refuses, the order goes back to the status it had.
"""

from __future__ import annotations

import logging
from typing import Any

from ..broker import BrokerAck, BrokerAdapter
from ..clock import format_utc
from ..errors import OrderUnknown, fault
from ..lifecycle import OPEN, OrderStatus
from ..models import OrderRequest, Quote
from ..policy.decision import Decision, FieldError, Reason, sort_triggers
from ..ports import StoredOrder, Writer
from ..records import OrderRecord
from ._records import broker_order, judged, order_record, with_broker_error
from .desk import Desk
from .executions import Executions
from .outcome import Actor, Outcome
from .submit import Orders, _parse

__all__ = ["Amendments"]

log = logging.getLogger("apex.gateway")

_FIXED = ("client_order_id", "account", "symbol", "side")  # a replace cannot change these


class Amendments:
    def __init__(self, desk: Desk, executions: Executions, orders: Orders) -> None:
        self._desk = desk
        self._executions = executions
        self._orders = orders

    def visible(self, order_id: str, actor: Actor) -> StoredOrder | None:
        """The order, if this actor may see it (a trader: its accounts' orders only)."""
        stored = self._desk.store.order(order_id)
        if stored is None or not actor.may_see(stored.account, self._desk.allowed_accounts()):
            return None
        return stored

    def _may_act(self, stored: StoredOrder, actor: Actor) -> bool:
        return actor.oversees or actor.may_trade(stored.account, self._desk.allowed_accounts())

    # --- cancel -------------------------------------------------------------------

    def cancel(self, order_id: str, actor: Actor, reason: str = "") -> Outcome:
        stored = self.visible(order_id, actor)
        if stored is None or not self._may_act(stored, actor):
            return Outcome("not_found", {"order_id": order_id})
        if actor.oversees and actor.role != "system" and not reason.strip():
            error = {"field": "reason", "message": "a reason is required to cancel another's order"}
            return Outcome("rejected", {"order_id": order_id, "errors": [error]})
        broker = self._desk.broker_named(stored.broker)
        if stored.status not in OPEN or broker is None or not stored.broker_order_id:
            return Outcome("not_open", stored.linked or stored.record.as_dict())
        if not broker.capabilities.cancel:
            # refused before the broker is asked (SPEC section 4, broker_capability)
            return self._incapable(stored, broker, "cancel", actor)
        try:
            ack = broker.cancel(order_id, stored.broker_order_id)
        except Exception as exc:
            return self._failed(stored, "cancel", fault(exc), {"status": "error"}, actor)
        if ack.status == OrderStatus.BLOCKED:
            return self._failed(stored, "cancel", ack.detail, ack.response(), actor)
        return self._book(stored, ack, actor, "cancel", comment=reason.strip() or None)

    # --- replace ------------------------------------------------------------------

    def replace(self, order_id: str, changes: Any, actor: Actor) -> Outcome:
        stored = self.visible(order_id, actor)
        if stored is None or not self._may_act(stored, actor):
            return Outcome("not_found", {"order_id": order_id})
        now = self._desk.clock()
        evaluator = self._desk.evaluator
        if not isinstance(changes, dict):
            errors = [("(body)", "the body must be a JSON object")]
            return self._orders.reject("replace", errors, actor, about=order_id)
        original = stored.request if isinstance(stored.request, dict) else {}
        fixed = [
            FieldError(k, f"cannot change on a replace (want: {original.get(k)!r})")
            for k in _FIXED
            if k in changes and changes[k] != original.get(k)
        ]
        merged = {**original, **changes}
        about = {"original_order_id": order_id}  # a rejected replace is not the order's record
        if fixed:
            rejected = evaluator.rejected(merged, now, tuple(fixed))
            return self._orders._log_rejected(rejected, "replace", actor, now, about)
        order = _parse(evaluator, merged, now)
        if isinstance(order, Decision):
            return self._orders._log_rejected(order, "replace", actor, now, about)
        broker = self._desk.broker_named(stored.broker)
        if stored.status not in OPEN or broker is None or not stored.broker_order_id:
            return Outcome("not_open", stored.linked or stored.record.as_dict())

        quote = self._desk.reference_quote(order.symbol)  # never under the chain lock

        def work(w: Writer) -> tuple[dict[str, Any], StoredOrder | None]:
            current = w.order(order_id)
            if current is None or current.status not in OPEN:
                latest = current or stored
                return latest.linked or latest.record.as_dict(), None
            decision, _, state = self._orders._judge(
                w, order, actor, "replace", now, exclude=order.client_order_id, quote=quote
            )
            approved = decision.approved
            record = order_record(
                decision,
                operation="replace",
                mode=current.record.mode,
                actor=actor.id,
                order_id=order_id,
                broker=current.broker if approved else None,
                status=OrderStatus.PENDING_REPLACE if approved else OrderStatus.BLOCKED,
            )
            record = judged(record, merged, state)
            linked = w.append(record.as_dict(), "order", now)
            w.event(order_id, linked["order_status"], {"operation": "replace"}, now)
            if approved:
                w.update_order(order_id, linked, now)
            return linked, current if approved else None

        try:
            linked, before = self._desk.store.transact(work)
        except Exception:
            log.exception("audit write failed for a replace; nothing sent")
            record = stored.record.evolve(operation="replace").as_dict()
            return Outcome("audit_unavailable", record)
        self._desk.shadow_offer(linked)
        if before is None:
            if linked.get("order_status") == OrderStatus.BLOCKED:
                return Outcome("blocked", linked)
            return Outcome("not_open", linked)
        return self._send_replace(
            before, OrderRecord.from_dict(linked), order, merged, broker, actor
        )

    def _send_replace(
        self,
        before: StoredOrder,
        pending: OrderRecord,
        order: OrderRequest,
        merged: dict[str, Any],
        broker: BrokerAdapter,
        actor: Actor,
    ) -> Outcome:
        order_id = before.order_id
        try:
            sent = broker_order(order_id, order, broker)
            ack = broker.replace(before.broker_order_id or "", sent)
        except Exception as exc:
            return self._failed(before, "replace", fault(exc), {"status": "error"}, actor, pending)
        if ack.status == OrderStatus.BLOCKED:
            return self._failed(before, "replace", ack.detail, ack.response(), actor, pending)
        terms = {
            "quantity": pending.quantity,
            "limit_price": pending.limit_price,
            "stop_price": pending.stop_price,
            "request": {**merged, "client_order_id": before.client_order_id},
        }
        return self._book(before, ack, actor, "replace", terms=terms)

    # --- market data -----------------------------------------------------------------

    def market_quote(self, symbol: str, quote: Quote, actor: Actor) -> list[dict[str, Any]]:
        """Feed a quote to the routing broker; book every order it changed."""
        broker = self._desk.broker_for(self._desk.store.controls().mode)
        if broker is None:
            return []
        out = []
        for ack in broker.on_quote(symbol, quote):
            try:
                out.append(self._executions.apply(ack.order_id, ack, actor.id, "fill").record)
            except OrderUnknown:
                log.error("the broker reported %s, which the store does not hold", ack.order_id)
        return out

    # --- shared --------------------------------------------------------------------

    def _book(
        self,
        stored: StoredOrder,
        ack: BrokerAck,
        actor: Actor,
        operation: str,
        *,
        terms: dict[str, Any] | None = None,
        comment: str | None = None,
    ) -> Outcome:
        try:
            applied = self._executions.apply(
                stored.order_id, ack, actor.id, operation, terms=terms, comment=comment
            )
        except Exception:
            log.critical(
                "the broker acted on %s (%s) but the outcome could not be logged",
                stored.order_id,
                ack.status,
                exc_info=True,
            )
            attempt = stored.record.evolve(order_status=ack.status, broker_response=ack.response())
            return Outcome("audit_unavailable", attempt.as_dict())
        pending = ack.status in (OrderStatus.PENDING_CANCEL, OrderStatus.PENDING_REPLACE)
        return Outcome("pending" if pending else "routed", applied.record)

    def _incapable(
        self, stored: StoredOrder, broker: BrokerAdapter, operation: str, actor: Actor
    ) -> Outcome:
        """The order's broker cannot do `operation`: the attempt is logged, blocked with
        `broker_capability` naming the broker and the capability; the order keeps
        working as it was (HTTP 403, the record)."""
        now = self._desk.clock()
        detail = f"broker {broker.name} cannot {operation} orders (capability {operation}: false)"
        reason = Reason("broker", "fail", f"BROKER_CANNOT_{operation.upper()}",
                        "broker_capability", detail)  # fmt: skip
        attempt = stored.record.evolve(
            timestamp=format_utc(now),
            actor=actor.id,
            operation=operation,
            order_status=stored.status,
            fail_closed_triggers=sort_triggers(
                {*stored.record.fail_closed_triggers, "broker_capability"}
            ),
            reasons=(*stored.record.reasons, reason.as_dict()),
            broker_response=None,
        )

        def work(w: Writer) -> dict[str, Any]:
            linked = w.append(attempt.as_dict(), "order", now)
            w.event(stored.order_id, str(stored.status), {"refused": detail}, now)
            return linked

        try:
            linked = self._desk.store.transact(work)
        except Exception:
            log.exception("audit write failed for a refused %s", operation)
            return Outcome("audit_unavailable", attempt.as_dict())
        return Outcome("blocked", linked)

    def _failed(
        self,
        stored: StoredOrder,
        operation: str,
        detail: str,
        response: dict[str, Any],
        actor: Actor,
        pending: OrderRecord | None = None,
    ) -> Outcome:
        """The broker did not do it: the attempt is logged with `broker_api_error`, and
        the order keeps the status it had (a pending replace goes back to it)."""
        now = self._desk.clock()
        log.error("broker %s failed for %s: %s", operation, stored.order_id, detail)
        attempt = with_broker_error(
            pending or stored.record,
            code="BROKER_API_ERROR",
            detail=detail or f"the broker refused the {operation}",
            response={**response, "detail": detail},
            at=now,
            actor=actor.id,
            operation=operation,
            status=stored.status,
        )

        def work(w: Writer) -> dict[str, Any]:
            linked = w.append(attempt.as_dict(), "order", now)
            w.event(stored.order_id, str(stored.status), {"error": detail}, now)
            if pending is not None:  # back to the order as it was, confirmed by nothing new
                w.update_order(stored.order_id, stored.linked or stored.record.as_dict(), now)
            return linked

        try:
            linked = self._desk.store.transact(work)
        except Exception:
            log.exception("audit write failed after a broker error")
            return Outcome("audit_unavailable", attempt.as_dict())
        return Outcome("broker_error", linked)
