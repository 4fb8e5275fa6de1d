"""Portfolio sync (issue 10, item 4): a full reconciliation sets the mapped
account's positions to the broker's, one `position_sync` record per change,
and `audit verify` replays syncs and the fills that follow them. A broker that
gives a price with each position (`held_positions`) sets the holding's mark, so
the account's gross exposure can be valued; one that gives none leaves it
unknown, and the account's orders blocked."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit_replay import verify_store
from engine.broker import BrokerAck, BrokerOrder, BrokerPosition, Capabilities, Fill
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


@dataclass
class PricedHolding(Holding):
    """`priced` is what it reports as positions, each with the broker's price."""

    name: str = "priced-paper"
    priced: dict[str, BrokerPosition] = field(default_factory=dict)

    def positions(self, account: str) -> dict[str, float]:
        raise AssertionError("the sync asks held_positions: one call")

    def held_positions(self, account: str) -> dict[str, BrokerPosition]:
        self.asked.append(account)
        return dict(self.priced)


NOW = FixedClock().now


H = TypeVar("H", bound=Holding)


def _in_paper(store_url: str, clock: FixedClock, broker: H) -> tuple[Gateway, H, SqlStore]:
    """A gateway in paper mode on a fresh store, routing to `broker`, whose
    positions the sync sets into account `default`."""
    store = SqlStore(store_url)
    store.migrate()
    evaluator = Evaluator(_load_policies_once(POLICIES), clock)
    gateway = Gateway(store, evaluator, {"paper": broker}, clock)
    gateway.sync_positions_into(broker.name, "default")

    def to_paper(w: Writer) -> None:
        w.set_controls(Controls("paper", {}), clock())

    store.transact(to_paper)
    return gateway, broker, store


@pytest.fixture
def paper(store_url: str, clock: FixedClock) -> Iterator[tuple[Gateway, Holding, SqlStore]]:
    gateway, broker, store = _in_paper(store_url, clock, Holding())
    yield gateway, broker, store
    store.close()


@pytest.fixture
def priced(store_url: str, clock: FixedClock) -> Iterator[tuple[Gateway, PricedHolding, SqlStore]]:
    gateway, broker, store = _in_paper(store_url, clock, PricedHolding())
    yield gateway, broker, store
    store.close()


def marks(store: SqlStore, account: str = "default") -> dict[str, float | None]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT symbol, price FROM positions WHERE account = :account"),
            {"account": account},
        ).all()
    return {str(symbol): price for symbol, price in sorted(rows)}


def priced_syncs(records: list[dict[str, Any]]) -> list[tuple[str, float, float, Any]]:
    return [
        (r["symbol"], r["before"], r["after"], r.get("price", "absent"))
        for r in records
        if r.get("kind") == "position_sync"
    ]


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


# --- marks: the broker's price with each position ------------------------------------------


def test_sync_when_the_broker_gives_prices_then_marks_set_refreshed_and_recorded_with_changes(
    priced: tuple[Gateway, PricedHolding, SqlStore],
) -> None:
    gateway, broker, store = priced
    broker.priced = {"AAPL": BrokerPosition(300.0, 150.25), "MSFT": BrokerPosition(-50.0, None)}

    first = gateway.recover()
    first_marks = marks(store)
    broker.priced = {"AAPL": BrokerPosition(300.0, 151.0), "MSFT": BrokerPosition(-50.0, 410.5)}
    refreshed = gateway.recover()  # quantities agree: the marks alone, no record
    refreshed_marks = marks(store)
    broker.priced = {"AAPL": BrokerPosition(250.0, None), "MSFT": BrokerPosition(-50.0, None)}
    unpriced = gateway.recover()  # no price: the marks stay

    assert priced_syncs(first) == [("AAPL", 0.0, 300.0, 150.25), ("MSFT", 0.0, -50.0, "absent")]
    assert first_marks == {"AAPL": 150.25, "MSFT": None}
    assert priced_syncs(refreshed) == []
    assert refreshed_marks == {"AAPL": 151.0, "MSFT": 410.5}
    assert priced_syncs(unpriced) == [("AAPL", 300.0, 250.0, "absent")]
    assert marks(store) == {"AAPL": 151.0, "MSFT": 410.5}
    assert store.positions("default") == {"AAPL": 250.0, "MSFT": -50.0}
    assert broker.asked == ["default"] * 3
    report = verify_store(store)  # records with and without `price` replay alike
    assert report.ok and not report.findings, report.as_dict()


@pytest.mark.parametrize(
    "price",
    [0.0, -5.0, math.nan, math.inf, -math.inf, "150.25", True],
    ids=["zero", "negative", "nan", "inf", "minus-inf", "text", "bool"],
)
def test_sync_when_the_price_is_not_finite_and_positive_then_the_quantity_stands_and_no_mark(
    priced: tuple[Gateway, PricedHolding, SqlStore], price: Any
) -> None:
    gateway, broker, store = priced
    broker.priced = {"MSFT": BrokerPosition(-50.0, price)}

    records = gateway.recover()

    assert priced_syncs(records) == [("MSFT", 0.0, -50.0, "absent")]
    assert marks(store) == {"MSFT": None}


def test_sync_when_the_broker_gives_a_price_then_an_order_in_another_symbol_is_judged_on_it(
    priced: tuple[Gateway, PricedHolding, SqlStore], clock: FixedClock
) -> None:
    gateway, broker, store = priced
    broker.priced = {"MSFT": BrokerPosition(1_000.0, None)}  # bought outside the gate
    gateway.recover()
    before = gateway.submit(build_order("p-1", clock()), TRADER).record
    broker.priced = {"MSFT": BrokerPosition(1_000.0, 410.5)}
    gateway.recover()
    after = gateway.submit(build_order("p-2", clock()), TRADER).record

    assert before["order_status"] == "blocked"
    assert before["risk_check_results"]["gross_exposure_check"] == "error"
    assert after["order_status"] == "filled"
    assert after["risk_check_results"]["gross_exposure_check"] == "pass"
    assert [o.order_id for o in broker.orders] == [after["order_id"]]
    report = verify_store(store)
    assert report.ok and not report.findings, report.as_dict()


def test_sync_when_the_price_is_too_high_for_the_limit_then_the_order_in_another_symbol_blocked(
    priced: tuple[Gateway, PricedHolding, SqlStore], clock: FixedClock
) -> None:
    gateway, broker, _ = priced
    # 100,000 MSFT at 500 = 50,000,000 (the shipped limit) + the order's 15,025
    broker.priced = {"MSFT": BrokerPosition(100_000.0, 500.0)}
    gateway.recover()

    record = gateway.submit(build_order("p-1", clock()), TRADER).record

    assert record["order_status"] == "blocked"
    assert record["risk_check_results"]["gross_exposure_check"] == "fail"
    assert broker.orders == []
