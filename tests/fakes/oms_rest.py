"""A fake in-house OMS speaking docs/oms-rest.md (v1) on 127.0.0.1: JSON over HTTP
for commands and a WebSocket for the event stream, for tests and for trying the
gateway without an OMS (issue 11).

It shares no code with adapters/oms_rest.py: it is written from the contract,
so the two are shown to agree, not one with itself.

    GET  /v1/health                         POST /v1/orders (submit)
    GET  /v1/account                        GET  /v1/orders (history)
    GET  /v1/positions?account=             GET  /v1/orders/{client_order_id}
    GET  /v1/events?after=&limit=           POST /v1/orders/{client_order_id}/cancel
    GET  /v1/executions?after=&limit=       POST /v1/orders/{client_order_id}/replace
    WS   /v1/stream?after=N                 (on a port of its own: `ws_url`)

Every route wants `Authorization: Bearer <token>` (401 otherwise; the socket's
handshake too). A small matching book: one quote per symbol (`set_quote`); a
market buy fills at the ask, a sell at the bid, a marketable limit at the
touch, anything else rests until a quote reaches it or `fill` fills it by hand;
`late_fill` books an execution on a cancelled order. `hold` books a position
taken outside the gateway; a position's `price` is the mid of its quote (or
its one side; left out without a quote), or what `set_position_price` set.

Faults (`inject`, once each, on the next request of their route or the next
event): `HttpError`, `Reject`, `CancelReject`, `PartialFill`, `DuplicateExecution`,
`SequenceGap`, `Garbled`, `Silence`, `Disconnect`, `Slow`. `socket_down(True)`
closes every socket and refuses new ones (503) until `socket_down(False)`.
Counters: `received(client_order_id)` (submits that carried it), `requests`,
`ws_sessions` (the `after` each socket session asked for).

Run by hand: `python -m tests.fakes.oms_rest --port 8801`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = [
    "CancelReject",
    "Disconnect",
    "DuplicateExecution",
    "FakeOms",
    "Fault",
    "Garbled",
    "HttpError",
    "PartialFill",
    "Reject",
    "SequenceGap",
    "Silence",
    "Slow",
]

ROUTES = (
    "health", "account", "positions", "submit", "list", "get", "cancel", "replace",
    "events", "executions",
)  # fmt: skip
_WORKING = frozenset({"new", "partially_filled"})
_EPSILON = 1e-9
_PAGE = 500


# --- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpError:
    """The next request of `route` is answered `status` with the contract's error
    body and changes nothing."""

    status: int = 500
    message: str = "internal error"
    code: str = "internal"
    route: str = "submit"


@dataclass(frozen=True)
class Reject:
    """The next submit is taken and the order rejected (201, status rejected)."""

    reason: str = "risk limit exceeded"
    route: str = "submit"


@dataclass(frozen=True)
class CancelReject:
    """The next cancel is refused (409 cancel_rejected); the order keeps working."""

    reason: str = "order is locked at the venue"
    route: str = "cancel"


@dataclass(frozen=True)
class PartialFill:
    """The next fill at the quote takes only `fraction` of what is left."""

    fraction: float = 0.5
    route: str = "fill"


@dataclass(frozen=True)
class DuplicateExecution:
    """The next execution is published twice: a second event (its own sequence)
    carrying the same execution, on the socket and in the cursor."""

    route: str = "event"


@dataclass(frozen=True)
class SequenceGap:
    """The next event is not sent on the socket (the cursor has it)."""

    route: str = "event"


@dataclass(frozen=True)
class Garbled:
    """The next event is sent on the socket as text that is not JSON (`not_json`)
    or as JSON without its order (`missing_order`); the cursor has it as it
    should be."""

    kind: str = "not_json"
    route: str = "event"


@dataclass(frozen=True)
class Silence:
    """From the next event on, the current sockets send nothing (no event, no
    heartbeat) until the client gives up on them; a new socket works."""

    route: str = "event"


@dataclass(frozen=True)
class Disconnect:
    """The next request of `route` takes effect, then the connection is closed with
    no answer (the submit's response lost after the order was taken)."""

    route: str = "submit"


@dataclass(frozen=True)
class Slow:
    """The next request of `route` takes effect, then its answer waits `seconds`."""

    seconds: float
    route: str = "submit"


Fault = (
    HttpError | Reject | CancelReject | PartialFill | DuplicateExecution | SequenceGap
    | Garbled | Silence | Disconnect | Slow
)  # fmt: skip
_KINDS: dict[str, type[Any]] = {
    "http_error": HttpError, "reject": Reject, "cancel_reject": CancelReject,
    "partial_fill": PartialFill, "duplicate_execution": DuplicateExecution,
    "sequence_gap": SequenceGap, "garbled": Garbled, "silence": Silence,
    "disconnect": Disconnect, "slow": Slow,
}  # fmt: skip


# --- state ------------------------------------------------------------------------------------


@dataclass
class _Order:
    order_id: str
    client_order_id: str
    account: str
    symbol: str
    side: str
    order_type: str
    quantity: float
    limit_price: float | None
    stop_price: float | None
    time_in_force: str
    created_at: str
    status: str = "new"
    updated_at: str = ""
    reject_reason: str | None = None
    replace_count: int = 0
    sequence: int = 0
    executions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def filled(self) -> float:
        return sum(float(e["quantity"]) for e in self.executions)

    def json(self) -> dict[str, Any]:
        filled = self.filled
        notional = sum(float(e["quantity"]) * float(e["price"]) for e in self.executions)
        return {
            "client_order_id": self.client_order_id,
            "order_id": self.order_id,
            "account": self.account,
            "symbol": self.symbol,
            "side": self.side,
            "order_type": self.order_type,
            "quantity": self.quantity,
            "limit_price": self.limit_price,
            "stop_price": self.stop_price,
            "time_in_force": self.time_in_force,
            "status": self.status,
            "filled_quantity": round(filled, 9),
            "average_price": round(notional / filled, 8) if filled > _EPSILON else None,
            "leaves_quantity": (
                round(max(self.quantity - filled, 0.0), 9) if self.status in _WORKING else 0.0
            ),
            "reject_reason": self.reject_reason,
            "replace_count": self.replace_count,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "sequence": self.sequence,
            "executions": [dict(e) for e in self.executions],
        }


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, order: _Order | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"code": code, "message": message}}
        if order is not None:
            self.body["order"] = order.json()


@dataclass
class _Answer:
    status: int
    body: Any = None
    after: list[Fault] = field(default_factory=list)  # Slow, Disconnect


@dataclass
class _Event:
    body: dict[str, Any]
    socket: str = "send"  # send | skip | garble | malform


class FakeOms:
    """The fake OMS: start it, point the adapter at `url` and `ws_url`, drive it."""

    def __init__(
        self,
        *,
        token: str = "oms-fake-token",
        host: str = "127.0.0.1",
        port: int = 0,
        ws_port: int = 0,
        heartbeat_s: float = 0.5,
    ) -> None:
        self.token = token
        self.heartbeat_s = heartbeat_s
        self._lock = threading.RLock()
        self._orders: dict[str, _Order] = {}  # by client order id, in order of receipt
        self._events: list[_Event] = []  # sequence = index + 1
        self._quotes: dict[str, tuple[float | None, float | None]] = {}
        self._positions: dict[str, dict[str, float]] = {}  # account -> symbol -> qty
        self._prices: dict[str, Any] = {}  # symbol -> a position's `price`, as set
        self._faults: list[Fault] = []
        self._received: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.ws_sessions: list[int] = []  # the `after` each socket session resumed from
        self._socket_down = False
        self._silent = False
        self._halted = False
        self._start = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
        self._tick = 0
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread: threading.Thread | None = None
        self._stream = _Stream(self, host, ws_port)

    # --- running ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._stream.host}:{self._stream.port}/v1/stream"

    def start(self) -> FakeOms:
        self._stream.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-oms", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a connection kept alive by a client is dropped at its next
        request (the OMS is down)."""
        self._halted = True
        self._server.shutdown()
        self._server.server_close()
        self._stream.stop()

    def __enter__(self) -> FakeOms:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- driving it --------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Make the next request of the fault's route (or the next event) misbehave, once."""
        if fault.route not in (*ROUTES, "fill", "event"):
            raise ValueError(f"route (want: one of {ROUTES}, fill, event; got: {fault.route!r})")
        with self._lock:
            self._faults.append(fault)

    def set_quote(self, symbol: str, bid: float | None, ask: float | None) -> None:
        """A new quote; resting orders it makes marketable fill."""
        with self._lock:
            self._quotes[symbol] = (bid, ask)
            for order in list(self._orders.values()):
                if order.symbol == symbol and order.status in _WORKING:
                    self._try_fill(order)

    def fill(
        self, client_order_id: str, quantity: float | None = None, price: float | None = None
    ) -> None:
        """Fill (part of) a working order by hand, at `price` or the touch."""
        with self._lock:
            order = self._orders.get(client_order_id)
            if order is None or order.status not in _WORKING:
                raise ValueError(f"no working order {client_order_id!r}")
            at = price if price is not None else self._touch(order)
            if at is None:
                raise ValueError(f"no price to fill {client_order_id!r} at")
            self._execute(order, quantity or order.quantity - order.filled, at)

    def late_fill(self, client_order_id: str, quantity: float, price: float) -> None:
        """An execution on an order already cancelled (a fill after cancel)."""
        with self._lock:
            order = self._orders[client_order_id]
            self._execute(order, quantity, price, keep_status=True)

    def hold(self, account: str, symbol: str, quantity: float) -> None:
        """A position taken outside the gateway (signed; short is negative)."""
        with self._lock:
            self._positions.setdefault(account, {})[symbol] = quantity

    def set_position_price(self, symbol: str, price: Any) -> None:
        """What a position's `price` says for the symbol from now on, sent as given
        (bad values included; None: null). Without it: the mid of the symbol's
        quote (or its one side), else the member is left out."""
        with self._lock:
            self._prices[symbol] = price

    def socket_down(self, down: bool) -> None:
        """Close every socket and refuse new ones (True), or take them again (False)."""
        with self._lock:
            self._socket_down = down
        if down:
            self._stream.drop_all()

    def received(self, client_order_id: str) -> int:
        with self._lock:
            return self._received.get(client_order_id, 0)

    def order(self, client_order_id: str) -> dict[str, Any]:
        with self._lock:
            return self._orders[client_order_id].json()

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.json() for o in self._orders.values()]

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e.body) for e in self._events]

    @property
    def last_sequence(self) -> int:
        with self._lock:
            return len(self._events)

    # --- serving --------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        return header == f"Bearer {self.token}"

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> _Answer:
        route = _route_of(method, path)
        with self._lock:
            self.requests.append((method, path))
            if route is None:
                return _Answer(404, _error("not_found", f"no route {method} {path}"))
            if route == "submit" and isinstance(body, dict):
                cid = body.get("client_order_id")
                if isinstance(cid, str):
                    self._received[cid] = self._received.get(cid, 0) + 1
            error = self._take(route, HttpError)
            if error is not None:
                return _Answer(error.status, _error(error.code, error.message))
            after = [f for f in (self._take(route, Slow), self._take(route, Disconnect)) if f]
            try:
                status, out = self._serve(route, path, query, body)
            except _Refusal as refusal:
                return _Answer(refusal.status, refusal.body, after)
            return _Answer(status, out, after)

    def _serve(self, route: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if route == "health":
            return 200, {"status": "ok", "version": "v1", "last_sequence": len(self._events),
                         "time": self._now()}  # fmt: skip
        if route == "account":
            accounts = sorted({o.account for o in self._orders.values()} | set(self._positions))
            return 200, {"id": "OMS-FAKE-1", "status": "active", "currency": "USD",
                         "buying_power": 1_000_000.0, "accounts": accounts}  # fmt: skip
        if route == "positions":
            account = query.get("account")
            if not account:
                raise _Refusal(422, "invalid_request", "account is required")
            held = self._positions.get(account, {})
            listed = [{"symbol": s, "quantity": round(q, 9), **self._price(s)}
                      for s, q in sorted(held.items()) if abs(q) > _EPSILON]  # fmt: skip
            return 200, {"account": account, "positions": listed}
        if route in ("events", "executions"):
            after, limit = _int(query, "after", 0), min(_int(query, "limit", _PAGE), 1000)
            bodies = [e.body for e in self._events[after:]]
            if route == "executions":
                picked = [{**b["execution"], "sequence": b["sequence"]} for b in bodies
                          if b["type"] == "execution"]  # fmt: skip
            else:
                picked = list(bodies)
            page = picked[:limit]
            return 200, {route: page, "last_sequence": len(self._events),
                         "has_more": len(picked) > limit}  # fmt: skip
        if route == "list":
            offset, limit = _int(query, "offset", 0), min(_int(query, "limit", _PAGE), 1000)
            listed = list(self._orders.values())
            page = listed[offset : offset + limit]
            more = offset + limit < len(listed)
            return 200, {"orders": [o.json() for o in page],
                         "next_offset": offset + limit if more else None}  # fmt: skip
        if route == "submit":
            return self._submit(body)
        cid = unquote(path.split("/")[3])
        order = self._orders.get(cid)
        if order is None:
            raise _Refusal(404, "order_not_found", f"no order with client_order_id {cid}")
        if route == "get":
            return 200, order.json()
        if route == "cancel":
            return 200, self._cancel(order)
        return 200, self._replace(order, body)

    def _submit(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise _Refusal(400, "invalid_request", "want: a JSON object")
        cid = body.get("client_order_id")
        if not isinstance(cid, str) or not cid:
            raise _Refusal(422, "invalid_order", "client_order_id is required")
        existing = self._orders.get(cid)
        if existing is not None:
            raise _Refusal(409, "duplicate_client_order_id",
                           f"client_order_id {cid} was already received", existing)  # fmt: skip
        terms = _terms(body)
        now = self._now()
        order = _Order(order_id=f"OMS-{len(self._orders) + 1:06d}", client_order_id=cid,
                       created_at=now, **terms)  # fmt: skip
        self._orders[cid] = order
        reject = self._take("submit", Reject)
        if reject is not None:
            order.status, order.reject_reason = "rejected", reject.reason
            self._publish(order, "rejected")
            return 201, order.json()
        self._publish(order, "new")
        self._try_fill(order)
        return 201, order.json()

    def _cancel(self, order: _Order) -> dict[str, Any]:
        if order.status not in _WORKING:
            raise _Refusal(409, "not_cancelable", f"order is {order.status}", order)
        refused = self._take("cancel", CancelReject)
        if refused is not None:
            raise _Refusal(409, "cancel_rejected", refused.reason, order)
        order.status = "canceled"
        self._publish(order, "canceled")
        return order.json()

    def _replace(self, order: _Order, body: Any) -> dict[str, Any]:
        if order.status not in _WORKING:
            raise _Refusal(409, "not_replaceable", f"order is {order.status}", order)
        if not isinstance(body, dict):
            raise _Refusal(400, "invalid_request", "want: a JSON object")
        quantity = _num(body, "quantity", order.quantity)
        if quantity < order.filled - _EPSILON or quantity <= 0:
            raise _Refusal(422, "invalid_order", f"quantity {quantity} below filled {order.filled}")
        order.quantity = quantity
        order.limit_price = _num(body, "limit_price", order.limit_price)
        order.stop_price = _num(body, "stop_price", order.stop_price)
        order.time_in_force = str(body.get("time_in_force") or order.time_in_force)
        order.replace_count += 1
        self._publish(order, "replaced")
        self._try_fill(order)
        return order.json()

    # --- the book -----------------------------------------------------------------------------

    def _touch(self, order: _Order) -> float | None:
        bid, ask = self._quotes.get(order.symbol, (None, None))
        return ask if order.side == "buy" else bid

    def _try_fill(self, order: _Order) -> None:
        touch = self._touch(order)
        if touch is None:
            return
        if order.order_type == "limit":
            limit = order.limit_price or 0.0
            if (order.side == "buy" and limit < touch) or (order.side == "sell" and limit > touch):
                return
        elif order.order_type == "stop":
            stop = order.stop_price or 0.0
            if (order.side == "buy" and touch < stop) or (order.side == "sell" and touch > stop):
                return
        left = order.quantity - order.filled
        partial = self._take("fill", PartialFill)
        self._execute(order, left if partial is None else round(left * partial.fraction, 9), touch)

    def _execute(
        self, order: _Order, quantity: float, price: float, keep_status: bool = False
    ) -> None:
        if quantity <= _EPSILON:
            return
        sequence = len(self._events) + 1
        filled = order.filled + quantity
        execution = {
            "execution_id": f"X-{order.order_id}-{len(order.executions) + 1}",
            "client_order_id": order.client_order_id,
            "order_id": order.order_id,
            "symbol": order.symbol,
            "side": order.side,
            "quantity": round(quantity, 9),
            "price": price,
            "cum_quantity": round(filled, 9),
            "leaves_quantity": round(max(order.quantity - filled, 0.0), 9),
            "executed_at": self._now(),
            "sequence": sequence,
        }
        order.executions.append(execution)
        if not keep_status:
            order.status = "filled" if filled >= order.quantity - _EPSILON else "partially_filled"
        signed = quantity if order.side == "buy" else -quantity
        held = self._positions.setdefault(order.account, {})
        held[order.symbol] = held.get(order.symbol, 0.0) + signed
        self._publish(order, "execution", execution)
        if self._take("event", DuplicateExecution) is not None:
            self._publish(order, "execution", execution)

    def _price(self, symbol: str) -> dict[str, Any]:
        if symbol in self._prices:
            return {"price": self._prices[symbol]}
        sides = [p for p in self._quotes.get(symbol, (None, None)) if p is not None]
        return {"price": round(sum(sides) / len(sides), 9)} if sides else {}

    # --- events -------------------------------------------------------------------------------

    def _publish(self, order: _Order, what: str, execution: dict[str, Any] | None = None) -> None:
        sequence = len(self._events) + 1
        order.sequence = sequence
        order.updated_at = self._now()
        body: dict[str, Any] = {"sequence": sequence, "type": "order" if execution is None
                                else "execution", "at": order.updated_at}  # fmt: skip
        if execution is None:
            body["event"] = what
        else:
            body["execution"] = dict(execution)
        body["order"] = order.json()
        event = _Event(body)
        if self._take("event", SequenceGap) is not None:
            event.socket = "skip"
        elif (garbled := self._take("event", Garbled)) is not None:
            event.socket = "garble" if garbled.kind == "not_json" else "malform"
        if self._take("event", Silence) is not None:
            self._silent = True
        self._events.append(event)
        self._stream.push(event)

    def _now(self) -> str:
        self._tick += 1
        moment = self._start + timedelta(milliseconds=self._tick)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _take(self, route: str, kind: type[Any]) -> Any:
        for i, fault in enumerate(self._faults):
            if isinstance(fault, kind) and fault.route == route:
                del self._faults[i]
                return fault
        return None

    def admin(self, path: str, body: Any) -> _Answer:
        """`POST /_fake/faults`, `/_fake/quotes`, `/_fake/fills`; `GET /_fake/orders`."""
        try:
            if path == "/_fake/orders":
                return _Answer(200, self.orders())
            if not isinstance(body, dict):
                return _Answer(400, _error("invalid_request", "want: a JSON object"))
            if path == "/_fake/faults":
                self.inject(_KINDS[str(body.pop("kind"))](**body))
            elif path == "/_fake/quotes":
                self.set_quote(str(body["symbol"]), body.get("bid"), body.get("ask"))
            elif path == "/_fake/fills":
                self.fill(str(body["client_order_id"]), body.get("quantity"), body.get("price"))
            else:
                return _Answer(404, _error("not_found", f"no admin route {path}"))
        except (KeyError, TypeError, ValueError) as exc:
            return _Answer(400, _error("invalid_request", f"{type(exc).__name__}: {exc}"))
        return _Answer(200, {"ok": True})


class _Stream:
    """The WebSocket: an asyncio server on a thread of its own."""

    def __init__(self, fake: FakeOms, host: str, port: int) -> None:
        self._fake = fake
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._queues: dict[ServerConnection, asyncio.Queue[_Event]] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        async def listen() -> Server:
            return await serve(self._session, self.host, self.port,
                               process_request=self._handshake)  # fmt: skip

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(listen())
            self.port = int(next(iter(self._server.sockets)).getsockname()[1])
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-oms-stream", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("the fake OMS's socket did not start")

    def stop(self) -> None:
        loop = self._loop
        if self._thread is None or loop is None or loop.is_closed():
            return

        async def halt() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(halt(), loop).result(5)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)

    def push(self, event: _Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._broadcast, event)

    def drop_all(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def drop() -> None:
            for ws in list(self._queues):
                await ws.close(1001, "going away")

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drop(), loop).result(5)

    def _broadcast(self, event: _Event) -> None:
        for queue in self._queues.values():
            queue.put_nowait(event)

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        fake = self._fake
        if urlsplit(request.path).path != "/v1/stream":
            return connection.respond(HTTPStatus.NOT_FOUND, "no such stream\n")
        if not fake.authorized(request.headers.get("Authorization")):
            return _refuse(401, _error("unauthorized", "bad or missing token"))
        with fake._lock:
            down = fake._socket_down
        if down:
            return _refuse(503, _error("unavailable", "the stream is down"))
        return None

    async def _session(self, ws: ServerConnection) -> None:
        fake = self._fake
        path = ws.request.path if ws.request is not None else ""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        after = _int(query, "after", 0)
        queue: asyncio.Queue[_Event] = asyncio.Queue()
        with fake._lock:
            fake.ws_sessions.append(after)
            fake._silent = False
            backlog = list(fake._events[after:])
            last = len(fake._events)
            self._queues[ws] = queue
        sent = after
        try:
            hello = {"type": "hello", "version": "v1", "heartbeat_s": fake.heartbeat_s,
                     "last_sequence": last}  # fmt: skip
            await ws.send(json.dumps(hello))
            for event in backlog:  # a replay: every event after `after`, as it is
                await ws.send(json.dumps(event.body))
                sent = event.body["sequence"]
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), fake.heartbeat_s)
                except TimeoutError:
                    if not fake._silent:
                        beat = {"type": "heartbeat", "last_sequence": sent, "at": fake._now()}
                        await ws.send(json.dumps(beat))
                    continue
                sequence = event.body["sequence"]
                if sequence <= sent or fake._silent:
                    continue
                sent = sequence
                if event.socket == "skip":
                    continue
                if event.socket == "malform":
                    await ws.send(json.dumps({"sequence": sequence, "type": "execution"}))
                    continue
                if event.socket == "garble":
                    await ws.send('{"sequence": ' + str(sequence) + ', "type": "exec')
                    continue
                await ws.send(json.dumps(event.body))
        except ConnectionClosed:
            pass
        finally:
            self._queues.pop(ws, None)


def _refuse(status: int, body: dict[str, Any]) -> Response:
    payload = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"),
                       ("Content-Length", str(len(payload)))])  # fmt: skip
    return Response(status, HTTPStatus(status).phrase, headers, payload)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _route_of(method: str, path: str) -> str | None:
    fixed = {
        ("GET", "/v1/health"): "health", ("GET", "/v1/account"): "account",
        ("GET", "/v1/positions"): "positions", ("GET", "/v1/events"): "events",
        ("GET", "/v1/executions"): "executions", ("POST", "/v1/orders"): "submit",
        ("GET", "/v1/orders"): "list",
    }  # fmt: skip
    if (method, path) in fixed:
        return fixed[(method, path)]
    parts = path.split("/")
    if len(parts) == 4 and parts[:3] == ["", "v1", "orders"] and method == "GET":
        return "get"
    if len(parts) == 5 and parts[:3] == ["", "v1", "orders"] and method == "POST":
        return {"cancel": "cancel", "replace": "replace"}.get(parts[4])
    return None


def _terms(body: dict[str, Any]) -> dict[str, Any]:
    try:
        terms = {
            "account": str(body["account"]),
            "symbol": str(body["symbol"]),
            "side": str(body["side"]),
            "order_type": str(body["order_type"]),
            "quantity": float(body["quantity"]),
            "limit_price": _num(body, "limit_price", None),
            "stop_price": _num(body, "stop_price", None),
            "time_in_force": str(body.get("time_in_force") or "day"),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise _Refusal(422, "invalid_order", f"invalid order: {type(exc).__name__} {exc}") from exc
    if not terms["quantity"] > 0 or terms["side"] not in ("buy", "sell"):
        raise _Refusal(422, "invalid_order", "want: a positive quantity and side buy or sell")
    if terms["order_type"] not in ("market", "limit", "stop"):
        raise _Refusal(422, "invalid_order", f"order_type {terms['order_type']} not supported")
    if terms["order_type"] == "limit" and terms["limit_price"] is None:
        raise _Refusal(422, "invalid_order", "limit_price is required for a limit order")
    if terms["order_type"] == "stop" and terms["stop_price"] is None:
        raise _Refusal(422, "invalid_order", "stop_price is required for a stop order")
    return terms


def _num(body: dict[str, Any], key: str, default: float | None) -> float | None:
    value = body.get(key)
    return default if value is None else float(value)


def _int(query: dict[str, str], key: str, default: int) -> int:
    try:
        return max(int(query.get(key, default)), 0)
    except ValueError:
        return default


def _handler(fake: FakeOms) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def setup(self) -> None:
            super().setup()
            # headers and body go out as two writes: without this, Nagle's
            # algorithm and the client's delayed ACK add 40 ms to every answer
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _handle(self, method: str) -> None:
            if fake._halted:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(_Answer(400, _error("invalid_request", "body is not JSON")))
                return
            if parts.path.startswith("/_fake/"):
                self._send(fake.admin(parts.path, body))
                return
            if not fake.authorized(self.headers.get("Authorization")):
                self._send(_Answer(401, _error("unauthorized", "bad or missing token")))
                return
            self._send(fake.answer(method, parts.path, query, body))

        def _send(self, answer: _Answer) -> None:
            for fault in answer.after:
                if isinstance(fault, Slow):
                    time.sleep(fault.seconds)
                elif isinstance(fault, Disconnect):
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
            payload = json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (a slow answer past its timeout)
                self.close_connection = True

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake OMS (docs/oms-rest.md v1) on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--ws-port", type=int, default=0, help="the socket's (default: any free)")
    parser.add_argument("--token", default="oms-fake-token")
    args = parser.parse_args(argv)
    fake = FakeOms(token=args.token, port=args.port, ws_port=args.ws_port).start()
    print(
        f"fake OMS (docs/oms-rest.md v1) on {fake.url}, stream on {fake.ws_url}\n"
        "brokers.yaml:\n"
        "  paper:\n"
        "    adapter: oms_rest\n"
        f"    base_url: {fake.url}\n"
        f"    ws_url: {fake.ws_url}\n"
        "    token_env: OMS_TOKEN\n"
        "environment:\n"
        f"  export OMS_TOKEN={args.token}\n"
        f"quotes: curl -X POST {fake.url}/_fake/quotes -d "
        '\'{"symbol": "AAPL", "bid": 99, "ask": 101}\'\n'
        f"faults: curl -X POST {fake.url}/_fake/faults -d "
        '\'{"kind": "http_error", "status": 500, "route": "submit"}\'',
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
