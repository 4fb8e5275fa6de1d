"""engine.policy.analysis through `policy validate`: a rule that can never deny is an
error (`never_denies`) at the line of the condition that cannot hold; a branch of `any`
that never holds, two rules with one condition, and a parameter nothing reads are
warnings, which leave the set valid and the exit code 0.

A case's YAML marks the line it expects to be reported with a trailing `#<`.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.cli import main
from engine.errors import PolicyIssue
from engine.policy.loader import check_policies

MARK = "#<"
ROOT = Path(__file__).resolve().parents[2]


def rule(rule_id: str, body: str) -> str:
    head = (
        f"  - id: {rule_id}\n"
        "    description: A test rule.\n"
        "    trigger: risk_denied\n"
        "    code: TEST_DENIED\n"
        "    reason: Denied by a test rule.\n"
    )
    return head + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"


def rules(*parts: str) -> str:
    return "rules:\n" + "".join(parts)


def marked_line(text: str) -> int:
    [line] = [n for n, line in enumerate(text.splitlines(), start=1) if MARK in line]
    return line


def located(issues: list[PolicyIssue]) -> list[tuple[str, str, int | None]]:
    return [(issue.code, Path(issue.file).name, issue.line) for issue in issues]


@dataclass(frozen=True)
class Case:
    id: str
    body: str
    message: str = ""


NEVER_DENIES = [
    Case("numbers-above-and-below", """
        deny_when:  #<
          all:
            - {field: notional, gt: 10}
            - {field: notional, lt: 5}
        """, "notional > 10 and notional < 5 cannot all hold"),
    Case("bounds-meet-but-one-is-strict", """
        deny_when: {all: [{field: quantity, ge: 5}, {field: quantity, lt: 5}]}  #<
        """, "quantity >= 5 and quantity < 5"),
    Case("a-parameter-against-a-literal", """
        deny_when:  #<
          all: [{field: spread_bps, gt: {param: risk.max_spread_bps}}, {field: spread_bps, le: 20}]
        """, "spread_bps > 25 and spread_bps <= 20"),
    Case("two-values-for-one-field", """
        deny_when: {all: [{field: regime, eq: calm}, {field: regime, eq: ranging}]}  #<
        """, "regime == calm and regime == ranging"),
    Case("in-list-and-not-in-list-leave-nothing", """
        deny_when:  #<
          all:
            - {field: regime, in: [calm, ranging]}
            - {field: regime, not_in: {param: risk.allowed_regimes}}
        """, "regime in [calm, ranging] and regime not in"),
    Case("eq-and-ne-of-one-value", """
        deny_when: {all: [{field: side, eq: buy}, {field: side, ne: buy}]}  #<
        """),
    Case("a-bool-neither-true-nor-false", """
        deny_when: {all: [{field: reduce_only, ne: true}, {field: reduce_only, ne: false}]}  #<
        """),
    Case("not-of-a-condition-that-always-holds", """
        deny_when: {not: {any: [{field: quantity, le: 5}, {field: quantity, ge: 5}]}}  #<
        """, "quantity > 5 and quantity < 5"),
    Case("every-branch-of-any-contradicts", """
        deny_when:  #<
          any:
            - {all: [{field: regime, eq: calm}, {field: regime, eq: ranging}]}
            - {all: [{field: volatility, gt: 1}, {field: volatility, lt: 0}]}
        """),
    Case("applies-when-never-holds", """
        applies_when: {all: [{field: order_type, eq: market}, {field: order_type, eq: limit}]}  #<
        deny_when: {field: quantity, gt: 10}
        """, "the rule never applies: order_type == market and order_type == limit"),
    Case("applies-when-and-deny-when-exclude-each-other", """
        applies_when: {field: order_type, eq: market}
        deny_when: {field: order_type, eq: limit}  #<
        """, "the rule can never deny"),
    Case("a-field-missing-and-compared", """
        applies_when: {field: volatility, missing: true}  #<
        deny_when: {field: volatility, gt: 1}
        """, "a rule with a missing input is error, never fail"),
]  # fmt: skip


@pytest.mark.parametrize("case", NEVER_DENIES, ids=[c.id for c in NEVER_DENIES])
def test_validate_when_a_rule_can_never_deny_then_never_denies_at_its_condition(
    policies_dir: Path, case: Case
) -> None:
    text = rules(rule("a_check", case.body))
    (policies_dir / "rules.yaml").write_text(text, encoding="utf-8")

    report = check_policies(policies_dir, require=())

    assert located(report.issues) == [("never_denies", "rules.yaml", marked_line(text))]
    assert case.message in report.issues[0].message


def deny_all(*conditions: str) -> str:
    return "deny_when: {all: [" + ", ".join(conditions) + "]}"


CAN_DENY = [
    Case("bounds-meet-inclusive",
         deny_all("{field: quantity, ge: 5}", "{field: quantity, le: 5}")),
    Case("lists-overlap",
         deny_all("{field: regime, in: [calm, x]}", "{field: regime, not_in: [calm]}")),
    Case("ne-leaves-other-text", deny_all("{field: side, ne: buy}", "{field: side, ne: sell}")),
    Case("branches-of-any-overlap",
         "deny_when: {any: [" + deny_all("{field: regime, eq: a}", "{field: quantity, lt: 2}")[11:]
         + ", {field: quantity, gt: 1}]}"),
    Case("missing-false-and-compared",
         deny_all("{field: volatility, missing: false}", "{field: volatility, gt: 1}")),
    Case("missing-true-alone", "deny_when: {field: volatility, missing: true}"),
    Case("field-comparisons-are-not-reasoned-about",
         deny_all("{field: limit_price, gt: {field: ask}}",
                  "{field: limit_price, lt: {field: bid}}")),
    Case("patterns-are-not-reasoned-about",
         deny_all('{field: symbol, matches: "A.*"}', "{field: symbol, eq: MSFT}")),
]  # fmt: skip


@pytest.mark.parametrize("case", CAN_DENY, ids=[c.id for c in CAN_DENY])
def test_validate_when_a_rule_can_deny_then_no_error_and_no_warning(
    policies_dir: Path, case: Case
) -> None:
    (policies_dir / "rules.yaml").write_text(rules(rule("a_check", case.body)), "utf-8")

    report = check_policies(policies_dir, require=())

    assert (report.issues, [w for w in report.warnings if w.code != "unused_param"]) == ([], [])


def test_validate_when_a_branch_of_any_never_holds_then_a_warning_at_the_branch(
    policies_dir: Path,
) -> None:
    text = rules(
        rule(
            "a_check",
            """
            deny_when:
              any:
                - {field: quantity, gt: 10}
                - all: [{field: regime, in: [calm]}, {field: regime, not_in: [calm, x]}]  #<
            """,
        )
    )
    (policies_dir / "rules.yaml").write_text(text, encoding="utf-8")

    report = check_policies(policies_dir, require=())

    assert report.issues == []
    [warning] = [w for w in report.warnings if w.code != "unused_param"]
    assert (warning.code, warning.line, warning.rule_id) == (
        "never_holds", marked_line(text), "a_check"
    )  # fmt: skip


def test_validate_when_two_rules_have_one_condition_then_a_warning_naming_the_first(
    policies_dir: Path,
) -> None:
    text = rules(
        rule("first_check",
             "deny_when: {any: [{field: quantity, gt: 10}, {field: side, in: [buy, sell]}]}"),
        rule("second_check",
             "deny_when: {any: [{field: side, in: [sell, buy]}, {field: quantity, gt: 10}]}"),
        rule("third_check", "deny_when: {field: quantity, gt: 11}"),
    )  # fmt: skip
    (policies_dir / "rules.yaml").write_text(text, encoding="utf-8")

    report = check_policies(policies_dir, require=())

    [warning] = [w for w in report.warnings if w.code != "unused_param"]
    assert (warning.code, warning.rule_id, warning.line) == (
        "duplicate_condition",
        "second_check",
        8,
    )
    assert "same applies_when and deny_when as rule 'first_check'" in warning.message
    assert report.issues == []


def test_validate_when_a_parameter_is_not_used_then_a_warning_at_its_line(
    policies_dir: Path,
) -> None:
    config = policies_dir / "compliance.yaml"
    text = config.read_text().replace("risk:\n", "risk:\n  max_unused: 5  #<\n", 1)
    config.write_text(text, encoding="utf-8")
    (policies_dir / "rules.yaml").write_text(
        rules(rule("a_check", "deny_when: {field: spread_bps, gt: {param: risk.max_spread_bps}}")),
        "utf-8",
    )

    report = check_policies(policies_dir, require=())

    unused = {w.message.split()[1]: w for w in report.warnings if w.code == "unused_param"}
    assert "risk.max_spread_bps" not in unused
    # read by the gateway itself, not by a rule
    assert "risk.fractional_symbols" not in unused
    assert "compliance.allowed_accounts" not in unused
    assert (unused["risk.max_unused"].file, unused["risk.max_unused"].line) == (
        str(config), marked_line(text)
    )  # fmt: skip


def test_validate_on_the_shipped_set_then_no_error_and_no_warning() -> None:
    report = check_policies(ROOT / "policies")

    assert (report.issues, report.warnings) == ([], [])


def test_cli_policy_validate_when_warnings_only_then_exit_0_and_json_lists_them(
    policies_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = ROOT / "policies"
    for source in shipped.glob("*.yaml"):
        if source.name != "compliance.yaml":
            (policies_dir / source.name).write_bytes(source.read_bytes())
    config = policies_dir / "compliance.yaml"
    config.write_text(config.read_text().replace("risk:\n", "risk:\n  max_unused: 5\n", 1))

    code = main(["policy", "validate", str(policies_dir), "--json"])

    out = json.loads(capsys.readouterr().out)
    assert (code, out["valid"], out["issues"]) == (0, True, [])
    assert [(w["code"], w["message"]) for w in out["warnings"]] == [
        ("unused_param", "parameter risk.max_unused is not used by any rule")
    ]


def test_cli_policy_validate_when_a_rule_never_denies_then_exit_2_naming_it(
    policies_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = ROOT / "policies"
    for source in shipped.glob("*.yaml"):
        if source.name != "compliance.yaml":
            (policies_dir / source.name).write_bytes(source.read_bytes())
    text = rules(
        rule("a_check", "deny_when: {all: [{field: notional, gt: 10}, {field: notional, lt: 5}]}")
    )
    (policies_dir / "zz.yaml").write_text(text, "utf-8")

    code = main(["policy", "validate", str(policies_dir)])

    out = capsys.readouterr().out
    assert code == 2
    assert "zz.yaml:7  a_check  never_denies" in out
    assert out.rstrip().endswith("1 error(s); policy set is INVALID")
