"""New orders: evaluate (a dry run), submit (judge, log, route), and the record of
every attempt refused before an order is judged: a request that could not even
be read, a refused role or control change (`reject`), and a submit reusing a
claimed client order id, a retry or a conflict (`_log_retry`).

Race-free: an order is judged inside the write transaction that logs it, which
holds the chain lock. Everything the decision depends on (mode, trading states,
the Omega directive, the position, the flow counts of the throttle and the
duplicate check, the claim on the client order id) is read there, so no record
can follow, in the chain, a change that should have blocked it, and the
throttle sees every order logged before it, on every replica. An approved
submit's `submitted` record is committed before the broker is called; if that
write fails, nothing is sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..broker import BrokerAck, BrokerAdapter
from ..errors import EngineFault, fault
from ..lifecycle import OrderStatus
from ..models import EngineState, Operation, OrderRequest, Quote
from ..policy.calendar import trading_day
from ..policy.decision import Decision, FieldError
from ..policy.evaluator import Evaluator, field_errors
from ..ports import Writer
from ..records import OrderRecord
from ._records import broker_order, digest, judged, no_broker, order_record, with_broker_error
from .desk import Desk
from .executions import Executions
from .outcome import Actor, Outcome, OutcomeKind

__all__ = ["Orders"]

log = logging.getLogger("apex.gateway")


@dataclass(frozen=True)
class _Claimed:
    """The client order id was claimed before: the submit is a retry or a conflict."""

    order_id: str
    digest: str


@dataclass(frozen=True)
class _Retry:
    """A retry or a conflict, logged: the original's record and the attempt's."""

    original: dict[str, Any]
    attempt: dict[str, Any]
    same_body: bool

    def outcome(self) -> Outcome:
        if not self.same_body:
            return Outcome("conflict", self.attempt)
        # SPEC section 8: same id and body answer the original record
        return Outcome("replayed", self.original, replayed_kind=_kind_of(self.original))


class Orders:
    def __init__(self, desk: Desk, executions: Executions) -> None:
        self._desk = desk
        self._executions = executions

    # --- dry run and unreadable requests ------------------------------------------

    def evaluate(self, raw: Any, actor: Actor) -> Outcome:
        now = self._desk.clock()
        evaluator = self._desk.evaluator
        order = _parse(evaluator, raw, now)
        if isinstance(order, Decision):
            return self._log_rejected(order, "evaluate", actor, now)
        quote = self._desk.reference_quote(order.symbol)  # never under the chain lock

        def work(w: Writer) -> dict[str, Any]:
            decision, mode, state = self._judge(w, order, actor, "evaluate", now, quote=quote)
            record = order_record(
                decision,
                operation="evaluate",
                mode=mode,
                actor=actor.id,
                order_id=w.next_order_id(now.year),
            )
            record = judged(record, raw, state)
            linked = w.append(record.as_dict(), "order", now)
            w.insert_order(linked, raw, now, order.time_in_force)
            return linked

        try:
            linked = self._desk.store.transact(work)
        except Exception:
            log.exception("audit write failed for an evaluation")
            return Outcome("audit_unavailable", _unlogged(evaluator, order, raw, now, actor))
        self._desk.shadow_offer(linked)
        return Outcome("evaluated" if not linked["fail_closed_triggers"] else "blocked", linked)

    def reject(
        self,
        operation: str,
        errors: list[tuple[str, str]],
        actor: Actor,
        *,
        request: Any = None,
        about: str | None = None,
        route: str | None = None,
    ) -> Outcome:
        """Log an attempt refused before any order could be judged: a body that
        could not be read, a body of the wrong shape, a refused role, a control
        change refused. `request`: the body, when it was an object (its order
        fields fill the record); `about`: the order it was about
        (`original_order_id`); `route`: the HTTP route, when refused there."""
        now = self._desk.clock()
        decision = self._desk.evaluator.rejected(
            request if isinstance(request, dict) else {},
            now,
            tuple(FieldError(f, m) for f, m in errors),
        )
        extra: dict[str, Any] = {}
        if about is not None:
            extra["original_order_id"] = about
        if route is not None:
            extra["route"] = route
        return self._log_rejected(decision, operation, actor, now, extra)

    def _log_rejected(
        self,
        decision: Decision,
        operation: str,
        actor: Actor,
        now: datetime,
        extra: dict[str, Any] | None = None,
    ) -> Outcome:
        def work(w: Writer) -> dict[str, Any]:
            return _append_rejected(w, decision, operation, actor, w.controls().mode, now, extra)

        try:
            linked = self._desk.store.transact(work)
        except Exception:
            log.exception("audit write failed for a rejected request")
            record = order_record(decision, operation=operation, mode="unknown", actor=actor.id)
            return Outcome("audit_unavailable", {**record.as_dict(), **(extra or {})})
        return Outcome("rejected", linked)

    # --- submit ---------------------------------------------------------------

    def submit(self, raw: Any, actor: Actor) -> Outcome:
        now = self._desk.clock()
        evaluator = self._desk.evaluator
        order = _parse(evaluator, raw, now)
        if isinstance(order, Decision):
            return self._log_rejected(order, "submit", actor, now)
        request_digest = digest(raw)
        quote = self._desk.reference_quote(order.symbol)  # never under the chain lock

        def work(w: Writer) -> dict[str, Any] | _Retry:
            decision, mode, claim, state = self._judge_claim(w, order, actor, now, quote=quote)
            if claim is not None:
                return self._log_retry(w, claim, raw, request_digest, actor, mode, now)
            broker = self._desk.broker_for(mode)
            if decision.approved and broker is None:  # the required broker_check says so
                decision = no_broker(decision, mode)
            approved = decision.approved and broker is not None
            order_id = w.next_order_id(now.year)
            record = order_record(
                decision,
                operation="submit",
                mode=mode,
                actor=actor.id,
                order_id=order_id,
                broker=broker.name if approved and broker is not None else None,
                status=OrderStatus.SUBMITTED if approved else OrderStatus.BLOCKED,
            )
            record = judged(record, raw, state)
            linked = w.append(record.as_dict(), "order", now)
            w.insert_order(linked, raw, now, order.time_in_force)
            w.event(order_id, linked["order_status"], {"operation": "submit"}, now)
            # a blocked submit claims its id too: a retry gets the same answer
            w.claim(order.client_order_id, order_id, request_digest)
            return linked

        try:
            result = self._desk.store.transact(work)
        except Exception:
            # Nothing is sent. Whether the write landed may be unknown (a COMMIT
            # that failed): a `submitted` record that did land is resolved by the
            # recovery sweep, never by sending it from here. (No claim race can get
            # here: the claim is read under the chain lock.)
            log.exception("audit write failed; order not sent")
            return Outcome("audit_unavailable", _unlogged(evaluator, order, raw, now, actor))
        if isinstance(result, _Retry):
            return result.outcome()
        self._desk.shadow_offer(result)
        if result["order_status"] != OrderStatus.SUBMITTED:
            return Outcome("blocked", result)
        broker = self._desk.broker_named(result["broker"])
        if broker is None:  # configured at judgement, gone since: impossible in one process
            raise EngineFault(f"broker {result['broker']!r} vanished")
        return self._route(OrderRecord.from_dict(result), order, broker, actor)

    def _judge(
        self,
        w: Writer,
        order: OrderRequest,
        actor: Actor,
        operation: Operation,
        now: datetime,
        exclude: str | None = None,
        quote: tuple[str, Quote | None] | None = None,
    ) -> tuple[Decision, str, EngineState | None]:
        """The decision, the mode, and the state it was judged in (None: the state
        could not be read, and the order is blocked without being judged)."""
        decision, mode, _, state = self._judge_claim(
            w, order, actor, now, operation, exclude, quote
        )
        return decision, mode, state

    def _judge_claim(
        self,
        w: Writer,
        order: OrderRequest,
        actor: Actor,
        now: datetime,
        operation: Operation = "submit",
        exclude: str | None = None,
        quote: tuple[str, Quote | None] | None = None,
    ) -> tuple[Decision, str, _Claimed | None, EngineState | None]:
        """Judge under the chain lock: the state read here, and the policies in force
        now (a reload swaps them between two transactions), are those of record."""
        in_force = self._desk.in_force
        evaluator = in_force.evaluator
        flow = evaluator.policy.config.flow
        try:
            day = trading_day(evaluator.policy.config.session, now)
            snap = w.snapshot(
                order, now, flow.rate_window_s, flow.duplicate_window_s, exclude, day=day
            )
        except Exception as exc:
            log.exception("could not read the trading state; order blocked")
            blocked = evaluator.blocked(order, now, "engine_error", "STATE_UNAVAILABLE", fault(exc))
            return blocked, "unknown", None, None
        if operation == "submit" and snap.claim is not None:
            claimed = _Claimed(*snap.claim)
            return evaluator.rejected({}, now, ()), snap.controls.mode, claimed, None
        state = self._desk.engine_state(order, snap, actor, operation, in_force.standing, quote)
        return evaluator.evaluate(order, state, now), snap.controls.mode, None, state

    # --- routing -----------------------------------------------------------------

    def _route(
        self, record: OrderRecord, order: OrderRequest, broker: BrokerAdapter, actor: Actor
    ) -> Outcome:
        order_id = record.order_id or ""
        try:
            ack = broker.submit(broker_order(order_id, order, broker))
        except Exception as exc:
            return self._unknown_outcome(record, broker, exc, actor)
        return self.settle(record, ack, actor.id, "submit")

    def settle(self, record: OrderRecord, ack: BrokerAck, actor: str, operation: str) -> Outcome:
        """Book the broker's answer to a submit; the broker has acted, so a failure
        to log it is loud."""
        if ack.status == OrderStatus.BLOCKED:
            return self.broker_refused(record, ack, actor, operation)
        try:
            applied = self._executions.apply(record.order_id or "", ack, actor, operation)
        except Exception:
            log.critical(
                "the broker acted on %s (%s, broker id %s) but the outcome could not be logged",
                record.order_id,
                ack.status,
                ack.broker_order_id,
                exc_info=True,
            )
            attempt = record.evolve(order_status=ack.status, broker_response=ack.response())
            return Outcome("audit_unavailable", attempt.as_dict())
        return Outcome("routed", applied.record)

    def broker_refused(
        self, record: OrderRecord, ack: BrokerAck, actor: str, operation: str
    ) -> Outcome:
        """The broker refused the order: blocked with `broker_api_error` and the
        broker's own words in `broker_response` (SPEC section 7; HTTP 502)."""
        return self._block_at_broker(
            record,
            code="BROKER_REJECTED",
            detail=ack.detail or "the broker refused the order",
            response=ack.response(),
            actor=actor,
            operation=operation,
            broker_order_id=ack.broker_order_id or None,
        )

    def _unknown_outcome(
        self, record: OrderRecord, broker: BrokerAdapter, exc: BaseException, actor: Actor
    ) -> Outcome:
        """The submit call failed: the order may or may not have reached the broker.
        Ask the broker by client order id before anything else; never send twice."""
        detail = fault(exc)
        log.error("broker call failed for %s: %s", record.order_id, detail)
        try:
            found = broker.find(record.order_id or "")
        except Exception as lookup:
            # unknown outcome: the order stays `submitted`, the broker takes no new
            # orders until recovery resolves it with the broker
            self._desk.set_ready(
                broker.name, f"the outcome of {record.order_id} is unknown ({fault(lookup)})"
            )
            response = {"status": "unknown", "detail": detail}
            return Outcome("broker_error", record.evolve(broker_response=response).as_dict())
        if found is not None:
            return self.settle(record, found, actor.id, "submit")
        return self._block_at_broker(
            record,
            code="BROKER_API_ERROR",
            detail=detail,
            response={"status": "error", "detail": detail},
            actor=actor.id,
            operation="submit",
        )

    def _block_at_broker(
        self,
        record: OrderRecord,
        *,
        code: str,
        detail: str,
        response: dict[str, Any],
        actor: str,
        operation: str,
        broker_order_id: str | None = None,
    ) -> Outcome:
        now = self._desk.clock()
        blocked = with_broker_error(
            record,
            code=code,
            detail=detail,
            response=response,
            at=now,
            actor=actor,
            operation=operation,
            status=OrderStatus.BLOCKED,
        )

        def work(w: Writer) -> dict[str, Any]:
            linked = w.append(blocked.as_dict(), "order", now)
            w.update_order(record.order_id or "", linked, now, broker_order_id=broker_order_id)
            w.event(record.order_id or "", str(OrderStatus.BLOCKED), {"error": detail}, now)
            return linked

        try:
            linked = self._desk.store.transact(work)
        except Exception:
            log.exception("audit write failed after a broker error")
            return Outcome("audit_unavailable", blocked.as_dict())
        return Outcome("broker_error", linked)

    # --- retries ---------------------------------------------------------------

    def _log_retry(
        self,
        w: Writer,
        claim: _Claimed,
        raw: Any,
        request_digest: str,
        actor: Actor,
        mode: str,
        now: datetime,
    ) -> _Retry:
        """A submit whose client order id is claimed: a retry (same body) or a
        conflict (another body). Either way the attempt gets a `rejected` record
        of its own, written under the chain lock with the claim it read, that
        names the original (`original_order_id`, and `original_hash`: the
        original's latest record, which a retry is answered with). It is not the
        original's record, so the original's row, status and flow stay as they
        were; and as `rejected` it is never flow, never routed, never resolved."""
        stored = w.order(claim.order_id)
        original: dict[str, Any] = {"order_id": claim.order_id}
        if stored is not None:
            original = stored.linked or stored.record.as_dict()
        same = claim.digest == request_digest
        if same:
            message = (
                f"a retry of {claim.order_id} (same body): answered with its record,"
                " not judged or sent again"
            )
        else:
            message = f"already used by {claim.order_id} with a different body"
        decision = self._desk.evaluator.rejected(
            raw, now, (FieldError("client_order_id", message),)
        )
        names = {"original_order_id": claim.order_id, "original_hash": original.get("hash")}
        attempt = _append_rejected(w, decision, "submit", actor, mode, now, names)
        return _Retry(original, attempt, same)


def _append_rejected(
    w: Writer,
    decision: Decision,
    operation: str,
    actor: Actor,
    mode: str,
    now: datetime,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """Append a rejected attempt's record (with `extra` fields, such as the order
    it names) and its orders row, in the caller's transaction."""
    record = order_record(
        decision, operation=operation, mode=mode, actor=actor.id, order_id=w.next_order_id(now.year)
    ).as_dict()
    linked = w.append({**record, **(extra or {})}, "order", now)
    w.insert_order(linked, decision.request, now, None)
    return linked


def _parse(evaluator: Evaluator, raw: Any, now: datetime) -> OrderRequest | Decision:
    """The order, or the decision rejecting it (every bad field named)."""
    try:
        return OrderRequest.model_validate(raw)
    except ValidationError as exc:
        return evaluator.rejected(raw, now, field_errors(exc))
    except Exception as exc:  # anything odd about the input itself
        error = FieldError("(body)", f"could not be read: {type(exc).__name__}")
        return evaluator.rejected(raw, now, (error,))


def _unlogged(
    evaluator: Evaluator, order: OrderRequest, raw: Any, now: datetime, actor: Actor
) -> dict[str, Any]:
    """What to show for an attempt whose record could not be written."""
    decision = evaluator.blocked(
        order, now, "engine_error", "AUDIT_UNAVAILABLE", "the audit log could not be written"
    )
    return order_record(decision, operation="submit", mode="unknown", actor=actor.id).as_dict()


def _kind_of(record: dict[str, Any]) -> OutcomeKind:
    status = record.get("order_status")
    if status == OrderStatus.BLOCKED:
        triggers = record.get("fail_closed_triggers") or []
        return "broker_error" if "broker_api_error" in triggers else "blocked"
    if status == OrderStatus.REJECTED:
        return "rejected"
    if status == OrderStatus.SUBMITTED:
        return "pending"  # still on its way to the broker (or being resolved)
    return "routed"
