"""Evaluator.evaluate on random and hostile orders: it never raises, every decision is
internally consistent, and the rules engine never disagrees with the reference evaluator.

Hypothesis runs derandomized so that CI sees the same examples on every run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine import EngineState, Evaluator, LoadedPolicies
from engine.canonical import canonical_json, sha256_digest
from engine.clock import format_utc
from engine.policy.decision import TRIGGER_ORDER, Decision

EXAMPLES = settings(max_examples=300, deadline=None, derandomize=True)
FEWER = settings(max_examples=120, deadline=None, derandomize=True)
STATUSES = {"evaluated", "blocked", "rejected"}


@pytest.fixture(scope="module")
def shared_evaluator(loaded: LoadedPolicies) -> Evaluator:
    return Evaluator(loaded)


# --- strategies -------------------------------------------------------------------------

anywhen = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
trading_days = [datetime(2026, 11, 30, 14, 30, tzinfo=UTC) + timedelta(days=d) for d in range(4)]
in_session = st.builds(
    lambda day, seconds: day + timedelta(seconds=seconds),
    st.sampled_from(trading_days),
    st.floats(min_value=0, max_value=6.5 * 3600 - 1),
)
instants = st.one_of(in_session, anywhen)
prices = st.one_of(
    st.floats(min_value=0, max_value=1e7, exclude_min=True),
    st.sampled_from([150.25, 150.2, 150.3, 1e7, 0.01, 5e-324]),
)
quantities = st.one_of(
    st.floats(min_value=0, max_value=1e9, exclude_min=True),
    st.integers(min_value=1, max_value=10**9),
    st.sampled_from([100, 10000, 10001, 1e9]),
)
signals = st.floats(min_value=-1e6, max_value=1e6)
# text the model takes: no control character and no lone surrogate (issue 8)
printable = st.characters(blacklist_categories=("Cc", "Cs"))
symbols = st.sampled_from(["AAPL", "MSFT", "RSTR", "HALTD", "BRK.B", "X", "A1-B/C"])
identifiers = st.one_of(
    st.sampled_from(["strat7-000042", "a", "x" * 64]),
    st.text(alphabet="AZaz09._:-", min_size=1, max_size=64),
)
regimes = st.one_of(
    st.sampled_from(["trending", "mean_reverting", "ranging", "calm", "panic", ""]),
    st.text(printable, max_size=32),
)
protocols = st.lists(
    st.one_of(st.sampled_from(["T01", "T07", "T99"]), st.text(printable, min_size=1, max_size=32)),
    max_size=6,
)
junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.floats(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.text(max_size=20),
        st.sampled_from([1e300, -1e300, 5e-324, 1e16, "1e999", "NaN", "", "ÄPPL", "😀"]),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def one_in(draw: st.DrawFn, n: int) -> bool:
    # 1, not 0 or n: hypothesis favours the bounds of a range
    return bool(draw(st.integers(0, n)) == 1)


def timestamp_near(now: datetime) -> st.SearchStrategy[str]:
    offsets = st.one_of(
        st.floats(min_value=-3, max_value=120), st.floats(min_value=-1e7, max_value=1e7)
    )
    return offsets.map(lambda seconds: format_utc(now - timedelta(seconds=seconds)))


@st.composite
def quotes(draw: st.DrawFn, now: datetime) -> dict[str, Any]:
    fields = {"bid": prices, "ask": prices, "last": prices, "timestamp": timestamp_near(now)}
    chosen = draw(st.sets(st.sampled_from(sorted(fields)))) if draw(st.booleans()) else set(fields)
    return {name: draw(fields[name]) for name in sorted(chosen)}


@st.composite
def valid_orders(draw: st.DrawFn, now: datetime) -> dict[str, Any]:
    """Orders the model accepts: the approved order of SPEC section 6 with some values
    replaced by anything valid (over the whole valid range) and some inputs left out."""

    def usually(value: Any, strategy: st.SearchStrategy[Any]) -> Any:
        return draw(strategy) if one_in(draw, 6) else value

    order_type = usually("limit", st.sampled_from(["market", "limit", "stop"]))
    spec_quote = {"bid": 150.20, "ask": 150.30, "last": 150.25}
    quote = usually(
        {**spec_quote, "timestamp": format_utc(now - timedelta(seconds=1))}, quotes(now)
    )
    fired = usually(["T01", "T07"], protocols)
    context: dict[str, Any] = {
        "quote": quote,
        "volatility": usually(0.23, st.floats(min_value=0, max_value=1e6)),
        "regime": usually("trending", regimes),
        "entropy": usually(0.41, signals),
        "drift": usually(0.12, signals),
        "data_hash": usually(sha256_digest(quote), st.sampled_from(["sha256:0", ""])),
        "protocols_fired": fired,
        "protocol_hash": usually(sha256_digest(sorted(fired)), st.just("x")),
    }
    if one_in(draw, 6):
        context["as_of"] = draw(timestamp_near(now))
    for name in draw(st.sets(st.sampled_from(sorted(context)), max_size=2)):
        if one_in(draw, 4):
            del context[name]
    order: dict[str, Any] = {
        "client_order_id": usually("strat7-000042", identifiers),
        "account": usually("default", st.sampled_from(["default", "paper-1", "acct-9"])),
        "symbol": usually("AAPL", symbols),
        "side": usually("buy", st.sampled_from(["buy", "sell"])),
        "quantity": usually(100, quantities),
        "order_type": order_type,
        "time_in_force": usually(
            "day", st.sampled_from(["day", "gtc", "ioc", "fok", "opg", "cls"])
        ),
        "reduce_only": usually(False, st.booleans()),
        "decision_reason": usually(
            "manual_trigger", st.just("x" * 200) | st.text(printable, max_size=40)
        ),
        "context": context,
    }
    if order_type != "market":
        order[f"{order_type}_price"] = usually(150.25, prices)
    return order


@st.composite
def states(draw: st.DrawFn, now: datetime, order: Any) -> EngineState:
    """Positions, a burst of recent orders (enough to trip the throttle, sometimes a copy of
    the order itself), and the kill switch."""
    recent = st.fixed_dictionaries(
        {
            "symbol": symbols,
            "side": st.sampled_from(["buy", "sell"]),
            "quantity": quantities,
            "order_type": st.just("market"),
        },
        optional={"client_order_id": identifiers, "account": st.sampled_from(["default", "x"])},
    )
    templates = draw(st.lists(recent, max_size=2))
    if isinstance(order, dict) and one_in(draw, 4):
        same = ("symbol", "side", "quantity", "order_type", "limit_price", "stop_price")
        templates.append({k: order[k] for k in same if k in order} | {"client_order_id": "dup-1"})
    count = draw(st.sampled_from([0, 0, 1, 2, 19, 20, 26])) if templates else 0
    horizon = draw(st.sampled_from([0.9, 4.0, 30.0]))
    ages = draw(st.lists(st.floats(min_value=0, max_value=horizon), min_size=count, max_size=count))
    recent_orders = [
        {**templates[n % len(templates)], "at": format_utc(now - timedelta(seconds=age))}
        for n, age in enumerate(ages)
    ]
    positions = st.dictionaries(symbols, st.floats(min_value=-1e9, max_value=1e9), max_size=2)
    try:
        return EngineState.model_validate(
            {
                "positions": draw(positions),
                "recent_orders": recent_orders,
                "omega_active": one_in(draw, 10),
            }
        )
    except ValidationError:  # a hostile order copied into the state: judge on a clean state
        return EngineState()


PATHS = [
    "client_order_id",
    "account",
    "symbol",
    "side",
    "quantity",
    "order_type",
    "limit_price",
    "stop_price",
    "time_in_force",
    "reduce_only",
    "decision_reason",
    "context",
    "context.quote",
    "context.quote.bid",
    "context.quote.ask",
    "context.quote.last",
    "context.quote.timestamp",
    "context.volatility",
    "context.regime",
    "context.entropy",
    "context.drift",
    "context.as_of",
    "context.data_hash",
    "context.protocols_fired",
    "context.protocol_hash",
]


@st.composite
def hostile_orders(draw: st.DrawFn, now: datetime) -> Any:
    """A valid order with junk put in, keys deleted or added; or junk altogether."""
    if one_in(draw, 20):
        return draw(junk)
    order = draw(valid_orders(now))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS) | st.text(min_size=1, max_size=10))
        *parents, last = path.split(".")
        target = order
        for part in parents:
            nested = target.get(part)
            if not isinstance(nested, dict):
                nested = {}
                target[part] = nested
            target = nested
        action = draw(st.sampled_from(["junk", "delete"]))
        if action == "delete":
            target.pop(last, None)
        else:
            target[last] = draw(junk)
    return order


@st.composite
def scenarios(draw: st.DrawFn, orders: Any) -> tuple[Any, EngineState, datetime]:
    now = draw(instants)
    order = draw(orders(now))
    return order, draw(states(now, order)), now


# --- invariants ---------------------------------------------------------------------------


def assert_consistent(decision: Decision) -> None:
    assert isinstance(decision, Decision)
    assert decision.status in STATUSES
    codes = {r.code for r in decision.reasons}
    assert "ENGINE_DISAGREEMENT" not in codes, [str(r) for r in decision.reasons]
    if decision.status == "evaluated":
        assert decision.results
        assert set(decision.results.values()) == {"pass"}
        assert (decision.triggers, decision.reasons, decision.errors) == ((), (), ())
    elif decision.status == "blocked":
        assert decision.triggers
        assert decision.reasons
        assert set(decision.triggers) == {r.trigger for r in decision.reasons}
        assert list(decision.triggers) == [t for t in TRIGGER_ORDER if t in decision.triggers]
        assert not decision.errors
    else:
        assert decision.errors
        assert (decision.results, decision.triggers, decision.reasons) == ({}, (), ())
    if decision.status != "rejected":
        assert list(decision.results) == list(decision.checks_run)
        failing = {c for c, r in decision.results.items() if r != "pass"}
        assert failing == {r.check for r in decision.reasons} or codes == {"ENGINE_ERROR"}
    record = decision.record()
    assert record["order_status"] == decision.status
    canonical_json(record)  # finite numbers and valid text: the audit chain can hash it


@EXAMPLES
@given(scenario=scenarios(valid_orders))
def test_evaluate_when_order_is_valid_with_random_values_then_evaluated_or_blocked_never_by_fault(
    shared_evaluator: Evaluator, scenario: tuple[Any, EngineState, datetime]
) -> None:
    order, state, now = scenario

    decision = shared_evaluator.evaluate(order, state, now=now)

    assert_consistent(decision)
    assert decision.status != "rejected", decision.errors
    assert "engine_error" not in decision.triggers, [str(r) for r in decision.reasons]


@EXAMPLES
@given(scenario=scenarios(hostile_orders))
def test_evaluate_when_order_is_hostile_then_never_raises_and_decision_is_consistent(
    shared_evaluator: Evaluator, scenario: tuple[Any, EngineState, datetime]
) -> None:
    order, state, now = scenario

    decision = shared_evaluator.evaluate(order, state, now=now)

    assert_consistent(decision)


@EXAMPLES
@given(body=junk)
def test_evaluate_when_body_is_pure_junk_then_rejected(
    shared_evaluator: Evaluator, body: Any
) -> None:
    decision = shared_evaluator.evaluate(body, now=datetime(2026, 11, 30, 15, tzinfo=UTC))

    assert decision.status == "rejected"
    assert_consistent(decision)


# --- issue 8: every reproduction, as a property ---------------------------------------

# (the value, the field the rejection names) for text the model must refuse
_TEXT_PATHS = {
    "client_order_id": 64,
    "account": 64,
    "symbol": 16,
    "decision_reason": 200,
    "context.regime": 32,
    "context.data_hash": 100,
    "context.protocol_hash": 100,
}
_SCALARS = [
    "client_order_id", "account", "symbol", "side", "quantity", "order_type", "time_in_force",
    "reduce_only", "decision_reason", "context.volatility", "context.regime",
    "context.entropy", "context.drift", "context.data_hash", "context.protocol_hash",
]  # fmt: skip
controls = st.sampled_from(["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f"])


def put(order: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    target = order
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value
    return order


@st.composite
def unreadable(draw: st.DrawFn, now: datetime) -> tuple[dict[str, Any], str]:
    """A valid order with one value the model must refuse, and the field it must name:
    text past its limit (`"side":"xxxxxxxxx"`, a 33-character symbol, 65-character
    ids), a control character or NUL, a container where a scalar belongs, a word
    outside a closed vocabulary."""
    order = draw(valid_orders(now))
    kind = draw(st.sampled_from(["too_long", "control", "container", "vocabulary"]))
    value: Any
    if kind == "too_long":
        path = draw(st.sampled_from(sorted(_TEXT_PATHS)))
        extra = draw(st.integers(1, 40))
        value = "A" * (_TEXT_PATHS[path] + extra)
    elif kind == "control":
        path = draw(st.sampled_from(sorted(_TEXT_PATHS)))
        head = draw(st.sampled_from(["AAPL", "strat7", "T", ""]))
        value = head + draw(controls) + draw(st.sampled_from(["", "X", "trending"]))
    elif kind == "container":
        path = draw(st.sampled_from(_SCALARS))
        value = draw(st.sampled_from([{}, [], [1], {"$ne": None}, ["buy"]]))
    else:
        path = draw(st.sampled_from(["side", "order_type", "time_in_force"]))
        value = draw(st.sampled_from(["xxxxxxxxx", "stop_limit", "zzzzzzzzz", "BUY", "day "]))
    return put(order, path, value), path


@FEWER
@given(scenario=scenarios(unreadable))
def test_evaluate_when_a_value_breaks_the_models_limits_then_rejected_naming_it(
    shared_evaluator: Evaluator, scenario: tuple[Any, EngineState, datetime]
) -> None:
    (order, path), state, now = scenario

    decision = shared_evaluator.evaluate(order, state, now=now)

    assert_consistent(decision)
    assert decision.status == "rejected"
    assert path in {e.field for e in decision.errors}, [str(e) for e in decision.errors]


restricted_roots = st.sampled_from(["RSTR", "HALTD"])
suffixes = st.sampled_from([".", "-", "/", ".B", "/A", "-W", ".PR", "/WS", "-A.B"])
off_tick_prices = st.one_of(
    # $1 or more: whole cents plus a fraction of a cent
    st.builds(lambda c, m: c / 100 + m / 1000, st.integers(100, 10**6), st.integers(1, 9)),
    # below $1: four decimals plus a fraction of the hundredth of a cent
    st.builds(lambda n, m: n / 10_000 + m / 100_000, st.integers(1, 9_998), st.integers(1, 9)),
)


@st.composite
def must_block(draw: st.DrawFn, now: datetime) -> tuple[dict[str, Any], str]:
    """A valid order carrying one value that must never be approved, and the check
    that must not pass: a dust or fractional quantity, a signal out of its domain,
    a restricted issuer in another notation, a sub-penny price."""
    order = draw(valid_orders(now))
    kind = draw(
        st.sampled_from(
            ["dust", "fraction", "entropy", "volatility", "restricted", "tick_limit", "tick_stop"]
        )
    )
    if kind == "dust":
        order["quantity"] = draw(st.sampled_from([1e-7, 5e-324, 0.5, 0.999999]))
        return order, "min_quantity_check"
    if kind == "fraction":
        whole = draw(st.integers(1, 9_999))
        order["quantity"] = whole + draw(st.sampled_from([0.5, 0.25, 1e-6, 0.999]))
        return order, "whole_shares_check"
    if kind == "entropy":
        value = draw(st.floats(min_value=-1e6, max_value=-1e-300) | st.floats(1.0001, 1e6))
        put(order, "context.entropy", value)
        return order, "entropy_domain_check"
    if kind == "volatility":
        put(order, "context.volatility", draw(st.floats(min_value=-1e6, max_value=-5e-324)))
        return order, "volatility_domain_check"
    if kind == "restricted":
        order["symbol"] = draw(restricted_roots) + draw(suffixes)
        return order, "restricted_symbol_check"
    price = draw(off_tick_prices)
    for name in ("limit_price", "stop_price"):
        order.pop(name, None)
    order["order_type"] = "limit" if kind == "tick_limit" else "stop"
    order[f"{order['order_type']}_price"] = price
    return order, "tick_size_check"


@FEWER
@given(scenario=scenarios(must_block))
def test_evaluate_when_order_carries_a_value_that_must_block_then_never_approved(
    shared_evaluator: Evaluator, scenario: tuple[Any, EngineState, datetime]
) -> None:
    (order, check), state, now = scenario

    decision = shared_evaluator.evaluate(order, state, now=now)

    assert_consistent(decision)
    assert decision.status == "blocked", decision.status
    assert decision.results[check] == "fail", (check, decision.results[check])


@settings(max_examples=30, deadline=None, derandomize=True)
@given(depth=st.integers(33, 980), container=st.sampled_from(["dict", "list"]))
def test_evaluate_when_an_extra_field_is_nested_deep_then_rejected_without_recursing_away(
    shared_evaluator: Evaluator, approved_order: Any, depth: int, container: str
) -> None:
    nested: Any = 1
    for _ in range(depth):
        nested = {"a": nested} if container == "dict" else [nested]
    order = approved_order(x=nested)

    decision = shared_evaluator.evaluate(order, now=datetime(2026, 11, 30, 15, tzinfo=UTC))

    assert decision.status == "rejected"
    assert [e.field for e in decision.errors] == ["x"]
