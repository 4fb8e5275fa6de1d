"""Crash recovery and reconciliation of working orders with their brokers.

On start, before the service says it is ready and before any new order flows
to a broker, every order the store holds as working or of unknown outcome is
asked of its broker by client order id (our order id):
- found: its true status and fills are booked (anomalies as in `executions`);
- not found: an order still `submitted` never reached the broker; it is closed
  as `blocked` with `broker_api_error`, code NOT_AT_BROKER (nothing is ever
  sent twice); an order we held as working that the broker does not know is an
  `execution_anomaly`, and it is closed as `cancelled`;
- the broker cannot be asked: that broker takes no new orders (the policies'
  `broker_ready_check` blocks them with `broker_api_error`) until a later
  attempt resolves everything.
Each broker's pass over one or more orders appends one `reconciliation` record. The same pass runs
again later for orders left `submitted` too long (a commit whose outcome the
writer could not know, a crash of another replica).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from ..broker import BrokerAck, BrokerAdapter
from ..clock import format_utc
from ..errors import fault
from ..lifecycle import OPEN, UNRESOLVED, OrderStatus
from ..ports import StoredOrder, Writer
from ._records import event, with_broker_error
from .desk import Desk, connection_problem
from .executions import Executions
from .outcome import Actor
from .portfolio import sync_positions

__all__ = ["Recovery"]

log = logging.getLogger("apex.gateway")


class Recovery:
    def __init__(self, desk: Desk, executions: Executions) -> None:
        self._desk = desk
        self._executions = executions
        # broker name -> its count of connections made, as last seen by a pass
        self._connections: dict[str, int] = {}

    def recover(self, actor: Actor, stale_after_s: float | None = None) -> list[dict[str, Any]]:
        """Reconcile working orders with their brokers; the reconciliation records.
        On start (`stale_after_s` None): every working order of every broker. As a
        periodic sweep: every working order of a broker not yet reconciled, and
        elsewhere only orders of unknown outcome untouched for `stale_after_s`."""
        now = self._desk.clock()
        down: set[str] = set()
        for adapter in self._desk.brokers.values():
            problem = connection_problem(adapter)
            if problem is not None:
                # nothing can be asked of it; once it is back it stays unready until
                # a pass has reconciled every one of its working orders
                self._desk.set_ready(adapter.name, f"disconnected: {problem}")
                down.add(adapter.name)
            elif self._reconnected(adapter):
                # it dropped and came back between two passes: what happened while
                # it was away is only known after every working order is asked
                self._desk.set_ready(adapter.name, "reconnected; reconciling")
        unready = self._desk.unready()
        by_broker: dict[str, list[StoredOrder]] = {}
        if stale_after_s is None:
            by_broker = {b.name: [] for b in self._desk.brokers.values()}
        else:
            by_broker = {name: [] for name in unready}
        stale = timedelta(seconds=stale_after_s or 0.0)
        for stored in self._desk.store.orders_in(OPEN):
            name = stored.broker or ""
            settled = stored.status not in UNRESOLVED or now - stored.updated_at < stale
            if stale_after_s is not None and name not in unready and settled:
                continue
            by_broker.setdefault(name, []).append(stored)
        records = []
        for name, orders in by_broker.items():
            if name in down:
                continue
            broker = self._desk.broker_named(name)
            if broker is None:
                log.error("%d working orders at unconfigured broker %r", len(orders), name)
                continue
            record = self._reconcile(broker, orders, actor)
            if record:
                records.append(record)
            if stale_after_s is None:  # a full pass: the broker's positions too
                records.extend(self._sync(broker, actor))
        return records

    def _reconnected(self, broker: BrokerAdapter) -> bool:
        """Whether the broker made a new connection since the last pass (an adapter
        that keeps one counts them in `connections`)."""
        count = getattr(broker, "connections", None)
        if not isinstance(count, int) or isinstance(count, bool):
            return False
        before = self._connections.get(broker.name)
        self._connections[broker.name] = count
        return before is not None and count != before

    def _sync(self, broker: BrokerAdapter, actor: Actor) -> list[dict[str, Any]]:
        account = self._desk.position_accounts.get(broker.name)
        if account is None or not broker.capabilities.positions:
            return []
        try:
            return sync_positions(self._desk, broker, account, actor)
        except Exception as exc:
            log.warning("position sync with %s failed (%s); retried at the next pass",
                        broker.name, fault(exc))  # fmt: skip
            return []

    def _reconcile(
        self, broker: BrokerAdapter, orders: list[StoredOrder], actor: Actor
    ) -> dict[str, Any]:
        if not orders:  # nothing to ask: no record (an empty one would say nothing)
            self._desk.set_ready(broker.name, None)
            at = format_utc(self._desk.clock())
            self._desk.reconciled[broker.name] = {"at": at, "checked": 0, "resolved": 0,
                                                  "unresolved": 0, "hash": None}  # fmt: skip
            return {}
        resolved: list[dict[str, str]] = []
        unresolved: list[dict[str, str]] = []
        for stored in orders:
            try:
                found = broker.find(stored.order_id)
            except Exception as exc:
                unresolved.append({"order_id": stored.order_id, "error": fault(exc)})
                continue
            try:
                outcome = self._resolve(stored, found, actor)
            except Exception as exc:
                log.exception("could not book the resolution of %s", stored.order_id)
                unresolved.append({"order_id": stored.order_id, "error": fault(exc)})
                continue
            if outcome is not None:
                resolved.append({"order_id": stored.order_id, "outcome": outcome})
        why_not = None
        if unresolved:
            why_not = f"{len(unresolved)} orders of unknown outcome not yet resolved"
        now = self._desk.clock()
        record = event(
            "reconciliation",
            now,
            actor.id,
            broker=broker.name,
            checked=len(orders),
            resolved=resolved,
            unresolved=unresolved,
        )
        try:
            linked = self._desk.store.transact(lambda w: w.append(record, "reconciliation", now))
        except Exception:
            log.exception("could not log the reconciliation with %s", broker.name)
            why_not = why_not or "the reconciliation could not be logged"
            linked = record
        self._desk.set_ready(broker.name, why_not)
        self._desk.reconciled[broker.name] = {
            "at": record["timestamp"], "checked": len(orders), "resolved": len(resolved),
            "unresolved": len(unresolved), "hash": linked.get("hash"),
        }  # fmt: skip
        return linked

    def _resolve(self, stored: StoredOrder, found: BrokerAck | None, actor: Actor) -> str | None:
        """Book what the broker says; what was done (None: nothing new)."""
        if found is not None:
            applied = self._executions.apply(
                stored.order_id, found, actor.id, "reconcile", only_if_changed=True
            )
            return f"{stored.status} -> {found.status}" if applied.changed else None
        if stored.status == OrderStatus.SUBMITTED:
            self._close(stored, actor)
            return "not at broker: blocked"
        detail = "the broker does not know this order"
        missing = BrokerAck(
            stored.order_id, stored.broker_order_id or "", OrderStatus.CANCELLED, detail=detail
        )
        unknown = {
            "anomaly": "unknown_at_broker",
            "expected": f"the broker holds the order as {stored.status}",
            "got": "the broker does not know it",
            "broker_status": "not_found",
        }
        self._executions.apply(stored.order_id, missing, actor.id, "reconcile", anomaly=unknown)
        return "unknown at broker: cancelled"

    def _close(self, stored: StoredOrder, actor: Actor) -> None:
        now = self._desk.clock()
        detail = "the broker never received this order; it was not sent"
        blocked = with_broker_error(
            stored.record,
            code="NOT_AT_BROKER",
            detail=detail,
            response={"status": "not_found", "detail": detail},
            at=now,
            actor=actor.id,
            operation="reconcile",
            status=OrderStatus.BLOCKED,
        )

        def work(w: Writer) -> None:
            current = w.order(stored.order_id)
            if current is None or current.status != OrderStatus.SUBMITTED:
                return  # resolved meanwhile
            linked = w.append(blocked.as_dict(), "order", now)
            w.update_order(stored.order_id, linked, now)
            w.event(stored.order_id, str(OrderStatus.BLOCKED), {"error": detail}, now)

        self._desk.store.transact(work)
