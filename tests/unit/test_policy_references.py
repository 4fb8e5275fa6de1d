"""Rules that reach data: a map parameter looked up by a fact field, and a comparison of
two fact fields. The validator refuses every ill-typed use with a stable code, the file
and the line; the engine and the reference agree on every comparison; a key absent from
a map without a default, and a missing field on either side, are `error`.

A case's YAML marks the line it expects to be reported with a trailing `#<`.
"""

from __future__ import annotations

import itertools
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import Evaluator, load_policies, validate_policies
from engine.errors import PolicyIssue
from engine.policy._durable import DurableRuleset
from engine.policy.compiler import compile_policy, presence_flag
from engine.policy.facts import Fact
from engine.policy.loader import check_policies
from engine.policy.reference import predicate
from engine.policy.required import condition_text

MARK = "#<"
NOW = datetime(2026, 11, 30, 15, tzinfo=UTC)

# appended to the `risk` group of the shipped compliance.yaml
MAPS = """\
  max_notional_by_account:
    paper-1: 5000
    default: 2000000
  max_quantity_by_account:
    paper-1: 100
  desk_by_account:
    paper-1: equities
"""


def with_params(directory: Path, extra: str) -> str:
    config = directory / "compliance.yaml"
    text = config.read_text().replace("risk:\n", "risk:\n" + extra, 1)
    config.write_text(text, encoding="utf-8")
    return text


def rule_yaml(condition: str, applies: str | None = None) -> str:
    head = textwrap.dedent("""\
        rules:
          - id: a_check
            description: A test rule.
            trigger: risk_denied
            code: TEST_DENIED
            reason: Denied by a test rule.
        """)
    if applies is not None:
        head += f"    applies_when: {applies}\n"
    return head + f"    deny_when: {condition}\n"


def located(issues: list[PolicyIssue]) -> list[tuple[str, str, int | None]]:
    return [(issue.code, Path(issue.file).name, issue.line) for issue in issues]


def marked_line(text: str) -> int:
    [line] = [n for n, line in enumerate(text.splitlines(), start=1) if MARK in line]
    return line


@dataclass(frozen=True)
class Invalid:
    id: str
    code: str
    condition: str = "{field: notional, gt: 1000}"
    params: str = ""
    message: str = ""  # a part of the message

    @property
    def in_config(self) -> bool:
        return MARK in self.params


INVALID = [
    Invalid(
        "map-key-not-text",
        "wrong_type",
        params="  by_account:\n    1: 5  #<\n",
        message="map keys are text; write 1 in quotes",
    ),
    Invalid(
        "map-mixes-value-types",
        "wrong_type",
        params="  by_account:  #<\n    paper-1: 5\n    default: five\n",
        message="mixes value types: number (paper-1), string (default)",
    ),
    Invalid(
        "map-value-a-list",
        "wrong_type",
        params="  by_account:\n    paper-1: [1, 2]  #<\n",
        message="a map value is one number, text, or true/false",
    ),
    Invalid(
        "map-value-out-of-range",
        "invalid_value",
        params="  by_account:\n    paper-1: 1.0e+20  #<\n",
        message="out of range",
    ),
    Invalid(
        "lookup-key-unknown-field",
        "unknown_field",
        "{field: notional, gt: {param: risk.max_notional_by_account, key: acount}}  #<",
        message="did you mean 'account'?",
    ),
    Invalid(
        "lookup-key-not-a-string-field",
        "wrong_type",
        "{field: notional, gt: {param: risk.max_notional_by_account, key: quantity}}  #<",
        message="looked up by a string field (its keys are text); quantity is a number",
    ),
    Invalid(
        "lookup-of-a-parameter-that-is-not-a-map",
        "wrong_type",
        "{field: notional, gt: {param: risk.max_order_notional, key: account}}  #<",
        message="risk.max_order_notional is not a map",
    ),
    Invalid(
        "lookup-of-an-unknown-parameter",
        "unknown_param",
        "{field: notional, gt: {param: risk.max_notional_by_acount, key: account}}  #<",
        message="did you mean 'risk.max_notional_by_account'?",
    ),
    Invalid(
        "lookup-values-of-another-type",
        "wrong_type",
        "{field: notional, gt: {param: risk.desk_by_account, key: account}}  #<",
        message="notional is a number; the values of risk.desk_by_account are strings",
    ),
    Invalid(
        "lookup-default-of-another-type",
        "wrong_type",
        "{field: notional, gt: {param: risk.max_notional_by_account, key: account,"
        " default: lots}}  #<",
    ),
    Invalid(
        "lookup-default-a-list",
        "wrong_type",
        "{field: symbol, eq: {param: risk.desk_by_account, key: account,"
        " default: {param: compliance.restricted_symbols}}}  #<",
        message="a lookup's default is one value",
    ),
    Invalid(
        "lookup-with-an-unknown-key",
        "wrong_type",
        "{field: notional, gt: {param: risk.max_notional_by_account, keys: account}}  #<",
        message="unknown 'keys'",
    ),
    Invalid(
        "lookup-with-in",
        "wrong_type",
        "{field: symbol, in: {param: risk.desk_by_account, key: account}}  #<",
        message="`in` takes a value written in the rule, not a map lookup",
    ),
    Invalid(
        "map-compared-without-a-key",
        "wrong_type",
        "{field: notional, gt: {param: risk.max_notional_by_account}}  #<",
        message="is a map: look it up by a field",
    ),
    Invalid(
        "field-unknown",
        "unknown_field",
        "{field: limit_price, gt: {field: quote_ask}}  #<",
        message="unknown fact field 'quote_ask'",
    ),
    Invalid(
        "fields-of-two-types",
        "wrong_type",
        "{field: limit_price, eq: {field: symbol}}  #<",
        message="limit_price is a number and symbol is a string",
    ),
    Invalid(
        "fields-ordered-as-text",
        "wrong_type",
        "{field: symbol, gt: {field: symbol_root}}  #<",
        message="`gt` compares numbers; symbol is a string",
    ),
    Invalid(
        "field-with-itself",
        "invalid_value",
        "{field: limit_price, gt: {field: limit_price}}  #<",
        message="compared with itself",
    ),
    Invalid(
        "field-with-missing",
        "wrong_type",
        "{field: limit_price, missing: {field: ask}}  #<",
        message="`missing` takes a value written in the rule, not another field",
    ),
    Invalid(
        "field-with-matches",
        "wrong_type",
        "{field: symbol, matches: {field: symbol_root}}  #<",
    ),
    Invalid(
        "operand-of-unknown-form",
        "wrong_type",
        "{field: limit_price, gt: {fields: ask}}  #<",
        message="an operand is a value, a list",
    ),
]


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_validate_when_a_lookup_or_field_comparison_is_ill_typed_then_code_file_and_line(
    policies_dir: Path, case: Invalid
) -> None:
    config_text = with_params(policies_dir, MAPS + case.params.replace(MARK, MARK))
    rules = rule_yaml(case.condition)
    (policies_dir / "rules.yaml").write_text(rules, encoding="utf-8")
    name, text = ("compliance.yaml", config_text) if case.in_config else ("rules.yaml", rules)

    issues = validate_policies(policies_dir, require=())

    assert located(issues) == [(case.code, name, marked_line(text))]
    assert case.message in issues[0].message


def test_validate_when_several_references_are_wrong_then_all_are_reported_at_once(
    policies_dir: Path,
) -> None:
    with_params(policies_dir, MAPS + "  mixed:\n    a: 1\n    b: x\n")
    rules = rule_yaml(
        "{all: [{field: limit_price, gt: {field: symbol}},"
        " {field: notional, gt: {param: risk.max_notional_by_account, key: quantity}}]}"
    )
    (policies_dir / "rules.yaml").write_text(rules, encoding="utf-8")

    issues = validate_policies(policies_dir, require=())

    assert sorted((i.code, Path(i.file).name) for i in issues) == [
        ("wrong_type", "compliance.yaml"),
        ("wrong_type", "rules.yaml"),
        ("wrong_type", "rules.yaml"),
    ]


# --- judging ---------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Judged:
    id: str
    condition: str
    order: dict[str, Any]
    result: str  # pass, fail or error of a_check
    detail: str = ""  # the reason's detail, when it fails or errors


LOOKUP = "{field: notional, gt: {param: risk.max_notional_by_account, key: account}}"
LOOKUP_DEFAULT = (
    "{field: notional, gt: {param: risk.max_notional_by_account, key: account,"
    " default: {param: risk.max_order_notional}}}"
)
LOOKUP_LITERAL = (
    "{field: quantity, gt: {param: risk.max_quantity_by_account, key: account, default: 50}}"
)
JUDGED = [
    Judged("lookup-within-the-account-limit", LOOKUP, {"account": "paper-1", "quantity": 30},
           "pass"),
    Judged("lookup-above-the-account-limit", LOOKUP, {"account": "paper-1", "quantity": 40},
           "fail", "notional=6010.0 > risk.max_notional_by_account[paper-1]=5000"),
    Judged("lookup-of-another-account", LOOKUP, {"quantity": 40}, "pass"),
    Judged("lookup-key-absent-without-default", LOOKUP, {"account": "desk-9"}, "error",
           "missing input: risk.max_notional_by_account[account]"),
    Judged("lookup-keys-match-exactly", LOOKUP, {"account": "PAPER-1"}, "error"),
    Judged("lookup-key-absent-default-param-holds", LOOKUP_DEFAULT,
           {"account": "desk-9", "quantity": 6000}, "pass"),
    Judged("lookup-key-absent-default-param-denies", LOOKUP_DEFAULT,
           {"account": "desk-9", "quantity": 7000}, "fail",
           "notional=1051750.0 > risk.max_order_notional=1000000 "
           "(the default: desk-9 is not in risk.max_notional_by_account)"),
    Judged("lookup-key-absent-default-literal", LOOKUP_LITERAL,
           {"account": "desk-9", "quantity": 51}, "fail"),
    Judged("lookup-key-present-ignores-default", LOOKUP_LITERAL,
           {"account": "paper-1", "quantity": 51}, "pass"),
    Judged("lookup-negated", "{not: " + LOOKUP + "}", {"account": "paper-1", "quantity": 1},
           "fail"),
    Judged("lookup-string-map-eq", "{field: account, eq: {param: risk.desk_by_account,"
           " key: account, default: none}}", {"account": "paper-1"}, "pass"),
    Judged("field-above-field", "{field: limit_price, gt: {field: ask}}",
           {"limit_price": 150.35}, "fail", "limit_price=150.35 > ask=150.3"),
    Judged("field-equal-field-is-not-above", "{field: limit_price, gt: {field: ask}}",
           {"limit_price": 150.3}, "pass"),
    Judged("field-ge-field-on-equality", "{field: limit_price, ge: {field: ask}}",
           {"limit_price": 150.3}, "fail"),
    Judged("field-left-side-missing", "{field: limit_price, gt: {field: ask}}",
           {"order_type": "market", "limit_price": None}, "error",
           "missing input: limit_price"),
    Judged("field-right-side-missing", "{field: limit_price, gt: {field: ask}}",
           {"context": {"quote": {"bid": 150.2, "last": 150.25}}}, "error",
           "missing input: ask"),
    Judged("field-right-side-missing-under-not", "{not: {field: limit_price, le: {field: ask}}}",
           {"context": {"quote": {"bid": 150.2, "last": 150.25}}}, "error"),
    Judged("field-strings-equal", "{field: symbol, eq: {field: symbol_root}}", {}, "fail",
           "symbol=AAPL == symbol_root=AAPL"),
    Judged("field-strings-differ", "{field: symbol, ne: {field: symbol_root}}",
           {"symbol": "BRK.B"}, "fail"),
]  # fmt: skip


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    if "quote" in change.get("context", {}):
        out["context"] = {**out["context"], "quote": change["context"]["quote"]}
    return out


@pytest.mark.parametrize("case", JUDGED, ids=[c.id for c in JUDGED])
def test_evaluate_when_a_rule_reads_a_map_or_another_field_then_exact_result(
    policies_dir: Path, case: Judged
) -> None:
    with_params(policies_dir, MAPS)
    (policies_dir / "rules.yaml").write_text(rule_yaml(case.condition), encoding="utf-8")
    evaluator = Evaluator(load_policies(policies_dir, require=()))

    decision = evaluator.evaluate(merged(ORDER, case.order), now=NOW)

    assert decision.results == {"a_check": case.result}
    reasons = [(r.check, r.code) for r in decision.reasons]
    if case.result == "pass":
        assert reasons == []
    else:
        code = "TEST_DENIED" if case.result == "fail" else "MISSING_INPUT"
        assert reasons == [("a_check", code)]
        assert case.detail in decision.reasons[0].detail


def test_evaluate_when_a_lookup_is_in_applies_when_then_the_rule_applies_by_account(
    policies_dir: Path,
) -> None:
    with_params(policies_dir, MAPS)
    text = rule_yaml(
        "{field: quantity, gt: 10}",
        applies="{field: symbol, ne: {param: risk.desk_by_account, key: account, default: x}}",
    )
    (policies_dir / "rules.yaml").write_text(text, encoding="utf-8")
    evaluator = Evaluator(load_policies(policies_dir, require=()))

    paper = evaluator.evaluate(merged(ORDER, {"account": "paper-1", "quantity": 11}), now=NOW)
    other = evaluator.evaluate(merged(ORDER, {"quantity": 11}), now=NOW)

    assert (paper.results, other.results) == ({"a_check": "fail"}, {"a_check": "fail"})


def test_compile_when_a_map_is_looked_up_then_the_engine_compares_two_fields_of_the_fact(
    policies_dir: Path,
) -> None:
    with_params(policies_dir, MAPS)
    (policies_dir / "rules.yaml").write_text(rule_yaml(LOOKUP), encoding="utf-8")
    loaded = load_policies(policies_dir, require=())

    compiled = compile_policy(loaded.policies, loaded.config)

    derived = "risk.max_notional_by_account[account]"
    [lookup] = compiled.derived
    assert (lookup.name, lookup.key, lookup.table) == (
        derived, "account", {"paper-1": 5000, "default": 2000000}
    )  # fmt: skip
    assert compiled.definition["a_check"]["all"][0]["m"]["$and"][1] == {
        "$gt": {"notional": {"$m": derived}}
    }
    assert compiled.inputs["a_check"].deny == ("account", "notional", derived)
    assert presence_flag(derived) in {presence_flag(f) for f in compiled.flagged_fields}


def test_condition_text_when_references_then_written_as_in_a_policy_file(
    policies_dir: Path,
) -> None:
    with_params(policies_dir, MAPS)
    text = rule_yaml(
        "{all: ["
        + LOOKUP_DEFAULT
        + ", "
        + LOOKUP_LITERAL
        + ", {field: limit_price, gt: {field: ask}}]}"
    )
    (policies_dir / "rules.yaml").write_text(text, encoding="utf-8")
    [rule] = load_policies(policies_dir, require=()).policies.rules

    assert condition_text(rule.deny_when) == (
        "{all: [{field: notional, gt: {param: risk.max_notional_by_account, key: account, "
        "default: {param: risk.max_order_notional}}}, {field: quantity, gt: {param: "
        "risk.max_quantity_by_account, key: account, default: 50}}, "
        "{field: limit_price, gt: {field: ask}}]}"
    )


# --- the engine and the reference agree ------------------------------------------------

PRICES = [-1, 0, 0.5, 5, 5.0, 5.000000000000001, 150.3, 1e13]
TEXTS = ["AAPL", "aapl", "AAPL ", "", "BRK", "café"]


def comparison_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for op in ("eq", "ne", "gt", "ge", "lt", "le"):
        rules.append({"field": "limit_price", op: {"field": "ask"}})
        rules.append({"not": {"field": "limit_price", op: {"field": "ask"}}})
    for op in ("eq", "ne"):
        rules.append({"field": "regime", op: {"field": "symbol"}})
    rules.append({"any": [{"field": "limit_price", "gt": {"field": "ask"}},
                          {"field": "regime", "eq": {"field": "symbol"}}]})  # fmt: skip
    return [{"id": f"rule_{n}", "deny_when": deny} for n, deny in enumerate(rules)]


def comparison_facts() -> Iterator[Fact]:
    for price, ask in itertools.product(PRICES, PRICES):
        yield {"limit_price": price, "ask": ask, "regime": "AAPL", "symbol": "AAPL"}
    for regime, symbol in itertools.product(TEXTS, TEXTS):
        yield {"limit_price": 1, "ask": 1, "regime": regime, "symbol": symbol}
    for fact in ({"limit_price": 5}, {"ask": 5}, {"regime": "AAPL"}, {}):
        yield {"symbol": "AAPL", **fact}


def test_compiled_field_comparisons_when_evaluated_by_durable_then_agree_with_reference(
    policies_dir: Path,
) -> None:
    doc = {
        "rules": [
            {"description": "A test rule.", "trigger": "risk_denied", "code": "TEST_DENIED",
             "reason": "Denied by a test rule.", **rule}
            for rule in comparison_rules()
        ]
    }  # fmt: skip
    (policies_dir / "rules.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    loaded = load_policies(policies_dir, require=())
    compiled = compile_policy(loaded.policies, loaded.config)
    ruleset = DurableRuleset(f"test_{uuid.uuid4().hex}", compiled.definition)
    disagreements = []
    try:
        for fact in comparison_facts():
            flags = {presence_flag(f): f in fact for f in compiled.flagged_fields}
            fired = ruleset.fired({"kind": "order", **fact, **flags})
            for rule in compiled.policies.rules:
                missing = any(f not in fact for f in compiled.inputs[rule.id].deny)
                want = predicate(rule.deny_when, loaded.config)(fact)
                got_missing = compiled.inputs[rule.id].missing_name in fired
                if got_missing != missing or (not missing and (rule.id in fired) != want):
                    disagreements.append((condition_text(rule.deny_when), fact))
    finally:
        ruleset.close()

    assert disagreements == []


def test_validate_when_a_lookup_has_no_default_then_a_warning_says_unlisted_keys_are_blocked(
    policies_dir: Path,
) -> None:
    with_params(policies_dir, MAPS)
    text = rule_yaml(LOOKUP + "  #<")
    (policies_dir / "rules.yaml").write_text(text, encoding="utf-8")

    report = check_policies(policies_dir, require=())

    assert report.issues == []
    [warning] = [w for w in report.warnings if w.code == "lookup_without_default"]
    assert (Path(warning.file).name, warning.line, warning.rule_id) == (
        "rules.yaml", marked_line(text), "a_check"
    )  # fmt: skip
    assert warning.message == (
        "risk.max_notional_by_account has no default: an order whose account it does not "
        "list gets error, which blocks it"
    )
