"""Exact outcomes of the simulated broker: prices, triggers, guards, determinism."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.simulated import SimulatedBroker
from engine.broker import BrokerAck, BrokerError, BrokerOrder, Fill
from engine.models import Quote

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
QUOTE = Quote(bid=99.0, ask=101.0, last=100.0)


def fixed_clock() -> datetime:
    return NOW


def make_broker(*, slippage_bps: float = 0.0, seed: int = 0) -> SimulatedBroker:
    return SimulatedBroker(fixed_clock, seed=seed, slippage_bps=slippage_bps)


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
    assert ack.status == "filled"


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
        status="filled",
        filled_quantity=10.0,
        average_price=100.05,
        fills=(Fill(quantity=10.0, price=100.05, at=NOW),),
    )
    assert broker.positions("acct-1") == {"AAPL": 10.0}


def test_submit_market_sell_when_quote_present_then_fills_at_bid_minus_slippage() -> None:
    broker = make_broker(slippage_bps=10.0)

    ack = broker.submit(order(side="sell", quantity=4.0, quote=Quote(bid=200.0, ask=201.0)))

    assert ack.status == "filled"
    assert ack.fills == (Fill(quantity=4.0, price=199.8, at=NOW),)
    assert ack.average_price == 199.8
    assert broker.positions("acct-1") == {"AAPL": -4.0}


def test_submit_market_buy_when_quote_has_only_last_then_fills_at_last() -> None:
    broker = make_broker()

    ack = broker.submit(order(quote=Quote(last=42.5)))

    assert ack.status == "filled"
    assert ack.average_price == 42.5


def test_submit_market_when_no_quote_at_all_then_rejected_with_no_quote() -> None:
    broker = make_broker()

    ack = broker.submit(order())

    assert ack.status == "rejected"
    assert ack.detail == "no quote"
    assert ack.filled_quantity == 0.0
    assert broker.positions("acct-1") == {}


def test_submit_when_order_carries_quote_then_it_becomes_the_last_quote() -> None:
    broker = make_broker()

    broker.submit(order(quote=QUOTE))

    assert broker.quote("AAPL") == QUOTE
    assert broker.quote("MSFT") is None


def test_submit_when_time_in_force_unsupported_then_rejected_with_reason() -> None:
    broker = make_broker()

    ack = broker.submit(order(time_in_force="opg", quote=QUOTE))

    assert ack.status == "rejected"
    assert ack.detail == "time in force 'opg' not supported"


def test_submit_when_order_id_reused_then_rejected_as_duplicate() -> None:
    broker = make_broker()
    broker.submit(order("ord-1", quote=QUOTE))

    ack = broker.submit(order("ord-1", quote=QUOTE))

    assert ack.status == "rejected"
    assert ack.detail == "duplicate order id 'ord-1'"
    assert broker.positions("acct-1") == {"AAPL": 10.0}


# --- limit orders ------------------------------------------------------------------


def test_submit_buy_limit_when_marketable_then_fills_at_ask_not_at_limit() -> None:
    broker = make_broker(slippage_bps=50.0)

    ack = broker.submit(order(order_type="limit", limit_price=105.0, quote=QUOTE))

    assert ack.status == "filled"
    assert ack.average_price == 101.0


def test_submit_sell_limit_when_marketable_then_fills_at_bid() -> None:
    broker = make_broker()

    ack = broker.submit(order(side="sell", order_type="limit", limit_price=95.0, quote=QUOTE))

    assert ack.status == "filled"
    assert ack.average_price == 99.0


def test_submit_buy_limit_when_not_marketable_then_rests_accepted() -> None:
    broker = make_broker()

    ack = broker.submit(order(order_type="limit", limit_price=100.0, quote=QUOTE))

    assert ack.status == "accepted"
    assert ack.fills == ()
    assert broker.order_status("ord-1", ack.broker_order_id).status == "accepted"


def test_on_quote_when_ask_crosses_resting_buy_limit_then_fills_at_new_ask() -> None:
    broker = make_broker(slippage_bps=25.0)
    resting = broker.submit(order(order_type="limit", limit_price=100.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=98.5, ask=99.5, last=99.0))

    assert changed == [
        BrokerAck(
            order_id="ord-1",
            broker_order_id=resting.broker_order_id,
            status="filled",
            filled_quantity=10.0,
            average_price=99.5,
            fills=(Fill(quantity=10.0, price=99.5, at=NOW),),
        )
    ]
    assert broker.positions("acct-1") == {"AAPL": 10.0}


def test_on_quote_when_bid_crosses_resting_sell_limit_then_fills_at_new_bid() -> None:
    broker = make_broker()
    broker.submit(order(side="sell", order_type="limit", limit_price=102.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=102.5, ask=103.0))

    assert [(ack.status, ack.average_price) for ack in changed] == [("filled", 102.5)]


def test_on_quote_when_quote_does_not_cross_then_changes_nothing() -> None:
    broker = make_broker()
    resting = broker.submit(order(order_type="limit", limit_price=100.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=100.0, ask=100.5))
    other_symbol = broker.on_quote("MSFT", Quote(bid=1.0, ask=1.0))

    assert changed == []
    assert other_symbol == []
    assert broker.order_status("ord-1", resting.broker_order_id).status == "accepted"


def test_submit_limit_when_no_quote_then_rests_until_first_quote_crosses() -> None:
    broker = make_broker()
    broker.submit(order(order_type="limit", limit_price=100.0))

    changed = broker.on_quote("AAPL", Quote(ask=100.0))

    assert [(ack.status, ack.average_price) for ack in changed] == [("filled", 100.0)]


# --- stop orders ---------------------------------------------------------------------


def test_submit_buy_stop_when_not_triggered_then_rests_accepted() -> None:
    broker = make_broker()

    ack = broker.submit(order(order_type="stop", stop_price=105.0, quote=QUOTE))

    assert ack.status == "accepted"


def test_on_quote_when_ask_reaches_buy_stop_then_fills_at_ask_plus_slippage() -> None:
    broker = make_broker(slippage_bps=10.0)
    broker.submit(order(order_type="stop", stop_price=105.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=104.0, ask=105.0))

    assert [(ack.status, ack.fills) for ack in changed] == [
        ("filled", (Fill(quantity=10.0, price=105.105, at=NOW),))
    ]


def test_on_quote_when_last_reaches_buy_stop_then_triggers_and_fills_at_ask() -> None:
    broker = make_broker()
    broker.submit(order(order_type="stop", stop_price=105.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=103.0, ask=104.0, last=105.5))

    assert [(ack.status, ack.average_price) for ack in changed] == [("filled", 104.0)]


def test_on_quote_when_bid_falls_to_sell_stop_then_fills_at_bid_minus_slippage() -> None:
    broker = make_broker(slippage_bps=20.0)
    broker.submit(order(side="sell", order_type="stop", stop_price=95.0, quote=QUOTE))

    not_yet = broker.on_quote("AAPL", Quote(bid=95.5, ask=96.0, last=96.0))
    changed = broker.on_quote("AAPL", Quote(bid=95.0, ask=95.5))

    assert not_yet == []
    assert [(ack.status, ack.average_price) for ack in changed] == [("filled", 94.81)]
    assert broker.positions("acct-1") == {"AAPL": -10.0}


def test_on_quote_when_last_falls_to_sell_stop_then_triggers() -> None:
    broker = make_broker()
    broker.submit(order(side="sell", order_type="stop", stop_price=95.0, quote=QUOTE))

    changed = broker.on_quote("AAPL", Quote(bid=96.0, ask=97.0, last=94.0))

    assert [(ack.status, ack.average_price) for ack in changed] == [("filled", 96.0)]


def test_submit_stop_when_already_triggered_then_fills_at_once() -> None:
    broker = make_broker()

    ack = broker.submit(order(order_type="stop", stop_price=100.0, quote=QUOTE))

    assert ack.status == "filled"
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

    assert ack.status == "cancelled"
    assert ack.detail == f"not marketable at once ({time_in_force})"
    assert broker.on_quote("AAPL", Quote(bid=90.0, ask=90.0, last=110.0)) == []


@pytest.mark.parametrize("time_in_force", ["ioc", "fok"])
def test_submit_ioc_or_fok_when_marketable_then_fills(time_in_force: str) -> None:
    broker = make_broker()

    ack = broker.submit(
        order(order_type="limit", limit_price=101.0, time_in_force=time_in_force, quote=QUOTE)
    )

    assert ack.status == "filled"
    assert ack.average_price == 101.0


# --- reduce-only -----------------------------------------------------------------------


def test_submit_reduce_only_order_when_position_would_be_increased_then_rejected() -> None:
    broker = make_broker()
    hold(broker, 10.0)

    ack = broker.submit(order("ord-2", reduce_only=True, quantity=5.0, quote=QUOTE))

    assert ack.status == "rejected"
    assert ack.detail == (
        "reduce-only order would increase the position (position: 10.0, after: 15.0)"
    )
    assert broker.positions("acct-1") == {"AAPL": 10.0}


def test_submit_reduce_only_order_when_position_is_flat_then_rejected() -> None:
    broker = make_broker()

    ack = broker.submit(order(reduce_only=True, side="sell", quote=QUOTE))

    assert ack.status == "rejected"
    assert ack.detail.startswith("reduce-only order would increase the position")
    assert broker.positions("acct-1") == {}


def test_submit_reduce_only_order_when_position_would_flip_then_rejected() -> None:
    broker = make_broker()
    hold(broker, 10.0)

    ack = broker.submit(order("ord-2", reduce_only=True, side="sell", quantity=15.0, quote=QUOTE))

    assert ack.status == "rejected"
    assert ack.detail == ("reduce-only order would flip the position (position: 10.0, after: -5.0)")
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

    assert ack.status == "filled"
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
    assert resting.status == "accepted"

    changed = broker.on_quote("AAPL", Quote(bid=110.0, ask=111.0))

    assert [(ack.status, ack.detail) for ack in changed] == [
        (
            "cancelled",
            "reduce-only order would flip the position (position: 5.0, after: -3.0)",
        )
    ]
    assert broker.positions("acct-1") == {"AAPL": 5.0}


def test_positions_when_accounts_differ_then_reduce_only_sees_its_own_account() -> None:
    broker = make_broker()
    broker.submit(order("other", account="acct-2", quote=QUOTE))

    ack = broker.submit(order("ord-1", side="sell", reduce_only=True, quote=QUOTE))

    assert ack.status == "rejected"
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

    assert ack == BrokerAck(order_id="ord-1", broker_order_id="SIM-000001", status="replaced")
    assert broker.on_quote("AAPL", Quote(ask=59.0)) == [
        BrokerAck(
            order_id="ord-1",
            broker_order_id="SIM-000001",
            status="filled",
            filled_quantity=20.0,
            average_price=59.0,
            fills=(Fill(quantity=20.0, price=59.0, at=NOW),),
        )
    ]


def test_replace_resting_order_when_marketable_then_filled_at_the_ask() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit())

    ack = broker.replace(resting.broker_order_id, resting_limit(limit_price=102.0))

    assert ack.status == "filled"
    assert ack.broker_order_id == resting.broker_order_id
    assert ack.fills == (Fill(quantity=10.0, price=101.0, at=NOW),)
    assert broker.positions("acct-1") == {"AAPL": 10.0}


def test_replace_when_new_client_id_given_then_order_answers_to_it() -> None:
    broker = make_broker()
    resting = broker.submit(resting_limit("ord-1"))

    ack = broker.replace(resting.broker_order_id, resting_limit("ord-1-r1", limit_price=55.0))

    assert ack.order_id == "ord-1-r1"
    assert broker.order_status("ord-1-r1", "SIM-000001").status == "replaced"
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
        f"(want: > 0, got: {quantity})"
    )
    assert broker.order_status("ord-1", "SIM-000001").status == "accepted"


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
    assert broker.order_status("ord-2", resting.broker_order_id).status == "accepted"
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
        ("a", "SIM-000001", "filled"),
        ("b", "SIM-000002", "filled"),
        ("c", "SIM-000003", "accepted"),
        ("d", "SIM-000004", "cancelled"),
    ]


def run_session(broker: SimulatedBroker) -> list[object]:
    """One fixed sequence of calls touching every path; returns everything observed."""
    seen: list[object] = [
        broker.submit(order("m1", quote=QUOTE)),
        broker.submit(resting_limit("l1", limit_price=99.0)),
        broker.submit(order("s1", side="sell", order_type="stop", stop_price=98.0)),
        broker.submit(order("r1", side="sell", quantity=3.0, reduce_only=True)),
        broker.on_quote("AAPL", Quote(bid=97.5, ask=98.5, last=98.0)),
        broker.submit(resting_limit("l2", limit_price=90.0)),
        broker.replace("SIM-000005", resting_limit("l2", limit_price=91.0)),
        broker.cancel("l2", "SIM-000005"),
        broker.order_history(),
        broker.positions("acct-1"),
    ]
    return seen


def test_two_simulators_when_same_clock_seed_and_calls_then_identical_acks() -> None:
    first = run_session(make_broker(slippage_bps=3.0, seed=7))
    second = run_session(make_broker(slippage_bps=3.0, seed=7))

    assert first == second
    assert first[-1] == {"AAPL": 7.0}


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
    assert all(ack.status == "filled" for ack in history)
    assert sorted(ack.broker_order_id for ack in history) == [
        f"SIM-{n:06d}" for n in range(1, threads_count * per_thread + 1)
    ]
    assert net_filled != 0.0
    assert broker.positions("acct-1") == {"AAPL": net_filled}
