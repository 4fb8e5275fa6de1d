"""The IB adapter under the fake TWS's faults, through a gateway (issue 10, faults):
each fault ends in an order booked as the broker has it, or blocked with
`broker_api_error` and IB's own words in `broker_response`; nothing is sent
twice (the fake counts new orders per orderRef); the chain verifies; and a fill
made while the connection was down is booked by the reconciliation after it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.base import BrokerConfigError
from adapters.ib import IBAdapter, from_config
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.broker import BrokerError
from engine.gateway import Actor, Gateway
from engine.lifecycle import OrderStatus
from engine.ports import Controls, Writer
from tests.conftest import POLICIES, FixedClock, _load_policies_once, build_order
from tests.fakes.tws import (
    Disconnect,
    DuplicateExecution,
    FakeTWS,
    FillAfterCancel,
    LostExecution,
    Malformed,
    PartialFill,
    Reject,
    Slow,
)

TRADER = Actor.of("t-1", "trader")
ACCOUNT = "DU123"


@dataclass
class Desk:
    gateway: Gateway
    adapter: IBAdapter
    fake: FakeTWS
    store: SqlStore
    clock: FixedClock

    def submit(self, cid: str, **changes: Any) -> dict[str, Any]:
        return self.gateway.submit(build_order(cid, self.clock(), **changes), TRADER).record

    def stored(self, order_id: str) -> Any:
        return self.store.order(order_id)

    def fills(self, order_id: str) -> list[Any]:
        return self.store.transact(lambda w: w.fills(order_id))

    def kinds(self) -> list[str]:
        return [r.get("kind") or "order" for r in self.store.audit_records()]


def eventually(check: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.02)


@pytest.fixture
def desk(store_url: str, clock: FixedClock) -> Iterator[Desk]:
    fake = FakeTWS(accounts=(ACCOUNT,), quotes={"AAPL": (150.20, 150.30, 150.25)}).start()
    adapter = IBAdapter(
        host="127.0.0.1",
        port=fake.port,
        client_id=17,
        account=ACCOUNT,
        clock=clock,
        name="ib-paper",
        request_timeout_s=0.5,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    store = SqlStore(store_url)
    store.migrate()
    gateway = Gateway(
        store, Evaluator(_load_policies_once(POLICIES), clock), {"paper": adapter}, clock
    )
    adapter.subscribe(gateway.report)
    gateway.recover()

    def to_paper(w: Writer) -> None:
        w.set_controls(Controls("paper", {}), clock())

    store.transact(to_paper)
    try:
        yield Desk(gateway, adapter, fake, store, clock)
        assert verify_chain(list(store.audit_records())).ok
    finally:
        adapter.close()
        fake.stop()
        store.close()


def market(**changes: Any) -> dict[str, Any]:
    return {"order_type": "market", "limit_price": None, **changes}


# --- faults at submit -------------------------------------------------------------------


def test_reject_when_ib_refuses_the_order_then_blocked_with_its_code_and_words(desk: Desk) -> None:
    desk.fake.inject(Reject(201, "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED"))

    record = desk.submit("c-1", **market())

    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["broker_api_error"]
    assert (
        "IB error 201: Order rejected - reason:YOUR ORDER IS NOT ACCEPTED"
        in (record["broker_response"]["detail"])
    )
    assert desk.fake.placements[record["order_id"]] == 1
    assert desk.store.positions("default") == {}


def test_slow_reply_when_past_the_timeout_then_found_by_order_ref_and_booked_once(
    desk: Desk,
) -> None:
    desk.fake.inject(Slow(1.5))

    record = desk.submit("c-1", **market())

    # the call timed out; the gateway asked IB by orderRef and found the fill
    assert record["order_status"] == "filled"
    assert desk.fake.placements[record["order_id"]] == 1
    assert desk.store.positions("default") == {"AAPL": 100.0}


def test_malformed_reply_when_garbled_then_found_by_order_ref_and_booked_once(desk: Desk) -> None:
    desk.fake.inject(Malformed())

    record = desk.submit("c-1", **market())

    assert record["order_status"] == "filled"
    assert desk.fake.placements[record["order_id"]] == 1
    assert len(desk.fills(record["order_id"])) == 1


def test_disconnect_mid_order_when_back_then_reconciled_and_never_sent_twice(desk: Desk) -> None:
    desk.fake.refuse_connections()
    desk.fake.inject(Disconnect())

    record = desk.submit("c-1", **market())
    eventually(lambda: desk.adapter.connection_problem() is not None)
    while_down = desk.submit("c-2", **market())
    readiness = desk.gateway.readiness()
    desk.fake.refuse_connections(False)
    eventually(lambda: desk.adapter.connection_problem() is None)
    records = desk.gateway.recover(stale_after_s=60)

    assert record["order_status"] == "submitted"  # outcome unknown: nothing decided
    assert record["broker_response"]["status"] == "unknown"
    assert "lost" in record["broker_response"]["detail"]
    assert while_down["order_status"] == "blocked"
    # not ready, and no broker quote to check the client's against (an error too)
    assert "broker_api_error" in while_down["fail_closed_triggers"]
    assert "BROKER_NOT_READY" in [r["code"] for r in while_down["reasons"]]
    assert any("ib-paper" in line for line in readiness)
    (reconciliation,) = records
    assert reconciliation["resolved"] == [
        {"order_id": record["order_id"], "outcome": "submitted -> filled"}
    ]
    assert desk.stored(record["order_id"]).status == OrderStatus.FILLED
    assert desk.fake.placements == {record["order_id"]: 1}  # c-2 never reached IB
    assert desk.gateway.readiness() == []


def test_reconcile_when_a_fill_happened_while_disconnected_then_it_is_booked(desk: Desk) -> None:
    resting = desk.submit("c-1", limit_price=150.00)
    assert resting["order_status"] == "accepted"

    desk.fake.refuse_connections()
    desk.fake.drop_connections()
    eventually(lambda: desk.adapter.connection_problem() is not None)
    desk.fake.fill(resting["order_id"], price=150.00)  # nobody is listening
    desk.fake.refuse_connections(False)
    eventually(lambda: desk.adapter.connection_problem() is None)
    # nobody asked the gateway anything while it was down, so only a full pass
    # (on start, on reconnect, every 5 minutes) looks at working orders
    records = desk.gateway.recover()

    assert desk.adapter.connections == 2  # what tells a service it reconnected
    (reconciliation,) = records
    assert reconciliation["resolved"] == [
        {"order_id": resting["order_id"], "outcome": "accepted -> filled"}
    ]
    assert desk.stored(resting["order_id"]).status == OrderStatus.FILLED
    assert desk.store.positions("default") == {"AAPL": 100.0}
    assert desk.fake.placements[resting["order_id"]] == 1


# --- faults in the execution reports -------------------------------------------------------


def test_lost_execution_when_ib_says_filled_without_it_then_asked_and_booked_once(
    desk: Desk,
) -> None:
    desk.fake.inject(LostExecution())

    record = desk.submit("c-1", **market())

    assert record["order_status"] == "filled"
    fills = desk.fills(record["order_id"])
    assert [(f.quantity, f.price) for f in fills] == [(100.0, 150.30)]
    assert desk.store.positions("default") == {"AAPL": 100.0}


def test_duplicate_execution_when_reported_twice_then_booked_once(desk: Desk) -> None:
    desk.fake.inject(DuplicateExecution())

    record = desk.submit("c-1", **market())

    assert record["order_status"] == "filled"
    assert len(desk.fills(record["order_id"])) == 1
    assert desk.store.positions("default") == {"AAPL": 100.0}


def test_partial_fills_when_the_rest_fills_later_then_the_stream_books_it(desk: Desk) -> None:
    desk.fake.inject(PartialFill(40))

    record = desk.submit("c-1", **market())
    desk.fake.fill(record["order_id"])
    eventually(lambda: desk.stored(record["order_id"]).status == OrderStatus.FILLED)

    assert record["order_status"] == "partially_filled"
    assert record["broker_response"]["filled_quantity"] == 40.0
    assert [f.quantity for f in desk.fills(record["order_id"])] == [40.0, 60.0]
    assert desk.store.positions("default") == {"AAPL": 100.0}


def test_fill_after_cancel_when_it_arrives_then_booked_as_an_anomaly(desk: Desk) -> None:
    resting = desk.submit("c-1", limit_price=150.00)
    desk.fake.inject(FillAfterCancel())

    cancelled = desk.gateway.cancel(resting["order_id"], TRADER).record
    eventually(lambda: bool(desk.fills(resting["order_id"])))

    assert cancelled["order_status"] == "cancelled"
    assert desk.stored(resting["order_id"]).status == OrderStatus.CANCELLED
    assert "execution_anomaly" in desk.kinds()
    assert desk.store.positions("default") == {"AAPL": 100.0}
    assert desk.fake.cancels[resting["order_id"]] == 1


def test_cancel_when_ib_has_it_filled_then_refused_with_ib_status(desk: Desk) -> None:
    record = desk.submit("c-1", **market())
    assert record["order_status"] == "filled", record

    with pytest.raises(BrokerError, match="want: a working order, got: filled"):
        desk.adapter.cancel(record["order_id"], record["broker_response"]["broker_order_id"])


# --- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"adapter": "ib", "port": 7497, "client_id": 1}, "paper.account"),
        ({"adapter": "ib", "port": "x", "client_id": 1, "account": "DU1"}, "paper.port"),
        ({"adapter": "ib", "port": 7497, "account": "DU1"}, "paper.client_id"),
        ({"adapter": "ib", "port": 7497, "client_id": 1, "account": "U1234567"}, "paper.account"),
        (
            {
                "adapter": "ib",
                "port": 7497,
                "client_id": 1,
                "account": "DU1",
                "request_timeout_s": 0,
            },
            "paper.request_timeout_s",
        ),
        ({"adapter": "ib", "port": 7497, "client_id": 1, "account": "DU1", "key": 1}, "paper.key"),
    ],
    ids=[
        "no-account",
        "port-text",
        "no-client-id",
        "live-account-in-paper",
        "zero-timeout",
        "unknown-key",
    ],
)
def test_from_config_when_a_field_is_wrong_then_names_it(
    section: dict[str, Any], field: str
) -> None:
    with pytest.raises(BrokerConfigError) as caught:
        from_config(section, {}, role="paper", clock=FixedClock())

    assert caught.value.field == field


def test_check_credentials_when_account_is_not_managed_then_false() -> None:
    with FakeTWS(accounts=("DU999",)) as fake:
        adapter = from_config(
            {"adapter": "ib", "port": fake.port, "client_id": 3, "account": "DU123"},
            {},
            role="paper",
            clock=FixedClock(),
        )
        try:
            assert adapter.check_credentials() is False
        finally:
            adapter.close()


def test_calls_when_tws_is_not_running_then_broker_error_and_a_connection_problem() -> None:
    with FakeTWS() as fake:
        port = fake.port
    adapter = IBAdapter(
        host="127.0.0.1",
        port=port,
        client_id=3,
        account="DU123",
        clock=FixedClock(),
        connect_timeout_s=0.5,
    )
    try:
        assert "cannot connect" in (adapter.connection_problem() or "")
        with pytest.raises(BrokerError, match="not connected"):
            adapter.positions(ACCOUNT)
    finally:
        adapter.close()


def test_quote_when_subscribed_then_follows_the_market() -> None:
    clock = FixedClock()
    with FakeTWS(quotes={"AAPL": (150.20, 150.30, 150.25)}) as fake:
        adapter = IBAdapter(
            host="127.0.0.1", port=fake.port, client_id=3, account="DU123", clock=clock
        )
        try:
            first = adapter.quote("AAPL")
            fake.set_quote("AAPL", 151.0, 151.2, 151.1)
            eventually(lambda: (adapter.quote("AAPL") or first).bid == 151.0)  # type: ignore[union-attr]
        finally:
            adapter.close()

    assert first is not None
    # answered once both sides came; the last price may still be on its way
    assert (first.bid, first.ask, first.timestamp) == (150.20, 150.30, clock())
    assert first.last in (150.25, None)


def test_quote_when_ib_does_not_know_the_symbol_then_broker_error_with_its_words() -> None:
    with FakeTWS(unknown_symbols={"ZZZZ"}) as fake:
        adapter = IBAdapter(
            host="127.0.0.1", port=fake.port, client_id=3, account="DU123", clock=FixedClock()
        )
        try:
            with pytest.raises(BrokerError, match="IB error 200: No security definition"):
                adapter.quote("ZZZZ")
        finally:
            adapter.close()
