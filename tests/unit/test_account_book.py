"""The account's book in the decision snapshot, on SQLite and on PostgreSQL: the
working orders (committed and buffered in the same transaction, the one being
replaced left out, a market order valued at the touch it was judged at), every
position with its mark, and the notional executed on the trading day."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.sql import SqlStore
from adapters.sql._writer import SqlWriter
from engine.lifecycle import OrderStatus
from engine.models import OrderRequest, WorkingOrder
from engine.records import OrderRecord

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
DAY = "2026-11-30"


def record(order_id: str, **changes: Any) -> dict[str, Any]:
    base = OrderRecord(
        order_id=order_id,
        symbol="AAPL",
        timestamp="2026-11-30T15:00:00Z",
        side="sell",
        quantity=100,
        order_type="limit",
        limit_price=150.5,
        decision_reason="manual_trigger",
        risk_checks_run=("omega_check",),
        risk_check_results={"omega_check": "pass"},
        fail_closed_triggers=(),
        order_status=OrderStatus.SUBMITTED,
        broker_response=None,
        client_order_id=None,
        mode="simulation",
        broker="simulated",
        policy_digest="sha256:" + "p" * 64,
        compliance_digest="sha256:" + "c" * 64,
        actor="tok-1",
        operation="submit",
        account="default",
    )
    return base.evolve(**changes).as_dict()


def add(w: SqlWriter, request: Any = None, **changes: Any) -> str:
    order_id = w.next_order_id(NOW.year)
    linked = w.append(record(order_id, **changes), "order", NOW)
    w.insert_order(
        linked, request or {"client_order_id": changes.get("client_order_id")}, NOW, "day"
    )
    return order_id


def asking(**changes: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "client_order_id": "new-1",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 10.0,
        "order_type": "limit",
        "limit_price": 150.25,
        **changes,
    }
    return OrderRequest.model_validate(fields)


def test_book_when_orders_work_then_what_is_left_of_each_with_its_price(
    sql_store: SqlStore,
) -> None:
    with sql_store.writing() as w:
        first = add(w, client_order_id="w-1")
        add(w, client_order_id="done", order_status=OrderStatus.FILLED)
        add(w, client_order_id="blocked", order_status=OrderStatus.BLOCKED)
        add(w, client_order_id="other", account="paper-1")
        add(w, client_order_id="evaluated", operation="evaluate", order_status="evaluated")
    with sql_store.writing() as w:
        w.update_order(first, record(first, order_status=OrderStatus.PARTIALLY_FILLED), NOW,
                       filled_quantity=40.0)  # fmt: skip
        snap = w.snapshot(asking(), NOW, 1.0, 5.0, day=DAY)

    assert snap.working == (
        WorkingOrder(order_id=first, symbol="AAPL", side="sell", order_type="limit",
                     quantity=60.0, limit_price=150.5, price=150.5),
    )  # fmt: skip


def test_book_when_an_order_is_buffered_in_the_same_transaction_then_it_is_working(
    sql_store: SqlStore,
) -> None:
    with sql_store.writing() as w:
        buffered = add(w, client_order_id="w-1")  # not written yet: the batch's own order
        snap = w.snapshot(asking(), NOW, 1.0, 5.0, day=DAY)

    assert [o.order_id for o in snap.working] == [buffered]


def test_book_when_replacing_then_the_order_being_replaced_is_not_working(
    sql_store: SqlStore,
) -> None:
    with sql_store.writing() as w:
        add(w, client_order_id="w-1")
    with sql_store.writing() as w:
        snap = w.snapshot(asking(client_order_id="w-1"), NOW, 1.0, 5.0, exclude="w-1", day=DAY)

    assert snap.working == ()


def test_book_when_a_market_order_works_then_valued_at_the_touch_it_was_sent_with(
    sql_store: SqlStore,
) -> None:
    quote = {"bid": 150.2, "ask": 150.3, "last": 150.25}
    with sql_store.writing() as w:
        add(w, {"side": "sell", "context": {"quote": quote}}, client_order_id="m-1",
            order_type="market", limit_price=None)  # fmt: skip
        add(w, {"side": "buy", "context": {}}, client_order_id="m-2", side="buy",
            order_type="market", limit_price=None)  # fmt: skip
    with sql_store.writing() as w:
        snap = w.snapshot(asking(), NOW, 1.0, 5.0, day=DAY)

    assert [(o.side, o.price) for o in snap.working] == [("sell", 150.2), ("buy", None)]


def test_book_when_fills_moved_positions_then_each_has_its_last_price_and_a_sync_keeps_it(
    sql_store: SqlStore,
) -> None:
    with sql_store.writing() as w:
        w.move_position("default", "AAPL", 100.0, 150.0)
        w.move_position("default", "AAPL", -40.0, 151.5)
        w.move_position("default", "MSFT", -10.0, 400.0)
        w.set_position("default", "MSFT", -20.0)  # a broker's sync: no price
        w.set_position("default", "IBM", 5.0)
        w.move_position("paper-1", "TSLA", 1.0, 200.0)
    with sql_store.writing() as w:
        snap = w.snapshot(asking(), NOW, 1.0, 5.0, day=DAY)

    assert snap.position == 60.0
    assert snap.positions == {"AAPL": 60.0, "MSFT": -20.0, "IBM": 5.0}
    assert snap.marks == {"AAPL": 151.5, "MSFT": 400.0}


def test_book_when_a_broker_sync_gives_prices_then_they_are_the_marks_and_none_keeps_one(
    sql_store: SqlStore,
) -> None:
    with sql_store.writing() as w:
        w.move_position("default", "MSFT", -10.0, 400.0)
        w.set_position("default", "MSFT", -20.0, 410.25)  # a broker's price: the mark
        w.set_position("default", "IBM", 5.0, 120.5)  # a new holding with its price
        w.set_position("default", "TSLA", 3.0)  # no price: no mark
        w.move_position("default", "AAPL", 10.0, 150.0)
        w.set_position("default", "AAPL", 12.0)  # no price: the fill's mark stays
    with sql_store.writing() as w:
        synced = w.snapshot(asking(), NOW, 1.0, 5.0, day=DAY)
    with sql_store.writing() as w:
        w.set_mark("default", "TSLA", 201.0)  # the quantity agrees: the price alone
        w.set_mark("default", "AAPL", 152.5)
        w.set_mark("default", "NVDA", 90.0)  # not held: nothing
    with sql_store.writing() as w:
        marked = w.snapshot(asking(), NOW, 1.0, 5.0, day=DAY)

    assert synced.positions == {"MSFT": -20.0, "IBM": 5.0, "TSLA": 3.0, "AAPL": 12.0}
    assert synced.marks == {"MSFT": 410.25, "IBM": 120.5, "AAPL": 150.0}
    assert marked.positions == synced.positions
    assert marked.marks == {"MSFT": 410.25, "IBM": 120.5, "TSLA": 201.0, "AAPL": 152.5}


def test_book_when_executions_were_added_then_the_day_asked_for_is_summed(
    sql_store: SqlStore,
) -> None:
    with sql_store.writing() as w:
        w.add_executed("default", DAY, 15_000.0)
        w.add_executed("default", DAY, 2_500.5)
        w.add_executed("default", "2026-11-27", 99_999.0)
        w.add_executed("paper-1", DAY, 77.0)
    with sql_store.writing() as w:
        today = w.snapshot(asking(), NOW, 1.0, 5.0, day=DAY)
        other = w.snapshot(asking(), NOW, 1.0, 5.0, day="2026-12-01")

    assert (today.executed_today, other.executed_today) == (17_500.5, 0.0)


@pytest.mark.parametrize("status", ["accepted", "pending_cancel", "pending_replace", "replaced"])
def test_book_when_an_order_is_open_in_any_state_then_it_is_working(
    sql_store: SqlStore, status: str
) -> None:
    with sql_store.writing() as w:
        add(w, client_order_id="w-1", order_status=status)
    with sql_store.writing() as w:
        snap = w.snapshot(asking(), NOW, 1.0, 5.0, day=DAY)

    assert len(snap.working) == 1
