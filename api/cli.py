"""`apex-oms`: the command line. Exit codes: 0 ok or approved, 1 blocked or
failed, 2 usage or invalid input."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine import EngineState, Evaluator, PolicyError, load_policies, validate_policies
from engine.clock import parse_utc
from engine.errors import InvalidArgument, StoreUnavailable
from engine.policy.decision import Decision
from engine.policy.evaluator import field_errors

from ._table import table
from .cli_cases import add_test_parser
from .cli_service import register

__all__ = ["main"]

OK, BLOCKED, USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return USAGE
    try:
        code: int = args.handler(args)
    except (StoreUnavailable, InvalidArgument) as exc:
        # the database is missing, unreachable or named by a bad URL: one line, no traceback
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"apex-oms: {first}", file=sys.stderr)
        return USAGE
    return code


def _parser() -> argparse.ArgumentParser:
    default_dir = os.environ.get("APEX_POLICIES", "policies")
    parser = argparse.ArgumentParser(prog="apex-oms", description="Pre-trade policy gateway.")
    commands = parser.add_subparsers(metavar="COMMAND")

    policy = commands.add_parser("policy", help="validate or test the policy set")
    policy_commands = policy.add_subparsers(metavar="ACTION", required=True)
    for name, handler, text in (
        ("validate", _policy_validate, "report every error in a policy directory"),
    ):
        sub = policy_commands.add_parser(name, help=text)
        sub.add_argument("directory", nargs="?", default=default_dir, metavar="DIR")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=handler)
    add_test_parser(policy_commands, default_dir)

    evaluate = commands.add_parser("evaluate", help="judge one order (dry run, never routed)")
    evaluate.add_argument("order", metavar="ORDER.json")
    evaluate.add_argument(
        "--state",
        metavar="STATE.json",
        help="positions, recent orders, kill switch, operation, mode, trading state, broker, "
        "the caller's accounts (default: an evaluate in research mode)",
    )
    evaluate.add_argument("--at", metavar="ISO-TIME", help="evaluation time (default: now)")
    evaluate.add_argument("--policies", default=default_dir, metavar="DIR")
    evaluate.add_argument("--json", action="store_true", help="print the order log record as JSON")
    evaluate.set_defaults(handler=_evaluate)
    register(commands)
    demo = commands.add_parser("demo", help="scripted tour in simulation mode, in-process")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(as_json=args.json)


def _policy_validate(args: argparse.Namespace) -> int:
    issues = validate_policies(Path(args.directory))
    if args.json:
        print(json.dumps({"valid": not issues, "issues": [vars(i) for i in issues]}, indent=2))
    elif issues:
        rows = [[f"{i.file}:{i.line or '-'}", i.rule_id or "-", i.code, i.message] for i in issues]
        print(table(["where", "rule", "code", "message"], rows))
        print(f"\n{len(issues)} error(s); policy set is INVALID")
    else:
        loaded = load_policies(Path(args.directory))
        print(
            f"policy set is valid: {len(loaded.policies.rules)} rules in "
            f"{len(loaded.policies.files)} files"
        )
        print(f"policy digest:     {loaded.policies.policy_digest}")
        print(f"compliance digest: {loaded.policies.compliance_digest}")
    return USAGE if issues else OK


def _evaluate(args: argparse.Namespace) -> int:
    try:
        order = _read_json(args.order)
        state = EngineState.model_validate(_read_json(args.state)) if args.state else EngineState()
        now = parse_utc(args.at) if args.at else None
    except ValidationError as exc:
        for error in field_errors(exc):
            print(f"state: {error.field}: {error.message}", file=sys.stderr)
        return USAGE
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    try:
        evaluator = Evaluator(load_policies(Path(args.policies)))
    except PolicyError as exc:
        print(f"policy set is invalid; nothing can be approved:\n{exc}", file=sys.stderr)
        return USAGE
    decision = evaluator.evaluate(order, state, now)
    record = decision.record()
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        print(_describe(decision, record))
    if decision.status == "rejected":
        return USAGE
    return OK if decision.approved else BLOCKED


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc


def _describe(decision: Decision, record: dict[str, Any]) -> str:
    if decision.status == "rejected":
        rows = [[e.field, e.message] for e in decision.errors]
        return "REJECTED: invalid order\n\n" + table(["field", "problem"], rows)
    details = {r.check: f"{r.code}: {r.detail}" for r in decision.reasons}
    rows = [[check, result, details.get(check, "")] for check, result in decision.results.items()]
    extra = [r for r in decision.reasons if r.check not in decision.results]
    rows += [[r.check, r.result, f"{r.code}: {r.detail}"] for r in extra]
    verdict = "APPROVED" if decision.approved else "BLOCKED: " + ", ".join(decision.triggers)
    head = (
        f"{record['client_order_id']}  {record['side']} {record['quantity']} "
        f"{record['symbol']} {record['order_type']}  at {record['timestamp']}"
    )
    return f"{head}\n\n{table(['check', 'result', 'detail'], rows)}\n\n{verdict}"


if __name__ == "__main__":
    raise SystemExit(main())
