"""The order lifecycle: judge, log, route, log the outcome (SPEC sections 3, 4, 7).

Every attempt appends a record to the audit chain. An approved order's record
is committed before the broker is called; if that write fails, nothing is
sent. Any fault becomes a blocked, logged order, never an approval.
The gateway knows no HTTP: it returns an `Outcome` whose `kind` the API maps
to a status code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from ..broker import BrokerAck, BrokerAdapter, BrokerError, BrokerOrder
from ..canonical import sha256_digest
from ..clock import Clock, format_utc, system_clock
from ..models import EngineState, OrderRequest, Quote
from ..policy.decision import Decision, FieldError, Reason, sort_triggers
from ..policy.evaluator import Evaluator, field_errors
from ..ports import UNREAD, Claim

if TYPE_CHECKING:
    from adapters.sql.store import Snapshot, Store, Writer

__all__ = ["MODES", "Gateway", "ModeRefused", "Outcome", "OutcomeKind"]

log = logging.getLogger("apex.gateway")

MODES = ("research", "simulation", "paper", "live")
OPEN_STATUSES = ("accepted", "partially_filled", "replaced", "submitted")
OutcomeKind = Literal[
    "evaluated",  # dry run answered
    "routed",  # sent to the broker and accepted by it
    "blocked",  # denied by a policy or the gateway
    "rejected",  # invalid input
    "conflict",  # client_order_id reused with another body
    "replayed",  # same client_order_id and body: the original record
    "broker_error",  # the broker call failed; blocked
    "audit_unavailable",  # the audit log could not be written; nothing sent
    "not_found",
    "not_open",  # cancel/replace of an order that is not working
]


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    record: dict[str, Any]
    replayed_kind: OutcomeKind | None = None


class ModeRefused(Exception):
    """A mode change whose requirements are not met; `missing` says which."""

    def __init__(self, mode: str, missing: list[str]) -> None:
        super().__init__(f"cannot enter {mode}: " + "; ".join(missing))
        self.mode = mode
        self.missing = missing


class Gateway:
    def __init__(
        self,
        store: Store,
        evaluator: Evaluator,
        brokers: Mapping[str, BrokerAdapter],
        clock: Clock = system_clock,
    ) -> None:
        """`brokers` maps a routing mode (simulation, paper, live) to its adapter."""
        self.store = store
        self._evaluator = evaluator
        self._brokers = dict(brokers)
        self._clock = clock
        self._evaluator_lock = threading.Lock()

    # --- policies and state ---------------------------------------------

    @property
    def evaluator(self) -> Evaluator:
        return self._evaluator

    def use_evaluator(self, evaluator: Evaluator) -> None:
        with self._evaluator_lock:
            self._evaluator = evaluator

    def mode(self) -> str:
        value = self.store.setting("mode")
        return str(value["mode"]) if value else "research"

    def omega(self) -> dict[str, Any]:
        return self.store.setting("omega") or {"active": False}

    def broker_for(self, mode: str) -> BrokerAdapter | None:
        return self._brokers.get(mode)

    def _state(
        self, order: OrderRequest, now: datetime, exclude: str | None = None
    ) -> tuple[Snapshot, EngineState]:
        """What the engine must know beyond the order, in one read."""
        flow = self._evaluator.policy.config.flow
        snap = self.store.snapshot(
            order, now, flow.rate_window_s, flow.duplicate_window_s, exclude=exclude
        )
        state = EngineState(
            positions={f"{order.account}:{order.symbol}": snap.position},
            omega_active=bool(snap.omega.get("active")),
            flow=snap.flow,
        )
        return snap, state

    # --- evaluate and submit ---------------------------------------------

    def evaluate(self, raw: Any, actor: Any) -> Outcome:
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        now = self._clock()
        decision, mode, _ = self._judge(raw, now)
        try:
            record = self._log_new(decision, "evaluate", raw, actor, now, mode, claim=False)
        except Exception:
            log.exception("audit write failed for an evaluation")
            return Outcome("audit_unavailable", decision.record(mode=mode, actor=actor))
        kinds: dict[str, OutcomeKind] = {"evaluated": "evaluated", "rejected": "rejected"}
        return Outcome(kinds.get(decision.status, "blocked"), record)

    def reject(self, operation: str, errors: list[tuple[str, str]], actor: Any) -> Outcome:
        """Log a request that could not even be read (malformed JSON, oversize body)."""
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        now = self._clock()
        field_list = tuple(FieldError(f, m) for f, m in errors)
        decision = self._evaluator.rejected({}, now, field_list)
        mode = self.mode()
        try:
            record = self._log_new(decision, operation, {}, actor, now, mode, claim=False)
        except Exception:
            log.exception("audit write failed for a rejected request")
            return Outcome("audit_unavailable", decision.record(mode=mode, actor=actor))
        return Outcome("rejected", record)

    def submit(self, raw: Any, actor: Any) -> Outcome:
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        now = self._clock()
        decision, mode, claim = self._judge(raw, now)
        order = decision.order
        if order is not None:
            replay = self._replay(order.client_order_id, raw, claim)
            if replay is not None:
                return replay
        broker = self.broker_for(mode)
        if decision.approved and order is not None:
            decision = self._gate(decision, order, mode, broker)
        try:
            record = self._log_new(decision, "submit", raw, actor, now, mode, claim=True)
        except Exception:
            # Lost a race with the same client order id (its claim is unique in the
            # store, so the write failed): answer as the winner's retry.
            replay = self._replay(order.client_order_id, raw) if order is not None else None
            if replay is not None:
                return replay
            log.exception("audit write failed; order not sent")
            record = decision.record(mode=mode, actor=actor, order_status="blocked")
            return Outcome("audit_unavailable", record)
        if decision.status == "rejected":
            return Outcome("rejected", record)
        if not decision.approved or order is None or broker is None:
            return Outcome("blocked", record)
        return self._route(record, order, broker, actor)

    def _judge(
        self, raw: Any, now: datetime, exclude: str | None = None
    ) -> tuple[Decision, str, Claim]:
        """The decision, the mode it was taken in, and the claim on the order's client
        order id read with the state (UNREAD if the state could not be read).
        `exclude`: a client order id whose own earlier flow does not count (the
        order being replaced)."""
        evaluator = self._evaluator
        try:
            order = OrderRequest.model_validate(raw)
        except ValidationError as exc:
            return evaluator.rejected(raw, now, field_errors(exc)), self.mode(), UNREAD
        except Exception:  # the unreadable body
            return evaluator.evaluate(raw, None, now), self.mode(), UNREAD
        try:
            snap, state = self._state(order, now, exclude)
        except Exception as exc:
            log.exception("could not read the trading state; order blocked")
            blocked = evaluator.blocked(
                order, now, "engine_error", "STATE_UNAVAILABLE", _fault(exc)
            )
            return blocked, "research", UNREAD
        return evaluator.evaluate(order, state, now), snap.mode, snap.claim

    def _gate(
        self, decision: Decision, order: OrderRequest, mode: str, broker: BrokerAdapter | None
    ) -> Decision:
        """Checks beyond the policies: the mode, and whether the broker can take the order."""
        if mode == "research":
            detail = "submit is blocked in research mode; evaluate works"
            return block(decision, "gateway", "mode_research", "MODE_RESEARCH", detail)
        if mode == "live":
            detail = "live trading requires the compliance unlock, which is not available"
            return block(decision, "gateway", "compliance_failure", "LIVE_LOCKED", detail)
        if broker is None:
            detail = f"no broker is configured for {mode} mode"
            return block(decision, "gateway", "broker_capability", "NO_BROKER", detail)
        refusal = broker.capabilities.refusal(
            order.order_type, order.time_in_force, order.reduce_only
        )
        if refusal is not None:
            detail = f"{broker.name}: {refusal}"
            return block(decision, "gateway", "broker_capability", "BROKER_CANNOT_TAKE", detail)
        return decision

    def _replay(self, client_order_id: str, raw: Any, claimed: Claim = UNREAD) -> Outcome | None:
        """The answer to a retry of a submit whose client order id is claimed, else None."""
        if claimed == UNREAD:
            try:
                claimed = self.store.claimed(client_order_id)
            except Exception:
                log.exception("could not read the claim on %r", client_order_id)
                return None  # the write that follows claims it, or fails closed
        if claimed is None:
            return None
        order_id, digest = claimed
        record = self.store.order_record(order_id) or {}
        if digest != _digest(raw):
            return Outcome("conflict", record)
        return Outcome("replayed", record, replayed_kind=_kind_of(record))

    def _log_new(
        self,
        decision: Decision,
        operation: str,
        raw: Any,
        actor: str,
        now: datetime,
        mode: str,
        claim: bool,
    ) -> dict[str, Any]:
        approved_submit = claim and decision.approved
        broker = self.broker_for(mode) if claim else None
        order = decision.order
        digest = _digest(raw) if claim else ""

        def write(w: Writer) -> dict[str, Any]:
            order_id = w.next_order_id(now.year)
            status = "submitted" if approved_submit else decision.status
            record = decision.record(
                order_id=order_id,
                mode=mode,
                broker=broker.name if broker and approved_submit else None,
                actor=actor,
                order_status=status,
            )
            record["operation"] = operation
            linked, text = w.append_text(record, "order", now)
            w.insert_order(_order_row(linked, text, operation, raw, now))
            w.event(order_id, status, {"operation": operation, "actor": actor}, now)
            if claim and order is not None and decision.status != "rejected":
                w.claim(order.client_order_id, order_id, digest)
            return linked

        return self.store.transact(write)

    def _route(
        self, record: dict[str, Any], order: OrderRequest, broker: BrokerAdapter, actor: str
    ) -> Outcome:
        request = _broker_order(record["order_id"], order)
        try:
            ack = broker.submit(request)
        except Exception as exc:
            return self._broker_failed(record, exc, actor)
        if ack.status == "rejected":
            return self._broker_failed(record, BrokerError(ack.detail or "rejected"), actor, ack)
        return self._settle(record, ack, actor, "submit")

    def _settle(
        self,
        record: dict[str, Any],
        ack: BrokerAck,
        actor: str,
        operation: str,
        changes: dict[str, Any] | None = None,
        row_changes: dict[str, Any] | None = None,
    ) -> Outcome:
        """Log the broker's answer; the broker has acted, so a failure here is loud."""
        try:
            linked = self._apply(record, ack, actor, operation, changes, row_changes)
            return Outcome("routed", linked)
        except Exception:
            log.critical(
                "the broker acted on %s (%s, broker id %s) but the outcome could not be logged",
                record.get("order_id"),
                ack.status,
                ack.broker_order_id,
                exc_info=True,
            )
            attempt = {**record, "order_status": ack.status, "broker_response": ack.response()}
            return Outcome("audit_unavailable", attempt)

    def _broker_failed(
        self,
        record: dict[str, Any],
        exc: BaseException,
        actor: str,
        ack: BrokerAck | None = None,
        keep_status: bool = False,
    ) -> Outcome:
        code = "BROKER_REJECTED" if ack is not None else "BROKER_API_ERROR"
        detail = _fault(exc)
        log.error("broker call failed for %s: %s", record.get("order_id"), detail)
        now = self._clock()
        attempt = dict(record)
        attempt["timestamp"] = format_utc(now)
        attempt["actor"] = actor
        if not keep_status:
            attempt["order_status"] = "blocked"
        attempt["fail_closed_triggers"] = list(
            sort_triggers({*record["fail_closed_triggers"], "broker_api_error"})
        )
        reason = Reason("broker", "error", code, "broker_api_error", detail)
        attempt["reasons"] = [*record.get("reasons", []), reason.as_dict()]
        attempt["broker_response"] = (
            ack.response() if ack else {"status": "error", "detail": detail}
        )

        def write(w: Writer) -> dict[str, Any]:
            linked, text = w.append_text(attempt, "order", now)
            if not keep_status:
                w.update_order(record["order_id"], _row_update(linked, text, now))
            w.event(record["order_id"], linked["order_status"], {"error": detail}, now)
            return linked

        try:
            linked = self.store.transact(write)
        except Exception:
            log.exception("audit write failed after a broker error")
            return Outcome("audit_unavailable", attempt)
        return Outcome("broker_error", linked)

    def _apply(
        self,
        record: dict[str, Any],
        ack: BrokerAck,
        actor: str,
        operation: str,
        changes: dict[str, Any] | None = None,
        row_changes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Log what the broker says of an order, with its fills and their positions."""
        now = self._clock()
        updated = dict(record)
        updated.update(changes or {})
        updated["timestamp"] = format_utc(now)
        updated["order_status"] = ack.status
        updated["broker_response"] = ack.response()
        updated["actor"] = actor
        updated["operation"] = operation

        def write(w: Writer) -> dict[str, Any]:
            already = w.filled_quantity(record["order_id"])
            linked, text = w.append_text(updated, "order", now)
            values = _row_update(linked, text, now)
            values.update(
                broker_order_id=ack.broker_order_id,
                filled_quantity=ack.filled_quantity,
                average_price=ack.average_price,
            )
            values.update(row_changes or {})
            w.update_order(record["order_id"], values)
            w.event(record["order_id"], ack.status, ack.response(), now)
            _book_fills(w, record, ack, already)
            return linked

        return self.store.transact(write)

    # --- cancel and replace --------------------------------------------------

    def cancel(self, order_id: str, actor: Any) -> Outcome:
        """Cancel a working order. Never blocked by the kill switch."""
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        row = self.store.order(order_id)
        if row is None:
            return Outcome("not_found", {"order_id": order_id})
        record = _latest(row)
        broker = self.broker_for(record.get("mode") or "")
        if row["status"] not in OPEN_STATUSES or not row["broker_order_id"] or broker is None:
            return Outcome("not_open", record)
        try:
            ack = broker.cancel(order_id, row["broker_order_id"])
        except Exception as exc:
            return self._broker_failed(
                {**record, "operation": "cancel"}, exc, actor, keep_status=True
            )
        return self._settle(record, ack, actor, "cancel")

    def replace(self, order_id: str, changes: Any, actor: Any) -> Outcome:
        """Cancel/replace, judged like a new order."""
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        row = self.store.order(order_id)
        if row is None:
            return Outcome("not_found", {"order_id": order_id})
        record = _latest(row)
        now = self._clock()
        original = _request(row)
        merged = {**original, **changes} if isinstance(changes, dict) else changes
        if isinstance(changes, dict) and "context" in changes:
            merged["context"] = changes["context"]
        decision, mode, _ = self._judge(merged, now, exclude=original.get("client_order_id"))
        broker = self.broker_for(record.get("mode") or "")
        open_order = row["status"] in OPEN_STATUSES and row["broker_order_id"] and broker
        if decision.approved and decision.order is not None and broker is not None:
            decision = self._gate(decision, decision.order, mode, broker)
        if not decision.approved or decision.order is None or not open_order or broker is None:
            attempt = decision.record(order_id=order_id, mode=mode, actor=actor)
            attempt["operation"] = "replace"

            def write(w: Writer) -> dict[str, Any]:
                linked = w.append(attempt, "order", now)
                w.event(order_id, attempt["order_status"], {"operation": "replace"}, now)
                return linked

            try:
                linked = self.store.transact(write)
            except Exception:
                log.exception("audit write failed for a replace")
                return Outcome("audit_unavailable", attempt)
            if decision.status == "rejected":
                return Outcome("rejected", linked)
            return Outcome("blocked" if not decision.approved else "not_open", linked)
        order = decision.order
        try:
            ack = broker.replace(row["broker_order_id"], _broker_order(order_id, order))
        except Exception as exc:
            return self._broker_failed(
                {**record, "operation": "replace"}, exc, actor, keep_status=True
            )
        fresh = decision.record(
            order_id=order_id,
            mode=record.get("mode") or mode,
            broker=broker.name,
            actor=actor,
        )
        terms = {
            k: fresh[k]
            for k in (
                "quantity",
                "limit_price",
                "stop_price",
                "risk_checks_run",
                "risk_check_results",
                "fail_closed_triggers",
                "reasons",
                "policy_digest",
                "compliance_digest",
            )
        }
        row_changes = {
            "quantity": order.quantity,
            "limit_price": order.limit_price,
            "stop_price": order.stop_price,
            "request": _json_text({**merged, "client_order_id": original.get("client_order_id")}),
        }
        return self._settle(record, ack, actor, "replace", terms, row_changes)

    # --- market data, modes, kill switch -----------------------------------

    def market_quote(self, symbol: str, quote: Quote, actor: Any) -> list[dict[str, Any]]:
        """Feed a quote to the routing broker; log every order it fills."""
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        broker = self.broker_for(self.mode())
        if broker is None:
            return []
        out = []
        for ack in broker.on_quote(symbol, quote):
            row = self.store.order(ack.order_id)
            if row is not None:
                out.append(self._settle(_latest(row), ack, actor, "fill").record)
        return out

    def set_mode(self, mode: str, actor: Any, reason: str = "") -> dict[str, Any]:
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        missing = self.requirements(mode)
        if missing:
            raise ModeRefused(mode, missing)
        now = self._clock()
        previous = self.mode()
        event = {
            "event": "mode_changed",
            "from": previous,
            "to": mode,
            "actor": actor,
            "reason": reason,
            "timestamp": format_utc(now),
        }
        state = {"mode": mode, "since": event["timestamp"], "actor": actor}
        return self._change_setting("mode", state, event, now)

    def requirements(self, mode: str) -> list[str]:
        """What is missing to enter `mode` (empty: it can be entered)."""
        if mode == "research":
            return []
        if mode == "live":
            return ["live trading needs the compliance unlock procedure (not available yet)"]
        broker = self.broker_for(mode)
        if broker is None:
            return [f"no broker configured for {mode} mode"]
        try:
            valid = broker.check_credentials()
        except Exception as exc:
            return [f"{broker.name} credential check failed: {_fault(exc)}"]
        return [] if valid else [f"{broker.name} credentials are not valid"]

    def invoke_omega(self, actor: Any, reason: str, cancel_open: bool = False) -> dict[str, Any]:
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        now = self._clock()
        state = {"active": True, "reason": reason, "actor": actor, "at": format_utc(now)}
        event = {
            "event": "omega_invoked",
            "reason": reason,
            "actor": actor,
            "cancel_open_orders": cancel_open,
            "timestamp": format_utc(now),
        }
        linked = self._change_setting("omega", state, event, now)
        if cancel_open:
            for row in self.store.open_orders():
                self.cancel(row["order_id"], actor)
        return linked

    def clear_omega(self, actor: Any, reason: str) -> dict[str, Any]:
        actor = getattr(actor, "id", actor)  # an Actor, during the rewrite
        now = self._clock()
        event = {
            "event": "omega_cleared",
            "reason": reason,
            "actor": actor,
            "timestamp": format_utc(now),
        }
        state = {"active": False, "reason": reason, "actor": actor, "at": format_utc(now)}
        return self._change_setting("omega", state, event, now)

    def _change_setting(
        self, key: str, value: dict[str, Any], event: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        """A setting and the audit record of its change, in one transaction."""

        def write(w: Writer) -> dict[str, Any]:
            w.set_setting(key, value, now)
            return w.append(event, key, now)

        return self.store.transact(write)


def block(decision: Decision, check: str, trigger: str, code: str, detail: str) -> Decision:
    """The decision, blocked by the gateway with one more reason."""
    reason = Reason(check, "fail", code, trigger, detail)
    return dataclasses.replace(
        decision,
        status="blocked",
        triggers=sort_triggers({*decision.triggers, trigger}),
        reasons=(*decision.reasons, reason),
    )


def _broker_order(order_id: str, order: OrderRequest) -> BrokerOrder:
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
        reduce_only=order.reduce_only,
        quote=order.context.quote,
    )


def _book_fills(w: Writer, record: dict[str, Any], ack: BrokerAck, already: float) -> None:
    """Book only fills beyond what is already booked: an ack repeated after a
    reconnect or a replace must not count a fill twice (overfill guard)."""
    new_fills = ack.fills
    booked = 0.0
    for fill in new_fills:
        booked += fill.quantity
        if booked <= already + 1e-9:
            continue
        quantity = min(fill.quantity, booked - already)
        signed = quantity if record["side"] == "buy" else -quantity
        w.fill(record["order_id"], quantity, fill.price, fill.at)
        w.move_position(record["account"] or "default", record["symbol"], signed)


def _order_row(
    record: dict[str, Any], text: str, operation: str, raw: Any, now: datetime
) -> dict[str, Any]:
    """The orders row of a new attempt; `text`: the record as the chain stores it."""
    return {
        "order_id": record["order_id"],
        "operation": operation,
        "client_order_id": record.get("client_order_id"),
        "account": record.get("account"),
        "symbol": record.get("symbol"),
        "side": record.get("side"),
        "quantity": record.get("quantity"),
        "order_type": record.get("order_type"),
        "limit_price": record.get("limit_price"),
        "stop_price": record.get("stop_price"),
        "time_in_force": raw.get("time_in_force") if isinstance(raw, dict) else None,
        "reduce_only": bool(record.get("reduce_only")),
        "status": record["order_status"],
        "broker": record.get("broker"),
        "request": _json_text(raw),
        "record": text,
        "created_at": now,
        "updated_at": now,
    }


def _row_update(record: dict[str, Any], text: str, now: datetime) -> dict[str, Any]:
    return {"status": record["order_status"], "record": text, "updated_at": now}


def _latest(row: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(row["record"])
    return value


def _request(row: dict[str, Any]) -> dict[str, Any]:
    value = json.loads(row["request"])
    return value if isinstance(value, dict) else {}


def _json_text(value: Any) -> str:
    try:
        # ASCII escapes keep a client's lone surrogate storable; nothing is lost
        return json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def _digest(raw: Any) -> str:
    try:
        return sha256_digest(raw)
    except (TypeError, ValueError):
        return sha256_digest(repr(raw))


def _kind_of(record: dict[str, Any]) -> OutcomeKind:
    status = record.get("order_status")
    if status == "blocked":
        triggers = record.get("fail_closed_triggers") or []
        return "broker_error" if "broker_api_error" in triggers else "blocked"
    if status == "rejected":
        return "rejected"
    return "routed"


def _fault(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
