"""The broker port's contract: every adapter must pass every test here.

To add an adapter, add one `pytest.param(factory, id=...)` to `ADAPTERS`, and to
`DURABLE` too when its broker keeps its orders while the adapter restarts (every
real broker does; the simulator does with a journal). A factory is a context
manager that starts and stops whatever local fake server the adapter needs and
yields `connect`: each call gives a new adapter on the same broker, so a second
call is a restart of the adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

import pytest

from adapters.base import MemoryJournal
from adapters.simulated import SimulatedBroker
from engine.broker import BrokerAdapter, BrokerError, BrokerOrder
from engine.lifecycle import OrderStatus
from engine.models import Quote
from tests.contract.alpaca_factory import alpaca
from tests.contract.ib_factory import ib
from tests.contract.oms_fix_factory import oms_fix, oms_fix_mass_status
from tests.contract.oms_rest_factory import oms_rest

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
QUOTE = Quote(bid=99.0, ask=101.0, last=100.0, timestamp=NOW)
WORKING = {OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.REPLACED}

Connect = Callable[[], BrokerAdapter]
AdapterFactory = Callable[[], AbstractContextManager[Connect]]


def fixed_clock() -> datetime:
    return NOW


@contextmanager
def simulated() -> Iterator[Connect]:
    # memory only: a second call is a new, empty simulator (so it is not in DURABLE)
    yield lambda: SimulatedBroker(fixed_clock)


@contextmanager
def simulated_with_journal() -> Iterator[Connect]:
    journal = MemoryJournal()
    yield lambda: SimulatedBroker(fixed_clock, journal=journal)


ADAPTERS = [
    pytest.param(simulated, id="simulated"),
    pytest.param(simulated_with_journal, id="simulated-journal"),
    pytest.param(ib, id="ib"),
    pytest.param(alpaca, id="alpaca"),
    pytest.param(oms_rest, id="oms_rest"),
    pytest.param(oms_fix, id="oms_fix"),
    pytest.param(oms_fix_mass_status, id="oms_fix-mass_status-positions"),
]
DURABLE = [
    pytest.param(simulated_with_journal, id="simulated-journal"),
    pytest.param(ib, id="ib"),
    pytest.param(alpaca, id="alpaca"),
    pytest.param(oms_rest, id="oms_rest"),
    pytest.param(oms_fix, id="oms_fix"),
    pytest.param(oms_fix_mass_status, id="oms_fix-mass_status-positions"),
]


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> Iterator[BrokerAdapter]:
    factory: AdapterFactory = request.param
    with factory() as connect:
        yield connect()


@pytest.fixture(params=DURABLE)
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    factory: AdapterFactory = request.param
    with factory() as connect:
        yield connect


def market_buy(order_id: str, quantity: float = 10.0) -> BrokerOrder:
    return BrokerOrder(
        order_id=order_id,
        account="acct-1",
        symbol="AAPL",
        side="buy",
        quantity=quantity,
        order_type="market",
        quote=QUOTE,
    )


def resting_buy_limit(order_id: str, limit_price: float = 50.0) -> BrokerOrder:
    return BrokerOrder(
        order_id=order_id,
        account="acct-1",
        symbol="AAPL",
        side="buy",
        quantity=10.0,
        order_type="limit",
        limit_price=limit_price,
        time_in_force="gtc",
        quote=QUOTE,
    )


# --- shape --------------------------------------------------------------------------------


def test_adapter_implements_the_broker_port(adapter: BrokerAdapter) -> None:
    assert isinstance(adapter, BrokerAdapter)
    assert adapter.name


def test_adapter_declares_its_capabilities(adapter: BrokerAdapter) -> None:
    capabilities = adapter.capabilities
    assert "market" in capabilities.order_types
    assert capabilities.time_in_force
    for flag in (
        capabilities.reduce_only,
        capabilities.cancel,
        capabilities.replace,
        capabilities.history,
        capabilities.positions,
        capabilities.market_data,
    ):
        assert isinstance(flag, bool)


def test_check_credentials_when_adapter_is_configured_then_true(adapter: BrokerAdapter) -> None:
    assert adapter.check_credentials() is True


# --- submit, cancel, replace --------------------------------------------------------------


def test_submit_market_buy_when_quote_present_then_fills_and_updates_positions(
    adapter: BrokerAdapter,
) -> None:
    ack = adapter.submit(market_buy("ord-1", quantity=10.0))

    assert ack.order_id == "ord-1"
    assert ack.broker_order_id
    assert ack.status is OrderStatus.FILLED
    assert ack.filled_quantity == 10.0
    assert ack.average_price is not None
    assert sum(fill.quantity for fill in ack.fills) == 10.0
    assert adapter.positions("acct-1") == {"AAPL": 10.0}


def test_held_positions_when_offered_then_the_positions_each_with_the_broker_price_or_none(
    adapter: BrokerAdapter,
) -> None:
    # optional (engine/broker.py): the same positions as `positions`, from one answer
    held_positions = getattr(adapter, "held_positions", None)
    if held_positions is None:
        pytest.fail(f"{adapter.name}: every adapter here offers held_positions")
    adapter.submit(market_buy("ord-1", quantity=10.0))

    held = held_positions("acct-1")

    assert {s: p.quantity for s, p in held.items()} == adapter.positions("acct-1")
    # each fake's price of AAPL is the contract quote's last (or mid): 100; FIX without
    # `positions` sums the executions booked here and gives no price
    booked_here = getattr(adapter, "ask_positions", True) is False
    assert [p.price for p in held.values()] == ([None] if booked_here else [100.0])


def test_submit_limit_when_not_marketable_then_rests_until_cancelled(
    adapter: BrokerAdapter,
) -> None:
    submitted = adapter.submit(resting_buy_limit("ord-1"))
    assert submitted.status is OrderStatus.ACCEPTED

    status = adapter.order_status("ord-1", submitted.broker_order_id)
    assert status.status is OrderStatus.ACCEPTED
    assert status.filled_quantity == 0.0

    cancelled = adapter.cancel("ord-1", submitted.broker_order_id)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.broker_order_id == submitted.broker_order_id
    assert adapter.order_status("ord-1", submitted.broker_order_id).status is (
        OrderStatus.CANCELLED
    )
    assert adapter.positions("acct-1") == {}


def test_cancel_when_already_cancelled_then_raises_broker_error(adapter: BrokerAdapter) -> None:
    submitted = adapter.submit(resting_buy_limit("ord-1"))
    adapter.cancel("ord-1", submitted.broker_order_id)

    with pytest.raises(BrokerError):
        adapter.cancel("ord-1", submitted.broker_order_id)


def test_replace_resting_limit_when_price_changes_then_keeps_broker_id_and_stays_open(
    adapter: BrokerAdapter,
) -> None:
    submitted = adapter.submit(resting_buy_limit("ord-1", limit_price=50.0))

    replaced = adapter.replace(submitted.broker_order_id, resting_buy_limit("ord-1", 60.0))

    assert replaced.status is OrderStatus.REPLACED
    assert replaced.broker_order_id == submitted.broker_order_id
    status = adapter.order_status("ord-1", submitted.broker_order_id)
    assert status.status in WORKING


def test_replace_resting_limit_when_new_price_is_marketable_then_fills_at_the_ask(
    adapter: BrokerAdapter,
) -> None:
    submitted = adapter.submit(resting_buy_limit("ord-1", limit_price=50.0))

    adapter.replace(submitted.broker_order_id, resting_buy_limit("ord-1", limit_price=105.0))

    status = adapter.order_status("ord-1", submitted.broker_order_id)
    assert status.status is OrderStatus.FILLED
    assert status.broker_order_id == submitted.broker_order_id
    assert status.average_price == QUOTE.ask
    assert adapter.positions("acct-1") == {"AAPL": 10.0}


def test_order_history_when_orders_were_sent_then_lists_every_order_in_order(
    adapter: BrokerAdapter,
) -> None:
    filled = adapter.submit(market_buy("ord-1"))
    resting = adapter.submit(resting_buy_limit("ord-2"))
    cancelled = adapter.submit(resting_buy_limit("ord-3"))
    adapter.cancel("ord-3", cancelled.broker_order_id)

    history = adapter.order_history()

    assert [(ack.order_id, ack.broker_order_id, ack.status) for ack in history] == [
        ("ord-1", filled.broker_order_id, OrderStatus.FILLED),
        ("ord-2", resting.broker_order_id, OrderStatus.ACCEPTED),
        ("ord-3", cancelled.broker_order_id, OrderStatus.CANCELLED),
    ]


# --- statuses, refusals, executions -----------------------------------------------------------


def test_every_ack_when_orders_take_each_path_then_its_status_is_an_order_status_member(
    adapter: BrokerAdapter,
) -> None:
    resting = adapter.submit(resting_buy_limit("ord-2"))
    acks = [
        adapter.submit(market_buy("ord-1")),
        resting,
        adapter.replace(resting.broker_order_id, resting_buy_limit("ord-2", 60.0)),
        adapter.cancel("ord-2", resting.broker_order_id),
        adapter.submit(market_buy("ord-1")),
        *adapter.order_history(),
    ]

    assert all(type(ack.status) is OrderStatus for ack in acks)
    assert {ack.status for ack in acks} == {
        OrderStatus.FILLED,
        OrderStatus.ACCEPTED,
        OrderStatus.REPLACED,
        OrderStatus.CANCELLED,
        OrderStatus.BLOCKED,
    }


def test_submit_when_client_order_id_reused_then_blocked_with_want_and_got(
    adapter: BrokerAdapter,
) -> None:
    first = adapter.submit(market_buy("ord-1"))

    refused = adapter.submit(market_buy("ord-1"))

    assert refused.status is OrderStatus.BLOCKED
    assert "want: " in refused.detail
    assert "got: " in refused.detail
    assert refused.fills == ()
    assert refused.response()["detail"] == refused.detail
    assert adapter.positions("acct-1") == {"AAPL": 10.0}
    assert adapter.find("ord-1") == first


def test_fills_when_several_orders_fill_then_every_execution_id_is_set_and_unique(
    adapter: BrokerAdapter,
) -> None:
    adapter.submit(market_buy("ord-1"))
    adapter.submit(market_buy("ord-2", quantity=3.0))
    resting = adapter.submit(resting_buy_limit("ord-3"))
    adapter.replace(resting.broker_order_id, resting_buy_limit("ord-3", 105.0))

    ids = [fill.execution_id for ack in adapter.order_history() for fill in ack.fills]

    assert len(ids) == 3
    assert all(ids)
    assert len(set(ids)) == 3


# --- find by client order id ------------------------------------------------------------


def test_find_when_order_was_sent_then_answers_as_order_status_does(
    adapter: BrokerAdapter,
) -> None:
    submitted = adapter.submit(resting_buy_limit("ord-1"))

    found = adapter.find("ord-1")

    assert found == adapter.order_status("ord-1", submitted.broker_order_id)
    assert found is not None
    assert (found.order_id, found.broker_order_id, found.status) == (
        "ord-1",
        submitted.broker_order_id,
        OrderStatus.ACCEPTED,
    )


def test_find_when_order_was_never_sent_then_none(adapter: BrokerAdapter) -> None:
    adapter.submit(market_buy("ord-1"))

    assert adapter.find("ord-2") is None


# --- restart (brokers that keep their orders) --------------------------------------------


def test_restart_when_an_order_rests_then_the_new_adapter_finds_and_cancels_it(
    connect: Connect,
) -> None:
    before = connect()
    resting = before.submit(resting_buy_limit("ord-1"))

    after = connect()

    assert after.find("ord-1") == resting
    assert after.order_status("ord-1", resting.broker_order_id) == resting
    cancelled = after.cancel("ord-1", resting.broker_order_id)
    assert (cancelled.broker_order_id, cancelled.status) == (
        resting.broker_order_id,
        OrderStatus.CANCELLED,
    )


def test_restart_when_orders_filled_then_fills_and_positions_are_kept(connect: Connect) -> None:
    before = connect()
    filled = before.submit(market_buy("ord-1"))
    resting = before.submit(resting_buy_limit("ord-2"))

    after = connect()

    assert after.find("ord-1") == filled
    assert after.positions("acct-1") == {"AAPL": 10.0}
    assert after.order_history() == [filled, resting]


def test_restart_when_order_is_sent_after_it_then_ids_do_not_repeat(connect: Connect) -> None:
    before = connect()
    first = before.submit(market_buy("ord-1"))

    second = connect().submit(market_buy("ord-2"))

    assert second.broker_order_id != first.broker_order_id
    assert {f.execution_id for f in second.fills}.isdisjoint(f.execution_id for f in first.fills)
