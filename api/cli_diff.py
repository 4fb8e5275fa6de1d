"""`apex-oms policy diff OLD NEW [--json]`: what a candidate policy set changes.

Both directories are loaded and validated as the gateway would load them; the
comparison itself is `engine.policy.diff` (by meaning: reordering, layout and
comments show nothing). Exit codes: 0 the comparison was made (whether or not
anything changed), 2 either set is not a valid policy set (every issue of each
is shown, on standard error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine import LoadedPolicies, PolicyError, load_policies
from engine.policy.diff import PolicyDiff, RuleChange, diff_policies

from ._table import table

__all__ = ["add_diff_parser", "diff_text", "run_policy_diff"]

OK, USAGE = 0, 2
# keys whose old and new values fit on one line
_SHORT_KEYS = ("trigger", "code")


def add_diff_parser(policy_commands: Any) -> None:
    text = "show what a policy set changes against another, by meaning"
    sub = policy_commands.add_parser(
        "diff",
        help=text,
        description="Compare two policy sets: rules added, removed and changed (trigger, "
        "code, conditions, wording), parameters changed, added and removed, and both "
        "sets' digests. Reordering, layout and comments show nothing. Exit 0 compared, "
        "2 a set does not validate.",
    )
    sub.add_argument("old", metavar="OLD", help="the policy set in force (e.g. policies)")
    sub.add_argument("new", metavar="NEW", help="the candidate policy set")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=run_policy_diff)


def run_policy_diff(args: argparse.Namespace) -> int:
    old, old_problem = _load("OLD", Path(args.old))
    new, new_problem = _load("NEW", Path(args.new))
    problems = [p for p in (old_problem, new_problem) if p]
    if problems or old is None or new is None:
        print("\n\n".join(problems), file=sys.stderr)
        return USAGE
    diff = diff_policies(old, new)
    if args.json:
        print(json.dumps(diff.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(diff_text(diff, args.old, args.new))
    return OK


def _load(which: str, directory: Path) -> tuple[LoadedPolicies | None, str | None]:
    try:
        return load_policies(directory), None
    except PolicyError as exc:
        rows = [
            [f"{i.file}:{i.line or '-'}", i.rule_id or "-", i.code, i.message] for i in exc.issues
        ]
        head = f"policy diff: {which} ({directory}) is not a valid policy set:"
        tail = f"{len(exc.issues)} error(s); nothing compared"
        return None, f"{head}\n{table(['where', 'rule', 'code', 'message'], rows)}\n\n{tail}"


def diff_text(diff: PolicyDiff, old_name: str, new_name: str) -> str:
    """The diff for people: only the sections with something in them."""
    width = max(len(old_name), len(new_name))
    out = [
        f"old  {old_name.ljust(width)}  policy {diff.old_digests['policy']}  "
        f"compliance {diff.old_digests['compliance']}",
        f"new  {new_name.ljust(width)}  policy {diff.new_digests['policy']}  "
        f"compliance {diff.new_digests['compliance']}",
    ]
    if diff.empty:
        same = diff.old_digests == diff.new_digests
        out.append(
            "\nno change: the same files"
            if same
            else "\nno change in meaning: the same rules and parameters "
            "(the digests differ: only layout, comments or order changed)"
        )
        return "\n".join(out)
    if diff.rules_added:
        out.append(f"\nrules added ({len(diff.rules_added)}):")
        out += [
            f"  + {r.id}  {r.file}:{r.line or '-'}  {r.trigger}  {r.code}" for r in diff.rules_added
        ]
    if diff.rules_removed:
        out.append(f"\nrules removed ({len(diff.rules_removed)}):")
        out += [
            f"  - {r.id}  {r.file}:{r.line or '-'}  {r.trigger}  {r.code}"
            for r in diff.rules_removed
        ]
    if diff.rules_changed:
        out.append(f"\nrules changed ({len(diff.rules_changed)}):")
        for change in diff.rules_changed:
            out += _rule_change_lines(change)
    if diff.params_changed:
        out.append(f"\nparameters changed ({len(diff.params_changed)}):")
        out += [f"  ~ {p.name}: {_value(p.old)} -> {_value(p.new)}" for p in diff.params_changed]
    if diff.params_added:
        out.append(f"\nparameters added ({len(diff.params_added)}):")
        out += [f"  + {p.name}: {_value(p.value)}" for p in diff.params_added]
    if diff.params_removed:
        out.append(f"\nparameters removed ({len(diff.params_removed)}):")
        out += [f"  - {p.name}: {_value(p.value)}" for p in diff.params_removed]
    out.append(
        f"\nrules: {len(diff.rules_added)} added, {len(diff.rules_removed)} removed, "
        f"{len(diff.rules_changed)} changed; parameters: {len(diff.params_changed)} changed, "
        f"{len(diff.params_added)} added, {len(diff.params_removed)} removed"
    )
    return "\n".join(out)


def _rule_change_lines(change: RuleChange) -> list[str]:
    lines = [f"  ~ {change.id}  {change.file}:{change.line or '-'}"]
    for item in change.changes:
        if item.key in _SHORT_KEYS:
            lines.append(f"      {item.key}: {item.old} -> {item.new}")
        else:
            lines += [f"      {item.key}:", f"        old: {item.old}", f"        new: {item.new}"]
    return lines


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
