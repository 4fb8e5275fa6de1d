"""The HTTP server: uvicorn, with connection limits of our own, and the access log
around the app (docs/operations.md, "Connections" and "Logs").

Uvicorn alone keeps a connection that sends nothing, or sends its request one
byte at a time, open for ever: its keep-alive timer starts only after a first
answer, and it has no read timeout. Its `limit_concurrency` counts open
connections and running tasks only once a request head is complete, and then
answers a text 503; a connection that never completes its head is never
counted against anything. So a few thousand idle sockets exhaust the process's
file descriptors and everyone's requests fail.

`LimitedHttpTools`, uvicorn's httptools protocol with four limits:
- keep-alive: a connection with no request in progress (a new one included)
  is closed after `keep_alive` seconds;
- header read: a request head (request line and headers) must be complete
  `header` seconds after its first byte, and hold at most 64 KiB (else 408 or
  431, and the connection is closed);
- body read: a request body must be complete `body` seconds after its head
  (else the connection is closed; the handler sees the client gone);
- connections: beyond `max_connections` open connections, a new one is
  answered `503 {"code": "over_capacity"}` as soon as its request head is in
  (or at most one second after it opened) and closed, so it holds its
  descriptor for a moment only. The cap stays below the file limit, with
  headroom for the database, the policy files and the logs.

The deadlines cost nothing on the usual request, which arrives in one read: a
timer is armed only when a head or a body is still incomplete after a read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import resource
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .access_log import AccessLog, new_request_id
from .metrics import Metrics
from .runtime import Runtime
from .settings import Settings

__all__ = [
    "HEADROOM",
    "LimitedHttpTools",
    "Limits",
    "add_limit_options",
    "capped",
    "limits_from",
    "protocol_for",
    "raise_file_limit",
    "serve",
]

log = logging.getLogger("apex.server")

# descriptors kept free of connections: the database pool, the policy files,
# the logs, the event loop's own, a broker's sockets
HEADROOM = 128
MAX_HEAD_BYTES = 64 * 1024
REFUSE_GRACE_S = 1.0  # how long an over-capacity connection may take to send its head


@dataclass(frozen=True)
class Limits:
    keep_alive: float
    header: float
    body: float
    max_connections: int


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """`serve`'s connection limit flags; each overrides its environment variable."""
    group = parser.add_argument_group("connection limits (docs/operations.md)")
    option = group.add_argument
    option(
        "--keep-alive-timeout",
        type=_positive(float),
        metavar="S",
        help="close a connection idle this long (APEX_KEEP_ALIVE_TIMEOUT, default 5)",
    )
    option(
        "--header-timeout",
        type=_positive(float),
        metavar="S",
        help="close a connection whose request head takes longer (APEX_HEADER_TIMEOUT, default 10)",
    )
    option(
        "--body-timeout",
        type=_positive(float),
        metavar="S",
        help="close a connection whose request body takes longer (APEX_BODY_TIMEOUT, default 30)",
    )
    option("--max-connections", type=_positive(int), metavar="N",
           help="answer 503 over_capacity beyond this many open connections "
           "(APEX_MAX_CONNECTIONS, default 1000; kept below the open file limit)")  # fmt: skip


def limits_from(settings: Settings, args: argparse.Namespace) -> Limits:
    """The limits: a flag if given, else the settings (environment or default)."""

    def pick(name: str) -> Any:
        given = getattr(args, name, None)
        return given if given is not None else getattr(settings, name)

    return Limits(
        keep_alive=pick("keep_alive_timeout"),
        header=pick("header_timeout"),
        body=pick("body_timeout"),
        max_connections=pick("max_connections"),
    )


def _positive(kind: type[float] | type[int]) -> Any:
    def read(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"want a number > 0, got {text!r}")
        return value

    read.__name__ = kind.__name__
    return read


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # the kernel's usual nr_open
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return hard if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open file limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


def capped(limits: Limits, file_limit: int) -> Limits:
    """The limits with the connection cap kept `HEADROOM` below the file limit."""
    ceiling = max(1, file_limit - HEADROOM)
    if limits.max_connections <= ceiling:
        return limits
    log.warning(
        "max_connections lowered from %d to %d: the open file limit is %d",
        limits.max_connections,
        ceiling,
        file_limit,
    )
    return replace(limits, max_connections=ceiling)


def _raw_answer(status: str, code: str, detail: str, *headers: str) -> bytes:
    """A whole HTTP answer, written by the protocol itself (no app is running)."""
    body = json.dumps({"code": code, "detail": detail, "errors": []}).encode()
    head = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _over_capacity() -> bytes:
    return _raw_answer(
        "503 Service Unavailable",
        "over_capacity",
        "the server has as many connections open as it may; try again shortly",
        "retry-after: 1",
        f"x-request-id: {new_request_id()}",  # no request was read: a new id
    )


_HEAD_TIMEOUT = _raw_answer(
    "408 Request Timeout", "request_timeout", "the request head was not complete in time"
)
_HEAD_TOO_LARGE = _raw_answer(
    "431 Request Header Fields Too Large",
    "header_too_large",
    f"the request head is over {MAX_HEAD_BYTES} bytes",
)

# where the connection's current request is
_IDLE, _HEAD, _BODY, _APP = range(4)


class LimitedHttpTools(HttpToolsProtocol):
    """Uvicorn's httptools protocol with our limits (module docstring). Made per
    server by `protocol_for`, which sets the class attributes."""

    limits: ClassVar[Limits]
    metrics: ClassVar[Metrics | None] = None
    _refusals: ClassVar[int] = 0
    _refusals_logged_at: ClassVar[float] = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive  # type: ignore[assignment]
        self._phase = _IDLE
        self._since = 0.0
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._early = b""

    # --- over capacity -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        # uvicorn arms keep-alive only after an answer: a silent new socket would stay
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._refused = True
        cls = type(self)
        if cls.metrics is not None:
            cls.metrics.over_capacity.inc()
        cls._refusals += 1
        now = time.monotonic()
        if now - cls._refusals_logged_at >= 1.0:  # one line a second at most, in a flood
            log.warning(
                "over capacity: %d connection(s) answered 503 over_capacity (max_connections %d)",
                cls._refusals,
                self.limits.max_connections,
            )
            cls._refusals, cls._refusals_logged_at = 0, now
        # answer once the request head is in: a client still sending when we close
        # could be reset before it reads the answer
        grace = min(REFUSE_GRACE_S, self.limits.header)
        self._deadline = self.loop.call_later(grace, self._answer_refused)

    def _refused_data(self, data: bytes) -> None:
        self._early += data
        if b"\r\n\r\n" in self._early or len(self._early) > MAX_HEAD_BYTES:
            self._answer_refused()

    def _answer_refused(self) -> None:
        self._cancel_deadline()
        if not self.transport.is_closing():
            self.transport.write(_over_capacity())
            self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        """An Upgrade request (the gateway serves no WebSocket, `ws="none"`) is
        answered as plain HTTP; uvicorn would log two warnings per such request,
        one advising to install a WebSocket library."""

    # --- deadlines -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._refused_data(data)
            return
        super().data_received(data)
        if self._phase == _HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._close(_HEAD_TOO_LARGE)
                return
        if (
            self._deadline is None
            and self._phase in (_HEAD, _BODY)
            and not self.transport.is_closing()
        ):
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase, self._since, self._head_bytes = _HEAD, self.loop.time(), 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase, self._since = _BODY, self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = _APP

    def on_response_complete(self) -> None:
        if self._phase == _APP:
            self._phase = _IDLE
        super().on_response_complete()

    def _due(self) -> float:
        return self._since + (self.limits.header if self._phase == _HEAD else self.limits.body)

    def _arm(self) -> None:
        self._deadline = self.loop.call_at(self._due(), self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self._phase not in (_HEAD, _BODY) or self.transport.is_closing():
            return
        if self.loop.time() < self._due():  # a new head or a body began since: its own time
            self._arm()
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._phase == _HEAD and not answering:
            self._close(_HEAD_TIMEOUT)
        else:  # the handler is reading the body: it sees the client gone
            self._close(None)

    def _close(self, answer: bytes | None) -> None:
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._refused:
            return
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        if not self._refused:
            super().pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            super().resume_writing()


def protocol_for(limits: Limits, metrics: Metrics | None) -> type[LimitedHttpTools]:
    """A protocol class holding these limits (uvicorn builds one per connection)."""
    return type("LimitedHttpTools", (LimitedHttpTools,), {"limits": limits, "metrics": metrics})


def serve(runtime: Runtime, host: str, port: int, limits: Limits) -> None:
    """Serve the API until stopped (SIGINT, SIGTERM)."""
    import uvicorn

    from .app import create_app

    limits = capped(limits, raise_file_limit())
    log.info(
        "connection limits: max_connections %d, keep-alive %gs, header read %gs, body read %gs",
        limits.max_connections,
        limits.keep_alive,
        limits.header,
        limits.body,
    )
    uvicorn.run(
        AccessLog(create_app(runtime), runtime.metrics),
        host=host,
        port=port,
        http=protocol_for(limits, runtime.metrics),
        # the gateway serves no WebSocket: an Upgrade request is plain HTTP to our
        # protocol (its limits, the access log), never handed to uvicorn's ws layer
        ws="none",
        # our AccessLog replaces uvicorn's text access log; errors go to our JSON logs
        log_config=None,
        access_log=False,
    )
