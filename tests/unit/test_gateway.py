"""engine.gateway on the real store (SQLite and PostgreSQL): the lifecycle, the
controls as policies, broker truth and its anomalies, crash recovery, ownership.

A scripted broker stands in where a test needs a broker to misbehave; it records
every call, as NautilusTrader's mock execution client does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from adapters.simulated import SimulatedBroker
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.broker import BrokerAck, BrokerError, BrokerOrder, Capabilities, Fill
from engine.gateway import Actor, Gateway
from engine.lifecycle import OrderStatus
from engine.models import Quote
from tests.conftest import POLICIES, FixedClock, OrderBuilder, _load_policies_once

TRADER = Actor("t-1", "trader")
COMPLIANCE = Actor("c-1", "compliance")
CAPS = Capabilities(
    order_types=frozenset({"market", "limit", "stop"}),
    time_in_force=frozenset({"day", "gtc", "ioc", "fok"}),
    reduce_only=True,
    cancel=True,
    replace=True,
    history=True,
    positions=True,
    market_data=False,
)


@dataclass
class ScriptedBroker:
    """Answers each call with the next scripted ack (or raises it); records calls."""

    clock: Callable[[], datetime]
    name: str = "scripted"
    capabilities: Capabilities = CAPS
    submits: list[Callable[[BrokerOrder], BrokerAck]] = field(default_factory=list)
    cancels: list[Callable[[str], BrokerAck]] = field(default_factory=list)
    known: dict[str, BrokerAck] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    reachable: bool = True

    def submit(self, order: BrokerOrder) -> BrokerAck:
        self.calls.append(("submit", order.order_id))
        ack = self.submits.pop(0)(order)
        self.known[order.order_id] = ack
        return ack

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        self.calls.append(("cancel", order_id))
        return self.cancels.pop(0)(order_id)

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        raise BrokerError("replace is not scripted")

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        return self.known[order_id]

    def find(self, order_id: str) -> BrokerAck | None:
        self.calls.append(("find", order_id))
        if not self.reachable:
            raise BrokerError("connection refused")
        return self.known.get(order_id)

    def order_history(self) -> list[BrokerAck]:
        return list(self.known.values())

    def positions(self, account: str) -> dict[str, float]:
        return {}

    def account(self, account: str) -> dict[str, object]:
        return {}

    def check_credentials(self) -> bool:
        return True

    def quote(self, symbol: str) -> Quote | None:
        return None

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        return []

    def fill(self, order: BrokerOrder, *quantities: float, status: OrderStatus) -> BrokerAck:
        fills = tuple(
            Fill(q, 150.0, self.clock(), f"X-{order.order_id}-{i}")
            for i, q in enumerate(quantities)
        )
        return BrokerAck(
            order.order_id, f"B-{order.order_id}", status, sum(quantities), 150.0, fills
        )


GatewayMaker = Callable[..., Gateway]


@pytest.fixture
def make_gateway(store_url: str, clock: FixedClock) -> Iterator[GatewayMaker]:
    stores: list[SqlStore] = []

    def make(broker: Any = None, *, mode: str = "simulation", recover: bool = True) -> Gateway:
        store = SqlStore(store_url)
        store.migrate()
        stores.append(store)
        if broker is None:
            broker = SimulatedBroker(clock, journal=store.journal("simulated"))
        evaluator = Evaluator(_load_policies_once(POLICIES), clock)
        gateway = Gateway(store, evaluator, {"simulation": broker}, clock)
        if recover:
            gateway.recover()
        if mode != gateway.mode():
            gateway.set_mode(mode, COMPLIANCE, "test")
        return gateway

    yield make
    for store in stores:
        store.close()


def records(gateway: Gateway) -> list[dict[str, Any]]:
    return list(gateway.store.audit_records())


def kinds(gateway: Gateway) -> list[str]:
    return [r.get("kind") or f"order:{r['order_status']}" for r in records(gateway)]


def _die_on_next_submit(broker: ScriptedBroker) -> None:
    """The process dies between the order's record and the broker's answer."""

    def crash(order: BrokerOrder) -> BrokerAck:
        raise KeyboardInterrupt

    broker.submits.append(crash)


# --- submit and the lifecycle ---------------------------------------------------------


def test_submit_in_simulation_when_approved_then_filled_and_position_booked(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()

    outcome = gateway.submit(make_order(order_type="market", limit_price=None), TRADER)

    assert (outcome.kind, outcome.record["order_status"]) == ("routed", "filled")
    assert gateway.store.positions("default") == {"AAPL": 100}
    statuses = [r["order_status"] for r in records(gateway) if r.get("order_id")]
    assert statuses == ["submitted", "filled"]
    assert verify_chain(records(gateway)).ok


def test_submit_in_research_mode_when_policies_also_fail_then_every_trigger_listed(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway(mode="research")

    outcome = gateway.submit(make_order(context={"entropy": 0.99}), TRADER)

    assert outcome.kind == "blocked"
    assert {"mode_research", "drift_entropy_unsafe"} <= set(outcome.record["fail_closed_triggers"])


def test_evaluate_in_research_mode_when_approved_then_evaluated(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway(mode="research")

    outcome = gateway.evaluate(make_order(), TRADER)

    assert (outcome.kind, outcome.record["order_status"]) == ("evaluated", "evaluated")


def test_submit_when_omega_in_force_then_blocked_and_cancel_still_passes(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)  # below the ask: rests
    assert resting.record["order_status"] == "accepted"

    gateway.invoke_omega(COMPLIANCE, "drill")
    blocked = gateway.submit(make_order(), TRADER)
    cancelled = gateway.cancel(resting.record["order_id"], TRADER)

    assert blocked.kind == "blocked"
    assert "omega_directive" in blocked.record["fail_closed_triggers"]
    assert (cancelled.kind, cancelled.record["order_status"]) == ("routed", "cancelled")
    assert [k for k in kinds(gateway) if not k.startswith("order")] == [
        "mode_changed",
        "omega_invoked",
    ]


def test_invoke_omega_with_cancel_open_orders_then_working_orders_cancelled(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)

    gateway.invoke_omega(COMPLIANCE, "drill", cancel_open=True)

    stored = gateway.store.order(resting.record["order_id"])
    assert stored is not None and stored.status == OrderStatus.CANCELLED
    assert gateway.omega()["active"] is True


def test_account_reducing_when_order_increases_position_then_blocked_and_reducing_order_passes(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    gateway.submit(make_order(order_type="market", limit_price=None), TRADER)  # long 100

    gateway.set_trading_state("default", "reducing", COMPLIANCE, "review")
    more = gateway.submit(make_order(order_type="market", limit_price=None), TRADER)
    less = gateway.submit(
        make_order(side="sell", quantity=40, order_type="market", limit_price=None), TRADER
    )

    assert more.kind == "blocked" and "risk_denied" in more.record["fail_closed_triggers"]
    assert (less.kind, less.record["order_status"]) == ("routed", "filled")
    assert gateway.trading_states()["accounts"]["default"]["state"] == "reducing"


def test_account_halted_then_its_orders_blocked_and_other_accounts_trade(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()

    gateway.set_trading_state("paper-1", "halted", COMPLIANCE, "breach")
    halted = gateway.submit(make_order(account="paper-1"), TRADER)
    other = gateway.submit(make_order(), TRADER)

    assert "omega_directive" in halted.record["fail_closed_triggers"]
    assert other.kind == "routed"
    assert kinds(gateway)[-4:] == [
        "trading_state_changed",
        "order:blocked",
        "order:submitted",
        "order:accepted",
    ]


# --- broker truth and anomalies -----------------------------------------------------------


def test_fill_beyond_order_quantity_then_booked_as_reported_anomaly_and_reducing(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)
    broker.submits.append(lambda o: broker.fill(o, 100, 60, status=OrderStatus.FILLED))
    gateway = make_gateway(broker)

    outcome = gateway.submit(make_order(), TRADER)

    assert outcome.record["order_status"] == "filled"
    assert gateway.store.positions("default") == {"AAPL": 160}
    anomaly = [r for r in records(gateway) if r.get("kind") == "execution_anomaly"]
    assert [(a["anomaly"], a["expected"], a["got"]) for a in anomaly] == [
        ("overfill", "cumulative quantity <= 100", "cumulative quantity 160")
    ]
    assert gateway.trading_states()["accounts"]["default"]["state"] == "reducing"


def test_fill_after_cancel_then_order_filled_anomaly_recorded_and_reducing(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)
    broker.submits.append(lambda o: broker.fill(o, status=OrderStatus.ACCEPTED))
    broker.cancels.append(lambda oid: BrokerAck(oid, f"B-{oid}", OrderStatus.CANCELLED))
    gateway = make_gateway(broker)
    order_id = gateway.submit(make_order(), TRADER).record["order_id"]
    gateway.cancel(order_id, TRADER)

    late = BrokerAck(
        order_id,
        f"B-{order_id}",
        OrderStatus.FILLED,
        100,
        150.0,
        (Fill(100, 150.0, clock(), "X-late"),),
    )
    applied = gateway.report(late)

    assert applied.record["order_status"] == "filled"
    assert [a["anomaly"] for a in applied.anomalies] == ["fill_after_cancel"]
    assert gateway.store.positions("default") == {"AAPL": 100}
    assert gateway.trading_states()["accounts"]["default"]["state"] == "reducing"


def test_same_execution_reported_twice_then_booked_once_and_anomaly(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)

    def twice(order: BrokerOrder) -> BrokerAck:
        fill = Fill(50, 150.0, clock(), "X-1")
        return BrokerAck(
            order.order_id, "B-1", OrderStatus.PARTIALLY_FILLED, 50, 150.0, (fill, fill)
        )

    broker.submits.append(twice)
    gateway = make_gateway(broker)

    outcome = gateway.submit(make_order(), TRADER)

    assert outcome.record["order_status"] == "partially_filled"
    assert gateway.store.positions("default") == {"AAPL": 50}
    assert [r["anomaly"] for r in records(gateway) if r.get("kind") == "execution_anomaly"] == [
        "duplicate_execution"
    ]


def test_repeated_report_of_the_same_fills_then_nothing_booked_twice(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)
    broker.submits.append(lambda o: broker.fill(o, 100, status=OrderStatus.FILLED))
    gateway = make_gateway(broker)
    order_id = gateway.submit(make_order(), TRADER).record["order_id"]

    applied = gateway.report(broker.known[order_id])

    assert applied.anomalies == ()
    assert gateway.store.positions("default") == {"AAPL": 100}


def test_broker_refusal_then_blocked_with_broker_words(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)
    broker.submits.append(
        lambda o: BrokerAck(o.order_id, "B-9", OrderStatus.BLOCKED, detail="insufficient funds")
    )
    gateway = make_gateway(broker)

    outcome = gateway.submit(make_order(), TRADER)

    assert outcome.kind == "broker_error"
    assert outcome.record["order_status"] == "blocked"
    assert "broker_api_error" in outcome.record["fail_closed_triggers"]
    assert outcome.record["broker_response"]["detail"] == "insufficient funds"


# --- crash recovery -----------------------------------------------------------------------


def test_recover_when_submitted_order_never_reached_broker_then_blocked_not_at_broker(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)
    _die_on_next_submit(broker)
    gateway = make_gateway(broker)
    with pytest.raises(KeyboardInterrupt):
        gateway.submit(make_order(), TRADER)
    broker.known.clear()

    restarted = make_gateway(broker, recover=False)
    assert restarted.readiness() != []
    restarted.recover()

    latest = [r for r in records(restarted) if r.get("order_id")][-1]
    assert latest["order_status"] == "blocked"
    assert latest["reasons"][-1]["code"] == "NOT_AT_BROKER"
    assert restarted.readiness() == []
    assert records(restarted)[-1]["kind"] == "reconciliation"
    assert ("submit", latest["order_id"]) in broker.calls
    assert broker.calls.count(("submit", latest["order_id"])) == 1


def test_recover_when_order_reached_broker_then_its_fills_booked(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)

    def accepted_then_crash(order: BrokerOrder) -> BrokerAck:
        broker.known[order.order_id] = broker.fill(order, 100, status=OrderStatus.FILLED)
        raise KeyboardInterrupt

    broker.submits.append(accepted_then_crash)
    gateway = make_gateway(broker)
    with pytest.raises(KeyboardInterrupt):
        gateway.submit(make_order(), TRADER)

    restarted = make_gateway(broker)

    stored = restarted.store.orders_in({OrderStatus.FILLED})
    assert [s.filled_quantity for s in stored] == [100]
    assert restarted.store.positions("default") == {"AAPL": 100}


def test_recover_when_broker_unreachable_then_new_orders_blocked_until_resolved(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)
    _die_on_next_submit(broker)
    gateway = make_gateway(broker)
    with pytest.raises(KeyboardInterrupt):
        gateway.submit(make_order(), TRADER)
    broker.reachable = False

    restarted = make_gateway(broker)
    blocked = restarted.submit(make_order(), TRADER)
    broker.reachable = True
    restarted.recover()
    broker.submits.append(lambda o: broker.fill(o, 100, status=OrderStatus.FILLED))
    after = restarted.submit(make_order(), TRADER)

    assert "broker_api_error" in blocked.record["fail_closed_triggers"]
    assert after.kind == "routed"
    assert restarted.readiness() == []


def test_simulated_broker_restarted_on_its_journal_then_working_order_cancellable(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)

    restarted = make_gateway()
    cancelled = restarted.cancel(resting.record["order_id"], TRADER)

    assert (cancelled.kind, cancelled.record["order_status"]) == ("routed", "cancelled")


# --- ownership ----------------------------------------------------------------------------


def test_trader_bound_to_one_account_when_touching_another_accounts_order_then_not_found(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    theirs = gateway.submit(make_order(account="paper-1", limit_price=150.0), TRADER)
    mine = Actor.of("t-2", "trader", ["default"])
    order_id = theirs.record["order_id"]

    assert gateway.cancel(order_id, mine).kind == "not_found"
    assert gateway.replace(order_id, {"quantity": 50}, mine).kind == "not_found"
    assert gateway.order(order_id, mine) is None
    assert gateway.list_orders(mine) == []
    assert gateway.order(order_id, TRADER) is not None


def test_trader_bound_to_one_account_when_submitting_for_another_then_blocked(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()

    outcome = gateway.submit(make_order(account="paper-1"), Actor.of("t-2", "trader", ["default"]))

    assert outcome.kind == "blocked"
    assert "compliance_failure" in outcome.record["fail_closed_triggers"]


def test_compliance_cancel_of_any_order_needs_a_reason_and_records_it(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)
    order_id = resting.record["order_id"]

    without = gateway.cancel(order_id, COMPLIANCE)
    with_reason = gateway.cancel(order_id, COMPLIANCE, "restricted list update")

    assert without.kind == "rejected"
    assert with_reason.record["comment"] == "restricted list update"
    assert with_reason.record["actor"] == "c-1"


def test_replace_when_approved_then_pending_then_replaced_with_new_terms(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)
    order_id = resting.record["order_id"]

    replaced = gateway.replace(order_id, {"quantity": 50, "limit_price": 150.1}, TRADER)

    assert (replaced.kind, replaced.record["order_status"]) == ("routed", "replaced")
    assert (replaced.record["quantity"], replaced.record["limit_price"]) == (50, 150.1)
    statuses = [r["order_status"] for r in records(gateway) if r.get("order_id") == order_id]
    assert statuses == ["submitted", "accepted", "pending_replace", "replaced"]


def test_replace_changing_the_symbol_then_rejected_naming_the_field(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)

    outcome = gateway.replace(resting.record["order_id"], {"symbol": "MSFT"}, TRADER)

    assert outcome.kind == "rejected"
    assert [e["field"] for e in outcome.record["errors"]] == ["symbol"]


def test_market_quote_fills_resting_order_then_booked(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)

    changed = gateway.market_quote(
        "AAPL", Quote(bid=149.8, ask=149.9, last=149.85, timestamp=clock()), TRADER
    )

    assert [(r["order_id"], r["order_status"]) for r in changed] == [
        (resting.record["order_id"], "filled")
    ]


def test_retry_of_an_order_whose_outcome_is_unresolved_then_pending_and_not_sent_again(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)
    _die_on_next_submit(broker)
    gateway = make_gateway(broker)
    order = make_order()
    with pytest.raises(KeyboardInterrupt):
        gateway.submit(order, TRADER)

    retry = gateway.submit(order, TRADER)

    assert (retry.kind, retry.replayed_kind) == ("replayed", "pending")
    assert retry.record["order_status"] == "submitted"
    assert [c for c in broker.calls if c[0] == "submit"] == [("submit", retry.record["order_id"])]


def test_submit_when_broker_fails_and_cannot_be_asked_then_order_stays_submitted_broker_unready(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)

    def timeout(order: BrokerOrder) -> BrokerAck:
        broker.reachable = False
        raise BrokerError("read timed out")

    broker.submits.append(timeout)
    gateway = make_gateway(broker)

    outcome = gateway.submit(make_order(), TRADER)
    after = gateway.submit(make_order(), TRADER)

    assert outcome.kind == "broker_error"
    assert outcome.record["order_status"] == "submitted"
    assert gateway.readiness() != []
    assert "broker_api_error" in after.record["fail_closed_triggers"]


def test_submit_when_broker_fails_but_holds_the_order_then_its_answer_is_booked(
    make_gateway: GatewayMaker, make_order: OrderBuilder, clock: FixedClock
) -> None:
    broker = ScriptedBroker(clock)

    def lost_answer(order: BrokerOrder) -> BrokerAck:
        broker.known[order.order_id] = broker.fill(order, 100, status=OrderStatus.FILLED)
        raise BrokerError("connection reset")

    broker.submits.append(lost_answer)
    gateway = make_gateway(broker)

    outcome = gateway.submit(make_order(), TRADER)

    assert (outcome.kind, outcome.record["order_status"]) == ("routed", "filled")
    assert gateway.store.positions("default") == {"AAPL": 100}


def test_auditor_when_cancelling_then_not_found_although_it_may_see_the_order(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)
    auditor = Actor("a-1", "auditor")
    order_id = resting.record["order_id"]

    assert gateway.order(order_id, auditor) is not None
    assert gateway.cancel(order_id, auditor, "looking").kind == "not_found"
    assert gateway.replace(order_id, {"quantity": 50}, auditor).kind == "not_found"


@pytest.mark.parametrize("role", ["auditor", "compliance"])
def test_submit_by_a_role_that_does_not_trade_then_blocked_account_not_permitted(
    make_gateway: GatewayMaker, make_order: OrderBuilder, role: str
) -> None:
    gateway = make_gateway()

    outcome = gateway.submit(make_order(), Actor("x-1", role))

    assert outcome.kind == "blocked"
    assert [r["code"] for r in outcome.record["reasons"]] == ["ACCOUNT_NOT_PERMITTED"]


# --- every attempt is in the chain ------------------------------------------------------


def test_submit_when_retried_with_the_same_body_then_the_original_answered_and_the_retry_logged(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    order = make_order(limit_price=150.0)
    first = gateway.submit(order, TRADER)

    retry = gateway.submit(order, TRADER)

    attempt = records(gateway)[-1]
    assert (retry.kind, retry.replayed_kind, retry.record) == ("replayed", "routed", first.record)
    assert attempt["order_status"] == "rejected"
    assert attempt["order_id"] != first.record["order_id"]
    assert (attempt["original_order_id"], attempt["original_hash"]) == (
        first.record["order_id"],
        first.record["hash"],
    )
    assert attempt["errors"][0]["field"] == "client_order_id"
    stored = gateway.store.order(first.record["order_id"])
    assert stored is not None and stored.linked == first.record  # untouched
    assert gateway.store.orders_in({OrderStatus.REJECTED})[0].order_id == attempt["order_id"]


def test_submit_when_the_client_order_id_is_reused_then_conflict_logged_and_never_flow(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    order = make_order(limit_price=150.0)
    first = gateway.submit(order, TRADER)

    conflict = gateway.submit({**order, "quantity": 5}, TRADER)
    # the conflict's terms, under a new id: not a duplicate of the rejected conflict
    fresh = gateway.submit({**order, "client_order_id": "fresh-1", "quantity": 5}, TRADER)

    assert conflict.kind == "conflict"
    assert conflict.record == records(gateway)[-3]
    assert (conflict.record["order_status"], conflict.record["quantity"]) == ("rejected", 5)
    assert conflict.record["original_order_id"] == first.record["order_id"]
    assert "different body" in conflict.record["errors"][0]["message"]
    assert fresh.kind == "routed", fresh.record["fail_closed_triggers"]


def test_reject_when_about_an_order_and_a_route_then_the_record_names_both(
    make_gateway: GatewayMaker,
) -> None:
    gateway = make_gateway()

    outcome = gateway.reject(
        "mode",
        [("(role)", "role 'trader' may not call POST /v1/mode")],
        TRADER,
        about="ORD-2026-000001",
        route="POST /v1/mode",
    )

    assert outcome.kind == "rejected"
    assert outcome.record == records(gateway)[-1]
    assert (outcome.record["operation"], outcome.record["actor"]) == ("mode", TRADER.id)
    assert outcome.record["original_order_id"] == "ORD-2026-000001"
    assert outcome.record["route"] == "POST /v1/mode"
    assert verify_chain(records(gateway)).ok


def test_replace_when_rejected_then_the_attempt_names_the_order_and_leaves_it(
    make_gateway: GatewayMaker, make_order: OrderBuilder
) -> None:
    gateway = make_gateway()
    resting = gateway.submit(make_order(limit_price=150.0), TRADER)
    order_id = resting.record["order_id"]

    bad_terms = gateway.replace(order_id, {"symbol": "MSFT"}, TRADER)
    not_object = gateway.replace(order_id, ["quantity", 5], TRADER)

    for outcome in (bad_terms, not_object):
        assert outcome.kind == "rejected"
        assert outcome.record["original_order_id"] == order_id
        assert outcome.record["order_id"] != order_id
    assert gateway.order(order_id, TRADER) == resting.record
