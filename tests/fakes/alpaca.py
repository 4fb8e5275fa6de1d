"""A fake Alpaca (trading and market data REST) on 127.0.0.1, for tests and for
trying the gateway without an account (issue 10).

It serves the routes alpaca-py 0.44 calls, with bodies carrying every field its
models require, so the real `TradingClient` and `StockHistoricalDataClient`
cannot tell it from Alpaca:

    POST   /v2/orders                                submit (422 on a reused client_order_id)
    GET    /v2/orders?status=&symbols=&direction=    list (open | closed | all)
    GET    /v2/orders/{id}                            one order
    GET    /v2/orders:by_client_order_id?client_order_id=
    PATCH  /v2/orders/{id}                            replace: a NEW order (new id, `replaces`)
    DELETE /v2/orders/{id}                            cancel (204; 422 if not open)
    GET    /v2/positions, GET /v2/account
    GET    /v2/stocks/quotes/latest?symbols=          the data API (same server)

Every route checks `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` and answers 401
`{"code": 40110000, "message": "request is not authorized"}` otherwise.

Fills: the fake keeps one quote per symbol (`set_quote`). An order that is
marketable against it fills at once, whole, at the touch (the ask for a buy,
the bid for a sell); a resting order fills when a later quote reaches it;
`fill` fills part or all of a working order by hand; `late_fill` books a fill
on a cancelled order. `hold` books a position taken outside the gateway; each
position carries `current_price` (the quote's last price, else its mid, else
left out; `set_current_price` sets what it says, bad values included).

Updates are served both ways: by polling the order routes, and on the
trade-updates stream at `stream_url` (`ws://127.0.0.1:<port>/stream`, a
websocket on a port of its own), which speaks what alpaca-py's `TradingStream`
expects: `{"action": "authenticate", "data": {"key_id", "secret_key"}}` answered
`{"stream": "authorization", "data": {"status": "authorized" | "unauthorized"}}`
(closed after a refusal), `{"action": "listen", "data": {"streams":
["trade_updates"]}}` answered `{"stream": "listening", ...}`, then one
`{"stream": "trade_updates", "data": {"event", "order", "timestamp", ...}}` per
change of an order's status or filled quantity (`new`, `partial_fill`, `fill`,
`canceled`, `replaced`, `rejected`, ...), carrying the order as it truly is (a
`LostReport` hides a fill from the order routes only).

Faults, on demand (`inject`, or `POST /_fake/faults` with the same fields as
JSON): see `HttpError`, `Reject`, `Slow`, `Malformed`, `Disconnect`,
`LostReport`, `StaleReplay`, `PartialFill`. Each applies once, to the next
request of its route. `received(client_order_id)` counts the submits that
carried a client order id, so a test can prove nothing was sent twice.

Run by hand: `python -m tests.fakes.alpaca --port 8701`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = [
    "Disconnect",
    "FakeAlpaca",
    "Fault",
    "HttpError",
    "LostReport",
    "Malformed",
    "PartialFill",
    "Reject",
    "Slow",
    "StaleReplay",
]

# the route names faults apply to
ROUTES = ("submit", "replace", "cancel", "get", "list", "account", "positions", "quote")

_OPEN = frozenset({"new", "accepted", "pending_new", "partially_filled"})
_NOT_AUTHORIZED = {"code": 40110000, "message": "request is not authorized"}
_EPSILON = 1e-9


# --- faults -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpError:
    """The next request of `route` is answered `status` with Alpaca's error body
    (or `body` as is) and changes nothing."""

    status: int
    message: str = "internal server error"
    code: int = 50010000
    route: str = "submit"
    body: str | None = None


@dataclass(frozen=True)
class Reject:
    """The next submit is taken and the order is `rejected` at once (as Alpaca does
    when a venue or its risk check refuses it after the HTTP answer)."""

    route: str = "submit"


@dataclass(frozen=True)
class Slow:
    """The next request of `route` takes effect, then its answer waits `seconds`
    (past the client's timeout: the outcome is unknown to the caller)."""

    seconds: float
    route: str = "submit"


@dataclass(frozen=True)
class Malformed:
    """The next request of `route` takes effect and is answered 200 with a body the
    client cannot read: `not_json` (an HTML page) or `missing_field` (the order
    without `status` and `created_at`)."""

    kind: str = "not_json"
    route: str = "submit"


@dataclass(frozen=True)
class Disconnect:
    """The next request of `route` takes effect, then the socket is closed with no
    answer (a connection lost mid-order)."""

    route: str = "submit"


@dataclass(frozen=True)
class LostReport:
    """The next fill happens but stays invisible for `reads` answers about its
    order (its report was lost; a later poll shows it)."""

    reads: int = 1
    route: str = "fill"


@dataclass(frozen=True)
class StaleReplay:
    """The next read of an order answers the state it had before its last change
    (an old report delivered again, after a newer one)."""

    route: str = "get"


@dataclass(frozen=True)
class PartialFill:
    """The next fill at the quote takes only `fraction` of what is left; the rest
    waits for a later quote or `fill`."""

    fraction: float = 0.5
    route: str = "fill"


Fault = HttpError | Reject | Slow | Malformed | Disconnect | LostReport | StaleReplay | PartialFill
_KINDS: dict[str, type[Any]] = {
    "http_error": HttpError,
    "reject": Reject,
    "slow": Slow,
    "malformed": Malformed,
    "disconnect": Disconnect,
    "lost_report": LostReport,
    "stale_replay": StaleReplay,
    "partial_fill": PartialFill,
}


# --- state ---------------------------------------------------------------------------------


@dataclass
class _Order:
    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: float
    limit_price: float | None
    stop_price: float | None
    created_at: str
    status: str = "new"
    updated_at: str = ""
    filled_qty: float = 0.0
    filled_notional: float = 0.0
    filled_at: str | None = None
    canceled_at: str | None = None
    replaced_at: str | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    previous: dict[str, Any] | None = None  # the JSON before the last change
    hidden: dict[str, Any] | None = None  # what reads show while a report is lost
    hidden_reads: int = 0

    def json(self) -> dict[str, Any]:
        avg = self.filled_notional / self.filled_qty if self.filled_qty > _EPSILON else None
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "submitted_at": self.created_at,
            "filled_at": self.filled_at,
            "expired_at": None,
            "expires_at": None,
            "canceled_at": self.canceled_at,
            "failed_at": None,
            "replaced_at": self.replaced_at,
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "asset:" + self.symbol)),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _num(self.qty),
            "filled_qty": _num(self.filled_qty),
            "filled_avg_price": None if avg is None else _num(round(avg, 8)),
            "order_class": "simple",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
            "time_in_force": self.time_in_force,
            "limit_price": None if self.limit_price is None else _num(self.limit_price),
            "stop_price": None if self.stop_price is None else _num(self.stop_price),
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


class _Refusal(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message}


@dataclass
class _Answer:
    status: int
    body: Any = None
    after: list[Fault] = field(default_factory=list)  # Slow, Malformed, Disconnect


class FakeAlpaca:
    """The fake broker: start it, point the clients at `url`, drive it from the test."""

    def __init__(
        self,
        *,
        key_id: str = "PKFAKE0000000000",
        secret_key: str = "fake-secret",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.key_id = key_id
        self.secret_key = secret_key
        self._lock = threading.RLock()
        self._orders: dict[str, _Order] = {}  # by id, in creation order
        self._by_client_id: dict[str, str] = {}
        self._quotes: dict[str, tuple[float | None, float | None, float | None, str]] = {}
        self._positions: dict[str, tuple[float, float]] = {}  # symbol -> (qty, cost)
        self._current_prices: dict[str, Any] = {}  # symbol -> current_price as set
        self._faults: list[Fault] = []
        self._received: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._tick = 0
        self._start = datetime.now(UTC).replace(microsecond=0)
        self.account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "account:" + key_id))
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread: threading.Thread | None = None
        self._stream = _TradeUpdates(self, host)
        self._pushed: dict[str, tuple[str, float]] = {}  # by id: (status, filled) last pushed

    # --- running -----------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def stream_url(self) -> str:
        """The trade-updates stream (a websocket; alpaca-py's `TradingStream`)."""
        return f"ws://{self._stream.host}:{self._stream.port}/stream"

    def start(self) -> FakeAlpaca:
        self._stream.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-alpaca", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._stream.stop()

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- driving it ------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Make the next request of the fault's route misbehave, once."""
        if fault.route not in (*ROUTES, "fill"):
            raise ValueError(f"route (want: one of {ROUTES}, got: {fault.route!r})")
        with self._lock:
            self._faults.append(fault)

    def set_quote(
        self, symbol: str, bid: float | None, ask: float | None, last: float | None = None
    ) -> None:
        """The symbol's quote from now on; resting orders it reaches fill."""
        with self._lock:
            self._quotes[symbol] = (bid, ask, last, self._now())
            for order in list(self._orders.values()):
                if order.symbol == symbol and order.status in _OPEN:
                    self._try_fill(order)
            self._publish()

    def fill(self, client_order_id: str, quantity: float, price: float) -> None:
        """Fill `quantity` of a working order at `price` (a partial fill if less
        than what is left)."""
        with self._lock:
            order = self._current(client_order_id)
            if order.status not in _OPEN:
                raise ValueError(f"order {client_order_id} is {order.status}, not open")
            self._execute(order, min(quantity, order.qty - order.filled_qty), price)
            self._publish()

    def late_fill(self, client_order_id: str, quantity: float, price: float) -> None:
        """A fill that overtook the cancel: booked on the order, which stays canceled."""
        with self._lock:
            order = self._current(client_order_id)
            status = order.status
            self._execute(order, quantity, price)
            order.status = status
            self._publish()

    def received(self, client_order_id: str) -> int:
        """How many submits carried this client order id."""
        with self._lock:
            return self._received.get(client_order_id, 0)

    def order(self, client_order_id: str) -> dict[str, Any]:
        """The current JSON of the order sent with this client order id (the newest
        of its replace chain)."""
        with self._lock:
            return self._current(client_order_id).json()

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.json() for o in self._orders.values()]

    def hold(self, symbol: str, quantity: float, avg_entry_price: float) -> None:
        """A position taken outside the gateway (signed; short is negative)."""
        with self._lock:
            self._positions[symbol] = (quantity, quantity * avg_entry_price)

    def set_current_price(self, symbol: str, price: Any) -> None:
        """What `current_price` says for the symbol's position from now on, sent as
        given (a number is sent as text, as Alpaca does; None: the member is left
        out). Without it: the quote's last price, else its mid, else left out."""
        with self._lock:
            self._current_prices[symbol] = price

    # --- the routes ------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> _Answer:
        with self._lock:
            try:
                return self._answer(method, path, query, body)
            finally:
                self._publish()

    def _answer(self, method: str, path: str, query: dict[str, str], body: Any) -> _Answer:
        with self._lock:
            self.requests.append((method, path))
            route = _route_of(method, path)
            if route is None:
                return _Answer(404, {"code": 40410000, "message": f"no route {method} {path}"})
            if route == "submit" and isinstance(body, dict) and body.get("client_order_id"):
                # every submit that reached us, whatever the answer
                client_id = str(body["client_order_id"])
                self._received[client_id] = self._received.get(client_id, 0) + 1
            refusal = self._take(route, HttpError)
            if refusal is not None:
                raw = refusal.body
                text = (
                    raw if raw is not None else {"code": refusal.code, "message": refusal.message}
                )
                return _Answer(refusal.status, text)
            after = [f for f in (self._take(route, k) for k in (Slow, Malformed, Disconnect)) if f]
            try:
                answer = self._serve(route, path, query, body)
            except _Refusal as exc:
                return _Answer(exc.status, exc.body)
            answer.after = after
            return answer

    def _serve(self, route: str, path: str, query: dict[str, str], body: Any) -> _Answer:
        if route == "submit":
            return _Answer(200, self._submit(body))
        if route == "list":
            return _Answer(200, self._list(query))
        if route == "get":
            if path.startswith("/v2/orders:by_client_order_id"):
                order = self._by_client(query.get("client_order_id", ""))
            else:
                order = self._by_id(path.rsplit("/", 1)[-1])
            return _Answer(200, self._read(order))
        if route == "replace":
            return _Answer(200, self._replace(self._by_id(path.rsplit("/", 1)[-1]), body))
        if route == "cancel":
            self._cancel(self._by_id(path.rsplit("/", 1)[-1]))
            return _Answer(204)
        if route == "positions":
            return _Answer(200, self._position_list())
        if route == "account":
            return _Answer(200, self._account())
        return _Answer(200, self._latest_quotes(query))

    def _submit(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Refusal(422, 40010000, "request body must be a JSON object")
        client_id = str(body.get("client_order_id") or uuid.uuid4())
        if client_id in self._by_client_id:
            raise _Refusal(422, 40010001, "client_order_id must be unique")
        order = _Order(
            id=str(uuid.uuid4()),
            client_order_id=client_id,
            created_at=self._now(),
            **_terms(body),
        )
        self._orders[order.id] = order
        self._by_client_id[client_id] = order.id
        if self._take("submit", Reject) is not None:
            order.status = "rejected"
            return order.json()
        order.status = "accepted"
        self._try_fill(order)
        if order.status == "accepted":
            order.status = "new"
        return self._read(order)

    def _replace(self, old: _Order, body: Any) -> dict[str, Any]:
        if old.status not in _OPEN:
            raise _Refusal(422, 42210000, f"order is not replaceable (status: {old.status})")
        if not isinstance(body, dict):
            raise _Refusal(422, 40010000, "request body must be a JSON object")
        qty = float(body["qty"]) if body.get("qty") is not None else old.qty
        if not qty > old.filled_qty:
            raise _Refusal(422, 40010001, "qty must be greater than the filled quantity")
        client_id = str(body.get("client_order_id") or uuid.uuid4())
        if client_id in self._by_client_id:
            raise _Refusal(422, 40010001, "client_order_id must be unique")
        now = self._now()
        new = _Order(
            id=str(uuid.uuid4()),
            client_order_id=client_id,
            symbol=old.symbol,
            side=old.side,
            type=old.type,
            time_in_force=str(body.get("time_in_force") or old.time_in_force),
            qty=qty,
            limit_price=_price(body, "limit_price", old.limit_price),
            stop_price=_price(body, "stop_price", old.stop_price),
            created_at=now,
            replaces=old.id,
            # fills carry over: the chain's cumulative quantity is the newest order's
            filled_qty=old.filled_qty,
            filled_notional=old.filled_notional,
            status="new" if old.filled_qty <= _EPSILON else "partially_filled",
        )
        self._change(old)
        old.status, old.replaced_by, old.replaced_at = "replaced", new.id, now
        self._orders[new.id] = new
        self._by_client_id[client_id] = new.id
        self._try_fill(new)
        return self._read(new)

    def _cancel(self, order: _Order) -> None:
        if order.status not in _OPEN:
            raise _Refusal(422, 42210000, f"order is not cancelable (status: {order.status})")
        self._change(order)
        order.status, order.canceled_at = "canceled", self._now()

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        status = query.get("status", "open")
        symbols = set(filter(None, query.get("symbols", "").split(",")))
        out = []
        for order in self._orders.values():
            if symbols and order.symbol not in symbols:
                continue
            is_open = order.status in _OPEN
            if (status == "open" and not is_open) or (status == "closed" and is_open):
                continue
            out.append(self._read(order))
        if query.get("direction", "desc") == "desc":
            out.reverse()
        return out[: int(query.get("limit") or 50)]

    def _read(self, order: _Order) -> dict[str, Any]:
        """What a read shows of an order, faults included."""
        if order.hidden is not None:
            shown = order.hidden
            order.hidden_reads -= 1
            if order.hidden_reads <= 0:
                order.hidden = None
            return shown
        if order.previous is not None and self._take("get", StaleReplay) is not None:
            return order.previous
        return order.json()

    def _position_list(self) -> list[dict[str, Any]]:
        out = []
        for symbol, (qty, cost) in sorted(self._positions.items()):
            if abs(qty) <= _EPSILON:
                continue
            out.append(
                {
                    "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "asset:" + symbol)),
                    "symbol": symbol,
                    "exchange": "NASDAQ",
                    "asset_class": "us_equity",
                    "asset_marginable": True,
                    "avg_entry_price": _num(round(abs(cost / qty), 8)),
                    "qty": _num(qty),
                    "side": "long" if qty > 0 else "short",
                    "cost_basis": _num(round(cost, 8)),
                    "qty_available": _num(qty),
                    **self._current_price(symbol),
                }
            )
        return out

    def _current_price(self, symbol: str) -> dict[str, Any]:
        if symbol in self._current_prices:
            price = self._current_prices[symbol]
        else:
            bid, ask, last, _ = self._quotes.get(symbol, (None, None, None, ""))
            sides = [p for p in (bid, ask) if p is not None]
            price = last if last is not None else (sum(sides) / len(sides) if sides else None)
        if price is None:
            return {}
        if isinstance(price, int | float) and not isinstance(price, bool):
            price = _num(price) if math.isfinite(price) else str(price)
        return {"current_price": price}

    def _account(self) -> dict[str, Any]:
        return {
            "id": self.account_id,
            "account_number": "PA" + self.account_id.replace("-", "")[:10].upper(),
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": "200000",
            "cash": "100000",
            "portfolio_value": "100000",
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": self._start.isoformat().replace("+00:00", "Z"),
            "trade_suspended_by_user": False,
            "multiplier": "2",
            "shorting_enabled": True,
            "equity": "100000",
            "last_equity": "100000",
            "long_market_value": "0",
            "short_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
        }

    def _latest_quotes(self, query: dict[str, str]) -> dict[str, Any]:
        quotes = {}
        for symbol in filter(None, query.get("symbols", "").split(",")):
            if symbol not in self._quotes:
                continue
            bid, ask, _last, at = self._quotes[symbol]
            quotes[symbol] = {
                "t": at,
                "bp": bid or 0.0,
                "bs": 100,
                "bx": "V",
                "ap": ask or 0.0,
                "as": 100,
                "ax": "V",
                "c": ["R"],
                "z": "C",
            }
        return {"quotes": quotes}

    # --- the matching engine ----------------------------------------------------------

    def _try_fill(self, order: _Order) -> None:
        price = self._fill_price(order)
        left = order.qty - order.filled_qty
        if price is None:
            if order.time_in_force in ("ioc", "fok") and order.status in _OPEN:
                self._change(order)
                order.status, order.canceled_at = "canceled", self._now()
            return
        partial = self._take("fill", PartialFill)
        quantity = left if partial is None else round(left * partial.fraction, 9)
        self._execute(order, quantity, price)

    def _execute(self, order: _Order, quantity: float, price: float) -> None:
        if quantity <= _EPSILON:
            return
        lost = self._take("fill", LostReport)
        self._change(order)
        if lost is not None:
            order.hidden, order.hidden_reads = order.json(), lost.reads
        order.filled_qty += quantity
        order.filled_notional += quantity * price
        now = self._now()
        order.filled_at = now
        done = order.filled_qty >= order.qty - _EPSILON
        order.status = "filled" if done else "partially_filled"
        signed = quantity if order.side == "buy" else -quantity
        held, cost = self._positions.get(order.symbol, (0.0, 0.0))
        self._positions[order.symbol] = (held + signed, cost + signed * price)

    def _fill_price(self, order: _Order) -> float | None:
        if order.symbol not in self._quotes:
            return None
        bid, ask, last, _ = self._quotes[order.symbol]
        touch = (ask if order.side == "buy" else bid) or last
        if touch is None:
            return None
        if order.type == "market":
            return touch
        if order.type == "stop":
            stop = order.stop_price or 0.0
            mark = [p for p in ((ask if order.side == "buy" else bid), last) if p is not None]
            hit = (
                any(p >= stop for p in mark)
                if order.side == "buy"
                else any(p <= stop for p in mark)
            )
            return touch if hit else None
        limit = order.limit_price or 0.0
        if order.side == "buy":
            return min(touch, limit) if limit >= touch else None
        return max(touch, limit) if limit <= touch else None

    # --- the trade-updates stream ----------------------------------------------------------

    def _publish(self) -> None:
        """Push a trade update for every order whose status or filled quantity
        changed since the last push (called under the lock, after each change)."""
        for order in self._orders.values():
            now = (order.status, order.filled_qty)
            before = self._pushed.get(order.id)
            if before == now:
                continue
            self._pushed[order.id] = now
            data: dict[str, Any] = {
                "event": _EVENTS.get(order.status, order.status),
                "timestamp": order.updated_at or order.created_at,
                "order": order.json(),
            }
            filled = order.filled_qty - (0.0 if before is None else before[1])
            if filled > _EPSILON:
                held = self._positions.get(order.symbol, (0.0, 0.0))[0]
                data.update(
                    event="fill" if order.status == "filled" else "partial_fill",
                    execution_id=str(uuid.uuid4()),
                    qty=_num(filled),
                    price=data["order"]["filled_avg_price"],
                    position_qty=_num(held),
                )
            self._stream.push(json.dumps({"stream": "trade_updates", "data": data}))

    # --- helpers ------------------------------------------------------------------------

    def _change(self, order: _Order) -> None:
        order.previous = order.json()
        order.updated_at = self._now()

    def _now(self) -> str:
        # strictly increasing, so creation order is the order of `created_at`
        self._tick += 1
        moment = self._start + timedelta(microseconds=self._tick)
        return moment.isoformat().replace("+00:00", "Z")

    def _take(self, route: str, kind: type[Any]) -> Any:
        for i, fault in enumerate(self._faults):
            if isinstance(fault, kind) and fault.route == route:
                del self._faults[i]
                return fault
        return None

    def _by_id(self, order_id: str) -> _Order:
        order = self._orders.get(order_id)
        if order is None:
            raise _Refusal(404, 40410000, "order not found")
        return order

    def _by_client(self, client_id: str) -> _Order:
        order_id = self._by_client_id.get(client_id)
        if order_id is None:
            raise _Refusal(404, 40410000, f"order not found for {client_id}")
        return self._orders[order_id]

    def _current(self, client_id: str) -> _Order:
        order = self._by_client(client_id)
        while order.replaced_by is not None:
            order = self._orders[order.replaced_by]
        return order

    def authorized(self, headers: Any) -> bool:
        return bool(
            headers.get("APCA-API-KEY-ID") == self.key_id
            and headers.get("APCA-API-SECRET-KEY") == self.secret_key
        )

    def admin(self, path: str, body: Any) -> _Answer:
        """`POST /_fake/faults`, `/_fake/quotes`, `/_fake/fills`; `GET /_fake/orders`."""
        try:
            if path == "/_fake/orders":
                return _Answer(200, self.orders())
            if not isinstance(body, dict):
                return _Answer(400, {"message": "want: a JSON object"})
            if path == "/_fake/faults":
                kind = _KINDS[str(body.pop("kind"))]
                self.inject(kind(**body))
            elif path == "/_fake/quotes":
                self.set_quote(
                    str(body["symbol"]), body.get("bid"), body.get("ask"), body.get("last")
                )
            elif path == "/_fake/fills":
                self.fill(
                    str(body["client_order_id"]), float(body["quantity"]), float(body["price"])
                )
            else:
                return _Answer(404, {"message": f"no admin route {path}"})
        except (KeyError, TypeError, ValueError) as exc:
            return _Answer(400, {"message": f"{type(exc).__name__}: {exc}"})
        return _Answer(200, {"ok": True})


# an order's status -> the trade-updates event that reports it
_EVENTS = {"partially_filled": "partial_fill", "filled": "fill", "canceled": "canceled"}


class _TradeUpdates:
    """The trade-updates websocket: an asyncio server on a thread of its own."""

    def __init__(self, fake: FakeAlpaca, host: str) -> None:
        self._fake = fake
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._queues: dict[ServerConnection, asyncio.Queue[str]] = {}  # the listening ones
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        async def listen() -> Server:
            return await serve(self._session, self.host, 0)

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(listen())
            self.port = int(next(iter(self._server.sockets)).getsockname()[1])
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-alpaca-stream", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("the fake's trade-updates stream did not start")

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

    def push(self, message: str) -> None:
        """Send `message` to every listening connection (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._broadcast, message)

    def _broadcast(self, message: str) -> None:
        for queue in self._queues.values():
            queue.put_nowait(message)

    async def _session(self, ws: ServerConnection) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send_all(ws, queue))
        try:
            first = json.loads(await ws.recv())
            data = first.get("data") if isinstance(first, dict) else None
            ok = (
                isinstance(data, dict)
                and first.get("action") in ("authenticate", "auth")
                and data.get("key_id") == self._fake.key_id
                and data.get("secret_key") == self._fake.secret_key
            )
            status = "authorized" if ok else "unauthorized"
            reply = {
                "stream": "authorization",
                "data": {"action": "authenticate", "status": status},
            }
            await ws.send(json.dumps(reply))
            if not ok:
                return
            async for raw in ws:
                message = json.loads(raw)
                if not isinstance(message, dict) or message.get("action") != "listen":
                    continue
                streams = [s for s in message.get("data", {}).get("streams", []) if s]
                queue.put_nowait(json.dumps({"stream": "listening", "data": {"streams": streams}}))
                if "trade_updates" in streams:
                    self._queues[ws] = queue
        except (ConnectionClosed, ValueError, AttributeError):
            pass
        finally:
            self._queues.pop(ws, None)
            sender.cancel()

    @staticmethod
    async def _send_all(ws: ServerConnection, queue: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(await queue.get())


def _route_of(method: str, path: str) -> str | None:
    if path == "/v2/orders":
        return {"POST": "submit", "GET": "list"}.get(method)
    if path.startswith("/v2/orders:by_client_order_id") and method == "GET":
        return "get"
    if path.startswith("/v2/orders/"):
        return {"GET": "get", "PATCH": "replace", "DELETE": "cancel"}.get(method)
    if path == "/v2/positions" and method == "GET":
        return "positions"
    if path == "/v2/account" and method == "GET":
        return "account"
    if path == "/v2/stocks/quotes/latest" and method == "GET":
        return "quote"
    return None


def _terms(body: dict[str, Any]) -> dict[str, Any]:
    try:
        qty = float(body["qty"])
        side, kind = str(body["side"]), str(body["type"])
        tif = str(body.get("time_in_force") or "day")
        symbol = str(body["symbol"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _Refusal(422, 40010000, f"invalid order: {exc}") from exc
    if not qty > 0 or side not in ("buy", "sell") or kind not in ("market", "limit", "stop"):
        raise _Refusal(422, 40010000, f"invalid order: qty={qty} side={side} type={kind}")
    if tif not in ("day", "gtc", "ioc", "fok", "opg", "cls"):
        raise _Refusal(422, 40010000, f"invalid time_in_force {tif}")
    limit, stop = _price(body, "limit_price", None), _price(body, "stop_price", None)
    if kind == "limit" and limit is None:
        raise _Refusal(422, 40010000, "limit_price is required for a limit order")
    if kind == "stop" and stop is None:
        raise _Refusal(422, 40010000, "stop_price is required for a stop order")
    return {
        "symbol": symbol,
        "side": side,
        "type": kind,
        "time_in_force": tif,
        "qty": qty,
        "limit_price": limit,
        "stop_price": stop,
    }


def _price(body: dict[str, Any], key: str, default: float | None) -> float | None:
    value = body.get(key)
    return default if value is None else float(value)


def _num(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _handler(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
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
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if parts.path.startswith("/_fake/"):
                self._send(fake.admin(parts.path, body))
                return
            if not fake.authorized(self.headers):
                self._send(_Answer(401, _NOT_AUTHORIZED))
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
                elif isinstance(fault, Malformed):
                    if fault.kind == "not_json":
                        answer = _Answer(200, "<html><body>502 Bad Gateway</body></html>")
                    elif isinstance(answer.body, dict):
                        body = dict(answer.body)
                        body.pop("status", None)
                        body.pop("created_at", None)
                        answer = _Answer(200, body)
            if answer.status == 204:
                payload = b""
            elif isinstance(answer.body, str):
                payload = answer.body.encode()
            else:
                payload = json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                kind = "text/html" if isinstance(answer.body, str) else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (a slow reply past its timeout)
                self.close_connection = True

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Alpaca on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--key-id", default="PKFAKE0000000000")
    parser.add_argument("--secret-key", default="fake-secret")
    args = parser.parse_args(argv)
    fake = FakeAlpaca(key_id=args.key_id, secret_key=args.secret_key, port=args.port)
    fake.start()
    print(
        f"fake Alpaca on {fake.url} (trading and market data), "
        f"trade updates on {fake.stream_url}\n"
        "brokers.yaml:\n"
        "  paper:\n"
        "    adapter: alpaca\n"
        f"    base_url: {fake.url}\n"
        f"    data_url: {fake.url}\n"
        f"    stream_url: {fake.stream_url}\n"
        "    key_id_env: APCA_API_KEY_ID\n"
        "    secret_key_env: APCA_API_SECRET_KEY\n"
        "environment:\n"
        f"  export APCA_API_KEY_ID={args.key_id}\n"
        "  export APCA_API_SECRET_KEY=<the --secret-key given (default: the fake's own)>\n"
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
