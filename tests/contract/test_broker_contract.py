"""The broker port's contract: every adapter must pass every test here.

To add an adapter, add one `pytest.param(factory, id=...)` to `ADAPTERS`. A
factory is a context manager that yields a fresh adapter (and starts and stops
whatever local fake server the adapter needs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

import pytest

from adapters.simulated import SimulatedBroker
from engine.broker import BrokerAdapter, BrokerError, BrokerOrder
from engine.models import Quote

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
QUOTE = Quote(bid=99.0, ask=101.0, last=100.0, timestamp=NOW)
OPEN_STATUSES = {"accepted", "partially_filled", "replaced"}

AdapterFactory = Callable[[], AbstractContextManager[BrokerAdapter]]


def fixed_clock() -> datetime:
    return NOW


@contextmanager
def simulated() -> Iterator[BrokerAdapter]:
    yield SimulatedBroker(fixed_clock)


ADAPTERS = [
    pytest.param(simulated, id="simulated"),
]


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> Iterator[BrokerAdapter]:
    factory: AdapterFactory = request.param
    with factory() as instance:
        yield instance


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


def test_submit_market_buy_when_quote_present_then_fills_and_updates_positions(
    adapter: BrokerAdapter,
) -> None:
    ack = adapter.submit(market_buy("ord-1", quantity=10.0))

    assert ack.order_id == "ord-1"
    assert ack.broker_order_id
    assert ack.status == "filled"
    assert ack.filled_quantity == 10.0
    assert ack.average_price is not None
    assert sum(fill.quantity for fill in ack.fills) == 10.0
    assert adapter.positions("acct-1") == {"AAPL": 10.0}


def test_submit_limit_when_not_marketable_then_rests_until_cancelled(
    adapter: BrokerAdapter,
) -> None:
    submitted = adapter.submit(resting_buy_limit("ord-1"))
    assert submitted.status == "accepted"

    status = adapter.order_status("ord-1", submitted.broker_order_id)
    assert status.status == "accepted"
    assert status.filled_quantity == 0.0

    cancelled = adapter.cancel("ord-1", submitted.broker_order_id)
    assert cancelled.status == "cancelled"
    assert cancelled.broker_order_id == submitted.broker_order_id
    assert adapter.order_status("ord-1", submitted.broker_order_id).status == "cancelled"
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

    assert replaced.status == "replaced"
    assert replaced.broker_order_id == submitted.broker_order_id
    status = adapter.order_status("ord-1", submitted.broker_order_id)
    assert status.status in OPEN_STATUSES


def test_replace_resting_limit_when_new_price_is_marketable_then_fills_at_the_ask(
    adapter: BrokerAdapter,
) -> None:
    submitted = adapter.submit(resting_buy_limit("ord-1", limit_price=50.0))

    adapter.replace(submitted.broker_order_id, resting_buy_limit("ord-1", limit_price=105.0))

    status = adapter.order_status("ord-1", submitted.broker_order_id)
    assert status.status == "filled"
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
        ("ord-1", filled.broker_order_id, "filled"),
        ("ord-2", resting.broker_order_id, "accepted"),
        ("ord-3", cancelled.broker_order_id, "cancelled"),
    ]


def test_check_credentials_when_adapter_is_configured_then_true(adapter: BrokerAdapter) -> None:
    assert adapter.check_credentials() is True
