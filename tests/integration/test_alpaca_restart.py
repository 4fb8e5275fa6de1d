"""The Alpaca adapter across a restart of the service during a partial fill:
with the store's journal, a new adapter reports the steps the old one reported
under the same execution ids, so the gateway books only what Alpaca filled
since (the fake Alpaca keeps its orders, as Alpaca does)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import registry
from adapters.alpaca import AlpacaAdapter
from adapters.base import MemoryJournal
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.broker import BrokerError, BrokerJournal, BrokerOrder
from engine.gateway import Actor, Gateway
from engine.lifecycle import OrderStatus
from engine.models import Quote
from tests.conftest import POLICIES, FixedClock, OrderBuilder, _load_policies_once
from tests.fakes.alpaca import FakeAlpaca, PartialFill

TRADER = Actor("t-1", "trader")
COMPLIANCE = Actor("c-1", "compliance")
SYSTEM = Actor("system", "system")
BID, ASK, LAST = 150.20, 150.30, 150.25  # the quote tests/conftest.py's orders carry
NAME = "alpaca-paper"

Start = Callable[[], Gateway]


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as fake:
        fake.set_quote("AAPL", BID, ASK, LAST)
        yield fake


@pytest.fixture
def start(tmp_path: Path, clock: FixedClock, fake: FakeAlpaca) -> Iterator[Start]:
    """Each call starts the service anew on the same database: a restart."""
    stores: list[SqlStore] = []

    def start() -> Gateway:
        for store in stores:
            store.close()
        store = SqlStore(f"sqlite:///{tmp_path / 'apex.db'}")
        store.migrate()
        stores.append(store)
        adapter = _adapter(fake, clock, store.journal(NAME))
        evaluator = Evaluator(_load_policies_once(POLICIES), clock)
        gateway = Gateway(store, evaluator, {"paper": adapter}, clock)
        gateway.recover()
        return gateway

    yield start
    stores[-1].close()


def _adapter(fake: FakeAlpaca, clock: FixedClock, journal: BrokerJournal) -> AlpacaAdapter:
    return AlpacaAdapter(
        key_id=fake.key_id,
        secret_key=fake.secret_key,
        base_url=fake.url,
        data_url=fake.url,
        clock=clock,
        timeout_s=2.0,
        name=NAME,
        journal=journal,
    )


def _fills(gateway: Gateway, order_id: str) -> list[Any]:
    return gateway.store.transact(lambda w: w.fills(order_id))


def _anomalies(gateway: Gateway) -> list[str]:
    records = gateway.store.audit_records()
    return [r["anomaly"] for r in records if r.get("kind") == "execution_anomaly"]


def _partially_filled(start: Start, fake: FakeAlpaca, make_order: OrderBuilder) -> str:
    gateway = start()
    gateway.check_broker("paper", COMPLIANCE)
    gateway.set_mode("paper", COMPLIANCE, "test")
    fake.inject(PartialFill(0.4))
    record = gateway.submit(make_order(limit_price=ASK), TRADER).record
    assert record["order_status"] == OrderStatus.PARTIALLY_FILLED
    return str(record["order_id"])


def test_restart_when_alpaca_fills_more_while_down_then_recovery_books_only_the_rest(
    start: Start, fake: FakeAlpaca, make_order: OrderBuilder
) -> None:
    order_id = _partially_filled(start, fake, make_order)
    fake.fill(order_id, 60.0, 150.40)

    gateway = start()

    fills = _fills(gateway, order_id)
    assert [(f.quantity, f.price) for f in fills] == [(40.0, ASK), (60.0, 150.40)]
    assert len({f.execution_id for f in fills}) == 2
    stored = gateway.store.order(order_id)
    assert stored is not None
    assert (stored.status, stored.filled_quantity) == (OrderStatus.FILLED, 100.0)
    assert gateway.store.positions("default") == {"AAPL": 100.0}
    assert _anomalies(gateway) == []
    assert verify_chain(gateway.store.audit_records()).ok


def test_restart_when_alpaca_fills_more_after_it_then_a_poll_books_only_the_rest(
    start: Start, fake: FakeAlpaca, make_order: OrderBuilder
) -> None:
    order_id = _partially_filled(start, fake, make_order)

    gateway = start()
    fake.fill(order_id, 25.0, 150.10)
    gateway.market_quote("AAPL", Quote(bid=BID, ask=ASK, last=LAST), SYSTEM)

    fills = _fills(gateway, order_id)
    assert [f.quantity for f in fills] == [40.0, 25.0]
    assert [f.price for f in fills] == [ASK, pytest.approx(150.10)]
    stored = gateway.store.order(order_id)
    assert stored is not None
    assert (stored.status, stored.filled_quantity) == (OrderStatus.PARTIALLY_FILLED, 65.0)
    assert gateway.store.positions("default") == {"AAPL": 65.0}
    assert _anomalies(gateway) == []


def test_restart_then_the_same_steps_under_the_same_execution_ids(
    fake: FakeAlpaca, clock: FixedClock
) -> None:
    journal = MemoryJournal()
    order = BrokerOrder("o-1", "default", "AAPL", "buy", 100.0, "limit", limit_price=ASK)
    fake.inject(PartialFill(0.4))
    before = _adapter(fake, clock, journal).submit(order)
    fake.fill("o-1", 60.0, 150.40)

    after = _adapter(fake, clock, journal).order_status("o-1", before.broker_order_id)

    assert after.fills[0] == before.fills[0]
    assert [f.quantity for f in after.fills] == [40.0, 60.0]
    assert after.filled_quantity == 100.0
    assert after.average_price == pytest.approx(150.36)


class _FailingJournal(MemoryJournal):
    def save(self, key: str, value: dict[str, object]) -> None:
        raise OSError("disk full")


def test_journal_when_a_save_fails_then_broker_error_journal_unavailable(
    fake: FakeAlpaca, clock: FixedClock
) -> None:
    order = BrokerOrder("o-2", "default", "AAPL", "buy", 10.0, "market")

    with pytest.raises(BrokerError) as caught:
        _adapter(fake, clock, _FailingJournal()).submit(order)

    assert caught.value.code == "journal_unavailable"
    assert "disk full" in str(caught.value)


def test_journal_when_an_entry_is_damaged_then_broker_error_journal_unreadable(
    fake: FakeAlpaca, clock: FixedClock
) -> None:
    journal = MemoryJournal()
    journal.save("order:x", {"client_order_id": "o-3", "fills": [{"quantity": "many"}]})

    with pytest.raises(BrokerError) as caught:
        _adapter(fake, clock, journal)

    assert caught.value.code == "journal_unreadable"
    assert "order:x" in str(caught.value)


def test_registry_when_it_builds_alpaca_then_the_journal_is_the_broker_name(
    fake: FakeAlpaca, clock: FixedClock
) -> None:
    opened: list[str] = []

    def journal(name: str) -> BrokerJournal:
        opened.append(name)
        return MemoryJournal()

    section = {"adapter": "alpaca", "base_url": fake.url, "data_url": fake.url}
    section |= {"key_id_env": "K", "secret_key_env": "S"}
    env = {"K": fake.key_id, "S": fake.secret_key}

    broker = registry.build("paper", section, env, clock=clock, journal=journal)

    assert opened == [broker.name] == ["alpaca-paper"]
