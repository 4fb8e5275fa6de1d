"""Portfolio sync (issue 10, item 4): a full reconciliation sets the mapped
account's positions to the broker's, one `position_sync` record per change,
and `audit verify` replays syncs and the fills that follow them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit_replay import verify_store
from engine.broker import BrokerAck, BrokerOrder, Capabilities, Fill
from engine.gateway import Actor, Gateway
from engine.lifecycle import OrderStatus
from engine.ports import Controls, Writer
from tests.conftest import POLICIES, FixedClock, _load_policies_once, build_order
from tests.live_broker import LIVE_CAPABILITIES, FakeLiveBroker

TRADER = Actor.of("t-1", "trader")
CAPS = Capabilities(**{**LIVE_CAPABILITIES.__dict__, "paper": True})


@dataclass
class Holding(FakeLiveBroker):
    """Fills every order at once at 150; `held` is what it reports as positions."""

    name: str = "holding-paper"
    capabilities: Capabilities = CAPS
    held: dict[str, float] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def submit(self, order: BrokerOrder) -> BrokerAck:
        self.orders.append(order)
        fill = Fill(order.quantity, 150.0, NOW, f"E-{order.order_id}")
        return BrokerAck(
            order.order_id, f"H-{order.order_id}", OrderStatus.FILLED, order.quantity, 150.0,
            (fill,),
        )  # fmt: skip

    def positions(self, account: str) -> dict[str, float]:
        self.asked.append(account)
        return dict(self.held)


NOW = FixedClock().now


@pytest.fixture
def paper(store_url: str, clock: FixedClock) -> Iterator[tuple[Gateway, Holding, SqlStore]]:
    store = SqlStore(store_url)
    store.migrate()
    broker = Holding()
    evaluator = Evaluator(_load_policies_once(POLICIES), clock)
    gateway = Gateway(store, evaluator, {"paper": broker}, clock)
    gateway.sync_positions_into(broker.name, "default")

    def to_paper(w: Writer) -> None:
        w.set_controls(Controls("paper", {}), clock())

    store.transact(to_paper)
    yield gateway, broker, store
    store.close()


def syncs(records: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    return [
        (r["symbol"], r["before"], r["after"]) for r in records if r.get("kind") == "position_sync"
    ]


def test_sync_when_the_broker_holds_other_positions_then_set_recorded_and_verified(
    paper: tuple[Gateway, Holding, SqlStore], clock: FixedClock
) -> None:
    gateway, broker, store = paper
    broker.held = {"AAPL": 300.0, "MSFT": -50.0}

    first = gateway.recover()
    again = gateway.recover()
    broker.held = {"AAPL": 250.0}
    changed = gateway.recover()
    partial = gateway.recover(stale_after_s=60)  # a sweep's pass: no sync

    assert syncs(first) == [("AAPL", 0.0, 300.0), ("MSFT", 0.0, -50.0)]
    assert syncs(again) == []
    assert syncs(changed) == [("AAPL", 300.0, 250.0), ("MSFT", -50.0, 0.0)]
    assert partial == []
    assert store.positions("default") == {"AAPL": 250.0}
    assert broker.asked == ["default"] * 3
    record = first[0]
    assert (record["broker"], record["account"], record["actor"]) == (
        "holding-paper", "default", "system")  # fmt: skip
    report = verify_store(store)
    assert report.ok and not report.findings, report.as_dict()


def test_sync_when_fills_follow_then_positions_add_up_and_the_chain_replays(
    paper: tuple[Gateway, Holding, SqlStore], clock: FixedClock
) -> None:
    gateway, broker, store = paper
    broker.held = {"AAPL": 300.0}
    gateway.recover()

    record = gateway.submit(build_order("p-1", clock()), TRADER).record
    broker.held = {"AAPL": 400.0}  # the broker agrees: nothing to change
    after = gateway.recover()

    assert record["order_status"] == "filled"
    assert store.positions("default") == {"AAPL": 400.0}
    assert syncs(after) == []
    report = verify_store(store)
    assert report.ok and not report.findings, report.as_dict()


def test_sync_when_the_position_was_changed_behind_the_chain_then_audit_verify_names_it(
    paper: tuple[Gateway, Holding, SqlStore], clock: FixedClock
) -> None:
    gateway, broker, store = paper
    broker.held = {"AAPL": 300.0}
    gateway.recover()

    def tamper(w: Writer) -> None:
        w.set_position("default", "AAPL", 999.0)  # no record says so

    store.transact(tamper)
    report = verify_store(store)

    assert [(f.subject, f.code) for f in report.findings] == [("default/AAPL", "position_differs")]


def test_sync_when_no_account_is_mapped_then_the_broker_is_not_asked(
    store_url: str, clock: FixedClock
) -> None:
    store = SqlStore(store_url)
    store.migrate()
    broker = Holding(held={"AAPL": 300.0})
    gateway = Gateway(
        store, Evaluator(_load_policies_once(POLICIES), clock), {"paper": broker}, clock
    )
    try:
        records = gateway.recover()
        positions = store.positions("default")
    finally:
        store.close()

    assert syncs(records) == [] and positions == {} and broker.asked == []
