"""`apex-oms policy test [DIR | FILE] [-k NAME] [--coverage] [--require-coverage]`:
run the policy test cases.

DIR runs every case file in DIR/tests against the policy set in DIR (DIR/tests
itself works too); FILE runs one case file against the set in the folder above
its own (DIR/tests/FILE), or in `--policies`. Every failure and every invalid
case is shown as `file:line`, the line of its case. `--coverage` adds, per rule,
how many cases made it pass, fail and error, and names each rule no case fails;
`--require-coverage` (which implies it) makes such a rule fail the run. Exit
codes: 0 all passed, 1 any failed (or none exist, or under `--require-coverage`
a rule has no failing case), 2 the policies or a case file are invalid, or `-k`
selected nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine import Evaluator, PolicyError, load_policies
from engine.policy.cases import DEFAULTS_FILE, CaseResult, load_cases, run_cases, select_cases
from engine.policy.coverage import Coverage, coverage

from ._table import table

__all__ = ["add_test_parser", "coverage_text", "run_policy_test"]

OK, FAILED, USAGE = 0, 1, 2


def add_test_parser(policy_commands: Any, default_dir: str) -> None:
    sub = policy_commands.add_parser(
        "test",
        help="run the policy test cases (DIR/tests, or one case file)",
        description="Run policy test cases: every case file in DIR/tests, or one FILE. "
        f"Each folder's {DEFAULTS_FILE} is merged under every case.",
    )
    sub.add_argument(
        "target",
        nargs="?",
        default=default_dir,
        metavar="DIR|FILE",
        help=f"a policy folder (its tests/ cases) or one case file (default: {default_dir})",
    )
    sub.add_argument(
        "-k",
        dest="keyword",
        metavar="NAME",
        help="run only the cases whose name contains NAME (ignoring case)",
    )
    sub.add_argument(
        "--policies",
        metavar="DIR",
        help="the policy set to test (default: DIR, or for a FILE the folder above its own)",
    )
    sub.add_argument(
        "--coverage",
        action="store_true",
        help="show per rule how many cases made it pass, fail and error, and name each "
        "rule that no case fails",
    )
    sub.add_argument(
        "--require-coverage",
        action="store_true",
        help="as --coverage, and exit 1 when a rule has no failing case (CI runs this)",
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=run_policy_test)


def run_policy_test(args: argparse.Namespace) -> int:
    target = Path(args.target)
    # a missing FILE is reported as such, not as a folder without tests/
    if target.is_file() or (target.suffix in (".yaml", ".yml") and not target.is_dir()):
        cases_from, policies = target, Path(args.policies or target.parent.parent)
    elif not (target / "tests").is_dir() and (target.parent / "compliance.yaml").is_file():
        # the tests folder itself (DIR/tests): its cases, DIR's policies
        cases_from, policies = target, Path(args.policies or target.parent)
    else:
        cases_from, policies = target / "tests", Path(args.policies or target)
    try:
        loaded = load_policies(policies)
        evaluator = Evaluator(loaded)
        cases = load_cases(cases_from)
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return USAGE
    if not cases:
        print(f"no policy test cases found in {cases_from}", file=sys.stderr)
        return FAILED
    selected = select_cases(cases, args.keyword)
    if args.keyword is not None:
        # said on stderr under --json, so that stdout stays one JSON document
        note = f"-k {args.keyword!r}: {len(selected)} of {len(cases)} cases selected"
        print(note, file=sys.stderr if args.json or not selected else sys.stdout)
        if not selected:
            print(f"no case name contains {args.keyword!r}", file=sys.stderr)
            return USAGE
    results = run_cases(evaluator, selected)
    failed = [r for r in results if not r.passed]
    require = args.require_coverage
    covered = coverage(loaded.policies, results) if args.coverage or require else None
    if args.json:
        cases_json = [_as_json(r) for r in results]
        # without --coverage the document stays the list it always was
        document: Any = (
            cases_json if covered is None else {"cases": cases_json, "coverage": covered.as_dict()}
        )
        print(json.dumps(document, indent=2))
    else:
        for r in results:
            verdict = "PASS" if r.passed else "FAIL"
            print(f"{verdict}  {r.case.file}:{r.case.line}  {r.case.name}")
            for problem in r.problems:
                print(f"      {problem}")
        print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
        if covered is not None:
            print("\n" + coverage_text(covered))
    if require and covered is not None and covered.uncovered:
        names = ", ".join(r.rule_id for r in covered.uncovered)
        print(
            f"coverage required: {len(covered.uncovered)} rule(s) with no failing case: {names}",
            file=sys.stderr,
        )
        return FAILED
    return FAILED if failed else OK


def coverage_text(covered: Coverage) -> str:
    """The coverage table and its verdict, as `policy test --coverage` prints them."""
    rows = [
        [
            r.rule_id,
            f"{r.file}:{r.line or '-'}",
            str(r.passed),
            str(r.failed),
            str(r.errors),
            "" if r.covered else "NO FAILING CASE",
        ]
        for r in covered.rules
    ]
    head = f"coverage of {len(covered.rules)} rules by {covered.cases} cases:"
    body = table(["rule", "where", "pass", "fail", "error", ""], rows)
    if not covered.uncovered:
        verdict = f"every rule has a failing case ({len(covered.rules)} rules)"
    else:
        lines = [f"  {r.rule_id}  {r.file}:{r.line or '-'}" for r in covered.uncovered]
        verdict = f"{len(covered.uncovered)} rule(s) no case fails:\n" + "\n".join(lines)
    return f"{head}\n{body}\n\n{verdict}"


def _as_json(result: CaseResult) -> dict[str, Any]:
    return {
        "name": result.case.name,
        "file": result.case.file,
        "line": result.case.line,
        "passed": result.passed,
        "problems": result.problems,
    }
