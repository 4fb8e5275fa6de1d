"""Who may call a route: a Litestar guard per role set. The guard reads the bearer
token, turns it into an `Actor` (id, role, accounts), the request's `user` for
the handler, and refuses a missing or unknown token (401) or another role (403).
Admin passes every guard."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from engine.gateway.outcome import Actor

from .auth import ROLES, TokenBook
from .errors import ApiError, field_error
from .intake import OPERATIONS, Intake

__all__ = [
    "ANY_ROLE",
    "AUDITOR",
    "CANCELLERS",
    "COMPLIANCE",
    "ONLY_ADMIN",
    "READERS",
    "TRADER",
    "query",
]

# async: Litestar runs a sync guard on a worker thread
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


async def _authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "missing bearer token")
    tokens: TokenBook = connection.app.state.tokens
    if tokens.cached(token):
        actor = tokens.check(token)
    else:  # a database read: never on the event loop
        actor = await anyio.to_thread.run_sync(tokens.check, token)
    if actor is None:
        raise ApiError(401, "unauthorized", "unknown, revoked or expired token")
    return actor


def _requires(*roles: str) -> Guard:
    allowed = frozenset((*roles, "admin"))

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        actor = await _authenticate(connection)
        connection.scope["user"] = actor  # the access log names it, a refused role's too
        if actor.role not in allowed:
            detail = f"role {actor.role!r} may not do this"
            # an authenticated attempt: logged in the chain (a 401 never is)
            intake: Intake | None = connection.app.state.get("intake")
            if intake is not None:
                await intake.refuse_role(connection, handler, actor, detail)
            raise ApiError(403, "forbidden", detail)

    guard.__name__ = "requires_" + "_or_".join(sorted(allowed))
    return guard


def query(*names: str) -> Guard:
    """Refuse a query parameter the route does not take, or one of its own given
    twice (`?reason=a&reason=b`: which one was meant is a guess): 400."""
    known = frozenset(names)

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        if not connection.scope["query_string"]:
            return
        given = [key for key, _ in connection.query_params.multi_items()]
        problems = [
            field_error(k, "not a parameter of this route") for k in given if k not in known
        ]
        repeated = sorted({k for k in given if k in known and given.count(k) > 1})
        problems += [field_error(k, "given more than once") for k in repeated]
        if problems:
            detail = "the query has parameters this route refuses"
            actor, intake = connection.scope.get("user"), connection.app.state.get("intake")
            if connection.scope.get("method") != "GET" and isinstance(actor, Actor) and intake:
                # an attempt to act (DELETE /v1/omega), not a read: logged
                operation = OPERATIONS.get(handler.handler_name, handler.handler_name[:16])
                await intake.refuse(operation, actor, 400, "bad_request", detail, problems)
            raise ApiError(400, "bad_request", detail, problems)

    return guard


TRADER = _requires("trader")
READERS = _requires("trader", "auditor")
CANCELLERS = _requires("trader", "compliance")
COMPLIANCE = _requires("compliance")
AUDITOR = _requires("auditor")
ONLY_ADMIN = _requires()
ANY_ROLE = _requires(*ROLES)
