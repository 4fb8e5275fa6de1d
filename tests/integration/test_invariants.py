"""Invariants under concurrency, on both backends, many clients at once:

- no approval after a control that should block it: once `omega_invoked` (or a
  `mode_changed` to research, or an account's `trading_state_changed` to halted)
  is in the chain, no later record approves a new order (`submitted`,
  `evaluated` without triggers, `pending_replace`);
- the throttle never lets more than its limit through;
- nothing is sent to the broker twice, and the chain verifies.

Decisions are taken under the chain lock (engine/gateway/submit.py), so these
hold by construction; these tests try hard to catch them failing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from adapters.simulated import SimulatedBroker
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.broker import BrokerAck, BrokerOrder
from engine.gateway import Actor, Gateway
from tests.conftest import POLICIES, FixedClock, OrderBuilder, _load_policies_once

TRADER = Actor("t-1", "trader")
COMPLIANCE = Actor("c-1", "compliance")
CLIENTS = 8
APPROVALS = ("submitted", "pending_replace")


class CountingBroker(SimulatedBroker):
    """The simulator, counting every order it is sent."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock)
        self.sent: list[str] = []
        self._sent_lock = threading.Lock()

    def submit(self, order: BrokerOrder) -> BrokerAck:
        with self._sent_lock:
            self.sent.append(order.order_id)
        return super().submit(order)


class TickingClock(FixedClock):
    """Moves `step` seconds at every reading, so that a storm of hundreds of orders
    spreads over seconds and the rate throttle (20 a second) lets them through;
    the orders' quotes are stamped by the same clock, so they stay fresh."""

    def __init__(self) -> None:
        super().__init__()
        self.step = 0.03
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.advance(self.step)
            return self.now


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def gateway(store_url: str, clock: FixedClock) -> Iterator[Gateway]:
    store = SqlStore(store_url)
    store.migrate()
    broker = CountingBroker(clock)
    evaluator = Evaluator(_load_policies_once(POLICIES), clock)
    gw = Gateway(store, evaluator, {"simulation": broker}, clock)
    gw.recover()
    gw.set_mode("simulation", COMPLIANCE, "test")
    yield gw
    store.close()


def storm(
    gateway: Gateway, make_order: OrderBuilder, control: Callable[[], Any], per_client: int = 25
) -> None:
    """CLIENTS threads submit market orders; `control` runs once a third of them are in."""
    started = threading.Barrier(CLIENTS + 1)
    done = threading.Semaphore(0)
    count = [0]
    lock = threading.Lock()

    def client(n: int) -> None:
        started.wait()
        for i in range(per_client):
            order = make_order(
                order_type="market", limit_price=None, quantity=1 + n * per_client + i
            )
            gateway.submit(order, TRADER)
            with lock:
                count[0] += 1
                if count[0] == CLIENTS * per_client // 3:
                    done.release()

    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        futures = [pool.submit(client, n) for n in range(CLIENTS)]
        started.wait()
        done.acquire()
        control()
        for future in futures:
            future.result()


def approvals_after(records: list[dict[str, Any]], kind: str, **match: Any) -> list[str]:
    """Order ids approved by a record that follows the first `kind` record matching."""
    seen = False
    found = []
    for record in records:
        if record.get("kind") == kind and all(record.get(k) == v for k, v in match.items()):
            seen = True
            continue
        if seen and record.get("order_status") in APPROVALS:
            found.append(record["order_id"])
    assert seen, f"no {kind} record in the chain"
    return found


def test_omega_invoked_during_a_submit_storm_then_no_approval_follows_it(
    gateway: Gateway, make_order: OrderBuilder
) -> None:
    storm(gateway, make_order, lambda: gateway.invoke_omega(COMPLIANCE, "drill"))

    records = list(gateway.store.audit_records())
    assert approvals_after(records, "omega_invoked") == []
    assert verify_chain(records).ok
    blocked = [r for r in records if "omega_directive" in r.get("fail_closed_triggers", [])]
    assert blocked, "the storm ended before Omega: the test proved nothing"


def test_mode_changed_to_research_during_a_submit_storm_then_no_approval_follows_it(
    gateway: Gateway, make_order: OrderBuilder
) -> None:
    storm(gateway, make_order, lambda: gateway.set_mode("research", COMPLIANCE, "drill"))

    records = list(gateway.store.audit_records())
    assert approvals_after(records, "mode_changed", mode="research") == []
    assert any("mode_research" in r.get("fail_closed_triggers", []) for r in records)


def test_account_halted_during_a_submit_storm_then_no_approval_follows_it(
    gateway: Gateway, make_order: OrderBuilder
) -> None:
    storm(
        gateway,
        make_order,
        lambda: gateway.set_trading_state("default", "halted", COMPLIANCE, "drill"),
    )

    records = list(gateway.store.audit_records())
    assert approvals_after(records, "trading_state_changed", scope="default") == []


def test_fifty_simultaneous_submits_then_the_throttle_lets_exactly_its_limit_through(
    gateway: Gateway, make_order: OrderBuilder, clock: TickingClock
) -> None:
    clock.step = 0.0  # one instant: every order falls in the same rate window
    limit = gateway.evaluator.policy.config.param("risk.max_orders_per_window")
    assert isinstance(limit, int)
    orders = [make_order(order_type="market", limit_price=None, quantity=1 + i) for i in range(50)]
    gate = threading.Barrier(50)

    def submit(order: dict[str, Any]) -> str:
        gate.wait()
        return gateway.submit(order, TRADER).kind

    with ThreadPoolExecutor(50) as pool:
        kinds = list(pool.map(submit, orders))

    assert kinds.count("routed") == limit
    assert kinds.count("blocked") == 50 - limit


def test_same_client_order_id_from_many_threads_then_sent_once(
    gateway: Gateway, make_order: OrderBuilder
) -> None:
    order = make_order(order_type="market", limit_price=None)
    gate = threading.Barrier(12)

    def submit(_: int) -> str:
        gate.wait()
        return gateway.submit(order, TRADER).kind

    with ThreadPoolExecutor(12) as pool:
        kinds = list(pool.map(submit, range(12)))

    broker = gateway.broker_for("simulation")
    assert isinstance(broker, CountingBroker)
    assert len(broker.sent) == 1
    assert sorted(kinds) == ["replayed"] * 11 + ["routed"]
