"""One evaluator shared by many threads and coroutines: every decision is the one the
same order gets alone, and the rules engine keeps no fact behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine import EngineState, Evaluator, LoadedPolicies
from engine.clock import format_utc
from engine.policy.evaluator import compiled

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
THREADS, PER_THREAD = 8, 300

Case = tuple[dict[str, Any], EngineState]


def quote(**changes: Any) -> dict[str, Any]:
    base = {"bid": 150.20, "ask": 150.30, "last": 150.25}
    return {**base, "timestamp": format_utc(NOW - timedelta(seconds=1)), **changes}


@pytest.fixture
def cases(approved_order: Callable[..., dict[str, Any]]) -> list[Case]:
    """Orders that are approved, blocked for distinct reasons, or rejected."""
    none = EngineState()
    omega = EngineState(omega_active=True)
    long_100 = EngineState(positions={"AAPL": 100})  # a sell from it is no short sale
    no_volatility = approved_order(client_order_id="c-novol")
    del no_volatility["context"]["volatility"]
    orders: list[Case] = [
        (approved_order(client_order_id="c-ok-1"), none),
        (approved_order(client_order_id="c-ok-2", side="sell", quantity=50), long_100),
        (approved_order(client_order_id="c-ok-3", order_type="market", limit_price=None), none),
        (
            approved_order(
                client_order_id="c-spread", context={"quote": quote(bid=150.0, ask=151.0)}
            ),
            none,
        ),
        (approved_order(client_order_id="c-vol", context={"volatility": 0.95}), none),
        (approved_order(client_order_id="c-regime", context={"regime": "panic"}), none),
        (approved_order(client_order_id="c-entropy", context={"entropy": 0.99}), none),
        (approved_order(client_order_id="c-rstr", symbol="RSTR"), none),
        (approved_order(client_order_id="c-acct", account="acct-9"), none),
        (approved_order(client_order_id="c-omega"), omega),
        (approved_order(client_order_id="c-qty", quantity=20000), none),
        (approved_order(client_order_id="c-collar", limit_price=170.0), none),
        (approved_order(client_order_id="c-pos"), EngineState(positions={"AAPL": 49990})),
        (approved_order(client_order_id="c-reduce", reduce_only=True), none),
        (approved_order(client_order_id="c-proto", context={"protocols_fired": ["T07"]}), none),
        (approved_order(client_order_id="c-hash", context={"data_hash": "sha256:00"}), none),
        (no_volatility, none),
        ({**approved_order(client_order_id="c-bad"), "quantity": "100"}, none),
    ]
    return orders


def fingerprint(decision: Any) -> dict[str, Any]:
    return decision.record()  # type: ignore[no-any-return]


def test_cases_cover_approved_blocked_and_rejected(evaluator: Evaluator, cases: list[Case]) -> None:
    statuses = [evaluator.evaluate(order, state, now=NOW).status for order, state in cases]
    triggers = {evaluator.evaluate(o, s, now=NOW).triggers for o, s in cases}

    assert statuses.count("evaluated") == 3
    assert statuses.count("rejected") == 1
    assert len(triggers) >= 7


def test_evaluate_when_8_threads_share_an_evaluator_then_each_decision_equals_the_solo_one(
    evaluator: Evaluator, loaded: LoadedPolicies, cases: list[Case]
) -> None:
    alone = [fingerprint(evaluator.evaluate(order, state, now=NOW)) for order, state in cases]
    start = threading.Barrier(THREADS)

    def work(thread: int) -> list[tuple[int, dict[str, Any]]]:
        start.wait()
        out = []
        for n in range(PER_THREAD):
            index = (thread * 7 + n) % len(cases)
            order, state = cases[index]
            out.append((index, fingerprint(evaluator.evaluate(order, state, now=NOW))))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        results = [r for batch in pool.map(work, range(THREADS)) for r in batch]

    assert len(results) == THREADS * PER_THREAD
    wrong = [(cases[i][0]["client_order_id"], got) for i, got in results if got != alone[i]]
    assert wrong == []
    assert compiled(loaded)[1].facts() == []


def test_evaluate_when_coroutines_use_threads_and_direct_calls_then_each_decision_equals_solo(
    evaluator: Evaluator, loaded: LoadedPolicies, cases: list[Case]
) -> None:
    alone = [fingerprint(evaluator.evaluate(order, state, now=NOW)) for order, state in cases]

    async def direct(index: int) -> tuple[int, dict[str, Any]]:
        order, state = cases[index]
        await asyncio.sleep(0)
        return index, fingerprint(evaluator.evaluate(order, state, now=NOW))

    async def threaded(index: int) -> tuple[int, dict[str, Any]]:
        order, state = cases[index]
        decision = await asyncio.to_thread(evaluator.evaluate, order, state, NOW)
        return index, fingerprint(decision)

    async def main() -> list[tuple[int, dict[str, Any]]]:
        calls = [
            (threaded if n % 2 else direct)(n % len(cases)) for n in range(THREADS * PER_THREAD)
        ]
        return list(await asyncio.gather(*calls))

    results = asyncio.run(main())

    wrong = [(cases[i][0]["client_order_id"], got) for i, got in results if got != alone[i]]
    assert wrong == []
    assert compiled(loaded)[1].facts() == []
