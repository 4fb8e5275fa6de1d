"""`apex-oms`: the command line. Exit codes: 0 ok or approved, 1 blocked or
failed, 2 usage or invalid input."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine import EngineState, Evaluator, PolicyError, load_policies
from engine.clock import parse_utc
from engine.errors import InvalidArgument, StoreUnavailable
from engine.policy.decision import Decision
from engine.policy.evaluator import field_errors
from engine.policy.loader import check_policies

from ._table import table
from .cli_brokers import add_brokers_parser
from .cli_cases import add_test_parser
from .cli_compliance import add_compliance_parser
from .cli_diff import add_diff_parser
from .cli_keys import add_keys_parser
from .cli_service import CliError, register, service_state
from .cli_unlock import add_unlock_parser
from .cli_whatif import add_whatif_parsers
from .policy_source import note_if_packaged, policies_dir, policies_problem

__all__ = ["main"]

OK, BLOCKED, USAGE = 0, 1, 2
# what a shell reports for a command killed by SIGPIPE (128 + 13)
BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "handler"):
            parser.print_help(sys.stderr)
            return USAGE
        _check_policies(args)
        code: int = args.handler(args)
        sys.stdout.flush()  # a reader that has gone is found here, not at exit
        return code
    except (StoreUnavailable, InvalidArgument) as exc:
        # the database is missing, unreachable or named by a bad URL: one line, no traceback
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"apex-oms: {first}", file=sys.stderr)
        return USAGE
    except CliError as exc:
        print(f"apex-oms: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # `apex-oms audit export | head`: the reader has all it wants; no traceback
        _silence_stdout()
        return BROKEN_PIPE


def _silence_stdout() -> None:
    """Point standard output at /dev/null so the interpreter's final flush of what
    is still buffered does not raise a second BrokenPipeError at exit."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _check_policies(args: argparse.Namespace) -> None:
    """A command given a policy directory: say so when it is the packaged default
    set, and stop with a hint when it does not exist."""
    directory = getattr(args, "policies", None) or getattr(args, "directory", None)
    if directory is None and getattr(args, "target", None) is not None:
        directory = args.target  # `policy test DIR|FILE`
    if directory is None:
        return
    path = Path(directory)
    if path.is_file():
        return  # `policy test FILE`: its own command finds the set
    problem = policies_problem(path)
    if problem is not None:
        raise CliError(problem, USAGE)
    note_if_packaged(path)


def _version() -> str:
    try:
        return version("apex-oms")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    default_dir = str(policies_dir())
    parser = argparse.ArgumentParser(
        prog="apex-oms",
        description="Pre-trade policy gateway. Exit codes: 0 ok or approved, "
        "1 blocked or verification failed, 2 usage or invalid input.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"apex-oms {_version()}",
        help="print the version and exit",
    )
    commands = parser.add_subparsers(metavar="COMMAND", title="commands")

    policy = commands.add_parser(
        "policy",
        help="validate or test the policy set",
        description="Validate or test a policy set.",
    )
    policy_commands = policy.add_subparsers(metavar="ACTION", title="actions", required=True)
    for name, handler, text in (
        ("validate", _policy_validate, "report every error in a policy directory"),
    ):
        sub = policy_commands.add_parser(name, help=text, description=text[0].upper() + text[1:])
        sub.add_argument(
            "directory",
            nargs="?",
            default=default_dir,
            metavar="DIR",
            help=f"the policy directory (default: {default_dir})",
        )
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=handler)
    add_test_parser(policy_commands, default_dir)
    add_whatif_parsers(policy_commands)
    add_diff_parser(policy_commands)

    evaluate = commands.add_parser(
        "evaluate",
        help="judge orders (dry run, never routed, not recorded)",
        description="Judge each order file as the service would (a dry run: nothing is "
        "routed or recorded). Exit 0 all approved, 1 any blocked, 2 any invalid.",
    )
    evaluate.add_argument(
        "orders", nargs="+", metavar="ORDER.json", help="order files; `-` reads standard input"
    )
    evaluate.add_argument(
        "--state",
        metavar="STATE.json",
        help="positions, recent orders, kill switch, operation, mode, trading state, broker, "
        "the caller's accounts (default: an evaluate, in the mode stored in the service's "
        "database, or research when there is none)",
    )
    evaluate.add_argument("--at", metavar="ISO-TIME", help="evaluation time (default: now)")
    evaluate.add_argument(
        "--policies",
        default=default_dir,
        metavar="DIR",
        help=f"the policy directory (default: {default_dir})",
    )
    evaluate.add_argument("--json", action="store_true", help="print the order log record as JSON")
    evaluate.set_defaults(handler=_evaluate)
    register(commands)
    add_compliance_parser(commands, default_dir)
    add_keys_parser(commands)
    add_unlock_parser(commands)
    add_brokers_parser(commands)
    demo = commands.add_parser(
        "demo",
        help="scripted tour in simulation mode, in-process",
        description="A scripted tour in simulation mode, in-process, on a throwaway database.",
    )
    demo.add_argument("--json", action="store_true", help="machine-readable output")
    demo.add_argument(
        "--broker",
        choices=("alpaca", "ib"),
        help="the tour in paper mode against a fake of this broker the demo starts "
        "(needs the source checkout's tests/fakes)",
    )
    demo.set_defaults(handler=_demo, policies=default_dir)
    return parser


def _demo(args: argparse.Namespace) -> int:
    if args.broker is not None:
        from .demo_broker import run_broker_demo

        return run_broker_demo(args.broker, as_json=args.json, policies=Path(args.policies))
    from .demo import run_demo

    return run_demo(as_json=args.json, policies=Path(args.policies))


def _policy_validate(args: argparse.Namespace) -> int:
    # warnings (the analysis) never change the exit code; errors make it 2
    report = check_policies(Path(args.directory))
    issues, warnings = report.issues, report.warnings
    if args.json:
        print(
            json.dumps(
                {
                    "valid": not issues,
                    "issues": [vars(i) for i in issues],
                    "warnings": [vars(w) for w in warnings],
                },
                indent=2,
            )
        )
        return USAGE if issues else OK
    if issues:
        rows = [[f"{i.file}:{i.line or '-'}", i.rule_id or "-", i.code, i.message] for i in issues]
        print(table(["where", "rule", "code", "message"], rows))
    if warnings:
        rows = [
            [f"{w.file}:{w.line or '-'}", w.rule_id or "-", w.code, w.message] for w in warnings
        ]
        print(("\n" if issues else "") + "warnings:")
        print(table(["where", "rule", "code", "message"], rows))
    if issues:
        also = f", {len(warnings)} warning(s)" if warnings else ""
        print(f"\n{len(issues)} error(s){also}; policy set is INVALID")
    else:
        loaded = load_policies(Path(args.directory))
        print(
            ("\n" if warnings else "")
            + (
                f"policy set is valid: {len(loaded.policies.rules)} rules in "
                f"{len(loaded.policies.files)} files"
                + (f", {len(warnings)} warning(s)" if warnings else "")
            )
        )
        print(f"policy digest:     {loaded.policies.policy_digest}")
        print(f"compliance digest: {loaded.policies.compliance_digest}")
    return USAGE if issues else OK


def _evaluate(args: argparse.Namespace) -> int:
    try:
        raw_state = _read_json(args.state) if args.state else {}
        if not isinstance(raw_state, dict):
            raise ValueError(f"{args.state}: a state file is a JSON object")
        now = parse_utc(args.at) if args.at else None
        # judged as the service would judge it now (its mode, broker, Omega directive
        # and trading state), except what the state file says
        source = "the state file"
        if "mode" not in raw_state:
            stored, source = service_state()
            raw_state = {**stored, **raw_state}
        state = EngineState.model_validate(raw_state)
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
    codes, judged = [], []
    for name in args.orders:
        try:
            order = _read_json(name)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            codes.append(USAGE)
            judged.append({"file": name, "error": str(exc)})
            continue
        decision = evaluator.evaluate(order, state, now)
        record = decision.record(mode=state.mode)
        code = USAGE if decision.status == "rejected" else OK if decision.approved else BLOCKED
        codes.append(code)
        judged.append({"file": name, "record": record})
        if not args.json:
            if len(args.orders) > 1:
                print(f"{'' if len(judged) == 1 else chr(10)}== {name} ==")
            print(_describe(decision, record, f"{state.mode} ({source})"))
    if args.json and len(judged) > 1:
        # several files: each record with the file it came from
        print(json.dumps(judged, indent=2, ensure_ascii=False))
    elif args.json and "record" in judged[0]:
        # one file: its record, as ever (an unreadable file: the error on stderr alone)
        print(json.dumps(judged[0]["record"], indent=2, ensure_ascii=False))
    return USAGE if USAGE in codes else BLOCKED if BLOCKED in codes else OK


def _read_json(path: str) -> Any:
    if path == "-":
        text, path = sys.stdin.read(), "standard input"
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc


def _describe(decision: Decision, record: dict[str, Any], mode: str) -> str:
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
        f"{record['symbol']} {record['order_type']}  at {record['timestamp']}  mode: {mode}"
    )
    return f"{head}\n\n{table(['check', 'result', 'detail'], rows)}\n\n{verdict}"


if __name__ == "__main__":
    raise SystemExit(main())
