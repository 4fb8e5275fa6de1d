"""The access log and the request id: raw ASGI middleware around the whole app.

Every HTTP request gets an id: the client's `X-Request-ID` when it is safe to
log (at most 128 characters of `A-Z a-z 0-9 . _ ~ : + / = @ -`), otherwise a new
one (uuid4, hex). The id is echoed in the `X-Request-ID` header of every answer
(errors and 401s included), set in `engine.records.REQUEST_ID` so that every
audit record written while the request is served carries it, and logged with
one JSON line per request on logger `apex.access`:
`method`, `path`, `status`, `duration_ms`, `request_id`, `principal`.

The path is logged without its query string, and no header or body is ever
read into the log, so a token cannot reach it (a token sent in a query string
included). `principal` is the public id of the token the guard accepted, or
null. A 401 also counts in `apex_unauthenticated_total`.

This runs on every request (bench/http.py measures it), so it is plain ASGI:
no Request object, one header scan, one log call.
"""

from __future__ import annotations

import logging
import re
import time
from random import getrandbits
from typing import Any

from engine.gateway.outcome import Actor
from engine.records import REQUEST_ID

from ._logging import log_fields
from .metrics import Metrics

__all__ = ["AccessLog", "new_request_id", "request_id_of"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any  # async () -> Message
Send = Any  # async (Message) -> None
ASGIApp = Any  # async (Scope, Receive, Send) -> None

log = logging.getLogger("apex.access")

HEADER = b"x-request-id"
_SAFE = re.compile(rb"[A-Za-z0-9._~:+/=@-]{1,128}")
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant
_MAX_PATH = 512  # a longer path is logged cut, with a marker


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's request id if it is safe to log and echo, else a new one."""
    for name, value in headers:
        if name == HEADER:
            if _SAFE.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


def new_request_id() -> str:
    """A random UUID, version 4, in hex. From `random` (seeded from the system's
    entropy at start) rather than `uuid.uuid4()`, whose `os.urandom` call costs
    several times more on the hot path; the id must be unique, not secret."""
    bits = getrandbits(128) & _UUID_CLEAR | _UUID_V4
    return f"{bits:032x}"


class AccessLog:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope["headers"])
        echo = (HEADER, request_id.encode("ascii"))
        status: int | None = None
        gone = False

        async def receive_watched() -> Message:
            nonlocal gone
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                # after the client left (a body read timeout, say) no answer is sent
                status = None if gone else message["status"]
                message = {**message, "headers": [*message.get("headers", ()), echo]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self._app(scope, receive_watched, send_with_id)
        except BaseException:
            if status is None and not gone:
                status = 500  # the server answers 500 for an app that raised before answering
            raise
        finally:
            REQUEST_ID.reset(token)
            self._log(scope, status, started, request_id)

    def _log(self, scope: Scope, status: int | None, started: float, request_id: str) -> None:
        if status == 401:
            self._metrics.unauthenticated.inc()
        user = scope.get("user")
        path = scope["path"]
        if len(path) > _MAX_PATH:
            path = path[:_MAX_PATH] + "..."
        fields = {
            "method": scope["method"],
            "path": path,
            "status": status,  # None: the client went away before an answer
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": request_id,
            "principal": user.id if isinstance(user, Actor) else None,
        }
        log_fields(log, f"{fields['method']} {path} {status}", fields)
