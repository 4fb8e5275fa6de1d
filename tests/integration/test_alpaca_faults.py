"""The gateway in paper mode on the Alpaca adapter, against the fake Alpaca
(tests/fakes/alpaca.py) and alpaca-py's real clients: paper trading end to end,
and every fault the fake injects (issue 10, Faults).

Each fault ends in an order blocked with `broker_api_error` and Alpaca's words in
`broker_response`, or, when the order did reach Alpaca, in the order as Alpaca
holds it, found by client order id; the fake never receives an order twice, the
chain verifies, and polling books what a lost report hid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.alpaca import AlpacaAdapter
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.gateway import Actor, Gateway
from engine.gateway.outcome import Outcome
from engine.lifecycle import OrderStatus
from engine.models import Quote
from tests.conftest import POLICIES, FixedClock, OrderBuilder, _load_policies_once
from tests.fakes.alpaca import (
    Disconnect,
    FakeAlpaca,
    HttpError,
    LostReport,
    Malformed,
    PartialFill,
    Reject,
    Slow,
    StaleReplay,
)

TRADER = Actor("t-1", "trader")
COMPLIANCE = Actor("c-1", "compliance")
SYSTEM = Actor("system", "system")
TIMEOUT_S = 0.5
BID, ASK, LAST = 150.20, 150.30, 150.25  # the quote tests/conftest.py's orders carry


@dataclass
class Paper:
    gateway: Gateway
    fake: FakeAlpaca
    adapter: AlpacaAdapter

    def submit(self, order: dict[str, Any]) -> Outcome:
        return self.gateway.submit(order, TRADER)

    def poll(self) -> list[dict[str, Any]]:
        """What the gateway books when a quote arrives: the adapter polls Alpaca."""
        quote = Quote(bid=BID, ask=ASK, last=LAST)
        return self.gateway.market_quote("AAPL", quote, SYSTEM)

    def stored(self, order_id: str) -> Any:
        stored = self.gateway.store.order(order_id)
        assert stored is not None
        return stored

    def fills(self, order_id: str) -> list[Any]:
        return self.gateway.store.transact(lambda w: w.fills(order_id))

    def kinds(self) -> list[str]:
        return [
            r.get("kind") or f"order:{r['order_status']}"
            for r in self.gateway.store.audit_records()
        ]

    def anomalies(self) -> list[str]:
        return [
            r["anomaly"]
            for r in self.gateway.store.audit_records()
            if r.get("kind") == "execution_anomaly"
        ]

    def chain_ok(self) -> bool:
        return verify_chain(self.gateway.store.audit_records()).ok


@pytest.fixture
def paper(tmp_path: Path, clock: FixedClock) -> Iterator[Paper]:
    with FakeAlpaca() as fake:
        fake.set_quote("AAPL", BID, ASK, LAST)
        adapter = AlpacaAdapter(
            key_id=fake.key_id,
            secret_key=fake.secret_key,
            base_url=fake.url,
            data_url=fake.url,
            clock=clock,
            timeout_s=TIMEOUT_S,
            name="alpaca-paper",
        )
        store = SqlStore(f"sqlite:///{tmp_path / 'apex.db'}")
        store.migrate()
        evaluator = Evaluator(_load_policies_once(POLICIES), clock)
        gateway = Gateway(store, evaluator, {"paper": adapter}, clock)
        gateway.recover()
        gateway.check_broker("paper", COMPLIANCE)
        gateway.set_mode("paper", COMPLIANCE, "test")
        try:
            yield Paper(gateway, fake, adapter)
        finally:
            store.close()


def marketable(make_order: OrderBuilder, **changes: Any) -> dict[str, Any]:
    return make_order(limit_price=ASK, **changes)


def resting(make_order: OrderBuilder, **changes: Any) -> dict[str, Any]:
    return make_order(limit_price=150.00, **changes)


def broker_error_of(record: dict[str, Any]) -> dict[str, Any]:
    reasons = [r for r in record["reasons"] if r.get("trigger") == "broker_api_error"]
    assert reasons, record["reasons"]
    return reasons[-1]


# --- paper trading, end to end ----------------------------------------------------------


def test_submit_when_marketable_then_filled_at_the_ask_and_positions_follow(
    paper: Paper, make_order: OrderBuilder
) -> None:
    outcome = paper.submit(marketable(make_order))

    assert outcome.kind == "routed"
    assert outcome.record["order_status"] == OrderStatus.FILLED
    order_id = outcome.record["order_id"]
    assert paper.stored(order_id).filled_quantity == 100.0
    assert paper.gateway.store.positions("default") == {"AAPL": 100.0}
    assert paper.adapter.positions("default") == {"AAPL": 100.0}
    assert paper.fake.received(order_id) == 1
    assert paper.chain_ok()


def test_cancel_and_replace_when_order_rests_then_alpaca_follows_the_new_order(
    paper: Paper, make_order: OrderBuilder
) -> None:
    first = paper.submit(resting(make_order))
    second = paper.submit(resting(make_order, quantity=50))  # not a duplicate of the first
    first_id, second_id = first.record["order_id"], second.record["order_id"]
    assert second.record["order_status"] == OrderStatus.ACCEPTED, second.record["reasons"]
    assert first.record["order_status"] == OrderStatus.ACCEPTED
    broker_id = paper.stored(first_id).broker_order_id

    replaced = paper.gateway.replace(first_id, {"limit_price": 150.10}, TRADER)
    assert replaced.kind == "routed"
    assert replaced.record["order_status"] == OrderStatus.REPLACED
    # Alpaca made a new order; the gateway keeps the first id and the adapter follows
    newest = paper.fake.order(first_id)
    assert newest["replaces"] == broker_id
    assert newest["limit_price"] == "150.1"
    assert paper.stored(first_id).broker_order_id == broker_id

    cancelled = paper.gateway.cancel(first_id, TRADER)
    assert cancelled.record["order_status"] == OrderStatus.CANCELLED
    assert paper.fake.order(first_id)["status"] == "canceled"

    paper.fake.set_quote("AAPL", 149.90, 150.00, 149.95)  # reaches the other resting order
    booked = paper.poll()
    assert [(r["order_id"], r["order_status"]) for r in booked] == [(second_id, OrderStatus.FILLED)]
    history = paper.gateway.broker_history(paper.adapter, COMPLIANCE)
    assert [(h["order_id"], h["status"]) for h in history] == [
        (first_id, OrderStatus.CANCELLED),
        (second_id, OrderStatus.FILLED),
    ]
    assert paper.chain_ok()


# --- faults: each ends blocked with Alpaca's words, or as Alpaca holds the order ------------


def test_submit_when_alpaca_rejects_the_order_then_blocked_with_broker_api_error(
    paper: Paper, make_order: OrderBuilder
) -> None:
    paper.fake.inject(Reject())

    outcome = paper.submit(marketable(make_order))

    record = outcome.record
    assert (outcome.kind, record["order_status"]) == ("broker_error", OrderStatus.BLOCKED)
    assert "broker_api_error" in record["fail_closed_triggers"]
    assert "status rejected" in record["broker_response"]["detail"]
    assert paper.fake.received(record["order_id"]) == 1
    assert paper.chain_ok()


@pytest.mark.parametrize(
    ("status", "message"),
    [(403, "insufficient buying power"), (422, "qty must be > 0"), (429, "too many requests")],
    ids=["403", "422", "429"],
)
def test_submit_when_alpaca_answers_4xx_then_blocked_with_its_status_and_message(
    paper: Paper, make_order: OrderBuilder, status: int, message: str
) -> None:
    paper.fake.inject(HttpError(status, message, code=40310000))

    outcome = paper.submit(marketable(make_order))

    record = outcome.record
    assert (outcome.kind, record["order_status"]) == ("broker_error", OrderStatus.BLOCKED)
    detail = record["broker_response"]["detail"]
    assert f"HTTP {status}" in detail and message in detail and "40310000" in detail
    assert broker_error_of(record)["code"] == "BROKER_REJECTED"
    assert paper.fake.received(record["order_id"]) == 1
    assert paper.chain_ok()


def test_submit_when_alpaca_answers_5xx_then_asked_by_client_id_and_blocked(
    paper: Paper, make_order: OrderBuilder
) -> None:
    paper.fake.inject(HttpError(500, "internal server error", code=50010000))

    outcome = paper.submit(marketable(make_order))

    record = outcome.record
    assert (outcome.kind, record["order_status"]) == ("broker_error", OrderStatus.BLOCKED)
    assert (
        "HTTP 500 'internal server error' (code 50010000)" in (record["broker_response"]["detail"])
    )
    assert ("GET", "/v2/orders:by_client_order_id") in paper.fake.requests
    assert paper.fake.received(record["order_id"]) == 1
    assert paper.gateway.readiness() == []
    assert paper.chain_ok()


@pytest.mark.parametrize(
    "fault",
    [Slow(TIMEOUT_S * 3), Disconnect(), Malformed("not_json"), Malformed("missing_field")],
    ids=["slow", "disconnect", "not-json", "missing-field"],
)
def test_submit_when_the_answer_is_lost_then_found_by_client_id_and_never_sent_twice(
    paper: Paper, make_order: OrderBuilder, fault: Any
) -> None:
    paper.fake.inject(fault)

    outcome = paper.submit(marketable(make_order))

    # the order reached Alpaca and filled: booked as Alpaca holds it, found by its
    # client order id (blocking it would lose an order that is live at the broker)
    record = outcome.record
    assert (outcome.kind, record["order_status"]) == ("routed", OrderStatus.FILLED)
    assert paper.fake.received(record["order_id"]) == 1
    assert paper.gateway.store.positions("default") == {"AAPL": 100.0}
    assert paper.chain_ok()


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Slow(TIMEOUT_S * 3), "timeout"),
        (Disconnect(), "connection lost"),
        (Malformed("not_json"), "not JSON: '<html>"),
        (Malformed("missing_field"), "unparseable reply"),
    ],
    ids=["slow", "disconnect", "not-json", "missing-field"],
)
def test_submit_when_neither_submit_nor_lookup_answers_then_stays_unknown_until_recovery(
    paper: Paper, make_order: OrderBuilder, fault: Any, words: str
) -> None:
    paper.fake.inject(type(fault)(**{**fault.__dict__, "route": "submit"}))
    paper.fake.inject(type(fault)(**{**fault.__dict__, "route": "get"}))

    outcome = paper.submit(marketable(make_order))

    record = outcome.record
    order_id = record["order_id"]
    assert outcome.kind == "broker_error"
    assert record["broker_response"]["status"] == "unknown"
    assert words in record["broker_response"]["detail"]
    assert paper.stored(order_id).status == OrderStatus.SUBMITTED
    assert any("alpaca-paper" in why for why in paper.gateway.readiness())
    blocked = paper.submit(marketable(make_order))
    assert blocked.record["order_status"] == OrderStatus.BLOCKED  # the broker is not ready
    assert paper.fake.received(blocked.record["order_id"]) == 0

    paper.gateway.recover()  # Alpaca answers again: resolved by client order id

    assert paper.stored(order_id).status == OrderStatus.FILLED
    assert paper.gateway.readiness() == []
    assert paper.fake.received(order_id) == 1
    assert paper.chain_ok()


def test_fill_when_its_report_is_lost_then_a_later_poll_books_it_once(
    paper: Paper, make_order: OrderBuilder
) -> None:
    paper.fake.inject(LostReport(reads=1))

    outcome = paper.submit(marketable(make_order))
    order_id = outcome.record["order_id"]
    assert outcome.record["order_status"] == OrderStatus.ACCEPTED
    assert paper.gateway.store.positions("default") == {}

    booked = paper.poll()
    again = paper.poll()

    assert [r["order_status"] for r in booked] == [OrderStatus.FILLED]
    assert again == []
    assert paper.stored(order_id).filled_quantity == 100.0
    assert paper.gateway.store.positions("default") == {"AAPL": 100.0}
    assert paper.anomalies() == []
    assert paper.chain_ok()


def test_report_when_an_old_one_is_replayed_after_the_fill_then_nothing_is_booked_twice(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = paper.submit(resting(make_order)).record["order_id"]
    paper.fake.set_quote("AAPL", 149.90, 150.00, 149.95)
    assert [r["order_status"] for r in paper.poll()] == [OrderStatus.FILLED]

    paper.fake.inject(StaleReplay())
    assert paper.poll() == []  # the replayed report says less than Alpaca already did
    assert paper.poll() == []  # and the same report again is no news

    assert len(paper.fills(order_id)) == 1
    assert paper.gateway.store.positions("default") == {"AAPL": 100.0}
    assert paper.anomalies() == []
    assert paper.chain_ok()


def test_partial_fills_when_alpaca_fills_in_two_steps_then_two_executions_add_up(
    paper: Paper, make_order: OrderBuilder
) -> None:
    paper.fake.inject(PartialFill(0.4))

    outcome = paper.submit(marketable(make_order))
    order_id = outcome.record["order_id"]
    assert outcome.record["order_status"] == OrderStatus.PARTIALLY_FILLED
    assert paper.stored(order_id).filled_quantity == 40.0

    paper.fake.fill(order_id, 60.0, 150.40)
    booked = paper.poll()

    assert [r["order_status"] for r in booked] == [OrderStatus.FILLED]
    fills = paper.fills(order_id)
    assert [(f.quantity, f.price) for f in fills] == [(40.0, ASK), (60.0, 150.40)]
    assert len({f.execution_id for f in fills}) == 2
    assert paper.stored(order_id).average_price == pytest.approx(150.36)
    assert paper.anomalies() == []
    assert paper.chain_ok()


def test_fill_when_it_comes_after_the_cancel_then_booked_as_an_anomaly(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = paper.submit(resting(make_order)).record["order_id"]
    assert paper.gateway.cancel(order_id, TRADER).record["order_status"] == (OrderStatus.CANCELLED)

    paper.fake.late_fill(order_id, 30.0, 150.00)
    paper.poll()

    assert paper.anomalies() == ["fill_after_cancel"]
    assert paper.stored(order_id).filled_quantity == 30.0
    assert paper.gateway.store.positions("default") == {"AAPL": 30.0}
    assert paper.chain_ok()


@pytest.mark.parametrize(
    "fault",
    [HttpError(500, "upstream failure", route="cancel"), Slow(TIMEOUT_S * 3, route="cancel")],
    ids=["5xx", "slow"],
)
def test_cancel_when_alpaca_fails_then_clearly_failed_and_the_order_keeps_its_status(
    paper: Paper, make_order: OrderBuilder, fault: Any
) -> None:
    order_id = paper.submit(resting(make_order)).record["order_id"]
    paper.fake.inject(fault)

    outcome = paper.gateway.cancel(order_id, TRADER)

    assert outcome.kind == "broker_error"
    assert "broker_api_error" in outcome.record["fail_closed_triggers"]
    assert outcome.record["broker_response"]["status"] == "error"
    assert "alpaca-paper cancel" in outcome.record["broker_response"]["detail"]
    assert paper.stored(order_id).status == OrderStatus.ACCEPTED
    assert paper.chain_ok()


def test_replace_when_alpaca_refuses_then_clearly_failed_with_its_words(
    paper: Paper, make_order: OrderBuilder
) -> None:
    order_id = paper.submit(resting(make_order)).record["order_id"]
    paper.fake.inject(HttpError(422, "order is not replaceable", code=42210000, route="replace"))

    outcome = paper.gateway.replace(order_id, {"limit_price": 150.10}, TRADER)

    assert outcome.kind == "broker_error"
    assert "HTTP 422 'order is not replaceable'" in outcome.record["broker_response"]["detail"]
    assert paper.stored(order_id).status == OrderStatus.ACCEPTED
    assert paper.chain_ok()


# --- credentials ---------------------------------------------------------------------------


def test_check_credentials_when_keys_are_wrong_then_false_and_secret_not_in_messages(
    clock: FixedClock,
) -> None:
    with FakeAlpaca() as fake:
        adapter = AlpacaAdapter(
            key_id=fake.key_id,
            secret_key="wrong-secret-value",
            base_url=fake.url,
            data_url=fake.url,
            clock=clock,
            timeout_s=TIMEOUT_S,
        )

        assert adapter.check_credentials() is False
        assert "wrong-secret-value" not in repr(adapter)
