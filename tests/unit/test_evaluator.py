"""engine.evaluator: one result per check, reasons with the observed value and the
threshold, triggers in SPEC order, bad input rejected field by field, and every fault
inside evaluation turned into a block with `engine_error`, never an approval."""

from __future__ import annotations

import copy
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import EngineState, Evaluator, LoadedPolicies, OrderRequest, load_policies
from engine.canonical import canonical_json, sha256_digest
from engine.clock import format_utc
from engine.policy._durable import DurableRuleset
from engine.policy.decision import Decision, Reason
from engine.policy.evaluator import compiled
from engine.policy.facts import FIELDS, Fact, build_fact

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York
QUOTED = format_utc(NOW - timedelta(seconds=1))
ZERO_DIGEST = "sha256:" + "0" * 64

SPEC_FIELDS = [
    "order_id",
    "symbol",
    "timestamp",
    "side",
    "quantity",
    "order_type",
    "limit_price",
    "decision_reason",
    "risk_checks_run",
    "risk_check_results",
    "fail_closed_triggers",
    "order_status",
    "broker_response",
    "client_order_id",
    "mode",
    "broker",
    "policy_digest",
    "compliance_digest",
    "actor",
]
EXTRA_FIELDS = ["account", "stop_price", "reduce_only", "reasons", "errors", "compliance_version"]


def quote(
    bid: float = 150.20, ask: float = 150.30, last: float = 150.25, **more: Any
) -> dict[str, Any]:
    return {"bid": bid, "ask": ask, "last": last, "timestamp": QUOTED, **more}


def not_passed(decision: Decision) -> dict[str, str]:
    return {check: result for check, result in decision.results.items() if result != "pass"}


def reasons(decision: Decision) -> list[tuple[str, str, str, str, str]]:
    return [(r.check, r.result, r.code, r.trigger, r.detail) for r in decision.reasons]


# --- approved --------------------------------------------------------------------------


def test_evaluate_when_order_is_the_spec_example_then_evaluated_and_every_check_passes(
    evaluator: Evaluator, approved_order: Any
) -> None:
    decision = evaluator.evaluate(approved_order(), now=NOW)

    assert decision.status == "evaluated"
    assert decision.approved
    assert decision.checks_run == evaluator.check_ids
    assert decision.results == dict.fromkeys(evaluator.check_ids, "pass")
    assert (decision.triggers, decision.reasons, decision.errors) == ((), (), ())


def test_evaluate_then_runs_every_rule_of_the_policy_set_in_file_order(
    evaluator: Evaluator, loaded: LoadedPolicies, approved_order: Any
) -> None:
    decision = evaluator.evaluate(approved_order(), now=NOW)

    assert decision.checks_run == tuple(rule.id for rule in loaded.policies.rules)
    assert {
        "volatility_check",
        "spread_check",
        "regime_check",
        "entropy_check",
        "drift_check",
    } <= set(decision.checks_run)


def test_evaluate_when_order_is_an_order_request_model_then_same_decision(
    evaluator: Evaluator, approved_order: Any
) -> None:
    as_dict = evaluator.evaluate(approved_order(), now=NOW)
    as_model = evaluator.evaluate(OrderRequest.model_validate(approved_order()), now=NOW)

    assert as_model.record() == as_dict.record()


# --- blocked: one table, exact results, triggers and reasons ----------------------------


@dataclass(frozen=True)
class Blocked:
    id: str
    changes: dict[str, Any]
    failed: dict[str, str]
    triggers: tuple[str, ...]
    reasons: list[tuple[str, str, str, str, str]]
    context: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def recent(**changes: Any) -> dict[str, Any]:
    order = {
        "client_order_id": "strat7-000041",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 100,
        "order_type": "limit",
        "limit_price": 150.25,
        "at": format_utc(NOW - timedelta(seconds=2)),
    }
    return {**order, **changes}


RISK = "risk_denied"
SIMULATED: dict[str, Any] = {
    "name": "simulated",
    "order_types": ["market", "limit", "stop"],
    "time_in_force": ["day", "gtc", "ioc", "fok"],
    "reduce_only": True,
}
BLOCKED = [
    Blocked(
        "spread-too-wide",
        {},
        {"spread_check": "fail"},
        (RISK,),
        [("spread_check", "fail", "SPREAD_TOO_WIDE", RISK,
          "spread_bps=66.4452 > risk.max_spread_bps=25")],
        context={"quote": quote(bid=150.0, ask=151.0, last=150.5)},
    ),
    Blocked(
        "volatility-too-high",
        {},
        {"volatility_check": "fail"},
        (RISK,),
        [("volatility_check", "fail", "VOLATILITY_TOO_HIGH", RISK,
          "volatility=0.9 > risk.max_volatility=0.8")],
        context={"volatility": 0.9},
    ),
    Blocked(
        "regime-not-allowed",
        {},
        {"regime_check": "fail"},
        (RISK,),
        [("regime_check", "fail", "REGIME_NOT_ALLOWED", RISK,
          "regime=panic not in risk.allowed_regimes=[trending, mean_reverting, ranging, calm]")],
        context={"regime": "panic"},
    ),
    Blocked(
        "entropy-too-high",
        {},
        {"entropy_check": "fail"},
        ("drift_entropy_unsafe",),
        [("entropy_check", "fail", "ENTROPY_TOO_HIGH", "drift_entropy_unsafe",
          "entropy=0.9 > risk.max_entropy=0.85")],
        context={"entropy": 0.9},
    ),
    Blocked(
        "negative-drift-too-large",
        {},
        {"drift_check": "fail"},
        ("drift_entropy_unsafe",),
        [("drift_check", "fail", "DRIFT_TOO_HIGH", "drift_entropy_unsafe",
          "drift_abs=0.6 > risk.max_drift=0.5")],
        context={"drift": -0.6},
    ),
    Blocked(
        "quote-stale",
        {},
        {"quote_freshness_check": "fail"},
        ("data_integrity_mismatch",),
        [("quote_freshness_check", "fail", "QUOTE_STALE", "data_integrity_mismatch",
          "quote_age_s=10.0 > risk.max_quote_age_s=5")],
        context={"quote": quote(timestamp=format_utc(NOW - timedelta(seconds=10)))},
    ),
    Blocked(
        "data-hash-wrong",
        {},
        {"data_hash_check": "fail"},
        ("data_integrity_mismatch",),
        [("data_hash_check", "fail", "DATA_HASH_MISMATCH", "data_integrity_mismatch",
          "data_hash_ok is false")],
        context={"data_hash": ZERO_DIGEST},
    ),
    Blocked(
        "quote-inconsistent",
        {},
        {"quote_consistency_check": "fail"},
        ("data_integrity_mismatch",),
        [("quote_consistency_check", "fail", "QUOTE_INCONSISTENT", "data_integrity_mismatch",
          "quote_consistent is false")],
        context={"quote": quote(bid=150.30, ask=150.20)},
    ),
    Blocked(
        "protocol-hash-wrong",
        {},
        {"protocol_hash_check": "fail"},
        ("protocol_mismatch",),
        [("protocol_hash_check", "fail", "PROTOCOL_HASH_MISMATCH", "protocol_mismatch",
          "protocol_hash_ok is false")],
        context={"protocol_hash": ZERO_DIGEST},
    ),
    Blocked(
        "required-protocol-missing",
        {},
        {"required_protocols_check": "fail"},
        ("protocol_mismatch",),
        [("required_protocols_check", "fail", "REQUIRED_PROTOCOL_MISSING", "protocol_mismatch",
          "required_protocols_fired is false")],
        context={"protocols_fired": ["T07"]},
    ),
    Blocked(
        "restricted-symbol",
        {"symbol": "RSTR"},
        {"restricted_symbol_check": "fail"},
        ("compliance_failure",),
        [("restricted_symbol_check", "fail", "SYMBOL_RESTRICTED", "compliance_failure",
          "symbol_root=RSTR in compliance.restricted_symbols=[RSTR, HALTD]")],
    ),
    Blocked(
        "account-not-allowed",
        {"account": "acct-9"},
        {"account_check": "fail"},
        ("compliance_failure",),
        [("account_check", "fail", "ACCOUNT_NOT_ALLOWED", "compliance_failure",
          "account=acct-9 not in compliance.allowed_accounts=[default, paper-1]")],
    ),
    Blocked(
        "omega-directive",
        {},
        {"omega_check": "fail"},
        ("omega_directive",),
        [("omega_check", "fail", "OMEGA_DIRECTIVE_IN_FORCE", "omega_directive",
          "omega_active is true")],
        state={"omega_active": True, "omega_reason": "drill"},
    ),
    Blocked(
        "quantity-and-notional-too-large",
        {"quantity": 20000},
        {"max_quantity_check": "fail", "max_notional_check": "fail"},
        (RISK,),
        [
            ("max_quantity_check", "fail", "QUANTITY_EXCEEDS_MAX_PER_ORDER", RISK,
             "quantity=20000.0 > risk.max_order_quantity=10000"),
            ("max_notional_check", "fail", "NOTIONAL_EXCEEDS_MAX_PER_ORDER", RISK,
             "notional=3005000.0 > risk.max_order_notional=1000000"),
        ],
    ),
    Blocked(
        "notional-too-large",
        {"quantity": 7000},
        {"max_notional_check": "fail"},
        (RISK,),
        [("max_notional_check", "fail", "NOTIONAL_EXCEEDS_MAX_PER_ORDER", RISK,
          "notional=1051750.0 > risk.max_order_notional=1000000")],
    ),
    Blocked(
        "price-outside-collar",
        {"limit_price": 160.0},
        {"price_collar_check": "fail"},
        (RISK,),
        [("price_collar_check", "fail", "PRICE_OUTSIDE_COLLAR", RISK,
          "price_distance_bps=648.9185 > risk.max_price_distance_bps=500")],
    ),
    Blocked(
        "position-too-large",
        {},
        {"max_position_check": "fail"},
        (RISK,),
        [("max_position_check", "fail", "POSITION_EXCEEDS_MAX", RISK,
          "position_after_abs=50050.0 > risk.max_position_quantity=50000")],
        state={"positions": {"AAPL": 49950}},
    ),
    Blocked(
        "reduce-only-would-increase",
        {"reduce_only": True},
        {"reduce_only_check": "fail"},
        (RISK,),
        [("reduce_only_check", "fail", "REDUCE_ONLY_WOULD_INCREASE", RISK,
          "position_increases is true")],
    ),
    Blocked(
        "duplicate-order",
        {},
        {"duplicate_order_check": "fail"},
        (RISK,),
        [("duplicate_order_check", "fail", "DUPLICATE_ORDER", RISK, "duplicate_recent is true")],
        state={"recent_orders": [recent()]},
    ),
    Blocked(
        "order-rate-exceeded",
        {},
        {"order_rate_check": "fail"},
        (RISK,),
        [("order_rate_check", "fail", "ORDER_RATE_EXCEEDED", RISK,
          "orders_in_window=20 >= risk.max_orders_per_window=20")],
        state={
            "recent_orders": [
                recent(client_order_id=f"r-{n}", quantity=n + 1,
                       at=format_utc(NOW - timedelta(milliseconds=10 * n + 10)))
                for n in range(20)
            ]
        },
    ),
    # the gateway's controls (policies/controls.yaml), over the facts it supplies
    Blocked(
        "research-mode-submit",
        {},
        {"mode_check": "fail"},
        ("mode_research",),
        [("mode_check", "fail", "MODE_RESEARCH", "mode_research", "mode=research == research")],
        state={"operation": "submit", "mode": "research"},
    ),
    Blocked(
        "research-mode-replace",
        {},
        {"mode_check": "fail"},
        ("mode_research",),
        [("mode_check", "fail", "MODE_RESEARCH", "mode_research", "mode=research == research")],
        state={"operation": "replace", "mode": "research"},
    ),
    Blocked(
        "live-mode-evaluate",
        {},
        {"live_mode_check": "fail"},
        ("compliance_failure",),
        [("live_mode_check", "fail", "LIVE_LOCKED", "compliance_failure",
          "live_unlocked is false (the live unlock has not been walked)")],
        state={"mode": "live", "broker": SIMULATED},
    ),
    Blocked(
        "trading-halted",
        {},
        {"trading_halted_check": "fail"},
        ("omega_directive",),
        [("trading_halted_check", "fail", "TRADING_HALTED", "omega_directive",
          "trading_state=halted == halted")],
        state={"trading_state": "halted"},
    ),
    Blocked(
        "trading-reducing-and-the-order-adds",
        {},
        {"trading_reducing_check": "fail"},
        (RISK,),
        [("trading_reducing_check", "fail", "REDUCE_ONLY_STATE", RISK,
          "position_increases is true")],
        state={"trading_state": "reducing", "positions": {"AAPL": 300}},
    ),
    Blocked(
        "account-not-permitted",
        {},
        {"account_permission_check": "fail"},
        ("compliance_failure",),
        [("account_permission_check", "fail", "ACCOUNT_NOT_PERMITTED", "compliance_failure",
          "account_permitted is false")],
        state={"actor_accounts": ["paper-1"]},
    ),
    Blocked(
        "no-broker-in-paper-mode",
        {},
        {"broker_check": "fail"},
        ("broker_capability",),
        [("broker_check", "fail", "NO_BROKER", "broker_capability", "broker_configured is false")],
        state={"operation": "submit", "mode": "paper"},
    ),
    Blocked(
        "broker-not-ready",
        {},
        {"broker_ready_check": "fail"},
        ("broker_api_error",),
        [("broker_ready_check", "fail", "BROKER_NOT_READY", "broker_api_error",
          "broker_ready is false")],
        state={"operation": "submit", "mode": "paper", "broker": {**SIMULATED, "ready": False}},
    ),
    Blocked(
        "broker-cannot-take-the-time-in-force",
        {"time_in_force": "opg"},
        {"broker_capability_check": "fail"},
        ("broker_capability",),
        [("broker_capability_check", "fail", "BROKER_CANNOT_TAKE", "broker_capability",
          "broker_supports_time_in_force is false (broker simulated: time_in_force "
          "[day, gtc, ioc, fok], got: opg)")],
        state={"operation": "submit", "mode": "simulation", "broker": SIMULATED},
    ),
    Blocked(
        "broker-cannot-replace",
        {},
        {"broker_capability_check": "fail"},
        ("broker_capability",),
        [("broker_capability_check", "fail", "BROKER_CANNOT_TAKE", "broker_capability",
          "broker_supports_operation is false (broker simulated: replace false)")],
        state={"operation": "replace", "mode": "paper", "broker": {**SIMULATED, "replace": False}},
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", BLOCKED, ids=[c.id for c in BLOCKED])
def test_evaluate_when_a_check_fails_then_blocks_with_exact_results_triggers_and_reasons(
    evaluator: Evaluator, approved_order: Any, case: Blocked
) -> None:
    order = approved_order(context=case.context, **case.changes)

    decision = evaluator.evaluate(order, EngineState.model_validate(case.state), now=NOW)

    assert decision.status == "blocked"
    assert not decision.approved
    assert not_passed(decision) == case.failed
    assert decision.triggers == case.triggers
    assert reasons(decision) == case.reasons
    assert (
        str(decision.reasons[0])
        == f"{case.reasons[0][0]}: {case.reasons[0][2]}: {case.reasons[0][4]}"
    )


def test_evaluate_when_spread_exceeds_limit_then_blocks_with_risk_denied(
    evaluator: Evaluator, approved_order: Any
) -> None:
    order = approved_order(context={"quote": quote(bid=150.0, ask=150.50, last=150.25)})

    decision = evaluator.evaluate(order, now=NOW)

    assert decision.triggers == ("risk_denied",)
    [reason] = decision.reasons
    assert reason.detail == "spread_bps=33.2779 > risk.max_spread_bps=25"


def test_evaluate_when_quote_and_signals_from_the_future_then_both_freshness_checks_fail(
    evaluator: Evaluator, approved_order: Any
) -> None:
    ahead = format_utc(NOW + timedelta(seconds=5))
    order = approved_order(context={"quote": quote(timestamp=ahead)})

    decision = evaluator.evaluate(order, now=NOW)

    assert not_passed(decision) == {
        "quote_freshness_check": "fail",
        "signal_freshness_check": "fail",
    }
    assert decision.triggers == ("drift_entropy_unsafe", "data_integrity_mismatch")
    assert [r.detail for r in decision.reasons] == [
        "quote_age_s=-5.0 < -1",
        "signals_age_s=-5.0 < -1",
    ]


def test_evaluate_when_many_checks_fail_then_triggers_are_in_spec_order_and_unique(
    evaluator: Evaluator, approved_order: Any
) -> None:
    order = approved_order(
        symbol="RSTR",
        quantity=20000,
        context={"volatility": 0.9, "entropy": 0.9, "drift": 0.7, "protocols_fired": ["T07"]},
    )

    decision = evaluator.evaluate(order, EngineState(omega_active=True), now=NOW)

    assert decision.triggers == (
        "risk_denied",
        "omega_directive",
        "drift_entropy_unsafe",
        "protocol_mismatch",
        "compliance_failure",
    )
    assert [r.check for r in decision.reasons] == [
        check for check in decision.checks_run if decision.results[check] != "pass"
    ]


def test_evaluate_when_a_research_submit_also_fails_policies_then_mode_research_is_among_them(
    evaluator: Evaluator, approved_order: Any
) -> None:
    order = approved_order(context={"volatility": 0.9, "entropy": 0.9, "data_hash": ZERO_DIGEST})
    state = EngineState(operation="submit", mode="research")

    decision = evaluator.evaluate(order, state, now=NOW)

    assert not_passed(decision) == {
        "data_hash_check": "fail",
        "volatility_check": "fail",
        "entropy_check": "fail",
        "mode_check": "fail",
    }
    assert decision.triggers == (
        "risk_denied",
        "drift_entropy_unsafe",
        "data_integrity_mismatch",
        "mode_research",
    )


def test_evaluate_when_every_control_holds_then_each_is_listed_with_its_trigger(
    evaluator: Evaluator, approved_order: Any
) -> None:
    state = EngineState(
        operation="submit",
        mode="live",
        omega_active=True,
        trading_state="halted",
        actor_accounts=["paper-1"],
    )

    decision = evaluator.evaluate(approved_order(), state, now=NOW)

    assert not_passed(decision) == {
        "omega_check": "fail",
        "live_mode_check": "fail",
        "trading_halted_check": "fail",
        "account_permission_check": "fail",
        "broker_check": "fail",
    }
    assert decision.triggers == ("omega_directive", "compliance_failure", "broker_capability")


# --- the gateway's facts -----------------------------------------------------------------

GATEWAY_FIELDS = [
    "operation",
    "mode",
    "trading_state",
    "broker_configured",
    "broker_ready",
    "broker_supports_order_type",
    "broker_supports_time_in_force",
    "broker_supports_reduce_only",
    "broker_supports_operation",
    "account_permitted",
]


@dataclass(frozen=True)
class GatewayFacts:
    id: str
    state: dict[str, Any]
    want: dict[str, Any]
    order: dict[str, Any] = field(default_factory=dict)


NO_BROKER_FACTS = {
    "broker_configured": False,
    "broker_ready": False,
    "broker_supports_order_type": True,
    "broker_supports_time_in_force": True,
    "broker_supports_reduce_only": True,
    "broker_supports_operation": True,
}
READY_FACTS = {**NO_BROKER_FACTS, "broker_configured": True, "broker_ready": True}
GATEWAY_FACTS = [
    GatewayFacts(
        "default-state-is-a-research-evaluate-without-broker",
        {},
        {"operation": "evaluate", "mode": "research", "trading_state": "active",
         **NO_BROKER_FACTS, "account_permitted": True},
    ),
    GatewayFacts(
        "submit-in-paper-to-a-ready-broker",
        {"operation": "submit", "mode": "paper", "trading_state": "reducing",
         "broker": SIMULATED},
        {"operation": "submit", "mode": "paper", "trading_state": "reducing", **READY_FACTS,
         "account_permitted": True},
    ),
    GatewayFacts(
        "broker-not-ready",
        {"broker": {**SIMULATED, "ready": False}},
        {"broker_configured": True, "broker_ready": False},
    ),
    GatewayFacts(
        "order-type-not-taken",
        {"broker": {**SIMULATED, "order_types": ["market"]}},
        {**READY_FACTS, "broker_supports_order_type": False},
    ),
    GatewayFacts(
        "time-in-force-not-taken",
        {"broker": {**SIMULATED, "time_in_force": ["day"]}},
        {**READY_FACTS, "broker_supports_time_in_force": False},
        {"time_in_force": "gtc"},
    ),
    GatewayFacts(
        "reduce-only-order-to-a-broker-without-reduce-only",
        {"broker": {**SIMULATED, "reduce_only": False}},
        {**READY_FACTS, "broker_supports_reduce_only": False},
        {"reduce_only": True},
    ),
    GatewayFacts(
        "plain-order-to-a-broker-without-reduce-only",
        {"broker": {**SIMULATED, "reduce_only": False}},
        READY_FACTS,
    ),
    GatewayFacts(
        "replace-to-a-broker-that-cannot-replace",
        {"operation": "replace", "broker": {**SIMULATED, "replace": False}},
        {**READY_FACTS, "broker_supports_operation": False},
    ),
    GatewayFacts(
        "submit-to-a-broker-that-cannot-replace",
        {"operation": "submit", "broker": {**SIMULATED, "replace": False}},
        READY_FACTS,
    ),
    GatewayFacts(
        "no-broker-refuses-nothing-but-is-not-configured",
        {"operation": "replace", "mode": "simulation"},
        NO_BROKER_FACTS,
        {"order_type": "stop", "limit_price": None, "stop_price": 150.0, "reduce_only": True},
    ),
    GatewayFacts("actor-bound-to-the-account", {"actor_accounts": ["default"]},
                 {"account_permitted": True}),
    GatewayFacts("actor-bound-to-other-accounts", {"actor_accounts": ["paper-1", "x"]},
                 {"account_permitted": False}),
    GatewayFacts("actor-bound-to-no-account", {"actor_accounts": []},
                 {"account_permitted": False}),
    GatewayFacts("actor-without-binding", {"actor_accounts": None},
                 {"account_permitted": True}),
]  # fmt: skip


@pytest.mark.parametrize("case", GATEWAY_FACTS, ids=[c.id for c in GATEWAY_FACTS])
def test_build_fact_when_the_gateway_state_is_given_then_its_facts_are_exact(
    loaded: LoadedPolicies, approved_order: Any, case: GatewayFacts
) -> None:
    order = OrderRequest.model_validate(approved_order(**case.order))
    state = EngineState.model_validate(case.state)

    fact = build_fact(order, state, loaded.config, NOW)

    assert {name: fact[name] for name in case.want} == case.want


def test_build_fact_when_the_order_is_bare_then_every_always_present_field_is_there(
    loaded: LoadedPolicies,
) -> None:
    bare = OrderRequest.model_validate(
        {"client_order_id": "x-1", "symbol": "AAPL", "side": "buy", "quantity": 1,
         "order_type": "market"}
    )  # fmt: skip

    fact = build_fact(bare, EngineState(), loaded.config, NOW)

    always = {name for name, spec in FIELDS.items() if spec.always}
    assert set(GATEWAY_FIELDS) <= always
    assert always - fact.keys() == set()


def test_evaluate_when_a_fact_that_is_always_present_is_missing_then_blocked_with_engine_error(
    evaluator: Evaluator, approved_order: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rules engine does not test presence for these fields; the reference does
    def without_mode(*args: Any) -> Fact:
        fact = build_fact(*args)
        del fact["mode"]
        return fact

    monkeypatch.setattr("engine.policy.evaluator.build_fact", without_mode)

    decision = evaluator.evaluate(approved_order(), EngineState(mode="live"), now=NOW)

    assert decision.status == "blocked"
    assert not_passed(decision) == {
        "live_trust_check": "error",
        "live_mode_check": "error",
        "broker_check": "error",
        "broker_ready_check": "error",
        "broker_capability_check": "error",
    }
    assert decision.triggers == ("engine_error",)
    assert {r.code for r in decision.reasons} == {"ENGINE_DISAGREEMENT"}


# --- missing input and applies_when ------------------------------------------------------


def test_evaluate_when_an_input_is_missing_then_check_errors_and_order_is_blocked(
    evaluator: Evaluator, approved_order: Any
) -> None:
    order = approved_order()
    del order["context"]["volatility"]

    decision = evaluator.evaluate(order, now=NOW)

    assert decision.status == "blocked"
    assert not_passed(decision) == {"volatility_check": "error"}
    assert decision.triggers == ("risk_denied",)
    assert reasons(decision) == [
        ("volatility_check", "error", "MISSING_INPUT", "risk_denied", "missing input: volatility")
    ]


def test_evaluate_when_market_order_has_no_quote_then_every_quote_check_errors(
    evaluator: Evaluator, approved_order: Any
) -> None:
    order = approved_order(order_type="market", limit_price=None)
    del order["context"]["quote"]
    del order["context"]["data_hash"]

    decision = evaluator.evaluate(order, now=NOW)

    assert decision.status == "blocked"
    assert not_passed(decision) == {
        "data_hash_check": "error",
        "quote_freshness_check": "error",
        "quote_consistency_check": "error",
        "spread_check": "error",
        "signal_freshness_check": "error",
        "max_notional_check": "error",
        # the account's credit adds the order's notional; the touch needs the quote
        "open_notional_check": "error",
        "gross_exposure_check": "error",
        "daily_notional_check": "error",
        "market_collar_check": "error",
    }
    assert {r.code for r in decision.reasons} == {"MISSING_INPUT"}
    assert decision.triggers == ("risk_denied", "drift_entropy_unsafe", "data_integrity_mismatch")


def test_evaluate_when_applies_when_is_false_then_check_passes_even_without_its_input(
    evaluator: Evaluator, approved_order: Any
) -> None:
    # a market order has no price distance; the collar applies to limit and stop orders only
    order = approved_order(order_type="market", limit_price=None)

    decision = evaluator.evaluate(order, now=NOW)

    assert decision.status == "evaluated"
    assert decision.results["price_collar_check"] == "pass"
    assert decision.results["reduce_only_check"] == "pass"


def test_evaluate_when_reduce_only_order_reduces_the_position_then_passes(
    evaluator: Evaluator, approved_order: Any
) -> None:
    order = approved_order(side="sell", reduce_only=True, limit_price=150.25)

    decision = evaluator.evaluate(order, EngineState(positions={"AAPL": 300}), now=NOW)

    assert decision.status == "evaluated"


def test_evaluate_when_same_client_order_id_was_seen_then_not_a_duplicate(
    evaluator: Evaluator, approved_order: Any
) -> None:
    state = EngineState.model_validate({"recent_orders": [recent(client_order_id="strat7-000042")]})

    decision = evaluator.evaluate(approved_order(), state, now=NOW)

    assert decision.results["duplicate_order_check"] == "pass"


# --- the clock is an input ----------------------------------------------------------------


def test_evaluate_when_same_order_at_two_instants_then_session_result_differs(
    evaluator: Evaluator, approved_order: Any
) -> None:
    before_close = datetime(2026, 11, 30, 20, 59, 59, tzinfo=UTC)  # 15:59:59 in New York
    after_close = datetime(2026, 11, 30, 21, 0, 1, tzinfo=UTC)  # 16:00:01
    order = approved_order(context={"quote": quote(timestamp="2026-11-30T20:59:58Z")})

    open_ = evaluator.evaluate(order, now=before_close)
    closed = evaluator.evaluate(order, now=after_close)

    assert (open_.status, not_passed(open_)) == ("evaluated", {})
    assert (closed.status, not_passed(closed)) == ("blocked", {"session_hours_check": "fail"})
    assert reasons(closed) == [
        ("session_hours_check", "fail", "OUTSIDE_TRADING_SESSION", "risk_denied",
         "session_open is false")
    ]  # fmt: skip
    assert (open_.evaluated_at, closed.evaluated_at) == (before_close, after_close)


def test_evaluate_when_no_now_is_given_then_uses_the_evaluator_clock(
    loaded: LoadedPolicies, approved_order: Any
) -> None:
    saturday = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    order = approved_order(context={"quote": quote(timestamp="2026-11-28T14:59:59Z")})

    decision = Evaluator(loaded, clock=lambda: saturday).evaluate(order)

    assert decision.evaluated_at == saturday
    assert not_passed(decision) == {"session_hours_check": "fail"}
    assert decision.record()["timestamp"] == "2026-11-28T15:00:00Z"


SESSIONS = [
    ("monday-before-open", datetime(2026, 11, 30, 14, 29, 59, tzinfo=UTC), "fail"),
    ("monday-at-open", datetime(2026, 11, 30, 14, 30, tzinfo=UTC), "pass"),
    ("thanksgiving-holiday", datetime(2026, 11, 26, 15, 0, tzinfo=UTC), "fail"),
    ("early-close-before-1pm", datetime(2026, 11, 27, 17, 59, 59, tzinfo=UTC), "pass"),
    ("early-close-at-1pm", datetime(2026, 11, 27, 18, 0, tzinfo=UTC), "fail"),
    ("saturday", datetime(2026, 11, 28, 15, 0, tzinfo=UTC), "fail"),
    ("summer-time-at-open", datetime(2026, 3, 9, 13, 30, tzinfo=UTC), "pass"),
    ("summer-time-before-open", datetime(2026, 3, 9, 13, 29, 59, tzinfo=UTC), "fail"),
]


@pytest.mark.parametrize(("now", "result"), [s[1:] for s in SESSIONS], ids=[s[0] for s in SESSIONS])
def test_evaluate_when_at_a_given_instant_then_session_check_follows_the_calendar(
    evaluator: Evaluator, approved_order: Any, now: datetime, result: str
) -> None:
    order = approved_order(
        context={"quote": quote(timestamp=format_utc(now - timedelta(seconds=1)))}
    )

    decision = evaluator.evaluate(order, now=now)

    assert not_passed(decision) == ({} if result == "pass" else {"session_hours_check": "fail"})


# --- the order log record --------------------------------------------------------------------


def test_record_when_approved_then_exactly_the_spec_fields_then_the_extras(
    evaluator: Evaluator, loaded: LoadedPolicies, approved_order: Any
) -> None:
    record = evaluator.evaluate(approved_order(), now=NOW).record()

    assert list(record) == SPEC_FIELDS + EXTRA_FIELDS
    assert record == {
        "order_id": None,
        "symbol": "AAPL",
        "timestamp": "2026-11-30T15:00:00Z",
        "side": "buy",
        "quantity": 100,
        "order_type": "limit",
        "limit_price": 150.25,
        "decision_reason": "manual_trigger",
        "risk_checks_run": list(evaluator.check_ids),
        "risk_check_results": dict.fromkeys(evaluator.check_ids, "pass"),
        "fail_closed_triggers": [],
        "order_status": "evaluated",
        "broker_response": None,
        "client_order_id": "strat7-000042",
        "mode": "research",
        "broker": None,
        "policy_digest": loaded.policies.policy_digest,
        "compliance_digest": loaded.policies.compliance_digest,
        "actor": None,
        "account": "default",
        "stop_price": None,
        "reduce_only": False,
        "reasons": [],
        "errors": [],
        "compliance_version": 1,
    }
    assert record["policy_digest"].startswith("sha256:")


def test_record_when_routed_then_carries_the_gateway_fields(
    evaluator: Evaluator, approved_order: Any
) -> None:
    record = evaluator.evaluate(approved_order(), now=NOW).record(
        order_id="ORD-2026-000001",
        mode="simulation",
        broker="simulated",
        actor="key-7",
        order_status="submitted",
        broker_response={"status": "accepted", "broker_order_id": "BRK-12345"},
    )

    assert {k: record[k] for k in ("order_id", "mode", "broker", "actor", "order_status")} == {
        "order_id": "ORD-2026-000001",
        "mode": "simulation",
        "broker": "simulated",
        "actor": "key-7",
        "order_status": "submitted",
    }
    assert record["broker_response"] == {"status": "accepted", "broker_order_id": "BRK-12345"}


def test_record_when_blocked_then_lists_reasons_and_triggers(
    evaluator: Evaluator, approved_order: Any
) -> None:
    record = evaluator.evaluate(approved_order(symbol="RSTR"), now=NOW).record()

    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["compliance_failure"]
    assert record["risk_check_results"]["restricted_symbol_check"] == "fail"
    assert record["reasons"] == [
        {
            "check": "restricted_symbol_check",
            "result": "fail",
            "code": "SYMBOL_RESTRICTED",
            "trigger": "compliance_failure",
            "detail": "symbol_root=RSTR in compliance.restricted_symbols=[RSTR, HALTD]",
        }
    ]


# --- invalid input: rejected, every bad field named -------------------------------------------


def changed(order: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `order` with the value at dotted `path` replaced (`...` deletes it)."""
    out = copy.deepcopy(order)
    *parents, last = path.split(".")
    target = out
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return out


INVALID: list[tuple[str, list[tuple[str, Any]], set[str]]] = [
    ("unknown-field", [("colour", "red")], {"colour"}),
    ("unknown-context-field", [("context.mood", "calm")], {"context.mood"}),
    ("unknown-quote-field", [("context.quote.mid", 150.25)], {"context.quote.mid"}),
    ("quantity-as-string", [("quantity", "100")], {"quantity"}),
    ("quantity-as-bool", [("quantity", True)], {"quantity"}),
    ("quantity-nan", [("quantity", math.nan)], {"quantity"}),
    ("quantity-inf", [("quantity", math.inf)], {"quantity"}),
    ("quantity-negative", [("quantity", -100)], {"quantity"}),
    ("quantity-zero", [("quantity", 0)], {"quantity"}),
    ("quantity-huge", [("quantity", 1e300)], {"quantity"}),
    ("quantity-huge-int", [("quantity", 10**400)], {"quantity"}),
    ("limit-without-limit-price", [("limit_price", None)], {"limit_price"}),
    ("limit-price-missing", [("limit_price", ...)], {"limit_price"}),
    ("market-with-limit-price", [("order_type", "market")], {"limit_price"}),
    ("stop-without-stop-price", [("order_type", "stop"), ("limit_price", None)], {"stop_price"}),
    ("limit-price-huge", [("limit_price", 1e300)], {"limit_price"}),
    ("bid-inf", [("context.quote.bid", math.inf)], {"context.quote.bid"}),
    ("ask-minus-inf", [("context.quote.ask", -math.inf)], {"context.quote.ask"}),
    ("last-nan", [("context.quote.last", math.nan)], {"context.quote.last"}),
    ("volatility-nan", [("context.volatility", math.nan)], {"context.volatility"}),
    ("drift-huge", [("context.drift", 1e300)], {"context.drift"}),
    ("quote-time-without-zone", [("context.quote.timestamp", "2026-11-30T14:59:59")],
     {"context.quote.timestamp"}),
    ("quote-time-garbage", [("context.quote.timestamp", "yesterday")], {"context.quote.timestamp"}),
    ("symbol-unicode", [("symbol", "ÄPPL")], {"symbol"}),
    ("symbol-lower-case", [("symbol", "aapl")], {"symbol"}),
    ("symbol-too-long", [("symbol", "A" * 17)], {"symbol"}),
    ("symbol-missing", [("symbol", ...)], {"symbol"}),
    ("side-unknown", [("side", "hold")], {"side"}),
    ("order-type-unknown", [("order_type", "iceberg")], {"order_type"}),
    ("client-order-id-empty", [("client_order_id", "")], {"client_order_id"}),
    ("client-order-id-with-space", [("client_order_id", "a b")], {"client_order_id"}),
    ("decision-reason-too-long", [("decision_reason", "x" * 201)], {"decision_reason"}),
    ("reduce-only-as-string", [("reduce_only", "false")], {"reduce_only"}),
    ("context-not-a-mapping", [("context", ["quote"])], {"context"}),
    ("protocols-not-strings", [("context.protocols_fired", [1, 2])],
     {"context.protocols_fired.0", "context.protocols_fired.1"}),
    ("several-fields", [("quantity", "100"), ("symbol", "ÄPPL"), ("context.quote.bid", math.nan)],
     {"quantity", "symbol", "context.quote.bid"}),
]  # fmt: skip


@pytest.mark.parametrize(("edits", "fields"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_evaluate_when_input_is_invalid_then_rejected_naming_each_bad_field(
    evaluator: Evaluator, approved_order: Any, edits: list[tuple[str, Any]], fields: set[str]
) -> None:
    order = approved_order()
    for path, value in edits:
        order = changed(order, path, value)

    decision = evaluator.evaluate(order, now=NOW)

    assert decision.status == "rejected"
    assert {e.field for e in decision.errors} == fields
    assert all(e.message for e in decision.errors)
    assert (decision.checks_run, decision.results, decision.triggers) == ((), {}, ())


@pytest.mark.parametrize(
    "body", ["junk", ["a", "list"], 42, None], ids=["string", "list", "number", "none"]
)
def test_evaluate_when_body_is_not_a_mapping_then_rejected(evaluator: Evaluator, body: Any) -> None:
    decision = evaluator.evaluate(body, now=NOW)

    assert decision.status == "rejected"
    assert [e.field for e in decision.errors] == ["(body)"]


def test_record_when_rejected_then_keeps_the_readable_request_fields_and_the_errors(
    evaluator: Evaluator, approved_order: Any
) -> None:
    order = changed(approved_order(), "quantity", math.nan)

    record = evaluator.evaluate(order, now=NOW).record()

    assert record["order_status"] == "rejected"
    assert (record["symbol"], record["client_order_id"], record["quantity"]) == (
        "AAPL",
        "strat7-000042",
        None,
    )
    assert (record["risk_checks_run"], record["fail_closed_triggers"]) == ([], [])
    assert [e["field"] for e in record["errors"]] == ["quantity"]
    canonical_json(record)  # the audit chain can hash it


def test_record_when_rejected_request_has_a_lone_surrogate_then_record_is_canonical_json(
    evaluator: Evaluator, approved_order: Any
) -> None:
    decision = evaluator.evaluate(approved_order(symbol="\ud800"), now=NOW)

    assert decision.status == "rejected"
    canonical_json(decision.record())


# --- faults inside evaluation: blocked with engine_error, never approved ------------------------


def assert_engine_error(decision: Decision, evaluator: Evaluator, detail: str) -> None:
    assert decision.status == "blocked"
    assert decision.triggers == ("engine_error",)
    assert decision.results == dict.fromkeys(evaluator.check_ids, "error")
    assert decision.reasons == (Reason("engine", "error", "ENGINE_ERROR", "engine_error", detail),)


def test_evaluate_when_building_the_fact_raises_then_blocked_with_engine_error(
    evaluator: Evaluator, approved_order: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("engine.policy.evaluator.build_fact", broken)

    decision = evaluator.evaluate(approved_order(), now=NOW)

    assert_engine_error(decision, evaluator, "RuntimeError: boom")
    assert decision.record()["fail_closed_triggers"] == ["engine_error"]


def test_evaluate_when_rules_engine_raises_then_blocked_with_engine_error(
    evaluator: Evaluator, approved_order: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: DurableRuleset, fact: dict[str, Any]) -> set[str]:
        raise MemoryError("state index full")

    monkeypatch.setattr(DurableRuleset, "fired", broken)

    decision = evaluator.evaluate(approved_order(), now=NOW)

    assert_engine_error(decision, evaluator, "MemoryError: state index full")


def test_evaluate_when_rules_engine_misses_a_failure_then_blocked_with_engine_error(
    evaluator: Evaluator, approved_order: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DurableRuleset, "fired", lambda self, fact: set())
    order = approved_order(context={"quote": quote(bid=150.0, ask=151.0, last=150.5)})

    decision = evaluator.evaluate(order, now=NOW)

    assert decision.status == "blocked"
    assert not decision.approved
    assert not_passed(decision) == {"spread_check": "error"}
    assert decision.triggers == ("engine_error",)
    assert reasons(decision) == [
        (
            "spread_check",
            "error",
            "ENGINE_DISAGREEMENT",
            "engine_error",
            "rules engine and reference disagree (engine: missing=False, fail=False; "
            "reference: missing=False, fail=True)",
        )
    ]


def test_evaluate_when_rules_engine_misses_a_missing_input_then_blocked_with_engine_error(
    evaluator: Evaluator, approved_order: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DurableRuleset, "fired", lambda self, fact: set())
    order = approved_order()
    del order["context"]["volatility"]

    decision = evaluator.evaluate(order, now=NOW)

    assert not_passed(decision) == {"volatility_check": "error"}
    assert [(r.code, r.trigger) for r in decision.reasons] == [
        ("ENGINE_DISAGREEMENT", "engine_error")
    ]


def test_evaluate_when_rules_engine_fires_everything_then_blocked_never_approved(
    evaluator: Evaluator, approved_order: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = set(evaluator.policy.definition)
    monkeypatch.setattr(DurableRuleset, "fired", lambda self, fact: set(names))

    decision = evaluator.evaluate(approved_order(), now=NOW)

    assert decision.status == "blocked"
    assert decision.triggers == ("engine_error",)
    assert decision.results == dict.fromkeys(evaluator.check_ids, "error")
    assert {r.code for r in decision.reasons} == {"ENGINE_DISAGREEMENT"}


def test_evaluate_when_rules_engine_invents_a_failure_then_blocked_with_engine_error(
    evaluator: Evaluator, approved_order: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DurableRuleset, "fired", lambda self, fact: {"omega_check"})

    decision = evaluator.evaluate(approved_order(), now=NOW)

    assert not_passed(decision) == {"omega_check": "error"}
    assert decision.triggers == ("engine_error",)


def test_evaluate_when_ruleset_was_retired_then_blocked_with_engine_error(
    tmp_path: Path, default_policies_dir: Path, approved_order: Any
) -> None:
    loaded = load_policies(unique_policy_set(tmp_path, default_policies_dir))
    evaluator = Evaluator(loaded)
    compiled(loaded)[1].close()

    decision = evaluator.evaluate(approved_order(), now=NOW)

    assert_engine_error(decision, evaluator, "EngineFault: ruleset was retired")


def unique_policy_set(tmp_path: Path, source: Path) -> Path:
    """A copy of the default policies whose compliance digest no other test shares."""
    directory = tmp_path / "policies"
    directory.mkdir()
    for path in source.glob("*.yaml"):
        (directory / path.name).write_bytes(path.read_bytes())
    config = directory / "compliance.yaml"
    config.write_text(config.read_text() + f"# {uuid.uuid4().hex}\n")
    return directory


def test_approved_order_fixture_then_quoted_one_second_before_now_with_canonical_digests(
    approved_order: Any,
) -> None:
    order = approved_order()

    assert order["context"]["data_hash"] == sha256_digest(order["context"]["quote"])
    assert order["context"]["protocol_hash"] == sha256_digest(["T01", "T07"])
    assert order["context"]["quote"]["timestamp"] == "2026-11-30T14:59:59Z"
