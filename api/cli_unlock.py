"""`apex-oms unlock status|step N`: the live unlock from the command line, on the
service's store (docs/unlock.md). Whoever runs it has the database: the steps are
recorded with the actor `cli`, as a compliance officer. Each run verifies the
configuration as a start does (a `verification` record), so that the steps judge
the configuration as the service would. Exit codes: 0 done, 1 refused, 2 usage."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine import PolicyError
from engine.gateway import Actor
from engine.gateway.unlock import CONFIRMATION, STEPS, UnlockInvalid, UnlockRefused

from ._table import table
from .cli_service import CliError
from .policy_source import note_if_packaged, policies_problem
from .runtime import Runtime
from .settings import Settings

__all__ = ["CLI_OFFICER", "add_unlock_parser"]

OK, REFUSED, USAGE = 0, 1, 2
CLI_OFFICER = Actor.of("cli", "compliance")


def add_unlock_parser(commands: Any) -> None:
    """Register `unlock` and its actions on the top-level subparsers."""
    text = "walk the live unlock (SPEC section 3), or show where it stands"
    parser = commands.add_parser("unlock", help=text, description=text[0].upper() + text[1:] + ".")
    actions = parser.add_subparsers(metavar="ACTION", title="actions", required=True)
    status = actions.add_parser(
        "status",
        help="each step, each live requirement, whether live holds",
        description="Each step, each live requirement, and whether live holds now.",
    )
    status.add_argument("--json", action="store_true", help="print GET /v1/unlock's object")
    status.set_defaults(handler=_status)
    step = actions.add_parser(
        "step",
        help="take one step (1-5 or its name), in order",
        description="Take one step of the live unlock: "
        + ", ".join(f"{n} {name}" for n, name in enumerate(STEPS, start=1))
        + f". Step 5 needs --confirm {CONFIRMATION!r}.",
    )
    step.add_argument("step", metavar="N", help="the step: 1-5 or its name")
    step.add_argument("--confirm", help=f"step 5 only: exactly {CONFIRMATION!r}")
    step.add_argument("--json", action="store_true", help="print the step's record")
    step.set_defaults(handler=_step)


def _runtime() -> Runtime:
    settings = Settings.from_env()
    problem = policies_problem(settings.policies)
    if problem is not None:
        raise CliError(problem)
    note_if_packaged(settings.policies)
    try:
        # a tool: no recovery (the service's job), but the configuration verified
        return Runtime.start(settings, recover=False, verify=True)
    except PolicyError as exc:
        raise CliError(f"policy set is invalid ({settings.policies}):\n{exc}") from None


def _status(args: argparse.Namespace) -> int:
    runtime = _runtime()
    try:
        view = runtime.gateway.unlock.status()
    finally:
        runtime.close()
    if args.json:
        print(json.dumps(view, indent=2))
        return OK
    print(_human(view))
    return OK


def _human(view: dict[str, Any]) -> str:
    config = view["configuration"]
    lines = [
        f"live: {'UNLOCKED' if view['unlocked'] else 'locked'} ({view['note']})",
        f"mode: {view['mode']}",
        f"configuration: version {config['version']} ({config['trust']}"
        f"{', in force' if config['in_force'] else ', NOT in force'})",
    ]
    void = view["walk"].get("void")
    if void:
        lines.append(f"last voided: {void.get('reason')}")
    steps = [
        [str(s["step"]), s["name"], s["status"], s["actor"] or "", s["at"] or ""]
        for s in view["steps"]
    ]
    lines.append(table(["step", "name", "status", "actor", "at"], steps))
    needs = [[r["name"], "ok" if r["ok"] else "NO", r["why"]] for r in view["requirements"]]
    lines.append(table(["requirement", "holds", "why"], needs))
    return "\n".join(lines)


def _step(args: argparse.Namespace) -> int:
    runtime = _runtime()
    try:
        record = runtime.gateway.unlock.perform(args.step, CLI_OFFICER, args.confirm)
    except UnlockInvalid as exc:
        print(f"apex-oms: unlock step: {exc.field}: {exc}", file=sys.stderr)
        return USAGE
    except UnlockRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps(exc.record, indent=2))
        return REFUSED
    finally:
        runtime.close()
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"step {record['step']} ({record['name']}) done")
        if record["step"] == 5:
            print("mode is now live")
    return OK
