"""CLI commands that work on the service's store: serve, mode, state, omega,
orders, audit, tokens. They use the same settings (`APEX_HOME`, `APEX_DATABASE_URL`,
`APEX_POLICIES`) as the server."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine import PolicyError
from engine.clock import format_utc, system_clock
from engine.gateway import MODES, Actor, ModeRefused, StateRefused
from engine.lifecycle import OrderStatus
from engine.models import MAX_QUANTITY, OrderRequest
from engine.policy.evaluator import field_errors
from engine.signing.keys import KeyFileError
from engine.signing.standing import Standing

from ._logging import configure_logging
from ._table import table
from .auth import ROLES, TokenRefused, parse_duration, token_id_of, write_secret
from .cli_audit import add_audit_actions
from .example_order import ORDER_TYPES, SIDES, example_order
from .policy_source import note_if_packaged, policies_problem
from .runtime import Runtime
from .server import add_limit_options, limits_from, serve
from .settings import Settings

__all__ = ["CliError", "register", "service_database_exists", "service_state"]

OK, FAILED, USAGE = 0, 1, 2
ADMIN_TOKEN_FILE = "admin-token"  # in APEX_HOME: the first start's admin token
log = logging.getLogger("apex.cli")
# Whoever runs the CLI has the database itself: records name them `cli`.
CLI_ACTOR = Actor.of("cli", "admin")
STATES = ("active", "reducing", "halted")
STATUSES = tuple(status.value for status in OrderStatus)
MAX_LIMIT = 1000


class CliError(Exception):
    """Stop the command: `main` prints the message on standard error and exits `code`."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API (uvicorn); keeps the terminal",
        description="Run the HTTP API in the foreground until interrupted.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    add_limit_options(serve)
    serve.set_defaults(handler=_serve)

    mode = _group(commands, "mode", "show or set the trading mode")
    show = _action(mode, "show", "the mode, the Omega directive, what each mode needs")
    _json_option(show)
    show.set_defaults(handler=_mode_show)
    set_ = _action(mode, "set", "change the mode (recorded in the audit chain)")
    set_.add_argument("mode", choices=MODES, help="the new mode: " + ", ".join(MODES))
    set_.add_argument("--reason", default="", help="why (recorded with the change)")
    _json_option(set_, "print the recorded event as an object")
    set_.set_defaults(handler=_mode_set)

    state = _group(commands, "state", "show or set the trading states")
    state_show = _action(state, "show", "the gateway's trading state and each account's")
    _json_option(state_show)
    state_show.set_defaults(handler=_state_show)
    state_set = _action(state, "set", "set the trading state of the gateway or one account")
    state_set.add_argument("state", choices=STATES, help="the new state: " + ", ".join(STATES))
    state_set.add_argument("--reason", required=True, help="why (recorded with the change)")
    state_set.add_argument("--account", help="one account (default: the whole gateway)")
    _json_option(state_set, "print the recorded event as an object")
    state_set.set_defaults(handler=_state_set)

    omega = _group(commands, "omega", "invoke or clear the Omega directive (kill switch)")
    invoke = _action(omega, "invoke", "block every new order and replace (cancels still work)")
    invoke.add_argument("--reason", required=True, help="why (recorded with the directive)")
    invoke.add_argument("--cancel-open", action="store_true", help="also cancel working orders")
    invoke.set_defaults(handler=_omega_invoke)
    clear = _action(omega, "clear", "lift the Omega directive")
    clear.add_argument("--reason", required=True, help="why (recorded with the change)")
    clear.set_defaults(handler=_omega_clear)

    orders = _group(commands, "orders", "list orders, or print an example order body")
    listing = _action(orders, "list", "the newest orders first")
    listing.add_argument(
        "--status", type=_status, metavar="STATUS", help="only this status: " + ", ".join(STATUSES)
    )
    listing.add_argument("--symbol", help="only this symbol")
    listing.add_argument(
        "--limit",
        type=_limit,
        default=50,
        metavar="N",
        help=f"at most N orders, 1 to {MAX_LIMIT} (default: %(default)s)",
    )
    _json_option(listing, "print a list of objects")
    listing.set_defaults(handler=_orders_list)
    example = _action(
        orders,
        "example",
        "print an order body valid now (fresh quote, correct digests) for curl",
    )
    example.add_argument("--symbol", default="AAPL", help="the symbol (default: %(default)s)")
    example.add_argument("--side", choices=SIDES, default="buy", help="buy or sell (default: buy)")
    example.add_argument(
        "--type",
        dest="order_type",
        choices=ORDER_TYPES,
        default="limit",
        help="limit, market or stop (default: limit)",
    )
    example.add_argument(
        "--quantity", type=_quantity, default=100, help="shares (default: %(default)s)"
    )
    example.set_defaults(handler=_orders_example)

    audit = _group(commands, "audit", "verify or export the audit chain, or show its checkpoints")
    add_audit_actions(audit, _runtime)

    tokens = _group(commands, "tokens", "create, list or revoke API tokens")
    create = _action(tokens, "create", "create a token (printed once, never stored)")
    create.add_argument("--role", required=True, choices=ROLES, help="one of " + ", ".join(ROLES))
    create.add_argument("--label", default="", help="a note to recognise the token by")
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
    _json_option(create, "print an object (token, token_id, role, label, accounts, expires_at)")
    create.set_defaults(handler=_tokens_create)
    token_list = _action(tokens, "list", "every token's id, role and state (no secret)")
    _json_option(token_list, "print a list of objects")
    token_list.set_defaults(handler=_tokens_list)
    revoke = _action(tokens, "revoke", "revoke a token on every replica (within 1 s)")
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="the id shown by `tokens list`")
    revoke.set_defaults(handler=_tokens_revoke)


def _group(commands: Any, name: str, text: str) -> Any:
    """A command with actions: `--help` lists each action with its one line."""
    parser = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
    return parser.add_subparsers(metavar="ACTION", title="actions", required=True)


def _action(group: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name, help=text, description=text[0].upper() + text[1:] + "."
    )
    return parser


def _json_option(parser: argparse.ArgumentParser, text: str = "machine-readable output") -> None:
    parser.add_argument("--json", action="store_true", help=text)


def _status(text: str) -> str:
    if text not in STATUSES:
        # argparse names the option and exits 2
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an order status (one of: {', '.join(STATUSES)})"
        )
    return text


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_LIMIT}")
    return value


def _quantity(text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= MAX_QUANTITY:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of shares above 0")
    # 100, not 100.0: the body reads as a person would write it
    return int(value) if value.is_integer() else value


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except TokenRefused as exc:
        # argparse names the option and exits 2
        raise argparse.ArgumentTypeError(str(exc)) from None


def _runtime(*, note: bool = True) -> Runtime:
    settings = Settings.from_env()
    problem = policies_problem(settings.policies)
    if problem is not None:
        raise CliError(problem)
    if note:
        note_if_packaged(settings.policies)
    try:
        # a tool, not the service: reconciling working orders is the service's job
        return Runtime.start(settings, recover=False)
    except PolicyError as exc:
        raise CliError(f"policy set is invalid ({settings.policies}):\n{exc}") from None


def service_database_exists(url: str) -> bool:
    """Whether a service has a database at `url`: a SQLite file not made yet means
    no service ran here (a server database is taken to exist; connecting says)."""
    if not url.startswith("sqlite"):
        return True
    path = url.partition(":///")[2].partition("?")[0]
    return bool(path) and Path(path).exists()


def service_state() -> tuple[dict[str, Any], str]:
    """What the service judges an evaluate against now, as engine state fields: its
    mode, that mode's broker, the Omega directive and the gateway's trading state;
    and where they were read. Empty (research mode, no broker) when the service has
    no database yet."""
    if not service_database_exists(Settings.from_env().database_url):
        return {}, "no service database yet"
    runtime = _runtime(note=False)
    try:
        controls = runtime.store.controls()
        broker = runtime.gateway.broker_for(controls.mode)
        facts = None
        if broker is not None:
            caps = broker.capabilities
            facts = {
                "name": broker.name,
                "order_types": sorted(caps.order_types),
                "time_in_force": sorted(caps.time_in_force),
                "reduce_only": caps.reduce_only,
                "cancel": caps.cancel,
                "replace": caps.replace,
                # readiness lives in the running service, not in the database (this
                # tool does not reconcile): judged as a service whose broker is up
                "ready": True,
            }
        state = {
            "mode": controls.mode,
            "broker": facts,
            "omega_active": controls.omega_active,
            "trading_state": controls.state_of("global"),
        }
        return state, f"the service's, {runtime.store.shown_url}"
    finally:
        runtime.close()


def _serve(args: argparse.Namespace) -> int:
    configure_logging()
    settings = Settings.from_env()
    try:
        runtime = Runtime.start(settings)
    except PolicyError as exc:
        print(f"policy set is invalid; not starting:\n{exc}", file=sys.stderr)
        return USAGE
    runtime.start_sweeping()
    try:
        runtime.start_checkpointing()
    except KeyFileError as exc:
        runtime.close()
        print(f"apex-oms: service key: {exc}; not starting", file=sys.stderr)
        return USAGE
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
        f"apex-oms: serving {url}  (OpenAPI: {url}/schema, data: {runtime.store.shown_url})",
        flush=True,
    )
    print(f"apex-oms: compliance: {compliance_line(runtime.gateway.standing)}", flush=True)
    _reload_on_sighup(runtime)
    try:
        serve(runtime, args.host, args.port, limits_from(settings, args))
    finally:
        runtime.close()  # the app's shutdown signed the last checkpoint
    return OK


SIGHUP_ACTOR = Actor.of("sighup", "compliance")


def _reload_on_sighup(runtime: Runtime) -> None:
    """SIGHUP reloads the policy directory, verified, as `POST /v1/policies/reload`
    does: on a thread, so the event loop never waits for it."""
    if not hasattr(signal, "SIGHUP"):
        return

    def reload() -> None:
        print(f"apex-oms: {runtime.reload(SIGHUP_ACTOR, 'sighup')}", flush=True)

    def on_hup(_signum: int, _frame: Any) -> None:
        threading.Thread(target=reload, name="apex-sighup-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, on_hup)


def compliance_line(standing: Standing) -> str:
    """The compliance configuration in force, in one line for a person."""
    if standing.in_force and standing.trust == "development":
        return (
            f"version {standing.version} in force under the DEVELOPMENT trust root of this "
            "data directory (keys/trust.yaml names no signer); never valid for live"
        )
    if standing.in_force:
        signers = ", ".join(standing.signers)
        return f"version {standing.version} in force, signed by {signers}"
    return f"NOT IN FORCE ({standing.code}: {standing.message}); every order is blocked"


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


def _orders_example(args: argparse.Namespace) -> int:
    order = example_order(
        system_clock(),
        symbol=args.symbol,
        side=args.side,
        order_type=args.order_type,
        quantity=args.quantity,
    )
    try:
        OrderRequest.model_validate(order)
    except ValidationError as exc:  # a symbol the order model refuses
        problems = "; ".join(f"{e.field}: {e.message}" for e in field_errors(exc))
        raise CliError(f"no valid example: {problems}") from None
    print(json.dumps(order, indent=2))
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
                    "label": args.label,
                    "accounts": accounts,
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
