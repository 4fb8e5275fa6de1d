"""Rule coverage of a policy test run: which results the cases drew from each rule.

A rule that no case makes fail is a rule whose denial nobody has seen work: a
typo in its parameter, an operator the wrong way round or an `applies_when`
that never holds would all go unnoticed, because every case would still pass.
So coverage counts, for each rule of the set, the cases in which it passed,
failed and errored, and names every rule with no `fail`. An `error` (missing
input) is not a failing case: it shows that the rule blocks when blind, not
that its condition denies what it should.

Every judged case counts, whatever its own verdict: a case that did not get
what it expected already fails the run. A rejected order (not well formed)
runs no rule and counts for none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .cases import CaseResult
from .rules import PolicySet

__all__ = ["Coverage", "RuleCoverage", "coverage"]


@dataclass(frozen=True)
class RuleCoverage:
    """How many cases made one rule pass, fail and error."""

    rule_id: str
    file: str
    line: int | None
    passed: int = 0
    failed: int = 0
    errors: int = 0

    @property
    def covered(self) -> bool:
        return self.failed > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule_id,
            "file": self.file,
            "line": self.line,
            "pass": self.passed,
            "fail": self.failed,
            "error": self.errors,
        }


@dataclass(frozen=True)
class Coverage:
    """Every rule of the set, in the set's order, with its counts."""

    rules: tuple[RuleCoverage, ...]
    cases: int

    @property
    def uncovered(self) -> tuple[RuleCoverage, ...]:
        """The rules no case makes fail."""
        return tuple(r for r in self.rules if not r.covered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "rules": [r.as_dict() for r in self.rules],
            "uncovered": [r.rule_id for r in self.uncovered],
        }


def coverage(policies: PolicySet, results: Iterable[CaseResult]) -> Coverage:
    """The coverage of `policies` by the case results (from `run_cases`)."""
    counts = {rule.id: [0, 0, 0] for rule in policies.rules}
    slot = {"pass": 0, "fail": 1, "error": 2}
    cases = 0
    for result in results:
        cases += 1
        if result.decision is None:
            continue
        for check, outcome in result.decision.results.items():
            # a check that is no rule of the set (none today) has nothing to cover
            if check in counts and outcome in slot:
                counts[check][slot[outcome]] += 1
    return Coverage(
        tuple(
            RuleCoverage(rule.id, rule.source, rule.line, *counts[rule.id])
            for rule in policies.rules
        ),
        cases,
    )
