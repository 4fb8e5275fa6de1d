"""A broker that keeps a connection (issue 10, items 4 and 6): while it is down,
its new orders are blocked with `broker_api_error` (BROKER_NOT_READY); once it
is back, they stay blocked until a reconciliation pass has asked it about every
working order, and a fill made while it was down is booked then."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.sql import SqlStore
from engine import Evaluator
from engine.broker import BrokerAck, BrokerError, BrokerOrder, Capabilities, Fill
from engine.gateway import Actor, Gateway
from engine.lifecycle import OrderStatus
from engine.ports import Controls, Writer
from tests.conftest import POLICIES, FixedClock, _load_policies_once, build_order
from tests.live_broker import LIVE_CAPABILITIES, FakeLiveBroker

TRADER = Actor.of("t-1", "trader")
CAPS = Capabilities(**{**LIVE_CAPABILITIES.__dict__, "paper": True})


@dataclass
class Connected(FakeLiveBroker):
    """`down`: why it is disconnected (None: connected); `filled`: order ids it
    filled while nobody was listening."""

    name: str = "socket-paper"
    capabilities: Capabilities = CAPS
    down: str | None = None
    filled: dict[str, float] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    connections: int = 1  # connections made so far, as IB's adapter counts them

    def connection_problem(self) -> str | None:
        return self.down

    def submit(self, order: BrokerOrder) -> BrokerAck:
        if self.down:
            raise BrokerError(f"not connected: {self.down}")
        return super().submit(order)

    def find(self, order_id: str) -> BrokerAck | None:
        if self.down:
            raise BrokerError(f"not connected: {self.down}")
        self.asked.append(order_id)
        index = next(i for i, o in enumerate(self.orders, 1) if o.order_id == order_id)
        if order_id in self.filled:
            price = self.filled[order_id]
            order = self.orders[index - 1]
            fill = Fill(order.quantity, price, NOW_FILL, f"E-{order_id}")
            return BrokerAck(
                order_id, f"LIVE-{index}", OrderStatus.FILLED, order.quantity, price, (fill,)
            )
        return BrokerAck(order_id, f"LIVE-{index}", OrderStatus.ACCEPTED)


NOW_FILL = FixedClock().now


@pytest.fixture
def paper(store_url: str, clock: FixedClock) -> Iterator[tuple[Gateway, Connected, SqlStore]]:
    store = SqlStore(store_url)
    store.migrate()
    broker = Connected()
    evaluator = Evaluator(_load_policies_once(POLICIES), clock)
    gateway = Gateway(store, evaluator, {"paper": broker}, clock)
    gateway.recover()

    def to_paper(w: Writer) -> None:
        w.set_controls(Controls("paper", {}), clock())

    store.transact(to_paper)
    yield gateway, broker, store
    store.close()


def submit(gateway: Gateway, clock: FixedClock, cid: str, **changes: Any) -> dict[str, Any]:
    return gateway.submit(build_order(cid, clock(), **changes), TRADER).record


def test_disconnect_when_down_then_new_orders_blocked_until_back_and_reconciled(
    paper: tuple[Gateway, Connected, SqlStore], clock: FixedClock
) -> None:
    gateway, broker, store = paper
    resting = submit(gateway, clock, "c-1", limit_price=150.00)
    assert resting["order_status"] == "accepted"

    broker.down = "connection reset by peer"
    broker.filled[resting["order_id"]] = 150.00  # filled while we were not listening
    while_down = submit(gateway, clock, "c-2")
    readiness = gateway.readiness()
    broker.down = None
    back_not_reconciled = submit(gateway, clock, "c-3")
    records = gateway.recover(stale_after_s=60)
    after = submit(gateway, clock, "c-4")

    for blocked in (while_down, back_not_reconciled):
        assert blocked["order_status"] == "blocked"
        assert blocked["fail_closed_triggers"] == ["broker_api_error"]
        assert [r["code"] for r in blocked["reasons"]] == ["BROKER_NOT_READY"]
    assert readiness == ["broker socket-paper: disconnected: connection reset by peer"]
    assert [len(o) for o in (broker.orders,)] == [2]  # c-1 and c-4 only: nothing while down
    assert broker.asked == [resting["order_id"]]
    (reconciliation,) = records
    assert reconciliation["resolved"] == [
        {"order_id": resting["order_id"], "outcome": "accepted -> filled"}
    ]
    assert store.order(resting["order_id"]).status == OrderStatus.FILLED  # type: ignore[union-attr]
    assert after["order_status"] == "accepted"
    assert gateway.readiness() == []


def test_disconnect_when_the_sweep_runs_while_down_then_nothing_is_asked_and_it_stays_unready(
    paper: tuple[Gateway, Connected, SqlStore], clock: FixedClock
) -> None:
    gateway, broker, _ = paper
    submit(gateway, clock, "c-1", limit_price=150.00)
    broker.down = "heartbeat lost"

    records = gateway.recover()

    assert records == []
    assert broker.asked == []
    assert gateway.readiness() == ["broker socket-paper: disconnected: heartbeat lost"]


def test_reconnect_when_it_dropped_between_two_passes_then_the_next_pass_reconciles_first(
    paper: tuple[Gateway, Connected, SqlStore], clock: FixedClock
) -> None:
    gateway, broker, store = paper
    gateway.recover(stale_after_s=60)  # a pass sees the first connection
    resting = submit(gateway, clock, "c-1", limit_price=150.00)
    broker.filled[resting["order_id"]] = 150.00  # filled during a drop nobody saw
    broker.connections = 2  # it dropped and came back

    records = gateway.recover(stale_after_s=60)

    assert broker.asked == [resting["order_id"]]
    assert [r["resolved"] for r in records] == [
        [{"order_id": resting["order_id"], "outcome": "accepted -> filled"}]
    ]
    assert store.order(resting["order_id"]).status == OrderStatus.FILLED  # type: ignore[union-attr]
    assert gateway.readiness() == []
