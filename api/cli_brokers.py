"""`apex-oms brokers check [--json]`: validate the credentials of every broker
brokers.yaml configures and show the account each reaches (docs/brokers.md).
`apex-oms brokers fix-log [--role paper|live] [--limit N] [--json]`: the FIX
message log of the `oms_fix` sessions, one message a line (docs/oms-fix.md).

Each check is recorded on the service's store (a `broker_check` record in the
chain, and the setting paper's entry reads: SPEC section 3, paper needs a
successful check within 24 h). Nothing secret is printed: the account's id,
number and status only. Exit codes: 0 every broker ok, 1 one failed (named),
2 no broker configured or the configuration is unusable.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from adapters.fix_codec import readable
from adapters.sql import SqlStore
from engine import PolicyError
from engine.clock import format_utc
from engine.gateway import Actor

from ._table import table
from .brokers_config import load_brokers
from .cli_service import CliError
from .policy_source import note_if_packaged, policies_problem
from .runtime import Runtime
from .settings import Settings

__all__ = ["add_brokers_parser"]

OK, FAILED, USAGE = 0, 1, 2
CLI_ACTOR = Actor.of("cli", "admin")


def add_brokers_parser(commands: Any) -> None:
    """Register `brokers` and its actions on the top-level subparsers."""
    text = "check the brokers brokers.yaml configures (paper, live)"
    parser = commands.add_parser("brokers", help=text, description=text[0].upper() + text[1:] + ".")
    actions = parser.add_subparsers(metavar="ACTION", title="actions", required=True)
    check = actions.add_parser(
        "check",
        help="validate each broker's credentials and show the account it reaches",
        description="Validate each configured broker's credentials and show the account it "
        "reaches; each check is recorded (paper mode needs a successful one). Exit 0 all ok, "
        "1 a check failed, 2 nothing configured or the configuration is unusable.",
    )
    check.add_argument("--json", action="store_true", help="print a list of objects")
    check.set_defaults(handler=_check)
    fix_log = actions.add_parser(
        "fix-log",
        help="print the FIX message log (oms_fix) from the store",
        description="Print the FIX messages an oms_fix session sent and received, oldest "
        "first, one a line: time, direction, and the message in tag=value form with | for "
        "SOH. It is the adapter's own log (not the audit chain).",
    )
    fix_log.add_argument("--role", choices=("paper", "live"), help="one session (default: all)")
    fix_log.add_argument("--limit", type=int, default=100, help="the last N messages (100)")
    fix_log.add_argument("--json", action="store_true", help="print a list of objects")
    fix_log.set_defaults(handler=_fix_log)


def _check(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    config = load_brokers(settings.brokers)  # a bad file: one line naming the field, exit 2
    if not config.sections:
        where = settings.brokers or settings.home / "brokers.yaml"
        raise CliError(f"no broker configured ({where} has no paper: or live: section)", USAGE)
    problem = policies_problem(settings.policies)
    if problem is not None:
        raise CliError(problem)
    note_if_packaged(settings.policies)
    try:
        runtime = Runtime.start(settings, recover=False, verify=False)
    except PolicyError as exc:
        raise CliError(f"policy set is invalid ({settings.policies}):\n{exc}") from None
    results = []
    try:
        for role, section in config.sections.items():
            account = section.get("account")
            record = runtime.gateway.check_broker(
                role, CLI_ACTOR, account if isinstance(account, str) else ""
            )
            results.append({
                "role": role,
                "broker": record["broker"],
                "adapter": section.adapter,
                "ok": record["ok"],
                "account": record["account_view"],
                "reason": record["reason"],
                "checked_at": record["timestamp"],
                "record": record["hash"],
            })  # fmt: skip
    finally:
        runtime.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        rows = [
            [r["role"], r["broker"], r["adapter"], "ok" if r["ok"] else "FAILED",
             _account(r["account"]), r["reason"]]
            for r in results
        ]  # fmt: skip
        print(table(["role", "broker", "adapter", "check", "account", "reason"], rows))
    return OK if all(r["ok"] for r in results) else FAILED


def _account(summary: dict[str, str]) -> str:
    ident = summary.get("id") or summary.get("account_number") or summary.get("account") or "-"
    number = summary.get("account_number")
    shown = ident if not number or number == ident else f"{ident} ({number})"
    status = summary.get("status")
    return f"{shown} {status}" if status else shown


def _fix_log(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError(f"--limit: want: a positive number, got: {args.limit}")
    settings = Settings.from_env()
    if settings.database_url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    store = SqlStore(settings.database_url)
    try:
        store.migrate()
        # the adapter names its session after its broker (adapters/oms_fix.py)
        session = None if args.role is None else f"oms_fix-{args.role}"
        messages = store.fix_log(args.limit, session)
    finally:
        store.close()
    if args.json:
        rows = [
            {"at": format_utc(m.at), "direction": m.direction, "seq": m.seq,
             "msg_type": m.msg_type, "message": readable(m.message)}
            for m in messages
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
    else:
        for m in messages:
            print(f"{format_utc(m.at)} {m.direction:<3} {readable(m.message)}")
    return OK
