"""A broker's price with each position (`held_positions`), adapter by adapter
against its fake: a holding bought outside the gate comes with the broker's
price, and a full reconciliation stores it as the holding's mark (SQLite and
PostgreSQL), so the account's gross exposure can be valued. Prices that are not
finite and > 0 are no price (simulated, Alpaca, IB, FIX) or an unparseable
answer (oms_rest, whose contract we publish). End to end through the HTTP API
on Alpaca: an order in another symbol is blocked (gross_exposure_check error)
while the holding has no usable price, and approved once the sync gave one."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from adapters.alpaca import AlpacaAdapter
from adapters.base import MemoryJournal, MemorySessionLog
from adapters.ib import IBAdapter
from adapters.oms_fix import OmsFixAdapter
from adapters.oms_rest import OmsRestAdapter
from adapters.simulated import SimulatedBroker
from adapters.sql import SqlStore
from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from engine import Evaluator
from engine.audit_replay import verify_store
from engine.broker import BrokerAdapter, BrokerError, BrokerOrder, BrokerPosition
from engine.gateway import Actor, Gateway
from engine.models import Quote
from tests.conftest import POLICIES, FixedClock, OrderBuilder, _load_policies_once, role_tokens
from tests.fakes.alpaca import FakeAlpaca
from tests.fakes.fix_acceptor import FakeFixAcceptor
from tests.fakes.oms_rest import FakeOms
from tests.fakes.tws import FakeTWS
from tests.unit.test_portfolio import marks

ADMIN = Actor.of("t-admin", "admin")
IB_ACCOUNT = "DU123"
BAD_TEXT = ["0", "-5", "nan", "inf", "abc", ""]


def synced_into(store: SqlStore, broker: BrokerAdapter, clock: FixedClock) -> list[Any]:
    """One full reconciliation of `broker`, mapped to account `default`."""
    evaluator = Evaluator(_load_policies_once(POLICIES), clock)
    gateway = Gateway(store, evaluator, {"paper": broker}, clock)
    gateway.sync_positions_into(broker.name, "default")
    return [r for r in gateway.recover() if r.get("kind") == "position_sync"]


# --- simulated ------------------------------------------------------------------------------


def bought_outside(broker: SimulatedBroker, symbol: str, quantity: float, quote: Quote) -> None:
    order = BrokerOrder(f"outside-{symbol}", "default", symbol, "buy", quantity, "market",
                        quote=quote)  # fmt: skip
    assert broker.submit(order).filled_quantity == quantity


def test_simulated_when_holding_then_its_last_quote_is_the_mark_and_a_new_quote_refreshes_it(
    sql_store: SqlStore, clock: FixedClock
) -> None:
    broker = SimulatedBroker(clock, name="simulated-paper")
    bought_outside(broker, "MSFT", 1_000.0, Quote(bid=410.0, ask=411.0, last=410.5))
    bought_outside(broker, "IBM", 10.0, Quote(bid=120.0, ask=121.0))  # no last: the mid
    records = synced_into(sql_store, broker, clock)
    first = marks(sql_store)
    broker.on_quote("MSFT", Quote(bid=412.0, ask=413.0, last=412.75))
    again = synced_into(sql_store, broker, clock)

    assert [(r["symbol"], r["after"], r["price"]) for r in records] == [
        ("IBM", 10.0, 120.5), ("MSFT", 1_000.0, 410.5)]  # fmt: skip
    assert first == {"IBM": 120.5, "MSFT": 410.5}
    assert again == []  # the quantities agree: the mark alone changed
    assert marks(sql_store) == {"IBM": 120.5, "MSFT": 412.75}
    report = verify_store(sql_store)
    assert report.ok and not report.findings, report.as_dict()


def test_simulated_when_it_has_no_quote_of_a_symbol_then_no_price(clock: FixedClock) -> None:
    broker = SimulatedBroker(clock)
    bought_outside(broker, "MSFT", 5.0, Quote(ask=411.0))
    broker.on_quote("MSFT", Quote())  # a quote with no price at all

    assert broker.held_positions("default") == {"MSFT": BrokerPosition(5.0, None)}
    assert broker.positions("default") == {"MSFT": 5.0}


# --- Alpaca ---------------------------------------------------------------------------------


@pytest.fixture
def alpaca(clock: FixedClock) -> Iterator[tuple[FakeAlpaca, AlpacaAdapter]]:
    with FakeAlpaca() as fake:
        adapter = AlpacaAdapter(key_id=fake.key_id, secret_key=fake.secret_key,
                                base_url=fake.url, data_url=fake.url, clock=clock,
                                timeout_s=2.0, journal=MemoryJournal())  # fmt: skip
        try:
            yield fake, adapter
        finally:
            adapter.close()


def test_alpaca_when_holding_then_current_price_is_the_mark(
    alpaca: tuple[FakeAlpaca, AlpacaAdapter], sql_store: SqlStore, clock: FixedClock
) -> None:
    fake, adapter = alpaca
    fake.hold("MSFT", 1_000.0, 300.0)
    fake.hold("TSLA", -20.0, 250.0)
    fake.set_quote("MSFT", 410.0, 411.0, 410.5)
    fake.set_current_price("TSLA", "199.95")

    records = synced_into(sql_store, adapter, clock)

    assert [(r["symbol"], r["after"], r["price"]) for r in records] == [
        ("MSFT", 1_000.0, 410.5), ("TSLA", -20.0, 199.95)]  # fmt: skip
    assert marks(sql_store) == {"MSFT": 410.5, "TSLA": 199.95}


def test_alpaca_when_current_price_is_absent_then_the_average_entry_price_stands_in(
    alpaca: tuple[FakeAlpaca, AlpacaAdapter],
) -> None:
    fake, adapter = alpaca
    fake.hold("MSFT", 1_000.0, 300.0)  # no quote: current_price left out

    assert adapter.held_positions("default") == {"MSFT": BrokerPosition(1_000.0, 300.0)}


@pytest.mark.parametrize("bad", BAD_TEXT)
def test_alpaca_when_current_price_is_not_a_positive_number_then_no_price_and_the_quantity_stands(
    alpaca: tuple[FakeAlpaca, AlpacaAdapter], bad: str
) -> None:
    fake, adapter = alpaca
    fake.hold("MSFT", 1_000.0, 300.0)
    fake.set_current_price("MSFT", bad)  # present: avg_entry_price does not stand in

    assert adapter.held_positions("default") == {"MSFT": BrokerPosition(1_000.0, None)}
    assert adapter.positions("default") == {"MSFT": 1_000.0}


# --- IB -------------------------------------------------------------------------------------


@pytest.fixture
def tws(clock: FixedClock) -> Iterator[tuple[FakeTWS, IBAdapter]]:
    with FakeTWS(accounts=(IB_ACCOUNT,), clock=clock) as fake:
        adapter = IBAdapter(host="127.0.0.1", port=fake.port, client_id=17, account=IB_ACCOUNT,
                            clock=clock, request_timeout_s=2.0)  # fmt: skip
        try:
            yield fake, adapter
        finally:
            adapter.close()


def test_ib_when_holding_then_the_portfolio_market_price_is_the_mark(
    tws: tuple[FakeTWS, IBAdapter], sql_store: SqlStore, clock: FixedClock
) -> None:
    fake, adapter = tws
    fake.hold(IB_ACCOUNT, "MSFT", 1_000.0, 300.0)  # before the adapter connects
    fake.set_quote("MSFT", 410.0, 411.0, 410.5)
    fake.hold("DU999", "MSFT", 7.0, 1.0)  # another account's: not ours
    records = synced_into(sql_store, adapter, clock)
    fake.hold(IB_ACCOUNT, "IBM", 10.0, 118.0)  # while connected: pushed to the adapter
    fake.set_market_price("MSFT", 412.25)
    again = synced_into(sql_store, adapter, clock)

    assert [(r["symbol"], r["after"], r["price"]) for r in records] == [("MSFT", 1_000.0, 410.5)]
    assert [(r["symbol"], r["after"], r["price"]) for r in again] == [("IBM", 10.0, 118.0)]
    assert marks(sql_store) == {"IBM": 118.0, "MSFT": 412.25}


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan], ids=["zero", "minus-one", "nan"])
def test_ib_when_the_market_price_is_not_positive_then_no_price_never_the_average_cost(
    tws: tuple[FakeTWS, IBAdapter], bad: float
) -> None:
    fake, adapter = tws
    fake.hold(IB_ACCOUNT, "MSFT", 1_000.0, 300.0)
    fake.set_market_price("MSFT", bad)

    assert adapter.held_positions("default") == {"MSFT": BrokerPosition(1_000.0, None)}


# --- FIX ------------------------------------------------------------------------------------


@pytest.fixture
def fix(clock: FixedClock) -> Iterator[tuple[FakeFixAcceptor, OmsFixAdapter]]:
    with FakeFixAcceptor(sender_comp_id="OMS", target_comp_id="APEX", positions=True) as fake:
        adapter = OmsFixAdapter(host=fake.host, port=fake.port, sender_comp_id="APEX",
                                target_comp_id="OMS", clock=clock, journal=MemoryJournal(),
                                session_log=MemorySessionLog(), request_timeout_s=5.0,
                                positions=True)  # fmt: skip
        try:
            yield fake, adapter
        finally:
            adapter.close()


def test_fix_when_holding_then_the_settlement_price_is_the_mark(
    fix: tuple[FakeFixAcceptor, OmsFixAdapter], sql_store: SqlStore, clock: FixedClock
) -> None:
    fake, adapter = fix
    fake.hold("default", "MSFT", 1_000.0)
    fake.hold("default", "TSLA", -20.0)
    fake.set_quote("MSFT", bid=410.0, ask=411.0, last=410.5)  # 730 = the last price
    fake.set_settl_price("TSLA", "199.95")

    records = synced_into(sql_store, adapter, clock)

    assert [(r["symbol"], r["after"], r["price"]) for r in records] == [
        ("MSFT", 1_000.0, 410.5), ("TSLA", -20.0, 199.95)]  # fmt: skip
    assert marks(sql_store) == {"MSFT": 410.5, "TSLA": 199.95}


# (a tag without a value is a malformed message: the session layer rejects it)
@pytest.mark.parametrize("bad", ["0", "-5", "nan", "inf", "abc", None], ids=str)
def test_fix_when_the_settlement_price_is_missing_or_not_positive_then_no_price(
    fix: tuple[FakeFixAcceptor, OmsFixAdapter], bad: str | None
) -> None:
    fake, adapter = fix
    fake.hold("default", "MSFT", 1_000.0)
    fake.set_settl_price("MSFT", bad)

    assert adapter.held_positions("default") == {"MSFT": BrokerPosition(1_000.0, None)}


# --- oms_rest -------------------------------------------------------------------------------


@pytest.fixture
def oms(clock: FixedClock) -> Iterator[tuple[FakeOms, OmsRestAdapter]]:
    with FakeOms() as fake:
        adapter = OmsRestAdapter(base_url=fake.url, ws_url=None, token=fake.token, clock=clock,
                                 timeout_s=2.0, journal=MemoryJournal())  # fmt: skip
        try:
            yield fake, adapter
        finally:
            adapter.close()


def test_oms_rest_when_holding_then_its_price_is_the_mark_and_null_is_none(
    oms: tuple[FakeOms, OmsRestAdapter], sql_store: SqlStore, clock: FixedClock
) -> None:
    fake, adapter = oms
    fake.hold("default", "MSFT", 1_000.0)
    fake.hold("default", "TSLA", -20.0)
    fake.hold("default", "IBM", 5.0)
    fake.set_quote("MSFT", 410.0, 411.0)  # the fake's price: the mid
    fake.set_position_price("TSLA", 199.95)
    fake.set_position_price("IBM", None)  # null: unknown

    records = synced_into(sql_store, adapter, clock)

    assert [(r["symbol"], r["after"], r.get("price")) for r in records] == [
        ("IBM", 5.0, None), ("MSFT", 1_000.0, 410.5), ("TSLA", -20.0, 199.95)]  # fmt: skip
    assert marks(sql_store) == {"IBM": None, "MSFT": 410.5, "TSLA": 199.95}


@pytest.mark.parametrize(
    "bad",
    [0, -5.0, "410.5", math.nan, True, [410.5]],
    ids=["zero", "negative", "text", "nan", "bool", "list"],
)
def test_oms_rest_when_a_price_is_not_a_number_above_zero_then_unparseable_and_nothing_synced(
    oms: tuple[FakeOms, OmsRestAdapter], sql_store: SqlStore, clock: FixedClock, bad: Any
) -> None:
    fake, adapter = oms
    fake.hold("default", "MSFT", 1_000.0)
    fake.hold("default", "TSLA", -20.0)
    fake.set_position_price("TSLA", bad)

    with pytest.raises(BrokerError) as raised:
        adapter.held_positions("default")
    records = synced_into(sql_store, adapter, clock)  # the pass logs it and goes on

    assert raised.value.code == "unparseable_reply"
    assert "price" in str(raised.value)
    assert records == [] and marks(sql_store) == {}


# --- end to end: an order in another symbol, through the HTTP API on Alpaca -----------------


@pytest.fixture
def alpaca_service(
    store_url: str, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeAlpaca, Runtime, Callable[..., Any]]]:
    with FakeAlpaca() as fake:
        fake.set_quote("AAPL", 150.20, 150.30, 150.25)
        fake.hold("MSFT", 1_000.0, 300.0)  # bought before the gate was there
        fake.set_current_price("MSFT", "0")  # a price no one can value it at
        monkeypatch.setenv("FAKE_APCA_KEY", fake.key_id)
        monkeypatch.setenv("FAKE_APCA_SECRET", fake.secret_key)
        brokers = tmp_path / "brokers.yaml"
        brokers.write_text(
            f"paper:\n  adapter: alpaca\n  base_url: {fake.url}\n  data_url: {fake.url}\n"
            "  key_id_env: FAKE_APCA_KEY\n  secret_key_env: FAKE_APCA_SECRET\n"
            "  timeout_s: 2\n  position_account: default\n",
            encoding="utf-8",
        )
        settings = Settings(home=tmp_path / "home", database_url=store_url, policies=POLICIES,
                            keys=tmp_path / "no-keys", brokers=brokers)  # fmt: skip
        runtime = Runtime.start(settings, clock=clock)
        client = TestClient(create_app(runtime)).__enter__()
        auth = {r: {"Authorization": f"Bearer {t}"} for r, t in role_tokens(runtime).items()}
        try:
            assert runtime.gateway.check_broker("paper", ADMIN)["ok"] is True
            entered = client.post("/v1/mode", headers=auth["compliance"], json={"mode": "paper"})
            assert entered.status_code == 200, entered.text

            def submit(order: dict[str, Any]) -> Any:
                return client.post("/v1/orders", headers=auth["trader"], json=order)

            yield fake, runtime, submit
        finally:
            client.__exit__(None, None, None)
            runtime.close()


def test_alpaca_end_to_end_when_the_sync_gives_the_holding_a_price_then_another_symbol_passes(
    alpaca_service: tuple[FakeAlpaca, Runtime, Callable[..., Any]], make_order: OrderBuilder
) -> None:
    fake, runtime, submit = alpaca_service
    runtime.gateway.recover()  # a full pass: MSFT learned, without a usable price
    blocked = submit(make_order(limit_price=150.30))
    fake.set_current_price("MSFT", "410.5")
    runtime.gateway.recover()  # the next pass: the quantity agrees, the mark is set
    passed = submit(make_order(limit_price=150.30))

    assert runtime.store.positions("default") == {"MSFT": 1_000.0, "AAPL": 100.0}
    assert (blocked.status_code, blocked.json()["order_status"]) == (403, "blocked")
    assert blocked.json()["risk_check_results"]["gross_exposure_check"] == "error"
    assert (passed.status_code, passed.json()["order_status"]) == (201, "filled")
    assert passed.json()["risk_check_results"]["gross_exposure_check"] == "pass"
    assert marks(runtime.store) == {"AAPL": 150.3, "MSFT": 410.5}
    report = verify_store(runtime.store)
    assert report.ok and not report.findings, report.as_dict()
