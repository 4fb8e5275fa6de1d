"""The gateway in paper mode on the oms_rest adapter, against the fake OMS
(tests/fakes/oms_rest.py), the socket feeding the gateway as the service wires
it (`subscribe` -> `Gateway.report`): every fault the fake injects (issue 11,
Faults).

Each fault ends in an order blocked with `broker_api_error` (the OMS's words in
`broker_response`), in the order as the OMS holds it (found by client order id
after an unknown outcome), or in a recorded `execution_anomaly`; the fake never
receives a submit twice, every execution is booked exactly once, and the chain
verifies. A restarted adapter resumes the socket from the sequence it booked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.base import MemoryJournal
from adapters.oms_rest import OmsRestAdapter
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.gateway import Actor, Gateway
from engine.gateway.outcome import Outcome
from engine.lifecycle import OrderStatus
from tests.conftest import POLICIES, FixedClock, OrderBuilder, _load_policies_once
from tests.fakes.oms_rest import (
    CancelReject,
    Disconnect,
    DuplicateExecution,
    FakeOms,
    Garbled,
    HttpError,
    PartialFill,
    Reject,
    SequenceGap,
    Silence,
    Slow,
)

TRADER = Actor("t-1", "trader")
COMPLIANCE = Actor("c-1", "compliance")
TIMEOUT_S = 1.0
BID, ASK = 150.20, 150.30  # the quote tests/conftest.py's orders carry
WAIT_S = 10.0


def wait_for(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@dataclass
class Paper:
    gateway: Gateway
    fake: FakeOms
    adapter: OmsRestAdapter
    journal: MemoryJournal
    clock: FixedClock

    def submit(self, order: dict[str, Any]) -> Outcome:
        return self.gateway.submit(order, TRADER)

    def stored(self, order_id: str) -> Any:
        stored = self.gateway.store.order(order_id)
        assert stored is not None
        return stored

    def status(self, order_id: str) -> OrderStatus:
        return OrderStatus(self.stored(order_id).status)

    def fills(self, order_id: str) -> list[Any]:
        return self.gateway.store.transact(lambda w: w.fills(order_id))

    def anomalies(self) -> list[str]:
        return [
            r["anomaly"]
            for r in self.gateway.store.audit_records()
            if r.get("kind") == "execution_anomaly"
        ]

    def chain_ok(self) -> bool:
        return verify_chain(self.gateway.store.audit_records()).ok

    def restart(self) -> OmsRestAdapter:
        """The service restarted: a new adapter on the same OMS and journal, a new
        gateway on the same store, recovered, the socket wired as before."""
        self.adapter.close()
        self.adapter = connect(self.fake, self.journal, self.clock)
        evaluator = Evaluator(_load_policies_once(POLICIES), self.clock)
        self.gateway = Gateway(self.gateway.store, evaluator, {"paper": self.adapter}, self.clock)
        self.gateway.recover()
        self.adapter.subscribe(self.gateway.report)
        return self.adapter


def connect(fake: FakeOms, journal: MemoryJournal, clock: FixedClock) -> OmsRestAdapter:
    return OmsRestAdapter(
        base_url=fake.url,
        ws_url=fake.ws_url,
        token=fake.token,
        clock=clock,
        timeout_s=TIMEOUT_S,
        name="oms_rest-paper",
        journal=journal,
        poll_s=0.1,
    )


@pytest.fixture
def paper(tmp_path: Path, clock: FixedClock) -> Iterator[Paper]:
    with FakeOms(heartbeat_s=0.2) as fake:
        fake.set_quote("AAPL", BID, ASK)
        journal = MemoryJournal()
        adapter = connect(fake, journal, clock)
        store = SqlStore(f"sqlite:///{tmp_path / 'apex.db'}")
        store.migrate()
        evaluator = Evaluator(_load_policies_once(POLICIES), clock)
        gateway = Gateway(store, evaluator, {"paper": adapter}, clock)
        gateway.recover()
        gateway.check_broker("paper", COMPLIANCE)
        gateway.set_mode("paper", COMPLIANCE, "test")
        adapter.subscribe(gateway.report)
        paper = Paper(gateway, fake, adapter, journal, clock)
        assert wait_for(lambda: paper.adapter.stream_state == "streaming")
        try:
            yield paper
        finally:
            paper.adapter.close()
            store.close()


def resting(make_order: OrderBuilder, **changes: Any) -> dict[str, Any]:
    return make_order(limit_price=150.00, **changes)


def broker_error_of(record: dict[str, Any]) -> dict[str, Any]:
    reasons = [r for r in record["reasons"] if r.get("trigger") == "broker_api_error"]
    assert reasons, record["reasons"]
    return reasons[-1]


def rest(paper: Paper, make_order: OrderBuilder, quantity: float = 100) -> str:
    outcome = paper.submit(resting(make_order, quantity=quantity))
    assert outcome.record["order_status"] == OrderStatus.ACCEPTED
    return str(outcome.record["order_id"])


# --- refusals and unknown outcomes ------------------------------------------------------------


def test_reject_when_the_oms_refuses_the_order_then_blocked_with_its_words(
    paper: Paper, make_order: OrderBuilder
) -> None:
    paper.fake.inject(Reject("risk limit exceeded"))

    outcome = paper.submit(make_order(limit_price=ASK))

    order_id = outcome.record["order_id"]
    assert outcome.record["order_status"] == OrderStatus.BLOCKED
    assert "risk limit exceeded" in broker_error_of(outcome.record)["detail"]
    assert paper.fake.received(order_id) == 1
    assert paper.gateway.store.positions("default") == {}
    assert paper.chain_ok()


def test_5xx_on_submit_when_the_oms_took_nothing_then_blocked_with_broker_api_error(
    paper: Paper, make_order: OrderBuilder
) -> None:
    paper.fake.inject(HttpError(503, "matching engine restarting", code="unavailable"))

    outcome = paper.submit(make_order(limit_price=ASK))

    order_id = outcome.record["order_id"]
    assert outcome.record["order_status"] == OrderStatus.BLOCKED
    assert "matching engine restarting" in broker_error_of(outcome.record)["detail"]
    assert paper.fake.received(order_id) == 1
    assert paper.fake.orders() == []
    assert paper.chain_ok()


@pytest.mark.parametrize(
    "fault", [Disconnect(), Slow(seconds=TIMEOUT_S * 3)], ids=["disconnect", "slow"]
)
def test_submit_when_its_answer_is_lost_after_the_order_was_taken_then_found_not_resent(
    paper: Paper, make_order: OrderBuilder, fault: Disconnect | Slow
) -> None:
    paper.fake.inject(fault)

    outcome = paper.submit(make_order(limit_price=ASK))

    order_id = outcome.record["order_id"]
    assert outcome.kind == "routed"
    assert outcome.record["order_status"] == OrderStatus.FILLED
    assert paper.fake.received(order_id) == 1
    assert [f.quantity for f in paper.fills(order_id)] == [100.0]
    assert paper.gateway.store.positions("default") == {"AAPL": 100.0}
    assert paper.chain_ok()


def test_cancel_reject_when_the_oms_refuses_the_cancel_then_broker_error_and_order_works(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = rest(paper, make_order)
    paper.fake.inject(CancelReject("order is locked at the venue"))

    refused = paper.gateway.cancel(order_id, TRADER)
    cancelled = paper.gateway.cancel(order_id, TRADER)

    assert "order is locked at the venue" in str(refused.record)
    assert refused.record["order_status"] != OrderStatus.CANCELLED
    assert refused.record["fail_closed_triggers"] == ["broker_api_error"]
    assert cancelled.record["order_status"] == OrderStatus.CANCELLED
    assert paper.fake.order(order_id)["status"] == "canceled"
    assert paper.fake.requests.count(("POST", f"/v1/orders/{order_id}/cancel")) == 2
    assert paper.fake.received(order_id) == 1
    assert paper.chain_ok()


# --- executions -----------------------------------------------------------------------------


def test_partial_fills_when_the_rest_fills_later_then_exactly_the_total_is_booked(
    paper: Paper, make_order: OrderBuilder
) -> None:
    paper.fake.inject(PartialFill(0.4))
    outcome = paper.submit(make_order(limit_price=ASK))
    order_id = outcome.record["order_id"]
    assert outcome.record["order_status"] == OrderStatus.PARTIALLY_FILLED

    paper.fake.fill(order_id, 60, ASK)

    assert wait_for(lambda: paper.status(order_id) == OrderStatus.FILLED)
    assert [f.quantity for f in paper.fills(order_id)] == [40.0, 60.0]
    assert paper.gateway.store.positions("default") == {"AAPL": 100.0}
    assert paper.anomalies() == []
    assert paper.fake.received(order_id) == 1


def test_fill_after_cancel_when_the_oms_reports_it_then_booked_as_an_anomaly(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = rest(paper, make_order)
    assert paper.gateway.cancel(order_id, TRADER).record["order_status"] == OrderStatus.CANCELLED

    paper.fake.late_fill(order_id, 30, 150.00)

    assert wait_for(lambda: "fill_after_cancel" in paper.anomalies())
    assert [f.quantity for f in paper.fills(order_id)] == [30.0]
    assert paper.gateway.store.positions("default") == {"AAPL": 30.0}
    assert paper.fake.received(order_id) == 1
    assert paper.chain_ok()


def test_overfill_when_the_oms_executes_beyond_the_quantity_then_an_anomaly(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = rest(paper, make_order)

    paper.fake.fill(order_id, 150, 150.00)

    assert wait_for(lambda: "overfill" in paper.anomalies())
    assert [f.quantity for f in paper.fills(order_id)] == [150.0]
    assert paper.fake.received(order_id) == 1
    assert paper.chain_ok()


def test_duplicate_execution_when_sent_twice_on_socket_and_cursor_then_booked_once(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = rest(paper, make_order)
    paper.fake.inject(DuplicateExecution())

    paper.fake.fill(order_id, 100, 150.00)

    assert wait_for(lambda: paper.status(order_id) == OrderStatus.FILLED)
    assert wait_for(lambda: paper.adapter.booked == paper.fake.last_sequence)
    executions = [e for e in paper.fake.events() if e["type"] == "execution"]
    assert len(executions) == 2  # the OMS sent the one execution twice
    assert paper.adapter.poll() == []  # the cursor has both: nothing new
    assert paper.adapter.duplicates == 1
    assert [f.quantity for f in paper.fills(order_id)] == [100.0]
    assert paper.gateway.store.positions("default") == {"AAPL": 100.0}
    assert paper.anomalies() == []
    assert paper.fake.received(order_id) == 1
    assert paper.chain_ok()


# --- the socket ---------------------------------------------------------------------------------


def test_sequence_gap_when_an_event_is_skipped_on_the_socket_then_read_from_the_cursor(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = rest(paper, make_order)
    paper.fake.inject(SequenceGap())  # the execution never reaches the socket

    paper.fake.fill(order_id, 100, 150.00)

    assert wait_for(lambda: paper.status(order_id) == OrderStatus.FILLED)
    assert paper.adapter.gaps >= 1
    assert [f.quantity for f in paper.fills(order_id)] == [100.0]
    assert paper.anomalies() == []
    assert paper.fake.received(order_id) == 1
    assert paper.chain_ok()


@pytest.mark.parametrize("kind", ["not_json", "missing_order"])
def test_garbled_message_on_the_socket_then_not_used_and_the_event_read_from_the_cursor(
    paper: Paper, make_order: OrderBuilder, kind: str
) -> None:
    order_id = rest(paper, make_order)
    paper.fake.inject(Garbled(kind))

    paper.fake.fill(order_id, 100, 150.00)

    assert wait_for(lambda: paper.status(order_id) == OrderStatus.FILLED)
    assert paper.adapter.garbled == 1
    assert paper.adapter.unreadable == 0  # the cursor's copy was read
    assert [f.quantity for f in paper.fills(order_id)] == [100.0]
    assert paper.anomalies() == []
    assert paper.fake.received(order_id) == 1
    assert paper.chain_ok()


def test_silence_past_the_heartbeat_then_the_socket_is_dropped_and_resumed_from_booked(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = rest(paper, make_order)
    assert wait_for(lambda: paper.adapter.booked == paper.fake.last_sequence)
    booked = paper.adapter.booked
    paper.fake.inject(Silence())

    paper.fake.fill(order_id, 100, 150.00)

    assert wait_for(lambda: paper.status(order_id) == OrderStatus.FILLED)
    assert wait_for(lambda: paper.adapter.connections >= 2)
    assert paper.fake.ws_sessions[0] == 0
    assert all(after >= booked for after in paper.fake.ws_sessions[1:])
    assert [f.quantity for f in paper.fills(order_id)] == [100.0]
    assert paper.fake.received(order_id) == 1
    assert paper.anomalies() == []
    assert paper.chain_ok()


def test_socket_down_then_fills_booked_from_the_cursor_and_the_socket_resumes_later(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = rest(paper, make_order)
    paper.fake.socket_down(True)
    assert wait_for(lambda: paper.adapter.stream_state == "polling")
    assert paper.adapter.connection_problem() is None  # the cursor stands in

    paper.fake.fill(order_id, 100, 150.00)
    assert wait_for(lambda: paper.status(order_id) == OrderStatus.FILLED)
    booked = paper.adapter.booked
    paper.fake.socket_down(False)

    assert wait_for(lambda: paper.adapter.stream_state == "streaming")
    assert paper.fake.ws_sessions[-1] == booked
    assert [f.quantity for f in paper.fills(order_id)] == [100.0]
    assert paper.gateway.store.positions("default") == {"AAPL": 100.0}


def test_oms_down_then_a_connection_problem_and_no_new_order_is_sent(
    paper: Paper, make_order: OrderBuilder
) -> None:
    paper.fake.socket_down(True)
    paper.fake.stop()

    assert wait_for(lambda: paper.adapter.connection_problem() is not None)
    outcome = paper.submit(make_order(limit_price=ASK))

    assert outcome.kind != "routed"
    assert paper.fake.requests.count(("POST", "/v1/orders")) == 0


# --- restart ------------------------------------------------------------------------------------


def test_restart_mid_session_then_the_socket_resumes_from_the_booked_sequence(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = rest(paper, make_order)
    assert wait_for(lambda: paper.adapter.booked == paper.fake.last_sequence)
    booked = paper.adapter.booked
    assert paper.journal.load()["cursor"] == {"sequence": booked}
    paper.adapter.close()

    paper.fake.fill(order_id, 100, 150.00)  # while no adapter listens
    adapter = paper.restart()

    assert adapter.booked == booked  # from the journal
    assert wait_for(lambda: paper.status(order_id) == OrderStatus.FILLED)
    assert wait_for(lambda: len(paper.fake.ws_sessions) == 2)
    assert paper.fake.ws_sessions == [0, booked]
    assert wait_for(lambda: adapter.booked == paper.fake.last_sequence)
    assert [f.quantity for f in paper.fills(order_id)] == [100.0]
    assert paper.fake.received(order_id) == 1
    assert paper.anomalies() == []
    assert paper.chain_ok()
