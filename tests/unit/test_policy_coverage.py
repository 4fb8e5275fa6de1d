"""`engine.policy.coverage`: per rule, how many cases made it pass, fail and error,
and which rules no case fails. Each table row runs its cases against a two-rule
set and names the exact counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import Evaluator, load_policies
from engine.policy.cases import load_cases, run_cases
from engine.policy.coverage import coverage

COMPLIANCE = """\
version: 1
expires: "2027-01-31T00:00:00Z"
session: {calendar: always}
"""

RULES = """\
rules:
  - id: max_quantity_check
    description: Fat-finger guard.
    trigger: risk_denied
    code: QUANTITY_ABOVE_LIMIT
    reason: The quantity is above 100.
    deny_when: {field: quantity, gt: 100}

  - id: volatility_check
    description: Volatility limit.
    trigger: risk_denied
    code: VOLATILITY_TOO_HIGH
    reason: Volatility is above 0.8.
    deny_when: {field: volatility, gt: 0.8}
"""

DEFAULTS = """\
at: "2026-11-30T15:00:00Z"
order:
  client_order_id: c-1
  symbol: AAPL
  side: buy
  quantity: 10
  order_type: limit
  limit_price: 150
  context: {volatility: 0.2}
"""

APPROVED = """\
  - name: approved
    expect: {status: evaluated}
"""
TOO_MANY = """\
  - name: too many shares
    order: {quantity: 101}
    expect: {status: blocked, failed: [max_quantity_check], triggers: [risk_denied]}
"""
NO_VOLATILITY = """\
  - name: no volatility
    order: {context: {volatility: null}}
    expect: {status: blocked, failed: [volatility_check], triggers: [risk_denied]}
"""
REJECTED = """\
  - name: a negative quantity is not judged
    order: {quantity: -1}
    expect: {status: rejected}
"""
TOO_VOLATILE = """\
  - name: too volatile
    order: {context: {volatility: 0.9}}
    expect: {status: blocked, failed: [volatility_check], triggers: [risk_denied]}
"""


def rows(quantity: tuple[int, int, int], volatility: tuple[int, int, int]) -> list[Any]:
    return [
        {"rule": "max_quantity_check", "file": "{dir}/rules.yaml", "line": 2,
         "pass": quantity[0], "fail": quantity[1], "error": quantity[2]},
        {"rule": "volatility_check", "file": "{dir}/rules.yaml", "line": 9,
         "pass": volatility[0], "fail": volatility[1], "error": volatility[2]},
    ]  # fmt: skip


TABLE = [
    pytest.param(
        [APPROVED],
        {"cases": 1, "rules": rows((1, 0, 0), (1, 0, 0)),
         "uncovered": ["max_quantity_check", "volatility_check"]},
        id="an approved order alone covers nothing",
    ),
    pytest.param(
        [APPROVED, TOO_MANY],
        {"cases": 2, "rules": rows((1, 1, 0), (2, 0, 0)), "uncovered": ["volatility_check"]},
        id="a failing case covers its rule only",
    ),
    pytest.param(
        [TOO_MANY, NO_VOLATILITY],
        {"cases": 2, "rules": rows((1, 1, 0), (1, 0, 1)), "uncovered": ["volatility_check"]},
        id="an error is not a failing case",
    ),
    pytest.param(
        [REJECTED, TOO_MANY, TOO_VOLATILE],
        {"cases": 3, "rules": rows((1, 1, 0), (1, 1, 0)), "uncovered": []},
        id="a rejected order runs no rule but is a case",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("cases", "want"), TABLE)
def test_coverage_when_cases_run_then_each_rule_counts_pass_fail_error(
    tmp_path: Path, cases: list[str], want: dict[str, Any]
) -> None:
    (tmp_path / "compliance.yaml").write_text(COMPLIANCE, "utf-8")
    (tmp_path / "rules.yaml").write_text(RULES, "utf-8")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "defaults.yaml").write_text(DEFAULTS, "utf-8")
    (tmp_path / "tests" / "cases.yaml").write_text("cases:\n" + "".join(cases), "utf-8")
    loaded = load_policies(tmp_path, require=())
    results = run_cases(Evaluator(loaded), load_cases(tmp_path / "tests"))
    assert all(r.passed for r in results), [r.problems for r in results]

    got = coverage(loaded.policies, results).as_dict()

    for row in want["rules"]:
        row["file"] = row["file"].replace("{dir}", str(tmp_path))
    assert got == want
