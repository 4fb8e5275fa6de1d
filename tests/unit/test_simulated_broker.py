"""Exact outcomes of the simulated broker: prices, triggers, guards, refusals,
lookup by client order id, execution ids, durable memory, faults, determinism."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.base import MemoryJournal
from adapters.simulated import (
    AnswerLost,
    DuplicateExecution,
    NotReached,
    Overfill,
    SimulatedBroker,
)
from engine.broker import BrokerAck, BrokerError, BrokerOrder, Fill
from engine.errors import StoreUnavailable
from engine.lifecycle import OrderStatus
from engine.models import Quote

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
QUOTE = Quote(bid=99.0, ask=101.0, last=100.0)


def fixed_clock() -> datetime:
    return NOW


def make_broker(
    *, slippage_bps: float = 0.0, seed: int = 0, journal: MemoryJournal | None = None
) -> SimulatedBroker:
    return SimulatedBroker(fixed_clock, seed=seed, slippage_bps=slippage_bps, journal=journal)


def fill(quantity: float, price: float, execution: int = 1) -> Fill:
    return Fill(quantity=quantity, price=price, at=NOW, execution_id=f"SIM-EXEC-{execution:06d}")


def order(order_id: str = "ord-1", **overrides: Any) -> BrokerOrder:
    fields: dict[str, Any] = {
        "order_id": order_id,
        "account": "acct-1",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 10.0,
        "order_type": "market",
    }
    fields.update(overrides)
    return BrokerOrder(**fields)


def hold(broker: SimulatedBroker, quantity: float) -> None:
    """Give acct-1 a signed AAPL position by trading at the current quote."""
    side = "buy" if quantity > 0 else "sell"
    ack = broker.submit(order("seed-position", side=side, quantity=abs(quantity), quote=QUOTE))
    assert ack.status == OrderStatus.FILLED


# --- construction and identity ------------------------------------------------


def test_capabilities_when_constructed_then_declares_every_type_and_feature() -> None:
    capabilities = make_broker().capabilities

    assert capabilities.order_types == frozenset({"market", "limit", "stop"})
    assert capabilities.time_in_force == frozenset({"day", "gtc", "ioc", "fok"})
    assert capabilities.reduce_only
    assert capabilities.cancel
    assert capabilities.replace
    assert capabilities.history
    assert capabilities.positions
    assert capabilities.market_data


def test_construct_when_slippage_is_negative_then_raises_value_error() -> None:
    with pytest.raises(ValueError, match="slippage_bps"):
        SimulatedBroker(fixed_clock, slippage_bps=-1.0)


def test_submit_when_orders_arrive_then_broker_ids_are_sequential() -> None:
    broker = make_broker()

    ids = [broker.submit(order(f"ord-{i}", quote=QUOTE)).broker_order_id for i in range(3)]

    assert ids == ["SIM-000001", "SIM-000002", "SIM-000003"]


def test_account_and_credentials_when_asked_then_answer_active_and_true() -> None:
    broker = make_broker()

    assert broker.account("acct-1") == {"account": "acct-1", "status": "ACTIVE"}
    assert broker.check_credentials() is True


# --- market orders and slippage ---------------------------------------------------


def test_submit_market_buy_when_quote_present_then_fills_at_ask_plus_slippage() -> None:
    broker = make_broker(slippage_bps=5.0)

    ack = broker.submit(order(quote=Quote(bid=99.0, ask=100.0, last=99.5)))

    assert ack == BrokerAck(
        order_id="ord-1",
        broker_order_id="SIM-000001",
        status=OrderStatus.FILLED,
        filled_quantity=10.0,
        average_price=100.05,
        fills=(fill(10.0, 100.05),),
    )
    assert broker.positions("acct-1") == {"AAPL": 10.0}


def test_submit_market_sell_when_quote_present_then_fills_at_bid_minus_slippage() -> None:
    broker = make_broker(slippage_bps=10.0)

    ack = broker.submit(order(side="sell", quantity=4.0, quote=Quote(bid=200.0, ask=201.0)))

    assert ack.status == OrderStatus.FILLED
    assert ack.fills == (fill(4.0, 199.8),)
    assert ack.average_price == 199.8
    assert broker.positions("acct-1") == {"AAPL": -4.0}


def test_submit_market_buy_when_quote_has_only_last_then_fills_at_last() -> None:
    broker = make_broker()

    ack = broker.submit(order(quote=Quote(last=42.5)))

    assert ack.status == OrderStatus.FILLED
    assert ack.average_price == 42.5


def test_submit_market_when_no_quote_at_all_then_blocked_with_no_quote() -> None:
    broker = make_broker()

    ack = broker.submit(order())

    assert ack == BrokerAck(
        order_id="ord-1",
        broker_order_id="SIM-000001",
        status=OrderStatus.BLOCKED,
        detail="no quote to fill a market order (want: a quote of AAPL, got: none)",
    )
    assert broker.positions("acct-1") == {}


def test_submit_when_order_carries_quote_then_it_becomes_the_last_quote() -> None:
    broker = make_broker()

    broker.submit(order(quote=QUOTE))

    assert broker.quote("AAPL") == QUOTE
    assert broker.quote("MSFT") is None


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        pytest.param(
            {"time_in_force": "opg"},
            "time in force not supported (want: one of ['day', 'fok', 'gtc', 'ioc'], got: 'opg')",
            id="time-in-force",
        ),
        pytest.param(
            {"quantity": -5.0},
            "quantity must be positive (want: > 0, got: -5.0)",
            id="quantity",
        ),
        pytest.param(
            {"order_type": "limit"},
            "limit price missing (want: a limit price for a limit order, got: none)",
            id="limit-price",
        ),
        pytest.param(
            {"order_type": "stop"},
            "stop price missing (want: a stop price for a stop order, got: none)",
            id="stop-price",
        ),
    ],
)
def test_submit_when_order_is_invalid_then_blocked_with_want_and_got(
    overrides: dict[str, Any], detail: str
) -> None:
    broker = make_broker()

    ack = broker.submit(order(quote=QUOTE, **overrides))

    assert (ack.status, ack.detail, ack.fills) == (OrderStatus.BLOCKED, detail, ())
    assert broker.quote("AAPL") is None
    assert broker.positions("acct-1") == {}


def test_submit_when_order_id_reused_then_blocked_as_duplicate() -> None:
    broker = make_broker()
    broker.submit(order("ord-1", quote=QUOTE))

    ack = broker.submit(order("ord-1", quote=QUOTE))

    assert (ack.broker_order_id, ack.status, ack.detail) == (
        "SIM-000002",
        OrderStatus.BLOCKED,
        "client order id already used (want: a new client order id, got: 'ord-1' of SIM-000001)",
    )
    assert broker.positions("acct-1") == {"AAPL": 10.0}


# --- limit orders ------------------------------------------------------------------


def test_submit_buy_limit_when_marketable_then_fills_at_ask_not_at_limit() -> None:
    broker = make_broker(slippage_bps=50.0)

    ack = broker.submit(order(order_type="limit", limit_price=105.0, quote=QUOTE))

    assert ack.status == OrderStatus.FILLED
    assert ack.average_price == 101.0


def test_submit_sell_limit_when_marketable_then_fills_at_bid() -> None:
    broker = make_broker()

    ack = broker.submit(order(side="sell", order_type="limit", limit_price=95.0, quote=QUOTE))

    assert ack.status == OrderStatus.FILLED
    assert ack.average_price == 99.0


def test_submit_buy_limit_when_not_marketable_then_rests_accepted() -> None:
    broker = make_broker()

    ack = broker.submit(order(order_type="limit", limit_price=100.0, quote=QUOTE))

    assert ack.status == OrderStatus.ACCEPTED
    assert ack.fills == ()
    assert broker.order_status("ord-1", ack.broker_order_id).status == OrderStatus.ACCEPTED


def test_on_quote_when_ask_crosses_resting_buy_limit_then_fills_at_new_ask() -> None:
    broker = make_broker(slippage_bps=25.0)
    resting = broker.submit(order(order_type="limit", limit_price=100.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=98.5, ask=99.5, last=99.0))

    assert changed == [
        BrokerAck(
            order_id="ord-1",
            broker_order_id=resting.broker_order_id,
            status=OrderStatus.FILLED,
            filled_quantity=10.0,
            average_price=99.5,
            fills=(fill(10.0, 99.5),),
        )
    ]
    assert broker.positions("acct-1") == {"AAPL": 10.0}


def test_on_quote_when_bid_crosses_resting_sell_limit_then_fills_at_new_bid() -> None:
    broker = make_broker()
    broker.submit(order(side="sell", order_type="limit", limit_price=102.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=102.5, ask=103.0))

    assert [(ack.status, ack.average_price) for ack in changed] == [(OrderStatus.FILLED, 102.5)]


def test_on_quote_when_quote_does_not_cross_then_changes_nothing() -> None:
    broker = make_broker()
    resting = broker.submit(order(order_type="limit", limit_price=100.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=100.0, ask=100.5))
    other_symbol = broker.on_quote("MSFT", Quote(bid=1.0, ask=1.0))

    assert changed == []
    assert other_symbol == []
    assert broker.order_status("ord-1", resting.broker_order_id).status == OrderStatus.ACCEPTED


def test_submit_limit_when_no_quote_then_rests_until_first_quote_crosses() -> None:
    broker = make_broker()
    broker.submit(order(order_type="limit", limit_price=100.0))

    changed = broker.on_quote("AAPL", Quote(ask=100.0))

    assert [(ack.status, ack.average_price) for ack in changed] == [(OrderStatus.FILLED, 100.0)]


# --- stop orders ---------------------------------------------------------------------


def test_submit_buy_stop_when_not_triggered_then_rests_accepted() -> None:
    broker = make_broker()

    ack = broker.submit(order(order_type="stop", stop_price=105.0, quote=QUOTE))

    assert ack.status == OrderStatus.ACCEPTED


def test_on_quote_when_ask_reaches_buy_stop_then_fills_at_ask_plus_slippage() -> None:
    broker = make_broker(slippage_bps=10.0)
    broker.submit(order(order_type="stop", stop_price=105.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=104.0, ask=105.0))

    assert [(ack.status, ack.fills) for ack in changed] == [
        (OrderStatus.FILLED, (fill(10.0, 105.105),))
    ]


def test_on_quote_when_last_reaches_buy_stop_then_triggers_and_fills_at_ask() -> None:
    broker = make_broker()
    broker.submit(order(order_type="stop", stop_price=105.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=103.0, ask=104.0, last=105.5))

    assert [(ack.status, ack.average_price) for ack in changed] == [(OrderStatus.FILLED, 104.0)]


def test_on_quote_when_bid_falls_to_sell_stop_then_fills_at_bid_minus_slippage() -> None:
    broker = make_broker(slippage_bps=20.0)
    broker.submit(order(side="sell", order_type="stop", stop_price=95.0, quote=QUOTE))

    not_yet = broker.on_quote("AAPL", Quote(bid=95.5, ask=96.0, last=96.0))
    changed = broker.on_quote("AAPL", Quote(bid=95.0, ask=95.5))

    assert not_yet == []
    assert [(ack.status, ack.average_price) for ack in changed] == [(OrderStatus.FILLED, 94.81)]
    assert broker.positions("acct-1") == {"AAPL": -10.0}


def test_on_quote_when_last_falls_to_sell_stop_then_triggers() -> None:
    broker = make_broker()
    broker.submit(order(side="sell", order_type="stop", stop_price=95.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=96.0, ask=97.0, last=94.0))

    assert [(ack.status, ack.average_price) for ack in changed] == [(OrderStatus.FILLED, 96.0)]


def test_submit_stop_when_already_triggered_then_fills_at_once() -> None:
    broker = make_broker()

    ack = broker.submit(order(order_type="stop", stop_price=100.0, quote=QUOTE))

    assert ack.status == OrderStatus.FILLED
    assert ack.average_price == 101.0


# --- immediate time in force -------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"order_type": "limit", "limit_price": 100.0}, id="limit"),
        pytest.param({"order_type": "stop", "stop_price": 105.0}, id="stop"),
    ],
)
@pytest.mark.parametrize("time_in_force", ["ioc", "fok"])
def test_submit_ioc_or_fok_when_not_marketable_then_cancelled(
    overrides: dict[str, Any], time_in_force: str
) -> None:
    broker = make_broker()

    ack = broker.submit(order(time_in_force=time_in_force, quote=QUOTE, **overrides))

    assert ack.status == OrderStatus.CANCELLED
    assert ack.detail == f"not marketable at once ({time_in_force})"
    assert broker.on_quote("AAPL", Quote(bid=90.0, ask=90.0, last=110.0)) == []


@pytest.mark.parametrize("time_in_force", ["ioc", "fok"])
def test_submit_ioc_or_fok_when_marketable_then_fills(time_in_force: str) -> None:
    broker = make_broker()

    ack = broker.submit(
        order(order_type="limit", limit_price=101.0, time_in_force=time_in_force, quote=QUOTE)
    )

    assert ack.status == OrderStatus.FILLED
    assert ack.average_price == 101.0


# --- reduce-only -----------------------------------------------------------------------


def test_submit_reduce_only_order_when_position_would_be_increased_then_blocked() -> None:
    broker = make_broker()
    hold(broker, 10.0)

    ack = broker.submit(order("ord-2", reduce_only=True, quantity=5.0, quote=QUOTE))

    assert ack.status == OrderStatus.BLOCKED
    assert ack.detail == (
        "reduce-only order would increase the position "
        "(want: position between 0.0 and 10.0, got: 15.0)"
    )
    assert broker.positions("acct-1") == {"AAPL": 10.0}


def test_submit_reduce_only_order_when_position_is_flat_then_blocked() -> None:
    broker = make_broker()

    ack = broker.submit(order(reduce_only=True, side="sell", quote=QUOTE))

    assert ack.status == OrderStatus.BLOCKED
    assert ack.detail == (
        "reduce-only order would increase the position (want: position 0.0, got: -10.0)"
    )
    assert broker.positions("acct-1") == {}


def test_submit_reduce_only_order_when_position_would_flip_then_blocked() -> None:
    broker = make_broker()
    hold(broker, 10.0)

    ack = broker.submit(order("ord-2", reduce_only=True, side="sell", quantity=15.0, quote=QUOTE))

    assert ack.status == OrderStatus.BLOCKED
    assert ack.detail == (
        "reduce-only order would flip the position (want: position between 0.0 and 10.0, got: -5.0)"
    )
    assert broker.positions("acct-1") == {"AAPL": 10.0}


@pytest.mark.parametrize(
    ("held", "side", "quantity", "after"),
    [
        pytest.param(10.0, "sell", 4.0, {"AAPL": 6.0}, id="long-partly-reduced"),
        pytest.param(10.0, "sell", 10.0, {}, id="long-closed"),
        pytest.param(-8.0, "buy", 8.0, {}, id="short-closed"),
        pytest.param(-8.0, "buy", 3.0, {"AAPL": -5.0}, id="short-partly-reduced"),
    ],
)
def test_submit_reduce_only_order_when_it_reduces_the_position_then_fills(
    held: float, side: str, quantity: float, after: dict[str, float]
) -> None:
    broker = make_broker()
    hold(broker, held)

    ack = broker.submit(order("ord-2", reduce_only=True, side=side, quantity=quantity, quote=QUOTE))

    assert ack.status == OrderStatus.FILLED
    assert broker.positions("acct-1") == after


def test_on_quote_when_resting_reduce_only_order_would_flip_then_cancelled() -> None:
    broker = make_broker()
    hold(broker, 5.0)
    resting = broker.submit(
        order(
            "ord-2",
            side="sell",
            quantity=8.0,
            order_type="limit",
            limit_price=110.0,
            reduce_only=True,
            quote=QUOTE,
        )
    )
    assert resting.status == OrderStatus.ACCEPTED

    changed = broker.on_quote("AAPL", Quote(bid=110.0, ask=111.0))

    assert [(ack.status, ack.detail) for ack in changed] == [
        (
            OrderStatus.CANCELLED,
            "reduce-only order would flip the position "
            "(want: position between 0.0 and 5.0, got: -3.0)",
        )
    ]
    assert broker.positions("acct-1") == {"AAPL": 5.0}


def test_positions_when_accounts_differ_then_reduce_only_sees_its_own_account() -> None:
    broker = make_broker()
    broker.submit(order("other", account="acct-2", quote=QUOTE))

    ack = broker.submit(order("ord-1", side="sell", reduce_only=True, quote=QUOTE))

    assert ack.status == OrderStatus.BLOCKED
    assert broker.positions("acct-1") == {}
    assert broker.positions("acct-2") == {"AAPL": 10.0}


# --- cancel ----------------------------------------------------------------------------


def test_cancel_when_order_is_filled_then_raises_order_not_open() -> None:
    broker = make_broker()
    filled = broker.submit(order(quote=QUOTE))

    with pytest.raises(BrokerError) as raised:
        broker.cancel("ord-1", filled.broker_order_id)

    assert raised.value.code == "order_not_open"
    assert str(raised.value) == "order SIM-000001 is not open (status: filled)"


@pytest.mark.parametrize(
    ("order_id", "broker_order_id"),
    [
        pytest.param("ord-1", "SIM-999999", id="unknown-broker-id"),
        pytest.param("someone-else", "SIM-000001", id="order-id-mismatch"),
    ],
)
def test_cancel_when_order_is_unknown_then_raises_order_not_open(
    order_id: str, broker_order_id: str
) -> None:
    broker = make_broker()
    broker.submit(order(order_type="limit", limit_price=50.0, quote=QUOTE))

    with pytest.raises(BrokerError) as raised:
        broker.cancel(order_id, broker_order_id)

    assert raised.value.code == "order_not_open"


def test_order_status_when_order_is_unknown_then_raises_order_not_found() -> None:
    with pytest.raises(BrokerError) as raised:
        make_broker().order_status("ord-1", "SIM-000001")

    assert raised.value.code == "order_not_found"


def test_on_quote_when_order_was_cancelled_then_it_never_fills() -> None:
    broker = make_broker()
    resting = broker.submit(order(order_type="limit", limit_price=100.0, quote=QUOTE))
    broker.cancel("ord-1", resting.broker_order_id)

    assert broker.on_quote("AAPL", Quote(bid=90.0, ask=90.0)) == []
    assert broker.positions("acct-1") == {}


# --- replace ---------------------------------------------------------------------------


def resting_limit(order_id: str = "ord-1", **overrides: Any) -> BrokerOrder:
    fields: dict[str, Any] = {"order_type": "limit", "limit_price": 50.0, "quote": QUOTE}
    fields.update(overrides)
    return order(order_id, **fields)


def test_replace_resting_order_when_not_marketable_then_replaced_with_same_broker_id() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit())

    ack = broker.replace(resting.broker_order_id, resting_limit(limit_price=60.0, quantity=20.0))

    assert ack == BrokerAck(
        order_id="ord-1", broker_order_id="SIM-000001", status=OrderStatus.REPLACED
    )
    assert broker.on_quote("AAPL", Quote(ask=59.0)) == [
        BrokerAck(
            order_id="ord-1",
            broker_order_id="SIM-000001",
            status=OrderStatus.FILLED,
            filled_quantity=20.0,
            average_price=59.0,
            fills=(fill(20.0, 59.0),),
        )
    ]


def test_replace_resting_order_when_marketable_then_filled_at_the_ask() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit())

    ack = broker.replace(resting.broker_order_id, resting_limit(limit_price=102.0))

    assert ack.status == OrderStatus.FILLED
    assert ack.broker_order_id == resting.broker_order_id
    assert ack.fills == (fill(10.0, 101.0),)
    assert broker.positions("acct-1") == {"AAPL": 10.0}


def test_replace_when_new_client_id_given_then_order_answers_to_it() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit("ord-1"))

    ack = broker.replace(resting.broker_order_id, resting_limit("ord-1-r1", limit_price=55.0))

    assert ack.order_id == "ord-1-r1"
    assert broker.order_status("ord-1-r1", "SIM-000001").status == OrderStatus.REPLACED
    assert [a.order_id for a in broker.order_history()] == ["ord-1-r1"]


@pytest.mark.parametrize("quantity", [0.0, -5.0])
def test_replace_when_quantity_not_above_filled_then_raises_replace_rejected(
    quantity: float,
) -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit())

    with pytest.raises(BrokerError) as raised:
        broker.replace(resting.broker_order_id, resting_limit(quantity=quantity))

    assert raised.value.code == "replace_rejected"
    assert str(raised.value) == (
        f"replace of SIM-000001 refused: quantity must exceed the filled quantity "
        f"(want: > 0.0, got: {quantity})"
    )
    assert broker.order_status("ord-1", "SIM-000001").status == OrderStatus.ACCEPTED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("symbol", "MSFT", id="symbol"),
        pytest.param("side", "sell", id="side"),
        pytest.param("account", "acct-2", id="account"),
    ],
)
def test_replace_when_identity_field_changes_then_raises_replace_rejected(
    field: str, value: str
) -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit())

    with pytest.raises(BrokerError) as raised:
        broker.replace(resting.broker_order_id, resting_limit(**{field: value}))

    assert raised.value.code == "replace_rejected"
    assert f"{field} cannot change" in str(raised.value)


def test_replace_when_order_is_filled_then_raises_order_not_open() -> None:
    broker = make_broker()
    filled = broker.submit(order(quote=QUOTE))

    with pytest.raises(BrokerError) as raised:
        broker.replace(filled.broker_order_id, resting_limit())

    assert raised.value.code == "order_not_open"


def test_replace_when_reduce_only_fill_would_flip_then_rejected_and_original_kept() -> None:
    broker = make_broker()
    hold(broker, 5.0)
    resting = broker.submit(
        resting_limit("ord-2", side="sell", quantity=5.0, limit_price=150.0, reduce_only=True)
    )

    with pytest.raises(BrokerError) as raised:
        broker.replace(
            resting.broker_order_id,
            resting_limit("ord-2", side="sell", quantity=8.0, limit_price=90.0, reduce_only=True),
        )

    assert raised.value.code == "replace_rejected"
    assert "would flip the position" in str(raised.value)
    assert broker.order_status("ord-2", resting.broker_order_id).status == OrderStatus.ACCEPTED
    assert broker.positions("acct-1") == {"AAPL": 5.0}


# --- history, determinism, threads ----------------------------------------------------


def test_order_history_when_orders_end_differently_then_lists_all_in_submission_order() -> None:
    broker = make_broker()
    broker.submit(order("a", quote=QUOTE))
    broker.submit(order("b"))
    broker.submit(resting_limit("c"))
    broker.submit(resting_limit("d", time_in_force="ioc"))

    history = broker.order_history()

    assert [(a.order_id, a.broker_order_id, a.status) for a in history] == [
        ("a", "SIM-000001", OrderStatus.FILLED),
        ("b", "SIM-000002", OrderStatus.FILLED),
        ("c", "SIM-000003", OrderStatus.ACCEPTED),
        ("d", "SIM-000004", OrderStatus.CANCELLED),
    ]


def test_submit_from_eight_threads_then_positions_equal_the_sum_of_fills() -> None:
    broker = make_broker(slippage_bps=1.0)
    threads_count, per_thread = 8, 50
    sides = {
        f"w{worker}-{i}": "buy" if (worker + i) % 3 else "sell"
        for worker in range(threads_count)
        for i in range(per_thread)
    }
    barrier = threading.Barrier(threads_count)

    def trade(worker: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            order_id = f"w{worker}-{i}"
            broker.submit(order(order_id, side=sides[order_id], quantity=1.0 + worker, quote=QUOTE))

    threads = [threading.Thread(target=trade, args=(w,)) for w in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    history = broker.order_history()
    net_filled = sum(
        fill.quantity if sides[ack.order_id] == "buy" else -fill.quantity
        for ack in history
        for fill in ack.fills
    )
    assert len(history) == threads_count * per_thread
    assert all(ack.status == OrderStatus.FILLED for ack in history)
    assert sorted(ack.broker_order_id for ack in history) == [
        f"SIM-{n:06d}" for n in range(1, threads_count * per_thread + 1)
    ]
    assert net_filled != 0.0
    assert broker.positions("acct-1") == {"AAPL": net_filled}


def test_replace_when_refused_then_its_quote_does_not_become_the_last() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit())

    with pytest.raises(BrokerError):
        broker.replace(resting.broker_order_id, resting_limit(side="sell", quote=Quote(bid=1.0)))

    assert broker.quote("AAPL") == QUOTE


# --- find by client order id -------------------------------------------------------------


def test_find_when_order_was_received_then_answers_its_current_ack() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit("ord-1"))
    broker.on_quote("AAPL", Quote(ask=49.0))

    found = broker.find("ord-1")

    assert found == BrokerAck(
        order_id="ord-1",
        broker_order_id=resting.broker_order_id,
        status=OrderStatus.FILLED,
        filled_quantity=10.0,
        average_price=49.0,
        fills=(fill(10.0, 49.0),),
    )


def test_find_when_order_was_never_received_then_none() -> None:
    broker = make_broker()
    broker.submit(resting_limit("ord-1"))

    assert broker.find("ord-2") is None


def test_find_when_order_was_refused_then_answers_blocked() -> None:
    broker = make_broker()
    broker.submit(order("ord-1"))

    found = broker.find("ord-1")

    assert found is not None
    assert (found.broker_order_id, found.status) == ("SIM-000001", OrderStatus.BLOCKED)


def test_find_when_client_id_was_reused_then_answers_the_first_order_also_after_restart() -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    broker.submit(resting_limit("ord-1"))
    broker.submit(resting_limit("ord-1"))

    found = broker.find("ord-1")

    assert found is not None
    assert (found.broker_order_id, found.status) == ("SIM-000001", OrderStatus.ACCEPTED)
    assert restart(journal).find("ord-1") == found


def test_find_when_order_was_replaced_under_a_new_client_id_then_both_ids_find_it() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit("ord-1"))
    broker.replace(resting.broker_order_id, resting_limit("ord-1-r1", limit_price=55.0))

    by_old, by_new = broker.find("ord-1"), broker.find("ord-1-r1")

    assert by_old == by_new
    assert by_new is not None
    assert (by_new.order_id, by_new.status) == ("ord-1-r1", OrderStatus.REPLACED)


# --- execution ids -------------------------------------------------------------------------


def test_fills_when_orders_fill_then_execution_ids_are_sequential_and_unique() -> None:
    broker = make_broker()
    broker.submit(order("m1", quote=QUOTE))
    broker.submit(resting_limit("l1", limit_price=98.0))
    broker.submit(resting_limit("l2", limit_price=97.0))
    broker.on_quote("AAPL", Quote(ask=97.0))

    ids = [f.execution_id for ack in broker.order_history() for f in ack.fills]

    assert ids == ["SIM-EXEC-000001", "SIM-EXEC-000002", "SIM-EXEC-000003"]


# --- durable memory (journal) ----------------------------------------------------------------


def restart(journal: MemoryJournal) -> SimulatedBroker:
    """A new simulator on the same journal: what a restart of the service builds."""
    return make_broker(journal=journal)


def test_journal_when_order_submitted_then_saved_before_the_answer_as_plain_json() -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)

    broker.submit(order("ord-1", quote=Quote(bid=99.0, ask=101.0, last=100.0, timestamp=NOW)))

    assert journal.load() == {
        "order:SIM-000001": {
            "broker_order_id": "SIM-000001",
            "order": {
                "order_id": "ord-1",
                "account": "acct-1",
                "symbol": "AAPL",
                "side": "buy",
                "quantity": 10.0,
                "order_type": "market",
                "limit_price": None,
                "stop_price": None,
                "time_in_force": "day",
                "reduce_only": False,
                "quote": None,
            },
            "quote": {
                "bid": 99.0,
                "ask": 101.0,
                "last": 100.0,
                "timestamp": "2026-11-30T15:00:00Z",
            },
            "quote_seq": 1,
            "status": "filled",
            "detail": "",
            "client_ids": ["ord-1"],
            "fills": [
                {
                    "execution_id": "SIM-EXEC-000001",
                    "quantity": 10.0,
                    "price": 101.0,
                    "at": "2026-11-30T15:00:00Z",
                }
            ],
        }
    }
    assert journal.saves == 1


def test_journal_when_each_call_changes_one_order_then_each_call_saves_once() -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)

    resting = broker.submit(resting_limit("ord-1"))
    broker.submit(order("ord-2"))
    broker.cancel("ord-1", resting.broker_order_id)
    broker.find("ord-1")

    assert journal.saves == 3
    assert sorted(journal.load()) == ["order:SIM-000001", "order:SIM-000002"]


def test_journal_when_a_save_is_older_than_one_already_made_then_it_is_skipped() -> None:
    # Saves run outside the simulator's lock: a slow thread may come to save an
    # entry after another thread saved a later change of it.
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    resting = broker.submit(resting_limit("ord-1"))
    stale = journal.load()["order:SIM-000001"]
    cancelled = broker.cancel("ord-1", resting.broker_order_id)

    broker._persist([("order:SIM-000001", 1, stale)])

    assert journal.saves == 2
    assert restart(journal).find("ord-1") == cancelled


def test_journal_when_restarted_then_resting_order_answers_find_status_and_cancel() -> None:
    journal = MemoryJournal()
    resting = make_broker(journal=journal).submit(resting_limit("ord-1"))

    broker = restart(journal)

    assert broker.find("ord-1") == resting
    assert broker.order_status("ord-1", resting.broker_order_id) == resting
    cancelled = broker.cancel("ord-1", resting.broker_order_id)
    assert cancelled.status == OrderStatus.CANCELLED
    assert restart(journal).find("ord-1") == cancelled


def test_journal_when_restarted_then_resting_order_fills_on_a_new_quote() -> None:
    journal = MemoryJournal()
    make_broker(journal=journal).submit(resting_limit("ord-1", limit_price=99.0))

    broker = restart(journal)
    changed = broker.on_quote("AAPL", Quote(ask=98.0))

    assert changed == [
        BrokerAck(
            order_id="ord-1",
            broker_order_id="SIM-000001",
            status=OrderStatus.FILLED,
            filled_quantity=10.0,
            average_price=98.0,
            fills=(fill(10.0, 98.0),),
        )
    ]
    assert restart(journal).positions("acct-1") == {"AAPL": 10.0}


def test_journal_when_restarted_then_replace_works_on_the_order_from_before() -> None:
    journal = MemoryJournal()
    make_broker(journal=journal).submit(resting_limit("ord-1"))

    replaced = restart(journal).replace("SIM-000001", resting_limit("ord-1-r1", limit_price=55.0))

    assert replaced.status == OrderStatus.REPLACED
    after = restart(journal)
    assert after.find("ord-1") == replaced
    assert after.find("ord-1-r1") == replaced


def test_journal_when_restarted_then_fills_positions_and_counters_carry_on() -> None:
    journal = MemoryJournal()
    before = make_broker(journal=journal)
    first = before.submit(order("m1", quote=QUOTE))
    before.submit(order("m2", side="sell", quantity=4.0))

    broker = restart(journal)
    third = broker.submit(order("m3", quantity=1.0))

    assert broker.find("m1") == first
    assert broker.positions("acct-1") == {"AAPL": 7.0}
    assert (third.broker_order_id, third.fills) == ("SIM-000003", (fill(1.0, 101.0, 3),))


def test_journal_when_positions_net_to_float_noise_then_restart_books_them_flat_too() -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    broker.submit(order("b1", quantity=0.1, quote=QUOTE))
    broker.submit(order("b2", quantity=0.2))
    broker.submit(order("s1", side="sell", quantity=0.3))
    assert broker.positions("acct-1") == {}

    assert restart(journal).positions("acct-1") == {}


def test_journal_when_restarted_then_positions_add_fills_in_execution_order() -> None:
    # Float addition depends on order: 0.2 + 0.7 + 0.1 is 0.9999999999999999, and
    # 0.1 + 0.2 + 0.7 is 1.0. Replayed in execution order, the books match exactly.
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    broker.submit(resting_limit("l1", quantity=0.1, limit_price=100.0))
    broker.submit(order("m1", quantity=0.2))
    broker.submit(order("m2", quantity=0.7))
    broker.on_quote("AAPL", Quote(ask=100.0))
    assert broker.positions("acct-1") == {"AAPL": 0.9999999999999999}

    assert restart(journal).positions("acct-1") == {"AAPL": 0.9999999999999999}


def test_journal_when_restarted_then_market_order_fills_at_the_quote_from_before() -> None:
    journal = MemoryJournal()
    make_broker(journal=journal).submit(resting_limit("ord-1", quote=Quote(ask=120.0)))

    ack = restart(journal).submit(order("ord-2"))

    assert (ack.status, ack.average_price) == (OrderStatus.FILLED, 120.0)


@pytest.mark.parametrize(
    ("last_from", "want"),
    [
        pytest.param("on_quote", Quote(ask=102.0), id="on-quote-after-submit"),
        pytest.param("submit", Quote(ask=103.0), id="submit-after-on-quote"),
    ],
)
def test_journal_when_restarted_then_the_latest_quote_of_a_symbol_wins(
    last_from: str, want: Quote
) -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    if last_from == "on_quote":
        broker.submit(resting_limit("ord-1", quote=Quote(ask=103.0)))
        broker.on_quote("AAPL", Quote(ask=102.0))
    else:
        broker.on_quote("AAPL", Quote(ask=102.0))
        broker.submit(resting_limit("ord-1", quote=Quote(ask=103.0)))

    assert restart(journal).quote("AAPL") == want


def test_journal_when_replace_brings_no_quote_then_the_last_quote_survives_restart() -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    broker.submit(resting_limit("ord-1", quote=Quote(ask=103.0)))

    broker.replace("SIM-000001", resting_limit("ord-1", limit_price=60.0, quote=None))

    assert restart(journal).quote("AAPL") == Quote(ask=103.0)


def run_session(broker: SimulatedBroker) -> list[object]:
    """One fixed sequence of calls touching every path; returns everything observed."""
    return [*run_first_half(broker), *run_second_half(broker)]


def run_first_half(broker: SimulatedBroker) -> list[object]:
    return [
        broker.submit(order("m1", quote=QUOTE)),
        broker.submit(resting_limit("l1", limit_price=99.0)),
        broker.submit(order("s1", side="sell", order_type="stop", stop_price=98.0)),
        broker.submit(order("r1", side="sell", quantity=3.0, reduce_only=True)),
        broker.on_quote("AAPL", Quote(bid=97.5, ask=98.5, last=98.0)),
        broker.submit(resting_limit("l2", limit_price=90.0)),
    ]


def run_second_half(broker: SimulatedBroker) -> list[object]:
    return [
        broker.replace("SIM-000005", resting_limit("l2", limit_price=91.0)),
        broker.submit(order("m2", quantity=2.0)),
        broker.cancel("l2", "SIM-000005"),
        broker.order_history(),
        broker.positions("acct-1"),
    ]


def test_two_simulators_when_same_clock_seed_and_calls_then_identical_acks() -> None:
    first = run_session(make_broker(slippage_bps=3.0, seed=7))
    second = run_session(make_broker(slippage_bps=3.0, seed=7))

    assert first == second
    assert first[-1] == {"AAPL": 9.0}


def test_journal_when_restarted_mid_session_then_every_answer_is_as_without_restart() -> None:
    journal = MemoryJournal()
    uninterrupted = run_session(make_broker(slippage_bps=3.0))

    first = run_first_half(SimulatedBroker(fixed_clock, slippage_bps=3.0, journal=journal))
    second = run_second_half(SimulatedBroker(fixed_clock, slippage_bps=3.0, journal=journal))

    assert [*first, *second] == uninterrupted


class FlakyJournal(MemoryJournal):
    """Saves fail while `down` is set, as the store's do while its database is away."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def save(self, key: str, value: dict[str, object]) -> None:
        if self.down:
            raise StoreUnavailable("database unavailable")
        super().save(key, value)


def test_journal_when_a_save_fails_then_call_raises_and_next_call_saves_it() -> None:
    journal = FlakyJournal()
    broker = make_broker(journal=journal)
    journal.down = True

    with pytest.raises(BrokerError) as raised:
        broker.submit(order("ord-1", quote=QUOTE))

    assert raised.value.code == "journal_unavailable"
    assert str(raised.value) == (
        "simulated: could not save its memory (StoreUnavailable: database unavailable)"
    )
    found = broker.find("ord-1")
    assert found is not None
    assert found.status == OrderStatus.FILLED
    assert restart(journal).find("ord-1") is None
    journal.down = False
    broker.submit(resting_limit("ord-2"))
    after = restart(journal)
    assert after.find("ord-1") == found
    assert after.positions("acct-1") == {"AAPL": 10.0}


class BrokenJournal:
    def __init__(self, entries: dict[str, dict[str, object]] | None = None) -> None:
        self.entries = entries

    def load(self) -> dict[str, dict[str, object]]:
        if self.entries is None:
            raise StoreUnavailable("database unavailable")
        return self.entries

    def save(self, key: str, value: dict[str, object]) -> None:
        raise AssertionError("not reached")


def test_journal_when_it_cannot_be_loaded_then_construction_raises_journal_unavailable() -> None:
    with pytest.raises(BrokerError) as raised:
        SimulatedBroker(fixed_clock, journal=BrokenJournal())

    assert raised.value.code == "journal_unavailable"


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        pytest.param("order:SIM-000001", {}, "broker_order_id (want: text, got: None)", id="empty"),
        pytest.param(
            "positions", {}, "key (want: order:... or quote:..., got: 'positions')", id="key"
        ),
        pytest.param(
            "quote:AAPL",
            {"symbol": "AAPL", "quote": {"ask": "101"}, "quote_seq": 1},
            "ask (want: a finite number, got: '101')",
            id="quote",
        ),
    ],
)
def test_journal_when_an_entry_is_unreadable_then_construction_raises_journal_unreadable(
    key: str, value: dict[str, object], why: str
) -> None:
    with pytest.raises(BrokerError) as raised:
        SimulatedBroker(fixed_clock, journal=BrokenJournal({key: value}))

    assert raised.value.code == "journal_unreadable"
    assert str(raised.value) == f"simulated: journal entry {key!r} is unreadable ({why})"


def test_journal_when_eight_threads_submit_then_restart_rebuilds_the_same_books() -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    barrier = threading.Barrier(8)

    def trade(worker: int) -> None:
        barrier.wait()
        for i in range(25):
            side = "buy" if (worker + i) % 3 else "sell"
            broker.submit(order(f"w{worker}-{i}", side=side, quantity=1.0 + worker, quote=QUOTE))
            if i % 5 == 0:
                broker.on_quote("AAPL", Quote(bid=99.0 + i, ask=101.0 + i))

    threads = [threading.Thread(target=trade, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    after = restart(journal)
    assert after.order_history() == broker.order_history()
    assert after.positions("acct-1") == broker.positions("acct-1")
    assert after.quote("AAPL") == broker.quote("AAPL")


# --- faults -----------------------------------------------------------------------------------


def test_inject_overfill_when_next_order_fills_then_fills_exceed_its_quantity_once() -> None:
    broker = make_broker()
    broker.inject(Overfill(extra=6.0))

    overfilled = broker.submit(order("ord-1", quote=QUOTE))
    normal = broker.submit(order("ord-2"))

    assert (overfilled.status, overfilled.filled_quantity, overfilled.fills) == (
        OrderStatus.FILLED,
        16.0,
        (fill(16.0, 101.0),),
    )
    assert normal.filled_quantity == 10.0
    assert broker.positions("acct-1") == {"AAPL": 26.0}


def test_inject_overfill_when_resting_order_fills_on_a_quote_then_overfilled() -> None:
    broker = make_broker()
    broker.submit(resting_limit("ord-1"))
    broker.inject(Overfill(extra=1.0))

    changed = broker.on_quote("AAPL", Quote(ask=50.0))

    assert [(ack.filled_quantity, ack.status) for ack in changed] == [(11.0, OrderStatus.FILLED)]


@pytest.mark.parametrize("extra", [0.0, -1.0, float("nan")])
def test_inject_overfill_when_extra_not_positive_then_raises_value_error(extra: float) -> None:
    with pytest.raises(ValueError, match="overfill extra must be positive"):
        make_broker().inject(Overfill(extra=extra))


def test_inject_duplicate_execution_then_next_ack_lists_its_fill_twice_and_books_once() -> None:
    broker = make_broker()
    broker.inject(DuplicateExecution())

    ack = broker.submit(order("ord-1", quote=QUOTE))

    assert ack.fills == (fill(10.0, 101.0), fill(10.0, 101.0))
    assert ack.filled_quantity == 10.0
    assert broker.positions("acct-1") == {"AAPL": 10.0}
    assert broker.order_status("ord-1", "SIM-000001").fills == (fill(10.0, 101.0),)


def test_inject_duplicate_execution_when_ack_has_no_fills_then_waits_for_one_that_has() -> None:
    broker = make_broker()
    broker.inject(DuplicateExecution())

    resting = broker.submit(resting_limit("ord-1"))
    changed = broker.on_quote("AAPL", Quote(ask=50.0))

    assert resting.fills == ()
    assert [ack.fills for ack in changed] == [(fill(10.0, 50.0), fill(10.0, 50.0))]


def test_inject_answer_lost_when_submitting_then_raises_but_the_order_is_taken() -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    broker.inject(AnswerLost())

    with pytest.raises(BrokerError) as raised:
        broker.submit(order("ord-1", quote=QUOTE))

    assert raised.value.code == "timeout"
    assert str(raised.value) == (
        "simulated: no answer to submit of 'ord-1' (injected; the call took effect)"
    )
    found = restart(journal).find("ord-1")
    assert found is not None
    assert (found.status, found.fills) == (OrderStatus.FILLED, (fill(10.0, 101.0),))
    assert broker.find("ord-1") == found


def test_inject_answer_lost_when_cancelling_then_raises_but_the_order_is_cancelled() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit("ord-1"))
    broker.inject(AnswerLost(code="broker_api_error"))

    with pytest.raises(BrokerError) as raised:
        broker.cancel("ord-1", resting.broker_order_id)

    assert raised.value.code == "broker_api_error"
    assert broker.order_status("ord-1", resting.broker_order_id).status == OrderStatus.CANCELLED


def test_inject_not_reached_when_submitting_then_raises_and_nothing_changes() -> None:
    broker = make_broker()
    broker.inject(NotReached())

    with pytest.raises(BrokerError) as raised:
        broker.submit(order("ord-1", quote=QUOTE))

    assert raised.value.code == "broker_unreachable"
    assert broker.find("ord-1") is None
    assert broker.order_history() == []
    assert broker.quote("AAPL") is None
    assert broker.submit(order("ord-1", quote=QUOTE)).broker_order_id == "SIM-000001"


def test_inject_not_reached_when_replacing_then_raises_and_the_order_is_unchanged() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit("ord-1"))
    broker.inject(NotReached())

    with pytest.raises(BrokerError):
        broker.replace(resting.broker_order_id, resting_limit("ord-1", limit_price=99.0))

    assert broker.find("ord-1") == resting


def test_late_fill_when_order_was_cancelled_then_fill_is_booked_and_it_stays_cancelled() -> None:
    journal = MemoryJournal()
    broker = make_broker(journal=journal)
    resting = broker.submit(resting_limit("ord-1"))
    broker.cancel("ord-1", resting.broker_order_id)

    ack = broker.late_fill("ord-1", 4.0, 50.0)

    assert ack == BrokerAck(
        order_id="ord-1",
        broker_order_id="SIM-000001",
        status=OrderStatus.CANCELLED,
        filled_quantity=4.0,
        average_price=50.0,
        fills=(fill(4.0, 50.0),),
    )
    assert broker.positions("acct-1") == {"AAPL": 4.0}
    assert restart(journal).find("ord-1") == ack


@pytest.mark.parametrize(
    ("order_id", "why"),
    [
        pytest.param("ord-1", "(want: cancelled, got: accepted)", id="working"),
        pytest.param("ord-9", "(want: cancelled, got: unknown order)", id="unknown"),
    ],
)
def test_late_fill_when_order_is_not_cancelled_then_raises_value_error(
    order_id: str, why: str
) -> None:
    broker = make_broker()
    broker.submit(resting_limit("ord-1"))

    with pytest.raises(ValueError) as raised:
        broker.late_fill(order_id, 1.0, 50.0)

    assert str(raised.value) == f"late fill of {order_id!r} {why}"
