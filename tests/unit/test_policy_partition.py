"""Policy sets of real size: the compiled set is split into as many durable-rules
rulesets as the engine's limits need and judged as one decision; every ruleset runs
for every order, and a fault in any one blocks the order with `engine_error`.

The limits are the engine's own (engine/policy/partition.py): about 512 alternatives
in one ruleset, and 64 tests that hold for one fact waiting at once (error 303).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import Evaluator, PolicyError, load_policies
from engine.policy._durable import DurableRuleset
from engine.policy.compiler import compile_policy
from engine.policy.evaluator import compiled
from engine.policy.partition import ALTERNATIVES, STACK, alternatives, engine_keys, stack_bound

NOW = datetime(2026, 11, 30, 15, tzinfo=UTC)
ORDER: dict[str, Any] = {
    "client_order_id": "t-1",
    "account": "default",
    "symbol": "AAPL",
    "side": "buy",
    "quantity": 10,
    "order_type": "limit",
    "limit_price": 150.25,
    "context": {"quote": {"bid": 150.2, "ask": 150.3, "last": 150.25}},
}


def rules_file(conditions: list[str]) -> str:
    """One rule per deny_when condition, named c00000_check, c00001_check, ..."""
    out = ["rules:"]
    for n, condition in enumerate(conditions):
        out += [
            f"  - id: c{n:05d}_check",
            "    description: A test rule.",
            "    trigger: risk_denied",
            "    code: TEST_DENIED",
            "    reason: Denied by a test rule.",
            f"    deny_when: {condition}",
        ]
    return "\n".join(out) + "\n"


def evaluator_for(directory: Path, conditions: list[str]) -> Evaluator:
    (directory / "rules.yaml").write_text(rules_file(conditions), encoding="utf-8")
    return Evaluator(load_policies(directory, require=()))


def failed(evaluator: Evaluator, **changes: Any) -> dict[str, str]:
    decision = evaluator.evaluate({**ORDER, **changes}, now=NOW)
    assert "engine_error" not in decision.triggers, decision.reasons[:3]
    return {check: result for check, result in decision.results.items() if result != "pass"}


PER_SYMBOL = [
    f"{{all: [{{field: symbol, eq: S{n}}}, {{field: quantity, gt: {n}}}]}}" for n in range(600)
]
PER_ACCOUNT_NOTIONAL = [
    f"{{all: [{{field: account, eq: a{n}}}, {{field: notional, gt: {n}}}]}}" for n in range(300)
]


def test_load_when_the_set_is_larger_than_one_ruleset_then_it_is_split_and_each_part_fits(
    policies_dir: Path,
) -> None:
    evaluator = evaluator_for(policies_dir, PER_SYMBOL + PER_ACCOUNT_NOTIONAL)

    policy, rulesets = compiled(evaluator._loaded)
    parts = policy.partitions()

    assert rulesets.size == len(parts) > 1
    assert [name for part in parts for name in part.definition] == list(policy.definition)
    for part in parts:
        assert sum(alternatives(r["all"][0]["m"]) for r in part.definition.values()) <= ALTERNATIVES
        assert stack_bound(part.definition) <= STACK


def test_evaluate_when_the_set_is_split_then_one_decision_over_every_ruleset(
    policies_dir: Path,
) -> None:
    evaluator = evaluator_for(policies_dir, PER_SYMBOL + PER_ACCOUNT_NOTIONAL)

    assert failed(evaluator) == {}
    assert failed(evaluator, symbol="S0", quantity=1) == {"c00000_check": "fail"}
    assert failed(evaluator, symbol="S599", quantity=600) == {"c00599_check": "fail"}
    assert failed(evaluator, symbol="S599", quantity=599) == {}
    assert failed(evaluator, account="a299", quantity=10) == {"c00899_check": "fail"}
    assert failed(evaluator, symbol="S7", quantity=8, account="a1") == {
        "c00007_check": "fail",
        "c00601_check": "fail",
    }


def test_evaluate_when_hundreds_of_rules_need_a_missing_field_then_each_is_error(
    policies_dir: Path,
) -> None:
    # 300 rules with one missing-input test: more than 64 such tests would make
    # the engine fail (error 303); they share one engine rule
    evaluator = evaluator_for(policies_dir, PER_ACCOUNT_NOTIONAL)
    market_without_quote = {"order_type": "market", "limit_price": None, "context": {}}

    results = failed(evaluator, **market_without_quote)

    assert results == {f"c{n:05d}_check": "error" for n in range(300)}


def test_evaluate_when_hundreds_of_thresholds_hold_at_once_then_no_engine_error(
    policies_dir: Path,
) -> None:
    # one shared test, then 250 thresholds that all hold for a large order: in one
    # ruleset they would all wait on the engine's stack of 64 at once
    thresholds = [
        f"{{all: [{{field: order_type, eq: limit}}, {{field: quantity, gt: {n}}}]}}"
        for n in range(250)
    ]
    evaluator = evaluator_for(policies_dir, thresholds)

    assert failed(evaluator, quantity=100) == {f"c{n:05d}_check": "fail" for n in range(100)}
    assert failed(evaluator, quantity=1000) == {f"c{n:05d}_check": "fail" for n in range(250)}


def test_evaluate_when_a_split_set_compares_two_fields_and_looks_up_a_map_then_each_part_reads_them(
    policies_dir: Path,
) -> None:
    config = policies_dir / "compliance.yaml"
    config.write_text(
        config.read_text().replace("risk:\n", "risk:\n  by_account:\n    a1: 5\n", 1), "utf-8"
    )
    conditions = [
        *PER_SYMBOL,
        "{field: limit_price, gt: {field: ask}}",
        "{field: quantity, gt: {param: risk.by_account, key: account, default: 50}}",
    ]
    evaluator = evaluator_for(policies_dir, conditions)

    assert failed(evaluator) == {}
    assert failed(evaluator, limit_price=150.35) == {"c00600_check": "fail"}
    assert failed(evaluator, account="a1", quantity=6) == {"c00601_check": "fail"}


def test_evaluate_when_one_ruleset_of_a_split_set_fails_then_engine_error_blocks(
    policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluator = evaluator_for(policies_dir, PER_SYMBOL)
    calls: list[int] = []
    original = DurableRuleset.fired

    def third_fails(self: DurableRuleset, fact: dict[str, Any]) -> set[str]:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("ruleset down")
        return original(self, fact)

    monkeypatch.setattr(DurableRuleset, "fired", third_fails)

    decision = evaluator.evaluate(ORDER, now=NOW)

    assert (decision.status, decision.triggers) == ("blocked", ("engine_error",))
    assert set(decision.results.values()) == {"error"}


def test_evaluate_when_a_split_set_then_every_ruleset_sees_each_order(
    policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluator = evaluator_for(policies_dir, PER_SYMBOL)
    seen: list[dict[str, Any]] = []
    original = DurableRuleset.fired

    def recorded(self: DurableRuleset, fact: dict[str, Any]) -> set[str]:
        seen.append(fact)
        return original(self, fact)

    monkeypatch.setattr(DurableRuleset, "fired", recorded)

    evaluator.evaluate(ORDER, now=NOW)

    policy, rulesets = compiled(evaluator._loaded)
    # each ruleset is asked once, with the fact trimmed to the fields it reads
    assert [sorted(fact) for fact in seen] == [
        sorted(k for k in part.keys if k in fact)
        for part, fact in zip(policy.partitions(), seen, strict=True)
    ]
    assert len(seen) == rulesets.size > 1


def test_compile_when_rules_share_a_missing_input_test_then_one_engine_rule_serves_them(
    policies_dir: Path,
) -> None:
    (policies_dir / "rules.yaml").write_text(
        rules_file(
            ["{field: notional, gt: 1}", "{field: notional, gt: 2}", "{field: volatility, gt: 1}"]
        ),
        encoding="utf-8",
    )
    loaded = load_policies(policies_dir, require=())

    policy = compile_policy(loaded.policies, loaded.config)

    names = {rule_id: inputs.missing_name for rule_id, inputs in policy.inputs.items()}
    assert names == {
        "c00000_check": "c00000_check__missing",
        "c00001_check": "c00000_check__missing",
        "c00002_check": "c00002_check__missing",
    }
    assert "c00001_check__missing" not in policy.definition


def test_engine_keys_then_every_field_a_definition_reads() -> None:
    definition = {
        "r": {"all": [{"m": {"$and": [
            {"kind": "order"},
            {"$or": [{"notional?": False}, {"$gt": {"limit_price": {"$m": "ask"}}}]},
            {"$mt": {"symbol": "A.*"}},
            {"account": {"$m": "risk.m[account]"}},
        ]}}]},
    }  # fmt: skip

    assert engine_keys(definition) == (
        "account", "ask", "kind", "limit_price", "notional?", "risk.m[account]", "symbol"
    )  # fmt: skip


def test_load_when_one_rule_expands_beyond_what_one_ruleset_can_take_then_too_complex_names_it(
    policies_dir: Path,
) -> None:
    regimes = ", ".join(f"{{field: regime, eq: r{n}}}" for n in range(450))
    text = rules_file(["{field: quantity, gt: 1}", f"{{any: [{regimes}]}}"])
    (policies_dir / "rules.yaml").write_text(text, encoding="utf-8")

    with pytest.raises(PolicyError) as raised:
        load_policies(policies_dir, require=())

    [issue] = raised.value.issues
    assert (issue.code, issue.rule_id, Path(issue.file).name, issue.line) == (
        "too_complex", "c00001_check", "rules.yaml", 8
    )  # fmt: skip
    assert "450 alternatives" in issue.message


def test_evaluate_when_the_engine_fires_a_check_its_guard_rules_out_then_a_disagreement_blocks(
    policies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the reference is not asked of a check whose guard (symbol == S5) does not hold;
    # what the engine fires is still compared with it
    evaluator = evaluator_for(policies_dir, PER_SYMBOL)
    original = DurableRuleset.fired

    def wrong(self: DurableRuleset, fact: dict[str, Any]) -> set[str]:
        return original(self, fact) | {"c00005_check"}

    monkeypatch.setattr(DurableRuleset, "fired", wrong)

    decision = evaluator.evaluate(ORDER, now=NOW)

    assert decision.triggers == ("engine_error",)
    assert [(r.check, r.code) for r in decision.reasons] == [
        ("c00005_check", "ENGINE_DISAGREEMENT")
    ]


@pytest.mark.parametrize(
    ("bounds", "at_once"),
    [
        ([("$gt", 0.85), ("$lt", 0), ("$gt", 1)], 2),
        ([("$gt", 5), ("$lte", 5)], 1),
        ([("$gte", 5), ("$lte", 5)], 2),
        ([("$lt", 1), ("$gt", 10000)], 1),
        ([("$gt", 1), ("$gt", 2), ("$gt", 3)], 3),
    ],
    ids=["two-of-three", "complements", "meet-at-the-point", "apart", "nested"],
)
def test_stack_bound_when_bounds_on_one_field_then_only_those_one_value_meets_count(
    bounds: list[tuple[str, float]], at_once: int
) -> None:
    rules = {
        f"r{n}": {"all": [{"m": {"$and": [{"kind": "order"}, {op: {"q": value}}]}}]}
        for n, (op, value) in enumerate(bounds)
    }

    assert stack_bound(rules) == at_once


def test_stack_bound_when_equalities_of_one_field_then_one_holds_and_or_tests_do_not_share() -> (
    None
):
    per_symbol = {
        f"r{n}": {"all": [{"m": {"$and": [{"kind": "order"}, {"s": f"S{n}"}, {"$gt": {"q": n}}]}}]}
        for n in range(300)
    }
    same_or = {
        f"m{n}": {"all": [{"m": {"$and": [{"kind": "order"}, {"$or": [{"f?": False}]}]}}]}
        for n in range(70)
    }

    assert stack_bound(per_symbol) == 1
    assert stack_bound(same_or) == 70
