"""Who may call a route: a Litestar guard per role set. The guard reads the bearer
token, turns it into an `Actor` (id, role, accounts) kept on the request for the
handler, and refuses a missing or unknown token (401) or another role (403).
Admin passes every guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from engine.gateway.outcome import Actor

from .auth import ROLES, TokenBook
from .errors import ApiError, field_error

__all__ = [
    "ANY_ROLE",
    "AUDITOR",
    "CANCELLERS",
    "COMPLIANCE",
    "ONLY_ADMIN",
    "READERS",
    "TRADER",
    "actor_of",
    "one_value",
]

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def _authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing bearer token")
    tokens: TokenBook = connection.app.state.tokens
    actor = tokens.check(token.strip())
    if actor is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    return actor


def _requires(*roles: str) -> Guard:
    allowed = frozenset((*roles, "admin"))

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        actor = _authenticate(connection)
        if actor.role not in allowed:
            raise ApiError(403, "forbidden", f"role {actor.role!r} may not do this")
        connection.state.actor = actor

    guard.__name__ = "requires_" + "_or_".join(sorted(allowed))
    return guard


def one_value(*names: str) -> Guard:
    """Refuse a query that repeats one of these parameters (`?reason=a&reason=b`):
    which one was meant is a guess, so it is a bad request, not the first."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not connection.scope["query_string"]:
            return
        params = connection.query_params
        repeated = [n for n in names if len(params.getall(n, [])) > 1]
        if repeated:
            problems = [field_error(n, "given more than once") for n in repeated]
            raise ApiError(400, "bad_request", "a query parameter is repeated", problems)

    return guard


def actor_of(request: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    """The dependency `actor`: who the guard let in."""
    actor: Actor = request.state.actor
    return actor


TRADER = _requires("trader")
READERS = _requires("trader", "auditor")
CANCELLERS = _requires("trader", "compliance")
COMPLIANCE = _requires("compliance")
AUDITOR = _requires("auditor")
ONLY_ADMIN = _requires()
ANY_ROLE = _requires(*ROLES)
