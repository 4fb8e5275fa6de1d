"""CLI commands that work on the service's store: serve, mode, state, omega,
orders, audit, tokens. They use the same settings (`APEX_HOME`, `APEX_DATABASE_URL`,
`APEX_POLICIES`) as the server."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timedelta
from typing import Any

from engine import PolicyError
from engine.audit import ChainReport
from engine.audit_replay import verify_export, verify_store
from engine.clock import format_utc
from engine.gateway import MODES, Actor, ModeRefused, StateRefused

from ._logging import configure_logging
from ._table import table
from .auth import ROLES, TokenRefused, parse_duration, token_id_of, write_secret
from .runtime import Runtime
from .server import add_limit_options, limits_from, serve
from .settings import Settings

__all__ = ["register"]

OK, FAILED, USAGE = 0, 1, 2
ADMIN_TOKEN_FILE = "admin-token"  # in APEX_HOME: the first start's admin token
log = logging.getLogger("apex.cli")
# Whoever runs the CLI has the database itself: records name them `cli`.
CLI_ACTOR = Actor.of("cli", "admin")
STATES = ("active", "reducing", "halted")


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    add_limit_options(serve)
    serve.set_defaults(handler=_serve)

    mode = commands.add_parser("mode", help="show or set the trading mode")
    mode_sub = mode.add_subparsers(metavar="ACTION", required=True)
    show = mode_sub.add_parser("show")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_mode_show)
    set_ = mode_sub.add_parser("set")
    set_.add_argument("mode", choices=MODES)
    set_.add_argument("--reason", default="")
    set_.add_argument("--json", action="store_true")
    set_.set_defaults(handler=_mode_set)

    state = commands.add_parser("state", help="show or set the trading states")
    state_sub = state.add_subparsers(metavar="ACTION", required=True)
    state_show = state_sub.add_parser("show")
    state_show.add_argument("--json", action="store_true")
    state_show.set_defaults(handler=_state_show)
    state_set = state_sub.add_parser("set")
    state_set.add_argument("state", choices=STATES)
    state_set.add_argument("--reason", required=True)
    state_set.add_argument("--account", help="one account (default: the whole gateway)")
    state_set.add_argument("--json", action="store_true")
    state_set.set_defaults(handler=_state_set)

    omega = commands.add_parser("omega", help="invoke or clear the Omega directive (kill switch)")
    omega_sub = omega.add_subparsers(metavar="ACTION", required=True)
    invoke = omega_sub.add_parser("invoke")
    invoke.add_argument("--reason", required=True)
    invoke.add_argument("--cancel-open", action="store_true", help="also cancel working orders")
    invoke.set_defaults(handler=_omega_invoke)
    clear = omega_sub.add_parser("clear")
    clear.add_argument("--reason", required=True)
    clear.set_defaults(handler=_omega_clear)

    orders = commands.add_parser("orders", help="list orders")
    orders_sub = orders.add_subparsers(metavar="ACTION", required=True)
    listing = orders_sub.add_parser("list")
    listing.add_argument("--status")
    listing.add_argument("--symbol")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_orders_list)

    audit = commands.add_parser("audit", help="verify or export the audit chain")
    audit_sub = audit.add_subparsers(metavar="ACTION", required=True)
    verify = audit_sub.add_parser(
        "verify", help="verify the chain and the stored head, orders and positions against it"
    )
    verify.add_argument("--json", action="store_true", help="print the report as an object")
    verify.add_argument(
        "--export",
        metavar="FILE",
        help="verify an export file (JSON Lines) instead, with no database: links and hashes",
    )
    verify.set_defaults(handler=_audit_verify)
    export = audit_sub.add_parser("export")
    export.add_argument("--output", "-o", default="-", help="file (default: standard output)")
    export.set_defaults(handler=_audit_export)

    tokens = commands.add_parser("tokens", help="create, list or revoke API tokens")
    tokens_sub = tokens.add_subparsers(metavar="ACTION", required=True)
    create = tokens_sub.add_parser("create", help="create a token (printed once, never stored)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--label", default="")
    create.add_argument(
        "--account",
        action="append",
        dest="accounts",
        metavar="ACCOUNT",
        help="a trader token's account (repeat for more; none: every allowed account)",
    )
    create.add_argument(
        "--expires-in",
        type=_duration,
        metavar="DURATION",
        help="lifetime: a whole number and s, m, h or d, e.g. 30d (default: never expires)",
    )
    create.add_argument("--json", action="store_true", help="print an object, not the token")
    create.set_defaults(handler=_tokens_create)
    token_list = tokens_sub.add_parser("list", help="every token's id, role and state (no secret)")
    token_list.add_argument("--json", action="store_true", help="print a list of objects")
    token_list.set_defaults(handler=_tokens_list)
    revoke = tokens_sub.add_parser("revoke", help="revoke a token on every replica (within 1 s)")
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="the id shown by `tokens list`")
    revoke.set_defaults(handler=_tokens_revoke)


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except TokenRefused as exc:
        # argparse names the option and exits 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def _runtime() -> Runtime:
    # a tool, not the service: reconciling working orders is the service's job
    return Runtime.start(Settings.from_env(), recover=False)


def _serve(args: argparse.Namespace) -> int:
    configure_logging()
    settings = Settings.from_env()
    try:
        runtime = Runtime.start(settings)
    except PolicyError as exc:
        print(f"policy set is invalid; not starting:\n{exc}", file=sys.stderr)
        return USAGE
    runtime.start_sweeping()
    url = f"http://{args.host}:{args.port}"
    if runtime.store.token_count() == 0:
        # the token itself goes to a file only its owner can read, never to a log
        token = runtime.tokens.create("admin", "first start", runtime.clock())
        path = settings.home / ADMIN_TOKEN_FILE
        write_secret(path, token)
        where = f"first start; admin token {token_id_of(token)} written to {path} (mode 0600)"
        print(f"apex-oms: {where}", flush=True)
        log.info(where)
    print(
        f"apex-oms: serving {url}  (OpenAPI: {url}/schema, data: {settings.database_url})",
        flush=True,
    )
    serve(runtime, args.host, args.port, limits_from(settings, args))
    return OK


def _mode_show(args: argparse.Namespace) -> int:
    runtime = _runtime()
    gateway = runtime.gateway
    view: dict[str, Any] = {
        "mode": gateway.mode(),
        "omega": gateway.omega(),
        "requirements": {m: gateway.requirements(m) for m in MODES},
    }
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print(f"mode: {view['mode']}")
        print(f"omega directive: {'IN FORCE' if view['omega'].get('active') else 'clear'}")
        rows = [
            [m, "ok" if not need else "; ".join(need)] for m, need in view["requirements"].items()
        ]
        print(table(["mode", "requirements"], rows))
    return OK


def _mode_set(args: argparse.Namespace) -> int:
    runtime = _runtime()
    try:
        event = runtime.gateway.set_mode(args.mode, CLI_ACTOR, args.reason)
    except ModeRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return FAILED
    print(json.dumps(event, indent=2) if args.json else f"mode is now {args.mode}")
    return OK


def _state_show(args: argparse.Namespace) -> int:
    states = _runtime().gateway.trading_states()
    if args.json:
        print(json.dumps(states, indent=2))
        return OK
    scopes = [("global", states["global"]), *sorted(states["accounts"].items())]
    rows = [
        [scope, str(e.get("state")), e.get("reason") or "", e.get("actor") or "", e.get("at") or ""]
        for scope, e in scopes
    ]
    print(table(["scope", "state", "reason", "actor", "since"], rows))
    return OK


def _state_set(args: argparse.Namespace) -> int:
    scope = args.account or "global"
    try:
        event = _runtime().gateway.set_trading_state(scope, args.state, CLI_ACTOR, args.reason)
    except StateRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return USAGE
    print(json.dumps(event, indent=2) if args.json else f"{scope} is now {args.state}")
    return OK


def _omega_invoke(args: argparse.Namespace) -> int:
    runtime = _runtime()
    runtime.gateway.invoke_omega(CLI_ACTOR, args.reason, args.cancel_open)
    print("Omega directive IN FORCE: new orders and replaces are blocked; cancels still work")
    return OK


def _omega_clear(args: argparse.Namespace) -> int:
    runtime = _runtime()
    runtime.gateway.clear_omega(CLI_ACTOR, args.reason)
    print("Omega directive cleared")
    return OK


def _orders_list(args: argparse.Namespace) -> int:
    runtime = _runtime()
    rows = runtime.store.list_orders(status=args.status, symbol=args.symbol, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return OK
    print(
        table(
            ["order_id", "client_order_id", "side", "qty", "symbol", "type", "status", "triggers"],
            [
                [
                    r["order_id"] or "",
                    r.get("client_order_id") or "",
                    r.get("side") or "",
                    str(r.get("quantity") or ""),
                    r.get("symbol") or "",
                    r.get("order_type") or "",
                    r["order_status"],
                    ",".join(r.get("fail_closed_triggers") or []),
                ]
                for r in rows
            ],
        )
    )
    return OK


def _audit_verify(args: argparse.Namespace) -> int:
    if args.export is not None:
        try:
            with open(args.export, encoding="utf-8") as lines:
                report = verify_export(lines)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"apex-oms: cannot read the export {args.export}: {exc}", file=sys.stderr)
            return USAGE
    else:
        report = verify_store(_runtime().store)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report, exported=args.export is not None)
    return OK if report.ok else FAILED


def _print_report(report: ChainReport, *, exported: bool) -> None:
    broken = report.first_break
    if broken is not None:
        print(
            f"audit chain BROKEN at record {broken.position} "
            f"(order {broken.order_id or '-'}): {broken.reason}"
        )
    elif report.findings:
        print(f"audit chain DIFFERS from the store: {len(report.findings)} findings")
        for finding in report.findings:
            print(f"  {finding.describe()}")
    else:
        print(f"audit chain OK: {report.records} records, head {report.head}")
    if exported:
        print("links and hashes only: an export has no stored head, so a deleted tail cannot show")
    elif report.ok:
        print("the stored head, orders and positions match the chain")
    elif not report.rows_compared:
        print("the stored head, orders and positions not compared: the chain is broken")


def _audit_export(args: argparse.Namespace) -> int:
    runtime = _runtime()
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    count = 0
    try:
        for record in runtime.store.audit_records():
            out.write(
                json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
            )
            count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output != "-":
        print(f"exported {count} records to {args.output}", file=sys.stderr)
    return OK


def _tokens_create(args: argparse.Namespace) -> int:
    logging.disable(logging.CRITICAL)
    runtime = _runtime()
    now = runtime.clock()
    try:
        token = runtime.tokens.create(args.role, args.label, now, args.accounts, args.expires_in)
    except TokenRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    if args.json:
        accounts = sorted(set(args.accounts)) if args.accounts else None
        expires = _iso(now + args.expires_in) if args.expires_in is not None else None
        print(
            json.dumps(
                {
                    "token": token,
                    "token_id": token_id_of(token),
                    "role": args.role,
                    "accounts": accounts,
                    "label": args.label,
                    "expires_at": expires,
                }
            )
        )
    else:
        print(token)
    return OK


def _tokens_list(args: argparse.Namespace) -> int:
    rows = _runtime().store.tokens()
    if args.json:
        listed = [
            {
                "token_id": row.token_id,
                "role": row.role,
                "accounts": sorted(row.accounts) if row.accounts is not None else None,
                "label": row.label,
                "created_at": _iso(row.created_at),
                "expires_at": _iso(row.expires_at),
                "revoked_at": _iso(row.revoked_at),
            }
            for row in rows
        ]
        print(json.dumps(listed, indent=2, ensure_ascii=False))
        return OK
    print(
        table(
            ["token_id", "role", "accounts", "label", "created", "expires", "revoked"],
            [
                [
                    row.token_id,
                    row.role,
                    ",".join(sorted(row.accounts)) if row.accounts is not None else "(all allowed)",
                    row.label,
                    format_utc(row.created_at),
                    _iso(row.expires_at) or "never",
                    _iso(row.revoked_at) or "",
                ]
                for row in rows
            ],
        )
    )
    return OK


def _tokens_revoke(args: argparse.Namespace) -> int:
    runtime = _runtime()
    if not runtime.tokens.revoke(args.token_id, runtime.clock()):
        print(f"no live token with id {args.token_id!r}", file=sys.stderr)
        return FAILED
    print(f"token {args.token_id} revoked (refused on every replica within 1 s)")
    return OK


def _iso(moment: datetime | None) -> str | None:
    return format_utc(moment) if moment is not None else None
