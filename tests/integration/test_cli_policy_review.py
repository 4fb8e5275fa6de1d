"""Reviewing a policy change from the command line: `policy test --coverage` and
`--require-coverage`, and `policy diff OLD NEW` in text and JSON, run through
`main` on small sets written in a scratch folder (paths relative to it, so that
the outputs are exact)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine import load_policies
from engine.policy.cases import load_cases
from tests.integration.cli_support import Run, run_main

ROOT = Path(__file__).resolve().parents[2]

COMPLIANCE = """\
version: 1
expires: "2027-01-31T00:00:00Z"
risk:
  max_order_quantity: 100
session: {calendar: always}
"""

RULES = """\
rules:
  - id: max_quantity_check
    description: Fat-finger guard.
    trigger: risk_denied
    code: QUANTITY_ABOVE_LIMIT
    reason: The quantity is above the maximum.
    deny_when: {field: quantity, gt: {param: risk.max_order_quantity}}

  - id: volatility_check
    description: Volatility limit.
    trigger: risk_denied
    code: VOLATILITY_TOO_HIGH
    reason: Volatility is above 0.8.
    deny_when: {field: volatility, gt: 0.8}
"""

CASES = """\
defaults:
  at: "2026-11-30T15:00:00Z"
  order:
    client_order_id: c-1
    symbol: AAPL
    side: buy
    quantity: 10
    order_type: limit
    limit_price: 150
    context: {volatility: 0.2}
cases:
  - name: approved
    expect: {status: evaluated}
  - name: too many shares
    order: {quantity: 101}
    expect: {status: blocked, failed: [max_quantity_check], triggers: [risk_denied]}
  - name: no volatility
    order: {context: {volatility: null}}
    expect: {status: blocked, failed: [volatility_check], triggers: [risk_denied]}
"""

EXTRA_RULE = """\
rules:
  - id: delisted_symbol_check
    description: A delisted symbol is refused.
    trigger: compliance_failure
    code: DELISTED
    reason: The symbol is delisted.
    deny_when: {field: symbol, eq: ZZZZ}
"""

EXTRA_PASSING_CASE = """\
cases:
  - name: a listed symbol passes
    expect: {status: evaluated}
"""

EXTRA_FAILING_CASE = """\
  - name: a delisted symbol is denied
    order: {symbol: ZZZZ}
    expect: {status: blocked, failed: [delisted_symbol_check], triggers: [compliance_failure]}
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    return run_main(capsys, argv)


def shipped_with_extra_rule(cases: str) -> Path:
    """A copy of the shipped set and its cases, plus one rule and its `cases`."""
    directory = Path("p")
    shutil.copytree(ROOT / "policies", directory)
    (directory / "extra.yaml").write_text(EXTRA_RULE, "utf-8")
    (directory / "tests" / "extra.yaml").write_text(cases, "utf-8")
    return directory


def judged(directory: Path) -> int:
    """How many cases of the set are judged: every case but those of a rejected order,
    which runs no rule."""
    return sum(c.expect.status != "rejected" for c in load_cases(directory / "tests"))


def test_policy_test_require_coverage_when_a_rule_never_fails_then_exit_1_naming_it(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = shipped_with_extra_rule(EXTRA_PASSING_CASE)

    run = cli(capsys, "policy", "test", str(directory), "--require-coverage")

    assert run.code == 1
    assert run.err == "coverage required: 1 rule(s) with no failing case: delisted_symbol_check\n"
    cases = judged(directory)
    row = next(line for line in run.out.splitlines() if line.startswith("delisted_symbol_check "))
    assert row.split() == [
        "delisted_symbol_check", "p/extra.yaml:2", str(cases), "0", "0", "NO", "FAILING", "CASE",
    ]  # fmt: skip
    assert run.out.endswith("\n1 rule(s) no case fails:\n  delisted_symbol_check  p/extra.yaml:2\n")


def test_policy_test_coverage_when_a_rule_never_fails_then_named_but_exit_0(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = shipped_with_extra_rule(EXTRA_PASSING_CASE)

    run = cli(capsys, "policy", "test", str(directory), "--coverage")

    assert run.code == 0
    assert run.err == ""
    assert run.out.endswith("\n1 rule(s) no case fails:\n  delisted_symbol_check  p/extra.yaml:2\n")


def test_policy_test_require_coverage_when_every_rule_fails_somewhere_then_exit_0(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = shipped_with_extra_rule(EXTRA_PASSING_CASE + EXTRA_FAILING_CASE)
    rules = len(load_policies(directory).policies.rules)

    run = cli(capsys, "policy", "test", str(directory), "--require-coverage")

    assert run.code == 0
    assert run.err == ""
    assert run.out.endswith(f"\n\nevery rule has a failing case ({rules} rules)\n")


def test_policy_test_coverage_json_when_a_rule_never_fails_then_cases_and_coverage(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = shipped_with_extra_rule(EXTRA_PASSING_CASE)
    rules = [r.id for r in load_policies(directory).policies.rules]

    run = cli(capsys, "policy", "test", str(directory), "--coverage", "--json")

    assert run.code == 0
    document = json.loads(run.out)
    assert set(document) == {"cases", "coverage"}
    cases = len(document["cases"])
    assert all(case["passed"] for case in document["cases"])
    assert document["coverage"]["cases"] == cases
    assert [row["rule"] for row in document["coverage"]["rules"]] == rules
    assert document["coverage"]["uncovered"] == ["delisted_symbol_check"]
    assert document["coverage"]["rules"][rules.index("delisted_symbol_check")] == {
        "rule": "delisted_symbol_check",
        "file": "p/extra.yaml",
        "line": 2,
        "pass": judged(directory),
        "fail": 0,
        "error": 0,
    }


def test_policy_test_json_without_coverage_then_the_list_of_cases_as_before(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = shipped_with_extra_rule(EXTRA_PASSING_CASE)

    run = cli(capsys, "policy", "test", str(directory), "--json", "-k", "listed symbol passes")

    assert run.code == 0
    assert json.loads(run.out) == [
        {
            "name": "a listed symbol passes",
            "file": "p/tests/extra.yaml",
            "line": 2,
            "passed": True,
            "problems": [],
        }
    ]


# --- diff ---------------------------------------------------------------------------


def small_set(name: str, compliance: str = COMPLIANCE, rules: str = RULES) -> Path:
    """The shipped controls with `rules` and `compliance`."""
    directory = Path(name)
    directory.mkdir()
    shutil.copy(ROOT / "policies" / "controls.yaml", directory / "controls.yaml")
    (directory / "compliance.yaml").write_text(compliance, "utf-8")
    (directory / "rules.yaml").write_text(rules, "utf-8")
    return directory


def candidate() -> Path:
    """The limit lowered, the volatility rule's operator and code changed, a rule added."""
    rules = RULES.replace("gt: 0.8}", "ge: 0.8}").replace("VOLATILITY_TOO_HIGH", "VOL_HIGH")
    directory = small_set(
        "new", COMPLIANCE.replace("max_order_quantity: 100", "max_order_quantity: 50"), rules
    )
    (directory / "extra.yaml").write_text(EXTRA_RULE, "utf-8")
    return directory


def test_policy_diff_when_a_candidate_changes_rules_and_limits_then_each_is_shown(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = load_policies(small_set("old")).policies, load_policies(candidate()).policies

    run = cli(capsys, "policy", "diff", "old", "new")

    assert run.code == 0
    assert run.err == ""
    assert run.out == (
        f"old  old  policy {old.policy_digest}  compliance {old.compliance_digest}\n"
        f"new  new  policy {new.policy_digest}  compliance {new.compliance_digest}\n"
        "\n"
        "rules added (1):\n"
        "  + delisted_symbol_check  new/extra.yaml:2  compliance_failure  DELISTED\n"
        "\n"
        "rules changed (1):\n"
        "  ~ volatility_check  new/rules.yaml:9\n"
        "      code: VOLATILITY_TOO_HIGH -> VOL_HIGH\n"
        "      deny_when:\n"
        "        old: {field: volatility, gt: 0.8}\n"
        "        new: {field: volatility, ge: 0.8}\n"
        "\n"
        "parameters changed (1):\n"
        "  ~ risk.max_order_quantity: 100 -> 50\n"
        "\n"
        "rules: 1 added, 0 removed, 1 changed; parameters: 1 changed, 0 added, 0 removed\n"
    )


def test_policy_diff_json_when_a_candidate_changes_then_the_documented_shape(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = load_policies(small_set("old")).policies, load_policies(candidate()).policies

    run = cli(capsys, "policy", "diff", "old", "new", "--json")

    assert run.code == 0
    assert json.loads(run.out) == {
        "rules": {
            "added": [
                {"id": "delisted_symbol_check", "file": "new/extra.yaml", "line": 2,
                 "trigger": "compliance_failure", "code": "DELISTED"},
            ],
            "removed": [],
            "changed": [
                {"id": "volatility_check", "file": "new/rules.yaml", "line": 9, "changes": [
                    {"key": "code", "old": "VOLATILITY_TOO_HIGH", "new": "VOL_HIGH"},
                    {"key": "deny_when", "old": "{field: volatility, gt: 0.8}",
                     "new": "{field: volatility, ge: 0.8}"},
                ]},
            ],
        },
        "parameters": {
            "changed": [{"name": "risk.max_order_quantity", "old": 100, "new": 50}],
            "added": [],
            "removed": [],
        },
        "digests": {
            "old": {"policy": old.policy_digest, "compliance": old.compliance_digest},
            "new": {"policy": new.policy_digest, "compliance": new.compliance_digest},
        },
    }  # fmt: skip


def test_policy_diff_when_only_comments_and_order_change_then_no_change_in_meaning(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small_set("old")
    first, second = RULES.split("\n\n")
    second_rule = second.replace("  - id:", "  # reviewed\n  - id:")
    small_set(
        "new",
        "# signed off\n" + COMPLIANCE,
        first.replace("rules:\n", "rules:\n" + second_rule + "\n"),
    )

    run = cli(capsys, "policy", "diff", "old", "new")

    assert run.code == 0
    assert run.out.splitlines()[2:] == [
        "",
        "no change in meaning: the same rules and parameters "
        "(the digests differ: only layout, comments or order changed)",
    ]


def test_policy_diff_when_the_candidate_does_not_validate_then_its_errors_and_exit_2(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small_set("old")
    small_set("new", rules=RULES.replace("field: volatility", "field: volatilty"))

    run = cli(capsys, "policy", "diff", "old", "new", "--json")

    assert run.code == 2
    assert run.out == ""
    assert run.err.splitlines()[0] == "policy diff: NEW (new) is not a valid policy set:"
    assert (
        "new/rules.yaml:14  volatility_check  unknown_field  unknown fact field 'volatilty'"
        in run.err
    )
    assert run.err.endswith("\n\n1 error(s); nothing compared\n")


def test_policy_diff_when_old_does_not_exist_then_not_found_and_exit_2(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small_set("new")

    run = cli(capsys, "policy", "diff", "missing", "new")

    assert run.code == 2
    assert run.err.splitlines()[0] == "policy diff: OLD (missing) is not a valid policy set:"
    assert "missing:-  -     not_found  policy directory does not exist" in run.err
