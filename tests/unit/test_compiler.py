"""engine.compiler: the exact durable-rules definition each policy condition becomes,
and proof that the compiled rules and the plain-Python reference (engine.explain.holds,
and the evaluator's engine.reference predicates) reach the same verdict on the same facts."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import LoadedPolicies, PolicyError, load_policies
from engine.policy._durable import DurableRuleset
from engine.policy.compiler import (
    MISSING_SUFFIX,
    CompiledPolicy,
    compile_policy,
    presence_flag,
)
from engine.policy.explain import holds
from engine.policy.facts import Fact
from engine.policy.reference import predicate

ANCHOR = {"kind": "order"}
ROOT = Path(__file__).resolve().parents[2]


def engine_rule(*conditions: Any) -> dict[str, Any]:
    return {"all": [{"m": {"$and": [ANCHOR, *conditions]}}]}


def absent(*fields: str) -> dict[str, Any]:
    return {"$or": [{presence_flag(f): False} for f in fields]}


def write_rules(directory: Path, rules: list[dict[str, Any]]) -> None:
    doc = {
        "rules": [
            {
                "description": "A test rule.",
                "trigger": "risk_denied",
                "code": "TEST_DENIED",
                "reason": "Denied by a test rule.",
                **rule,
            }
            for rule in rules
        ]
    }
    (directory / "rules.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def load_partial(directory: Path) -> LoadedPolicies:
    """A synthetic policy set, without the required checks (test_loader covers those)."""
    return load_policies(directory, require=())


def compile_rules(directory: Path, rules: list[dict[str, Any]]) -> CompiledPolicy:
    write_rules(directory, rules)
    loaded = load_partial(directory)
    return compile_policy(loaded.policies, loaded.config)


SPREAD_GT = {"field": "spread_bps", "gt": {"param": "risk.max_spread_bps"}}
VOL_GT = {"field": "volatility", "gt": 0.8}
REGIME_CALM = {"field": "regime", "eq": "calm"}

# (id, deny_when, durable condition, the __missing rule's condition or None)
CONDITIONS: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any] | None]] = [
    ("eq-string", REGIME_CALM, {"regime": "calm"}, absent("regime")),
    # a field every fact holds (omega_active, quantity, symbol, account) has no
    # missing-input rule: the evaluator's reference alone checks its presence
    ("eq-bool", {"field": "omega_active", "eq": True}, {"omega_active": True}, None),
    ("ne", {"field": "regime", "ne": "calm"}, {"$neq": {"regime": "calm"}}, absent("regime")),
    ("gt-param", SPREAD_GT, {"$gt": {"spread_bps": 25}}, absent("spread_bps")),
    ("ge", {"field": "volatility", "ge": 0.8}, {"$gte": {"volatility": 0.8}}, absent("volatility")),
    ("lt", {"field": "quote_age_s", "lt": -1}, {"$lt": {"quote_age_s": -1}}, absent("quote_age_s")),
    ("le", {"field": "quantity", "le": 0}, {"$lte": {"quantity": 0}}, None),
    (
        "in-param",
        {"field": "symbol", "in": {"param": "compliance.restricted_symbols"}},
        {"$or": [{"symbol": "RSTR"}, {"symbol": "HALTD"}]},
        None,
    ),
    (
        "not_in-literal",
        {"field": "account", "not_in": ["default", "paper-1"]},
        {"$and": [{"$neq": {"account": "default"}}, {"$neq": {"account": "paper-1"}}]},
        None,
    ),
    (
        "matches",
        {"field": "symbol", "matches": "BRK.*"},
        {"$mt": {"symbol": "BRK.*"}},
        None,
    ),
    ("missing-true", {"field": "volatility", "missing": True}, {"volatility?": False}, None),
    ("missing-false", {"field": "volatility", "missing": False}, {"volatility?": True}, None),
    ("not-eq", {"not": REGIME_CALM}, {"$neq": {"regime": "calm"}}, absent("regime")),
    ("not-gt", {"not": SPREAD_GT}, {"$lte": {"spread_bps": 25}}, absent("spread_bps")),
    (
        "not-ge",
        {"not": {"field": "volatility", "ge": 0.8}},
        {"$lt": {"volatility": 0.8}},
        absent("volatility"),
    ),
    (
        "not-lt",
        {"not": {"field": "volatility", "lt": 0.8}},
        {"$gte": {"volatility": 0.8}},
        absent("volatility"),
    ),
    (
        "not-le",
        {"not": {"field": "volatility", "le": 0.8}},
        {"$gt": {"volatility": 0.8}},
        absent("volatility"),
    ),
    (
        "not-in",
        {"not": {"field": "symbol", "in": ["A", "B"]}},
        {"$and": [{"$neq": {"symbol": "A"}}, {"$neq": {"symbol": "B"}}]},
        None,
    ),
    (
        "not-not_in",
        {"not": {"field": "symbol", "not_in": ["A", "B"]}},
        {"$or": [{"symbol": "A"}, {"symbol": "B"}]},
        None,
    ),
    ("not-missing", {"not": {"field": "volatility", "missing": True}}, {"volatility?": True}, None),
    ("not-not", {"not": {"not": SPREAD_GT}}, {"$gt": {"spread_bps": 25}}, absent("spread_bps")),
    (
        "all",
        {"all": [VOL_GT, REGIME_CALM]},
        {"$and": [{"$gt": {"volatility": 0.8}}, {"regime": "calm"}]},
        absent("regime", "volatility"),
    ),
    (
        "any",
        {"any": [VOL_GT, REGIME_CALM]},
        {"$or": [{"$gt": {"volatility": 0.8}}, {"regime": "calm"}]},
        absent("regime", "volatility"),
    ),
    (
        "not-all-is-any-of-negations",
        {"not": {"all": [VOL_GT, REGIME_CALM]}},
        {"$or": [{"$lte": {"volatility": 0.8}}, {"$neq": {"regime": "calm"}}]},
        absent("regime", "volatility"),
    ),
    (
        "not-any-is-all-of-negations",
        {"not": {"any": [VOL_GT, REGIME_CALM]}},
        {"$and": [{"$lte": {"volatility": 0.8}}, {"$neq": {"regime": "calm"}}]},
        absent("regime", "volatility"),
    ),
    (
        "not-pushed-through-nested-any-and-all",
        {"not": {"any": [{"all": [VOL_GT, REGIME_CALM]}, {"not": SPREAD_GT}]}},
        {
            "$and": [
                {"$or": [{"$lte": {"volatility": 0.8}}, {"$neq": {"regime": "calm"}}]},
                {"$gt": {"spread_bps": 25}},
            ]
        },
        absent("regime", "spread_bps", "volatility"),
    ),
    (
        "missing-only-fields-are-not-inputs",
        {"any": [{"field": "volatility", "missing": True}, VOL_GT]},
        {"$or": [{"volatility?": False}, {"$gt": {"volatility": 0.8}}]},
        absent("volatility"),
    ),
]


@pytest.mark.parametrize(
    ("deny_when", "expected", "missing"),
    [c[1:] for c in CONDITIONS],
    ids=[c[0] for c in CONDITIONS],
)
def test_compile_policy_when_condition_then_exact_durable_definition(
    policies_dir: Path,
    deny_when: dict[str, Any],
    expected: dict[str, Any],
    missing: dict[str, Any] | None,
) -> None:
    compiled = compile_rules(policies_dir, [{"id": "a_check", "deny_when": deny_when}])

    wanted = {"a_check": engine_rule(expected)}
    if missing is not None:
        wanted["a_check" + MISSING_SUFFIX] = engine_rule(missing)
    assert compiled.definition == wanted


def test_compile_policy_when_applies_when_then_both_conditions_and_missing_is_split(
    policies_dir: Path,
) -> None:
    compiled = compile_rules(
        policies_dir,
        [
            {
                "id": "price_collar_check",
                "applies_when": {"field": "order_type", "in": ["limit", "stop"]},
                "deny_when": {"field": "price_distance_bps", "gt": 500},
            }
        ],
    )

    applies = {"$or": [{"order_type": "limit"}, {"order_type": "stop"}]}
    assert compiled.definition == {
        "price_collar_check": engine_rule(applies, {"$gt": {"price_distance_bps": 500}}),
        # order_type is in every fact: only the price distance can be missing
        "price_collar_check__missing": engine_rule(
            {"$and": [applies, absent("price_distance_bps")]}
        ),
    }
    inputs = compiled.inputs["price_collar_check"]
    assert (inputs.when, inputs.deny) == (("order_type",), ("price_distance_bps",))
    assert compiled.flagged_fields == ("price_distance_bps",)


def test_compile_policy_when_applies_when_uses_only_missing_then_missing_rule_covers_deny(
    policies_dir: Path,
) -> None:
    compiled = compile_rules(
        policies_dir,
        [
            {
                "id": "a_check",
                "applies_when": {"field": "bid", "missing": False},
                "deny_when": {"field": "spread_bps", "gt": 25},
            }
        ],
    )

    assert compiled.definition["a_check" + MISSING_SUFFIX] == engine_rule(
        {"$and": [{"bid?": True}, absent("spread_bps")]}
    )
    inputs = compiled.inputs["a_check"]
    assert (inputs.when, inputs.deny) == ((), ("spread_bps",))


def test_compile_policy_when_fields_are_in_every_fact_then_no_presence_flag_unless_tested(
    policies_dir: Path,
) -> None:
    compiled = compile_rules(
        policies_dir,
        [
            {"id": "mode_test_check", "deny_when": {"field": "mode", "eq": "live"}},
            {"id": "flagged_check", "deny_when": {"field": "operation", "missing": True}},
        ],
    )

    assert compiled.definition == {
        "mode_test_check": engine_rule({"mode": "live"}),
        "flagged_check": engine_rule({"operation?": False}),
    }
    assert compiled.flagged_fields == ("operation",)
    assert compiled.inputs["mode_test_check"].deny == ("mode",)


def test_compile_policy_then_one_engine_rule_per_check(loaded: LoadedPolicies) -> None:
    compiled = compile_policy(loaded.policies, loaded.config)

    checks = [name for name in compiled.definition if not name.endswith(MISSING_SUFFIX)]
    assert checks == [rule.id for rule in loaded.policies.rules]


def test_compile_policy_when_a_definition_is_mutated_then_the_next_compile_is_unaffected(
    loaded: LoadedPolicies,
) -> None:
    first = compile_policy(loaded.policies, loaded.config)
    first.definition.clear()

    assert compile_policy(loaded.policies, loaded.config).definition != {}


# --- the compiled rules agree with the reference evaluator ---------------------------

NUMBERS = [
    -999999999999999.0,
    -25.000000000000004,
    -1.0,
    -0.0,
    0.0,
    1e-300,
    0.1,
    0.30000000000000004,
    0.8,
    0.8000000000000002,
    24.999999999999996,
    25.0,
    25,
    25.000000000000004,
    1e6,
    123456789.12345679,
]
STRINGS = ["calm", "Calm", "calm ", "", "trending", "café", "régime-naïf", "RSTR", "c", "ca"]
BOOLS = [True, False]

NUMBER_OPS = ["eq", "ne", "gt", "ge", "lt", "le"]
NUMBER_CONSTANTS = [-25.000000000000004, -1, 0, 0.8, 25, 25.000000000000004]
STRING_CONDITIONS: list[dict[str, Any]] = [
    {"eq": "calm"},
    {"ne": "calm"},
    {"eq": ""},
    {"in": ["calm", "trending", "café"]},
    {"not_in": ["calm", "trending", "café"]},
    {"matches": "c.*"},
    {"matches": "ca?lm"},
    {"matches": "(calm|trending)"},
    {"matches": "[a-z]+"},
    {"matches": "r[a-zéï]*f"},
    {"matches": "..?"},
]


def equivalence_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for op, constant in itertools.product(NUMBER_OPS, NUMBER_CONSTANTS):
        rules.append({"field": "drift", op: constant})
    rules.append({"field": "drift", "in": [0.8, 25, -1]})
    rules.append({"field": "drift", "not_in": [0.8, 25, -1]})
    rules.extend({"field": "regime", **c} for c in STRING_CONDITIONS)
    rules.extend({"field": "omega_active", op: b} for op in ("eq", "ne") for b in BOOLS)
    rules.append({"field": "omega_active", "in": [True]})
    composites: list[dict[str, Any]] = [
        {"not": {"all": [{"field": "drift", "gt": 0.8}, {"field": "regime", "eq": "calm"}]}},
        {"not": {"any": [{"field": "drift", "le": 0}, {"field": "omega_active", "eq": True}]}},
        {
            "any": [
                {"all": [{"field": "drift", "ge": 25}, {"not": {"field": "regime", "in": ["c"]}}]},
                {"field": "omega_active", "eq": False},
            ]
        },
        {"not": {"not": {"field": "regime", "matches": "c.*"}}},
        {"all": [{"field": "drift", "missing": False}, {"field": "regime", "missing": False}]},
    ]
    rules.extend(composites)
    return [{"id": f"rule_{n}", "deny_when": deny} for n, deny in enumerate(rules)]


def facts() -> Iterator[Fact]:
    for drift, regime, omega in itertools.product(NUMBERS, STRINGS, BOOLS):
        yield {"drift": drift, "regime": regime, "omega_active": omega}
    # omega_active is in every fact the engine builds; the others may be missing
    for fact in ({"drift": 25}, {"regime": "calm"}, {}):
        yield {**fact, "omega_active": True}


RulesetOf = Callable[[CompiledPolicy], DurableRuleset]


@pytest.fixture
def ruleset_of() -> Iterator[RulesetOf]:
    made: list[DurableRuleset] = []

    def build(compiled: CompiledPolicy) -> DurableRuleset:
        ruleset = DurableRuleset(f"test_{uuid.uuid4().hex}", compiled.definition)
        made.append(ruleset)
        return ruleset

    yield build
    for ruleset in made:
        ruleset.close()


def engine_verdicts(
    compiled: CompiledPolicy, ruleset: DurableRuleset, fact: Fact
) -> tuple[set[str], set[str]]:
    flags = {presence_flag(f): f in fact for f in compiled.flagged_fields}
    fired = ruleset.fired({"kind": "order", **fact, **flags})
    failed = {name for name in fired if not name.endswith(MISSING_SUFFIX)}
    # a missing-input rule is shared by the checks whose test is the same
    missing = {r for r, inputs in compiled.inputs.items() if inputs.missing_name in fired}
    return failed, missing


def test_compiled_rules_when_evaluated_by_durable_then_agree_with_reference_holds(
    policies_dir: Path, ruleset_of: RulesetOf
) -> None:
    compiled = compile_rules(policies_dir, equivalence_rules())
    ruleset = ruleset_of(compiled)
    config = compiled.config
    disagreements = []

    for fact in facts():
        failed, missing = engine_verdicts(compiled, ruleset, fact)
        for rule in compiled.policies.rules:
            inputs = compiled.inputs[rule.id]
            expect_missing = any(f not in fact for f in inputs.deny)
            expect_fail = holds(rule.deny_when, fact, config)
            # the evaluator's compiled second opinion must say the same as holds
            second_opinion = predicate(rule.deny_when, config)(fact)
            got_missing, got_fail = rule.id in missing, rule.id in failed
            if got_missing != expect_missing or (not expect_missing and got_fail != expect_fail):
                disagreements.append((rule.deny_when, fact, got_fail, expect_fail))
            if not expect_missing and second_opinion != expect_fail:
                disagreements.append((rule.deny_when, fact, "predicate", second_opinion))

    assert disagreements == []


@pytest.mark.parametrize("op", NUMBER_OPS)
def test_compiled_comparison_when_fact_sits_on_the_threshold_then_agrees_with_reference(
    policies_dir: Path, ruleset_of: RulesetOf, op: str
) -> None:
    constants = [0.8, 25, -1, 1e-9, 123456789.125, -99999999999999.9]
    rules = [
        {"id": f"r_{n}", "deny_when": {"field": "drift", op: c}} for n, c in enumerate(constants)
    ]
    compiled = compile_rules(policies_dir, rules)
    ruleset = ruleset_of(compiled)

    for constant in constants:
        for value in (constant, constant * (1 + 1e-15), constant * (1 - 1e-15), constant + 1e-12):
            fact: Fact = {"drift": value}
            failed, _ = engine_verdicts(compiled, ruleset, fact)
            expected = {
                r.id for r in compiled.policies.rules if holds(r.deny_when, fact, compiled.config)
            }
            assert (value, failed) == (value, expected)


# --- known disagreements (engine defects) ---------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value"),
    [("a.b", 'a"b'), ("a.b", "a\\b"), ("a.b", "a\tb"), ("a..b", "a\nb")],
    ids=["quote", "backslash", "tab", "newline"],
)
def test_compiled_matches_when_value_has_characters_json_escapes_then_agrees_with_reference(
    policies_dir: Path, ruleset_of: RulesetOf, pattern: str, value: str
) -> None:
    compiled = compile_rules(
        policies_dir, [{"id": "a_check", "deny_when": {"field": "regime", "matches": pattern}}]
    )
    fact: Fact = {"regime": value}

    failed, _ = engine_verdicts(compiled, ruleset_of(compiled), fact)

    [rule] = compiled.policies.rules
    assert ("a_check" in failed) == holds(rule.deny_when, fact, compiled.config)


@pytest.mark.parametrize(
    "pattern",
    ["[]a]", "[^]]", "[a-c-e]", "[-a]", "[a-]", "()"],
    ids=[
        "bracket-first",
        "negated-bracket-first",
        "dash-after-range",
        "dash-first",
        "dash-last",
        "empty-group",
    ],
)
def test_load_when_pattern_is_read_differently_by_the_engine_then_refused(
    policies_dir: Path, pattern: str
) -> None:
    write_rules(
        policies_dir, [{"id": "a_check", "deny_when": {"field": "regime", "matches": pattern}}]
    )

    with pytest.raises(PolicyError) as raised:
        load_partial(policies_dir)

    assert [i.code for i in raised.value.issues] == ["invalid_pattern"]


def test_load_when_threshold_is_beyond_the_engine_range_then_refused(policies_dir: Path) -> None:
    write_rules(
        policies_dir,
        [{"id": "a_check", "deny_when": {"field": "notional", "gt": 999999999999999.5}}],
    )

    with pytest.raises(PolicyError) as raised:
        load_partial(policies_dir)

    assert [i.code for i in raised.value.issues] == ["invalid_value"]


def test_compiled_comparison_when_fact_beyond_engine_range_then_agrees_with_reference(
    policies_dir: Path, ruleset_of: RulesetOf
) -> None:
    compiled = compile_rules(
        policies_dir,
        [{"id": "a_check", "deny_when": {"field": "notional", "gt": 99999999999999.5}}],
    )
    fact: Fact = {"notional": 1e16}  # quantity 1e9 at a limit price of 1e7: a valid order

    failed, _ = engine_verdicts(compiled, ruleset_of(compiled), fact)

    assert failed == {"a_check"}


_LARGE_LIST_SCRIPT = textwrap.dedent("""
    import shutil, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from engine import Evaluator, load_policies, validate_policies
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("tests"))
    config = target / "compliance.yaml"
    symbols = ", ".join(f"R{n}" for n in range(600))
    config.write_text(config.read_text().replace(
        "restricted_symbols: [RSTR, HALTD]", f"restricted_symbols: [{symbols}]"))
    if validate_policies(target):
        print("refused")
        sys.exit(0)
    order = {"client_order_id": "x-1", "symbol": "R7", "side": "buy", "quantity": 1,
             "order_type": "market"}
    decision = Evaluator(load_policies(target)).evaluate(
        order, now=datetime(2026, 11, 30, 15, tzinfo=UTC))
    print(decision.status, decision.results["restricted_symbol_check"])
""")


def test_evaluate_when_restricted_list_has_600_symbols_then_answers_or_is_refused(
    tmp_path: Path,
) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LARGE_LIST_SCRIPT, str(ROOT / "policies"), str(tmp_path / "p")],
            capture_output=True,
            text=True,
            timeout=6,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("evaluation did not return within 6 s")

    assert done.stdout.split() in (["refused"], ["blocked", "fail"])


def test_load_when_conditions_expand_beyond_what_the_engine_can_take_then_refused(
    policies_dir: Path,
) -> None:
    alternatives = [{"field": "regime", "eq": f"r{n}"} for n in range(450)]
    write_rules(policies_dir, [{"id": "a_check", "deny_when": {"any": alternatives}}])

    with pytest.raises(PolicyError) as raised:
        load_partial(policies_dir)

    assert [i.code for i in raised.value.issues] == ["too_complex"]


def test_compile_when_in_list_is_long_then_engine_tests_a_set_lookup(policies_dir: Path) -> None:
    symbols = [f"S{n}" for n in range(40)]
    compiled = compile_rules(
        policies_dir, [{"id": "a_check", "deny_when": {"field": "symbol", "in": symbols}}]
    )

    [membership] = compiled.memberships
    assert (membership.field, membership.values) == ("symbol", frozenset(symbols))
    assert compiled.definition["a_check"]["all"][0]["m"]["$and"][1] == {membership.name: True}
