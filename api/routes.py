"""The route decorators the controllers use: Litestar's, but a guard is given
the handler itself rather than a copy of it.

Litestar (2.25) hands each guard `copy(handler)`, a copy of some sixty
attributes: about 20 µs a request on this machine, as much as a third of what
the rest of the HTTP layer costs an evaluation. Our guards read the connection
alone and never touch the handler.
"""

from __future__ import annotations

from typing import Any

from litestar import HttpMethod
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler

__all__ = ["Route", "delete", "get", "post"]


class Route(HTTPRouteHandler):
    async def authorize_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        for guard in self.resolve_guards():
            await guard(connection, self)  # type: ignore[misc]  # resolved guards are async


def get(path: str, **options: Any) -> Route:
    return Route(path, http_method=[HttpMethod.GET], **options)


def post(path: str, **options: Any) -> Route:
    return Route(path, http_method=[HttpMethod.POST], **options)


def delete(path: str, **options: Any) -> Route:
    return Route(path, http_method=[HttpMethod.DELETE], **options)
