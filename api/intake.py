"""Request bodies, read by us rather than by Litestar: malformed JSON and
oversize bodies get the same JSON error shape as every other failure and are
logged in the chain as rejected attempts (SPEC section 6)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from engine.gateway.outcome import Actor
from engine.limits import MAX_DEPTH

from ._threads import GatewayThreads
from .errors import ApiError, field_error
from .metrics import Metrics

__all__ = ["OPERATIONS", "BodyRefused", "Intake", "order_ref", "parse"]


class Intake:
    """Reads request bodies, and logs every authenticated attempt that is refused
    before the gateway judges anything (a bad body, a body of the wrong shape, a
    refused role, a refused control change) as a `rejected` record: every
    authenticated attempt is in the chain (docs/gateway.md, section 8)."""

    def __init__(self, gateway: Any, threads: GatewayThreads, metrics: Metrics, limit: int) -> None:
        self._gateway = gateway
        self._threads = threads
        self._metrics = metrics
        self.limit = limit

    async def json(
        self,
        request: Request[Any, Any, Any],
        operation: str,
        actor: Actor,
        limit: int | None = None,
    ) -> Any:
        """The parsed JSON body (None when there is none), or an ApiError after
        logging the rejected attempt. `limit`: this route's own size limit (a policy
        set is larger than an order), else the service's."""
        limit = limit or self.limit
        declared = request.headers.get("content-length")
        problem: tuple[int, str, str] | None = None
        raw = b""
        if declared and declared.isdigit() and int(declared) > limit:
            problem = (413, "body_too_large", f"body is over {limit} bytes")
        elif declared and declared.isdigit():
            raw = await request.body()  # the server holds it to the declared length
        else:
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limit:
                    problem = (413, "body_too_large", f"body is over {limit} bytes")
                    break
        field = "(body)"
        if problem is None:
            try:
                return parse(raw)
            except BodyRefused as exc:
                problem, field = (422, exc.code, str(exc)), exc.field
            except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
                problem = (422, "malformed_json", f"body is not valid JSON: {exc}")
        status, code, detail = problem
        await self.refuse(operation, actor, status, code, detail, [field_error(field, detail)])

    async def object(
        self,
        request: Request[Any, Any, Any],
        operation: str,
        actor: Actor,
        *,
        optional: bool = False,
        about: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """The body as a JSON object ({} for no body when `optional`); any other
        JSON value (`[]`, `"x"`, `null`, a number) is refused and logged."""
        raw = await self.json(request, operation, actor, limit)
        if raw is None and optional:
            return {}
        if isinstance(raw, dict):
            return raw
        detail = "the body must be a JSON object"
        problems = [field_error("(body)", f"must be an object (got {_json_type(raw)})")]
        await self.refuse(operation, actor, 422, "invalid_request", detail, problems, about=about)
        raise AssertionError("unreachable")  # refuse always raises

    async def refuse(
        self,
        operation: str,
        actor: Actor,
        status: int,
        code: str,
        detail: str,
        problems: Sequence[Mapping[str, str]],
        *,
        request: Any = None,
        about: str | None = None,
        route: str | None = None,
        reveal: bool = True,
        **extra: Any,
    ) -> NoReturn:
        """Log the refused attempt and raise its answer; 503 `audit_unavailable`
        when the attempt could not be logged (never an answer for an attempt
        that is not in the chain). `reveal=False`: logged, but the answer shows
        neither the record nor the fields (a 404 must not tell that the order
        exists)."""
        errors = [(p["field"], p["message"]) for p in problems]
        outcome = await self._threads.run(
            lambda: self._gateway.reject(
                operation, errors, actor, request=request, about=about, route=route
            )
        )
        self._metrics.decision(operation, outcome.kind, [], outcome.record)
        if outcome.kind == "audit_unavailable":
            raise ApiError(
                503,
                "audit_unavailable",
                "the audit log could not be written; the request was not acted on",
                problems,
                **extra,
            )
        if not reveal:
            raise ApiError(status, code, detail, **extra)
        raise ApiError(status, code, detail, problems, record=outcome.record, **extra)

    async def refuse_role(
        self,
        connection: ASGIConnection[Any, Any, Any, Any],
        handler: BaseRouteHandler,
        actor: Actor,
        detail: str,
    ) -> NoReturn:
        """A role the route's guard refuses: 403 `forbidden`, logged with the actor,
        the operation, the route and the reason."""
        method = str(connection.scope.get("method", "")).upper()
        template = str(connection.scope.get("path_template", "") or "")[:200]
        route = f"{method} {template}".strip()
        name = handler.handler_name
        operation = OPERATIONS.get(name, name[:16])
        about = order_ref(connection.path_params.get("order_id"))
        problems = [field_error("(role)", f"role {actor.role!r} may not call {route}")]
        await self.refuse(operation, actor, 403, "forbidden", detail, problems, about=about,
                          route=route)  # fmt: skip


# The `operation` of a refused attempt, by handler (at most 16 characters: the
# orders table's column); the body-taking routes use the same names.
OPERATIONS = {
    "evaluate": "evaluate",
    "submit": "submit",
    "cancel": "cancel",
    "replace": "replace",
    "list_orders": "list_orders",
    "get_order": "get_order",
    "set_mode": "mode",
    "invoke_omega": "omega",
    "clear_omega": "omega",
    "set_trading_state": "state",
    "reload": "reload",
    "quote": "quote",
    "records": "audit",
    "verify": "audit_verify",
}
_ORDER_ID = re.compile(r"^ORD-[0-9]{4}-[0-9]{6,20}$")


def order_ref(order_id: Any) -> str | None:
    """An order id from a path, fit to name in a record (`original_order_id`);
    None for anything else (a client's path may hold any text, NUL included)."""
    return order_id if isinstance(order_id, str) and _ORDER_ID.match(order_id) else None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


class BodyRefused(ValueError):
    """A body that is JSON to a lenient reader but not to us; `field` names the
    part at fault."""

    def __init__(self, code: str, detail: str, field: str = "(body)") -> None:
        super().__init__(detail)
        self.code, self.field = code, field


def parse(raw: bytes) -> Any:
    """A JSON body, strictly: UTF-8 without a byte-order mark (json.loads would
    take UTF-16 and UTF-32 too), nested at most MAX_DEPTH deep (checked before
    any parser recurses: json.loads, and every reader of the value after it,
    would otherwise recurse once per level), and no key twice in one object
    (json.loads keeps the last, so `"symbol":"RSTR",...,"symbol":"AAPL"` would
    be judged as AAPL while a log or another reader sees RSTR)."""
    if b"\x00" in raw[:2]:
        # JSON text starts with ASCII, so UTF-16 and UTF-32 put a NUL among the
        # first two bytes (RFC 4627, section 3); their ASCII decodes as UTF-8
        raise BodyRefused("not_utf8", "body is UTF-16 or UTF-32 (a NUL byte at its start)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        detail = f"body is not UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
        raise BodyRefused("not_utf8", detail) from exc
    if text.startswith("\ufeff"):
        raise BodyRefused(
            "byte_order_mark", "body starts with a byte-order mark; send UTF-8 without"
        )
    _check_depth(text)
    parsed = json.loads(text or "null", object_pairs_hook=_unique_keys)
    # "\ud800" parses to a lone surrogate, which is not text: no record holding it
    # could be stored or hashed as UTF-8
    if "\\u" in text:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    return parsed


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                name = key.encode("utf-8", "backslashreplace").decode("utf-8")[:200]
                raise BodyRefused(
                    "duplicate_key", f"key {name!r} appears twice in one object", name
                )
            seen.add(key)
    return obj


# A string (escapes included; an unterminated one runs to the end) or a bracket.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def _check_depth(text: str) -> None:
    """Refuse a body whose arrays and objects nest deeper than MAX_DEPTH, counting
    brackets outside strings only (`"[[["` is text, not nesting)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # it cannot nest deeper than it has openers: every order takes this path
    depth = 0
    for token in _TOKENS.finditer(text):
        mark = token.group()
        if mark in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise BodyRefused(
                    "nesting_too_deep",
                    f"body nests arrays and objects deeper than {MAX_DEPTH} levels "
                    f"(at character {token.start()})",
                )
        elif mark in ("]", "}"):
            depth -= 1
