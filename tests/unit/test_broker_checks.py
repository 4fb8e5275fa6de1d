"""The configured brokers inside the gateway (engine/gateway/brokers.py and the
capability checks): paper needs a recorded credential check, a cancel the
broker cannot take is refused before it is asked, reduce-only is emulated for
a broker without it. On the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from adapters.simulated import SimulatedBroker
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.broker import BrokerAck, Fill
from engine.gateway import Actor, Gateway, ModeRefused
from engine.gateway.brokers import CHECK_MAX_AGE_S, check_key
from engine.lifecycle import OrderStatus
from tests import broker_stub
from tests.broker_stub import GOOD_SECRET, STUB_CAPABILITIES, StubBroker
from tests.conftest import POLICIES, FixedClock, OrderBuilder, _load_policies_once

TRADER = Actor("t-1", "trader")
COMPLIANCE = Actor("c-1", "compliance")
ADMIN = Actor("a-1", "admin")

Maker = Callable[..., Gateway]


@pytest.fixture
def make_gateway(store_url: str, clock: FixedClock) -> Iterator[Maker]:
    stores: list[SqlStore] = []

    def make(paper: Any = None) -> Gateway:
        store = SqlStore(store_url)
        store.migrate()
        stores.append(store)
        brokers: dict[str, Any] = {"simulation": SimulatedBroker(clock)}
        if paper is not None:
            brokers["paper"] = paper
        gateway = Gateway(store, Evaluator(_load_policies_once(POLICIES), clock), brokers, clock)
        gateway.recover()
        return gateway

    yield make
    for store in stores:
        store.close()


def stub(secret: str = GOOD_SECRET, **caps: Any) -> StubBroker:
    return StubBroker("stub-paper", secret, replace(STUB_CAPABILITIES, **caps))


def in_paper(gateway: Gateway) -> Gateway:
    assert gateway.check_broker("paper", ADMIN)["ok"] is True
    gateway.set_mode("paper", COMPLIANCE, "test")
    return gateway


# --- paper needs a recorded credential check ------------------------------------------


def test_paper_requirements_when_no_broker_configured_then_says_so(make_gateway: Maker) -> None:
    assert make_gateway().requirements("paper") == ["no broker configured for paper mode"]


def test_paper_requirements_when_never_checked_then_refused_without_asking_the_broker(
    make_gateway: Maker,
) -> None:
    broker = stub(secret="wrong")  # asking it would raise: nothing may ask it
    gateway = make_gateway(broker)

    missing = gateway.requirements("paper")

    assert missing == [
        "stub-paper credentials have not been checked (run `apex-oms brokers check`)"
    ]
    with pytest.raises(ModeRefused):
        gateway.set_mode("paper", COMPLIANCE, "try")
    assert gateway.mode() == "research"


def test_check_when_credentials_valid_then_recorded_and_paper_may_be_entered(
    make_gateway: Maker,
) -> None:
    gateway = make_gateway(stub())

    record = gateway.check_broker("paper", ADMIN)
    gateway.set_mode("paper", COMPLIANCE, "go")

    assert gateway.mode() == "paper"
    assert (record["kind"], record["broker"], record["role"], record["ok"]) == (
        "broker_check",
        "stub-paper",
        "paper",
        True,
    )
    assert (record["account"], record["account_status"], record["reason"]) == (
        "stub-account-1",
        "ACTIVE",
        "",
    )
    kept = gateway.store.setting(check_key("stub-paper"))
    assert (kept["ok"], kept["account"]["account_number"]) == (True, "PA0001")
    chain = list(gateway.store.audit_records())
    assert [r.get("kind") for r in chain] == ["broker_check", "mode_changed"]
    assert verify_chain(chain).ok
    # the broker's whole answer held a secret; only the account's id and status were kept
    assert GOOD_SECRET not in json.dumps(chain) + json.dumps(kept)


def test_check_when_credentials_fail_then_recorded_as_failed_naming_the_broker(
    make_gateway: Maker,
) -> None:
    gateway = make_gateway(stub(secret="not-the-secret-42"))

    record = gateway.check_broker("paper", ADMIN)

    assert record["ok"] is False
    assert record["reason"] == (
        "stub-paper credential check failed: BrokerError: 401 request is not authorized"
    )
    [missing] = gateway.requirements("paper")
    assert missing.startswith("stub-paper credential check failed at ")
    assert "not-the-secret-42" not in json.dumps(list(gateway.store.audit_records()))


def test_check_when_older_than_a_day_then_paper_needs_a_new_one(
    make_gateway: Maker, clock: FixedClock
) -> None:
    gateway = make_gateway(stub())
    gateway.check_broker("paper", ADMIN)

    clock.advance(CHECK_MAX_AGE_S - 1)
    assert gateway.requirements("paper") == []
    clock.advance(2)
    [missing] = gateway.requirements("paper")
    assert "more than 24 h ago" in missing


def test_check_key_when_name_is_long_then_a_short_digest_key() -> None:
    assert check_key("alpaca-paper") == "brokers.checked.alpaca-paper"
    long = check_key("a-very-long-broker-name-indeed")
    assert len(long) == 32 and long.startswith("brokers.checked.")


# --- cancel: refused before the broker when it cannot cancel --------------------------------


def test_cancel_when_the_broker_cannot_cancel_then_blocked_broker_capability_and_still_working(
    make_gateway: Maker, make_order: OrderBuilder
) -> None:
    broker = stub(cancel=False)
    gateway = in_paper(make_gateway(broker))
    order = gateway.submit(make_order(), TRADER)
    assert order.record["order_status"] == "accepted"
    order_id = order.record["order_id"]

    refused = gateway.cancel(order_id, TRADER)

    assert refused.kind == "blocked"
    record = refused.record
    assert (record["operation"], record["order_status"]) == ("cancel", "accepted")
    assert record["fail_closed_triggers"] == ["broker_capability"]
    assert record["reasons"][-1] == {
        "check": "broker", "result": "fail", "code": "BROKER_CANNOT_CANCEL",
        "trigger": "broker_capability",
        "detail": "broker stub-paper cannot cancel orders (capability cancel: false)",
    }  # fmt: skip
    assert broker.known[order_id].status == OrderStatus.ACCEPTED  # never asked
    stored = gateway.store.order(order_id)
    assert stored is not None and stored.status == OrderStatus.ACCEPTED


# --- reduce-only emulated for a broker without it ---------------------------------------------


def long_100(gateway: Gateway, make_order: OrderBuilder) -> None:
    bought = gateway.submit(make_order(), TRADER)
    order_id = bought.record["order_id"]
    fill = Fill(100, 150.25, gateway._desk.clock(), f"X-{order_id}")
    ack = BrokerAck(order_id, f"B-{order_id}", OrderStatus.FILLED, 100, 150.25, (fill,))
    gateway.report(ack)
    assert gateway.store.positions("default") == {"AAPL": 100}


def test_reduce_only_when_emulated_and_order_reduces_then_sent_without_the_flag(
    make_gateway: Maker, make_order: OrderBuilder
) -> None:
    gateway = in_paper(make_gateway(stub()))
    long_100(gateway, make_order)

    outcome = gateway.submit(make_order(side="sell", quantity=40, reduce_only=True), TRADER)

    assert (outcome.kind, outcome.record["order_status"]) == ("routed", "accepted")
    sent = broker_stub.SENT[-1]
    assert (sent.order_id, sent.side, sent.quantity) == (outcome.record["order_id"], "sell", 40)
    assert sent.reduce_only is False  # the broker has no such flag: the gate proved it


def test_reduce_only_when_emulated_and_order_would_grow_the_position_then_blocked(
    make_gateway: Maker, make_order: OrderBuilder
) -> None:
    gateway = in_paper(make_gateway(stub()))
    long_100(gateway, make_order)
    sent_before = len(broker_stub.SENT)

    more = gateway.submit(make_order(side="buy", quantity=10, reduce_only=True), TRADER)
    flip = gateway.submit(
        make_order(side="sell", quantity=150, reduce_only=True, short_sale=True, locate_id="L-1"),
        TRADER,
    )

    for outcome in (more, flip):
        assert outcome.kind == "blocked"
        assert outcome.record["fail_closed_triggers"] == ["risk_denied"]
        assert [r["code"] for r in outcome.record["reasons"]] == ["REDUCE_ONLY_WOULD_INCREASE"]
    assert len(broker_stub.SENT) == sent_before


def test_reduce_only_when_neither_native_nor_emulated_then_blocked_naming_broker_and_capability(
    make_gateway: Maker, make_order: OrderBuilder
) -> None:
    gateway = in_paper(make_gateway(stub(reduce_only_emulated=False)))
    long_100(gateway, make_order)

    outcome = gateway.submit(make_order(side="sell", quantity=40, reduce_only=True), TRADER)

    assert outcome.kind == "blocked"
    assert outcome.record["fail_closed_triggers"] == ["broker_capability"]
    [reason] = outcome.record["reasons"]
    assert reason["detail"] == (
        "broker_supports_reduce_only is false "
        "(broker stub-paper: reduce_only false (neither native nor emulated))"
    )


def test_order_type_the_broker_lacks_then_blocked_naming_broker_and_its_types(
    make_gateway: Maker, make_order: OrderBuilder
) -> None:
    gateway = in_paper(make_gateway(stub()))

    outcome = gateway.submit(make_order(order_type="stop", limit_price=None, stop_price=151.0),
                             TRADER)  # fmt: skip

    assert outcome.record["fail_closed_triggers"] == ["broker_capability"]
    assert outcome.record["reasons"][0]["detail"] == (
        "broker_supports_order_type is false (broker stub-paper: order_types [limit, market], "
        "got: stop)"
    )


# --- live: the unlock's step 4 reaches the configured live broker ------------------------------


def test_unlock_credentials_step_when_a_live_broker_is_configured_then_it_is_asked(
    store_url: str, clock: FixedClock
) -> None:
    live = StubBroker("stub-live", GOOD_SECRET)
    store = SqlStore(store_url)
    store.migrate()
    try:
        evaluator = Evaluator(_load_policies_once(POLICIES), clock)
        gateway = Gateway(store, evaluator, {"simulation": SimulatedBroker(clock), "live": live},
                          clock)  # fmt: skip

        assert gateway.broker_for("live") is live
        assert gateway.unlock._check_credentials() == (None, {"broker": "stub-live"})
        live.secret = "revoked"
        reason, _ = gateway.unlock._check_credentials()
        assert (
            reason
            == "stub-live credential check failed: BrokerError: 401 request is not authorized"
        )
    finally:
        store.close()
