"""The FIX adapter under the fake acceptor's faults, through a gateway (issue 11,
faults): each fault ends in an order booked as the counterparty has it, blocked
or clearly failed with `broker_api_error` and the counterparty's own words, or a
recorded `execution_anomaly`; nothing is sent twice (the fake counts the orders
it took per ClOrdID); the chain verifies. The adapter keeps its FIX session in
the store (sequence numbers and message log), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.oms_fix import OmsFixAdapter
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.broker import BrokerError
from engine.gateway import Actor, Gateway
from engine.lifecycle import OrderStatus
from engine.ports import Controls, Writer
from tests.conftest import POLICIES, FixedClock, _load_policies_once, build_order
from tests.fakes.fix_acceptor import (
    BusinessReject,
    CancelReject,
    DisconnectMidOrder,
    DuplicateExecution,
    FakeFixAcceptor,
    FillAfterCancel,
    Garbled,
    PartialFill,
    Reject,
    SequenceGap,
    SessionReject,
    Silence,
)

TRADER = Actor.of("t-1", "trader")
NAME = "oms_fix-paper"


@dataclass
class Desk:
    gateway: Gateway
    adapter: OmsFixAdapter
    fake: FakeFixAcceptor
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

    def anomalies(self) -> list[str]:
        return [
            r["anomaly"] for r in self.store.audit_records() if r.get("kind") == "execution_anomaly"
        ]

    def sent(self, msg_type: str, cl_ord_id: str) -> int:
        """Messages of `msg_type` the fake received naming `cl_ord_id` (11 or 41),
        PossDup resends included."""
        return sum(
            1
            for m in self.fake.received
            if m.get(35) == msg_type.encode()
            and cl_ord_id.encode() in (m.get(11) or b"", m.get(41) or b"")
        )

    def rewire(self, **options: Any) -> None:
        """The service restarted (or is configured anew): a new adapter on the same
        fake and store (its journal and FIX session), a new gateway, recovered."""
        self.adapter.close()
        self.adapter = adapter_on(self.fake, self.store, self.clock, **options)
        evaluator = Evaluator(_load_policies_once(POLICIES), self.clock)
        self.gateway = Gateway(self.store, evaluator, {"paper": self.adapter}, self.clock)
        self.adapter.subscribe(self.gateway.report)
        self.gateway.recover()


def eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.02)


def adapter_on(
    fake: FakeFixAcceptor, store: SqlStore, clock: FixedClock, **options: Any
) -> OmsFixAdapter:
    settings: dict[str, Any] = {
        "heartbeat_s": 5,
        "request_timeout_s": 1.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
    }
    settings.update(options)
    return OmsFixAdapter(
        host=fake.host,
        port=fake.port,
        sender_comp_id="APEX",
        target_comp_id="OMS",
        clock=clock,
        name=NAME,
        journal=store.journal(NAME),
        session_log=store.session_log(NAME),
        **settings,
    )


@pytest.fixture
def desk(store_url: str, clock: FixedClock) -> Iterator[Desk]:
    fake = FakeFixAcceptor(sender_comp_id="OMS", target_comp_id="APEX").start()
    fake.set_quote("AAPL", bid=150.20, ask=150.30, last=150.25)
    store = SqlStore(store_url)
    store.migrate()
    adapter = adapter_on(fake, store, clock)
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


# --- refusals ----------------------------------------------------------------------


def test_reject_when_the_desk_refuses_the_order_then_blocked_with_its_words(desk: Desk) -> None:
    desk.fake.inject(Reject("no credit line for this account"))

    record = desk.submit("c-1", **market())

    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["broker_api_error"]
    assert "no credit line for this account" in record["broker_response"]["detail"]
    assert desk.fake.new_orders[record["order_id"]] == 1
    assert desk.store.positions("default") == {}


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (BusinessReject("orders closed for the day"), "orders closed for the day"),
        (SessionReject("required tag missing"), "required tag missing"),
    ],
    ids=["business-reject", "session-reject"],
)
def test_reject_of_the_message_when_the_peer_refuses_it_then_blocked_with_broker_api_error(
    desk: Desk, fault: Any, words: str
) -> None:
    desk.fake.inject(fault)

    record = desk.submit("c-1", **market())

    # the desk never took it (asked by OrderStatusRequest: unknown order)
    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["broker_api_error"]
    assert words in record["broker_response"]["detail"]
    assert desk.fake.new_orders[record["order_id"]] == 0
    assert desk.store.positions("default") == {}


def test_cancel_reject_when_the_desk_refuses_then_broker_error_with_its_words_and_still_working(
    desk: Desk,
) -> None:
    resting = desk.submit("c-1")
    desk.fake.inject(CancelReject("order is locked by the desk"))

    with pytest.raises(BrokerError, match="order is locked by the desk"):
        desk.adapter.cancel(resting["order_id"], resting["broker_response"]["broker_order_id"])

    assert desk.stored(resting["order_id"]).status == OrderStatus.ACCEPTED


def test_cancel_reject_through_the_gateway_then_an_attempt_with_broker_api_error_and_retry_works(
    desk: Desk,
) -> None:
    resting = desk.submit("c-1")
    order_id = resting["order_id"]
    desk.fake.inject(CancelReject("order is locked by the desk"))

    refused = desk.gateway.cancel(order_id, TRADER)
    still = desk.stored(order_id).status
    cancelled = desk.gateway.cancel(order_id, TRADER)

    assert refused.kind == "broker_error"
    assert refused.record["fail_closed_triggers"] == ["broker_api_error"]
    assert "order is locked by the desk" in refused.record["broker_response"]["detail"]
    assert still == OrderStatus.ACCEPTED
    assert cancelled.record["order_status"] == "cancelled"
    assert desk.stored(order_id).status == OrderStatus.CANCELLED
    assert desk.sent("F", order_id) == 2  # one refused, one taken: each asked once
    assert desk.fake.new_orders[order_id] == 1
    assert desk.anomalies() == []


# --- executions --------------------------------------------------------------------


def test_partial_fills_when_in_pieces_then_each_booked_once_and_filled(desk: Desk) -> None:
    desk.fake.inject(PartialFill(pieces=2))

    record = desk.submit("c-1", **market())

    assert record["order_status"] == "filled"
    assert [f.quantity for f in desk.fills(record["order_id"])] == [50.0, 50.0]
    assert desk.store.positions("default") == {"AAPL": 100.0}
    assert desk.fake.new_orders[record["order_id"]] == 1


def test_duplicate_execution_when_reported_twice_then_booked_once_and_an_anomaly(
    desk: Desk,
) -> None:
    desk.fake.inject(DuplicateExecution())

    record = desk.submit("c-1", **market())

    assert record["order_status"] == "filled"
    assert len(desk.fills(record["order_id"])) == 1
    assert desk.store.positions("default") == {"AAPL": 100.0}
    assert "execution_anomaly" in desk.kinds()
    assert desk.anomalies() == ["duplicate_execution"]
    assert desk.fake.new_orders[record["order_id"]] == 1


def test_fill_after_cancel_when_the_fill_wins_then_cancel_refused_and_the_fill_booked(
    desk: Desk,
) -> None:
    resting = desk.submit("c-1")
    desk.fake.inject(FillAfterCancel())

    attempt = desk.gateway.cancel(resting["order_id"], TRADER)
    eventually(lambda: desk.stored(resting["order_id"]).status == OrderStatus.FILLED)

    assert attempt.kind == "broker_error"
    assert attempt.record["fail_closed_triggers"] == ["broker_api_error"]
    assert "too late" in attempt.record["broker_response"]["detail"]
    assert len(desk.fills(resting["order_id"])) == 1
    assert desk.store.positions("default") == {"AAPL": 100.0}


def test_resting_order_when_the_desk_fills_it_later_then_the_report_is_booked(
    desk: Desk,
) -> None:
    resting = desk.submit("c-1")

    desk.fake.fill(resting["order_id"], price=150.25)
    eventually(lambda: desk.stored(resting["order_id"]).status == OrderStatus.FILLED)

    assert [(f.quantity, f.price) for f in desk.fills(resting["order_id"])] == [(100.0, 150.25)]


# --- the wire and the connection ---------------------------------------------------


@pytest.mark.parametrize("kind", ["checksum", "body_length"])
def test_garbled_answer_when_dropped_then_recovered_by_resend_and_booked_once(
    desk: Desk, kind: str
) -> None:
    desk.fake.inject(Garbled(kind))

    record = desk.submit("c-1", **market())
    eventually(lambda: desk.stored(record["order_id"]).status == OrderStatus.FILLED)

    assert desk.fake.new_orders[record["order_id"]] == 1
    assert len(desk.fills(record["order_id"])) == 1
    assert desk.store.positions("default") == {"AAPL": 100.0}


def test_disconnect_mid_order_when_back_then_reconciled_and_never_sent_twice(desk: Desk) -> None:
    desk.fake.inject(DisconnectMidOrder())

    record = desk.submit("c-1", **market())
    eventually(lambda: desk.adapter.connection_problem() is None and desk.adapter.connections >= 2)
    eventually(lambda: desk.stored(record["order_id"]).status == OrderStatus.FILLED)
    desk.gateway.recover(stale_after_s=0)

    assert record["order_status"] in ("submitted", "filled")
    assert desk.fake.new_orders == {record["order_id"]: 1}
    assert len(desk.fills(record["order_id"])) == 1
    assert desk.store.positions("default") == {"AAPL": 100.0}
    assert desk.gateway.readiness() == []


def test_disconnect_after_the_ack_when_back_then_the_fill_made_meanwhile_is_booked(
    desk: Desk,
) -> None:
    desk.fake.inject(DisconnectMidOrder(after_ack=True))

    record = desk.submit("c-1", **market())
    eventually(lambda: desk.stored(record["order_id"]).status == OrderStatus.FILLED)

    assert record["order_status"] in ("accepted", "filled")
    assert desk.fake.new_orders == {record["order_id"]: 1}
    assert len(desk.fills(record["order_id"])) == 1


def test_submit_when_the_session_is_down_then_blocked_and_nothing_sent(desk: Desk) -> None:
    desk.fake.stop()
    eventually(lambda: desk.adapter.connection_problem() is not None)

    record = desk.submit("c-1", **market())

    assert record["order_status"] == "blocked"
    assert "broker_api_error" in record["fail_closed_triggers"]


def test_sequence_gap_through_the_gateway_when_recovered_by_resend_then_booked_once(
    desk: Desk,
) -> None:
    desk.submit("c-0")  # logged on, an order resting
    desk.fake.inject(SequenceGap(skip=3))

    record = desk.submit("c-1", **market())
    eventually(lambda: desk.stored(record["order_id"]).status == OrderStatus.FILLED)

    assert desk.fake.new_orders[record["order_id"]] == 1
    assert [f.quantity for f in desk.fills(record["order_id"])] == [100.0]
    assert len([m for m in desk.fake.received if m.get(35) == b"2"]) == 1
    eventually(lambda: desk.store.session_log(NAME).sequences()[1] == desk.fake.next_out)
    assert desk.anomalies() == []


def test_silence_mid_order_when_the_session_comes_back_then_resolved_once_and_ready(
    desk: Desk,
) -> None:
    desk.rewire(heartbeat_s=1)
    assert desk.adapter.check_credentials() is True
    desk.fake.inject(Silence())  # reads our NewOrderSingle, answers nothing

    record = desk.submit("c-1", **market())
    unknown = desk.gateway.readiness()
    eventually(lambda: desk.adapter.connections >= 2 and desk.adapter.connection_problem() is None)
    eventually(lambda: desk.stored(record["order_id"]).status == OrderStatus.FILLED)
    desk.gateway.recover(stale_after_s=0)

    # no answer: the outcome is unknown and said so; the broker takes no new order meanwhile
    assert record["order_status"] == "submitted"
    assert any("unknown" in reason for reason in unknown), unknown
    # the NewOrderSingle came back in our answer to the fake's ResendRequest (43=Y) and
    # was taken once; nothing else was ever sent under its ClOrdID
    assert desk.fake.new_orders == {record["order_id"]: 1}
    assert desk.sent("D", record["order_id"]) == 2  # the original, unread, and its resend
    assert [f.quantity for f in desk.fills(record["order_id"])] == [100.0]
    assert desk.store.positions("default") == {"AAPL": 100.0}
    assert desk.gateway.readiness() == []
    assert desk.anomalies() == []


def test_restart_mid_order_when_filled_while_away_then_booked_once_with_the_numbers_resumed(
    desk: Desk,
) -> None:
    resting = desk.submit("c-1")
    order_id = resting["order_id"]
    assert resting["order_status"] == "accepted"
    desk.adapter.close()  # the service stops: Logout, the store keeps the session
    out_before, in_before = desk.store.session_log(NAME).sequences()
    received_before = len(desk.fake.received)

    desk.fake.fill(order_id, price=150.25)  # while nobody is logged on
    desk.rewire()
    eventually(lambda: desk.stored(order_id).status == OrderStatus.FILLED)

    logon = next(m for m in desk.fake.received[received_before:] if m.get(35) == b"A")
    assert int(logon.get(34) or b"0") == out_before  # our numbers resumed, not back to 1
    assert not any(b"too low" in (m.get(58) or b"") for m in desk.fake.sent)
    eventually(
        lambda: desk.store.session_log(NAME).sequences() == (desk.fake.next_in, desk.fake.next_out)
    )
    assert desk.store.session_log(NAME).sequences()[1] > in_before
    assert desk.fake.new_orders[order_id] == 1
    assert [(f.quantity, f.price) for f in desk.fills(order_id)] == [(100.0, 150.25)]
    assert desk.store.positions("default") == {"AAPL": 100.0}
    assert desk.anomalies() == []
