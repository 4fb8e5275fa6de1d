"""Invariants under concurrency, on both backends, many clients at once:

- no approval after a control that should block it: once `omega_invoked` (or a
  `mode_changed` to research, or an account's `trading_state_changed` to halted)
  is in the chain, no later record approves a new order (`submitted`,
  `evaluated` without triggers, `pending_replace`);
- the throttle never lets more than its limit through;
- an account's working orders never pass its open notional limit, and never
  cross each other (self-match);
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


# --- account-wide controls (policies/account_controls.yaml) under many clients ----------

OPEN_LIMIT = 1_000_000  # risk.max_open_notional_by_account for paper-1


def _resting(make_order: OrderBuilder, **changes: Any) -> dict[str, Any]:
    """A limit order of paper-1 that rests at the simulator (inside the 150.20/150.30
    quote), so it stays working and counts toward the account's open notional."""
    return make_order(account="paper-1", order_type="limit", **changes)


def _all_at_once(gateway: Gateway, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit every order from a thread of its own, all released at one barrier; the
    records, in the orders' order."""
    gate = threading.Barrier(len(orders))

    def submit(order: dict[str, Any]) -> dict[str, Any]:
        gate.wait()
        return gateway.submit(order, TRADER).record

    with ThreadPoolExecutor(len(orders)) as pool:
        return list(pool.map(submit, orders))


def test_many_clients_at_once_then_the_working_orders_never_pass_the_open_notional_limit(
    gateway: Gateway, make_order: OrderBuilder
) -> None:
    """24 resting buys of about 150,000 each, from 24 threads at once: the account's
    working notional never exceeds its limit, and the gate blocked only orders that
    would have taken it over (each by open_notional_check)."""
    assert gateway.evaluator.policy.config.param("risk.max_open_notional_by_account") == {
        "paper-1": OPEN_LIMIT
    }
    orders = [_resting(make_order, limit_price=150.0, quantity=1000 + i) for i in range(24)]
    records = _all_at_once(gateway, orders)

    working = [r for r in records if r["order_status"] == "accepted"]
    blocked = [r for r in records if r["order_status"] == "blocked"]
    assert len(working) + len(blocked) == len(orders), [r["order_status"] for r in records]
    working_notional = sum(r["quantity"] * r["limit_price"] for r in working)
    assert working_notional <= OPEN_LIMIT
    assert len(working) == 6  # 6 x ~150,500 fit under 1,000,000, a seventh never does
    for record in blocked:
        failed = [c for c, result in record["risk_check_results"].items() if result != "pass"]
        assert failed == ["open_notional_check"], record["reasons"]
        assert working_notional + record["quantity"] * 150.0 > OPEN_LIMIT
    broker = gateway.broker_for("simulation")
    assert isinstance(broker, CountingBroker)
    assert sorted(broker.sent) == sorted(r["order_id"] for r in working)
    assert verify_chain(gateway.store.audit_records()).ok


def test_crossing_buys_and_sells_at_once_then_no_two_working_orders_of_the_account_cross(
    gateway: Gateway, make_order: OrderBuilder
) -> None:
    """12 buys at 150.29 and 12 short sells at 150.28 of one account, from 24 threads
    at once: each would rest alone, and any buy crosses any sell. Only one side can
    be working at the end; every other order was blocked as SELF_MATCH."""
    buys = [_resting(make_order, side="buy", limit_price=150.29, quantity=100 + i)
            for i in range(12)]  # fmt: skip
    sells = [_resting(make_order, side="sell", limit_price=150.28, quantity=200 + i,
                      short_sale=True, locate_id=f"LOC-{i}") for i in range(12)]  # fmt: skip
    orders = [order for pair in zip(buys, sells, strict=True) for order in pair]
    records = _all_at_once(gateway, orders)

    working = [r for r in records if r["order_status"] == "accepted"]
    sides = {r["side"] for r in working}
    assert working and len(sides) == 1, [(r["side"], r["order_status"]) for r in records]
    for record in records:
        if record["order_status"] == "accepted":
            continue
        assert record["order_status"] == "blocked"
        assert record["side"] not in sides
        codes = [reason["code"] for reason in record["reasons"]]
        assert codes == ["SELF_MATCH"], record["reasons"]
    assert verify_chain(gateway.store.audit_records()).ok
