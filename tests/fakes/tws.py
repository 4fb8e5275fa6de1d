"""A fake TWS / IB Gateway on 127.0.0.1 that ib_async cannot tell from the real one
(issue 10, item 7), for the IB adapter's tests and for trying the gateway by hand:

    python -m tests.fakes.tws --port 7497

The wire. Every message is a 4-byte big-endian length, then text fields each
ending in NUL. The client opens with `API\\0` and a framed `v157..178`; we answer
the server version (176) and a connection time; the client sends startApi (71)
with its client id; we answer nextValidId (9) and managedAccounts (15). Field
orders are those ib_async 2.1's `client.py` writes and `decoder.py` reads (server
version 176: no version field on orderStatus, openOrder, execDetails, contract
details; `faProfile` still present).

The market. A quote per symbol (`set_quote`); a market order takes the ask (buy)
or the bid (sell), a marketable limit fills at the touch, a stop triggers when
the touch or the last price reaches it, then fills at the touch; ioc/fok orders
that cannot fill at once are cancelled. Every order of a client id is told to
that client's connection only, as TWS does; open orders, completed orders and
executions are answered from the fake's books to anyone who asks, so a
reconnecting or restarted client finds what happened while it was away.

Faults (`inject`, each applies once, to the next order or cancel): `Reject`,
`Slow`, `Malformed`, `Disconnect`, `LostExecution`, `DuplicateExecution`,
`PartialFill`, `FillAfterCancel`. `placements` counts the new orders received
per orderRef, so a test can prove nothing was sent twice; `fill` and
`set_quote` make fills happen at any time, connected or not.

The account. A client that subscribes to its account's updates (reqAccountUpdates,
as ib_async does on connect) gets its values and one portfolio update per
position, and a new one whenever a position changes (`hold` books one taken
outside the gateway) or `set_market_price` changes its price. The market price
is the one set, else the quote's last price, else its mid, else the average cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

__all__ = [
    "Disconnect",
    "DuplicateExecution",
    "FakeTWS",
    "FillAfterCancel",
    "LostExecution",
    "Malformed",
    "PartialFill",
    "Reject",
    "Slow",
]

log = logging.getLogger("tests.fakes.tws")

SERVER_VERSION = 176
_T = TypeVar("_T")

# incoming message ids (ib_async client.py)
_REQ_MKT_DATA, _CANCEL_MKT_DATA, _PLACE_ORDER, _CANCEL_ORDER = 1, 2, 3, 4
_REQ_OPEN_ORDERS, _REQ_ACCOUNT_UPDATES, _REQ_EXECUTIONS, _REQ_IDS = 5, 6, 7, 8
_REQ_CONTRACT_DETAILS, _REQ_ALL_OPEN_ORDERS, _REQ_CURRENT_TIME = 9, 16, 49
_REQ_POSITIONS, _START_API, _REQ_ACCOUNT_UPDATES_MULTI, _REQ_COMPLETED = 61, 71, 76, 99


# --- faults -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reject:
    """The next new order is refused: error `code` with `message`, then Inactive."""

    code: int = 201
    message: str = "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. MARGIN REQUIREMENT"


@dataclass(frozen=True)
class Slow:
    """The next order takes effect at once, but its reply comes `delay_s` late."""

    delay_s: float = 2.0


@dataclass(frozen=True)
class Malformed:
    """The next order takes effect, but its orderStatus reply is garbled."""


@dataclass(frozen=True)
class Disconnect:
    """The next order takes effect (fills included), then the connection is cut
    before any reply is sent."""


@dataclass(frozen=True)
class LostExecution:
    """The next execution is never sent live (its orderStatus is); only an
    executions request (reqExecutions) shows it."""


@dataclass(frozen=True)
class DuplicateExecution:
    """The next execution is sent twice with the same execId."""


@dataclass(frozen=True)
class PartialFill:
    """The next marketable order fills only `quantity` now; the rest keeps working
    until `fill` or a quote fills it."""

    quantity: float


@dataclass(frozen=True)
class FillAfterCancel:
    """The next cancel is confirmed, and `delay_s` later an execution of the
    order's remaining quantity arrives (it overtook the cancel at the exchange)."""

    delay_s: float = 0.05


Fault = (
    Reject | Slow | Malformed | Disconnect | LostExecution | DuplicateExecution | PartialFill
) | FillAfterCancel


# --- the books ----------------------------------------------------------------------------


@dataclass
class _Execution:
    exec_id: str
    shares: float
    price: float
    time: str
    cum_qty: float
    avg_price: float


@dataclass
class _Order:
    order_id: int
    client_id: int
    perm_id: int
    con_id: int
    symbol: str
    account: str
    action: str
    quantity: float
    order_type: str
    limit_price: str
    aux_price: str
    tif: str
    order_ref: str
    status: str = "Submitted"
    executions: list[_Execution] = field(default_factory=list)

    @property
    def filled(self) -> float:
        return sum(e.shares for e in self.executions)

    @property
    def remaining(self) -> float:
        return max(self.quantity - self.filled, 0.0)

    @property
    def average(self) -> float:
        filled = self.filled
        return sum(e.shares * e.price for e in self.executions) / filled if filled else 0.0

    @property
    def done(self) -> bool:
        return self.status in {"Filled", "Cancelled", "Inactive"}


@dataclass
class _Client:
    writer: asyncio.StreamWriter
    client_id: int = -1
    tickers: dict[int, str] = field(default_factory=dict)  # reqId -> symbol
    account: str | None = None  # the account whose updates it subscribed to

    def send(self, *fields: object) -> None:
        self.send_raw(_encode(fields))

    def send_raw(self, payload: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(struct.pack(">I", len(payload)) + payload)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def _encode(fields: Iterable[object]) -> bytes:
    return b"".join(_text(f).encode() + b"\0" for f in fields)


class FakeTWS:
    """The fake server. `start()` runs it on its own loop in a thread (tests);
    `serve_forever()` runs it on the caller's loop (the command line)."""

    def __init__(
        self,
        *,
        port: int = 0,
        accounts: tuple[str, ...] = ("DU123",),
        quotes: dict[str, tuple[float | None, float | None, float | None]] | None = None,
        unknown_symbols: Iterable[str] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.accounts = accounts
        self.quotes: dict[str, tuple[float | None, float | None, float | None]] = dict(quotes or {})
        self.unknown_symbols = frozenset(unknown_symbols)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.orders: dict[int, _Order] = {}  # by permId, in placement order
        self.positions: dict[tuple[str, str], tuple[float, float]] = {}  # qty, avg cost
        # what a portfolio update says of a symbol's market price (see `_market_price`)
        self.market_prices: dict[str, float] = {}
        self.placements: Counter[str] = Counter()  # new orders per orderRef
        self.cancels: Counter[str] = Counter()  # cancel requests per orderRef
        self.received: list[int] = []  # every message id, in order
        self.refusing = False  # True: new connections are closed at once (TWS is down)
        self._faults: list[Fault] = []
        self._con_ids: dict[str, int] = {}
        self._next_perm = 1_000_001
        self._next_exec = 1
        self._max_order_id: dict[int, int] = {}
        self._clients: list[_Client] = []
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- running ------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        await self.open()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    def start(self) -> FakeTWS:
        """Run on a loop of its own in a daemon thread; returns once listening."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.open())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-tws", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("the fake TWS did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._thread = None

    async def _shutdown(self) -> None:
        for client in list(self._clients):
            client.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FakeTWS:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the fake's loop (its books have one owner) and return its result."""
        assert self._loop is not None

        async def call() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(5)

    # --- what tests do ------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        self._call(lambda: self._faults.append(fault))

    def set_quote(
        self, symbol: str, bid: float | None, ask: float | None, last: float | None = None
    ) -> None:
        """A new quote: subscribers get ticks, resting orders that it makes
        marketable fill (told to their client if it is connected)."""

        def change() -> None:
            self.quotes[symbol] = (bid, ask, last)
            for client in self._clients:
                for req_id, subscribed in client.tickers.items():
                    if subscribed == symbol:
                        self._send_ticks(client, req_id, symbol)
            for order in list(self.orders.values()):
                if order.symbol == symbol and not order.done:
                    price = self._fill_price(order)
                    if price is not None:
                        self._execute(order, order.remaining, price)
                        self._tell(order, live=True)

        self._call(change)

    def fill(
        self, order_ref: str, quantity: float | None = None, price: float | None = None
    ) -> None:
        """Fill (part of) the working order sent with `order_ref`, connected or not."""

        def do() -> None:
            order = self._by_ref(order_ref)
            if order is None or order.done:
                raise ValueError(f"no working order with orderRef {order_ref!r}")
            touch = self._touch(order)
            at = price if price is not None else touch
            if at is None:
                raise ValueError(f"no price to fill {order_ref!r} at")
            self._execute(order, quantity or order.remaining, at)
            self._tell(order, live=True)

        self._call(do)

    def hold(self, account: str, symbol: str, quantity: float, avg_cost: float) -> None:
        """A position taken outside the gateway (signed); subscribed clients are
        sent its portfolio update, as TWS does."""

        def do() -> None:
            self.positions[(account, symbol)] = (quantity, avg_cost)
            self._push_portfolio(account, symbol)

        self._call(do)

    def set_market_price(self, symbol: str, price: float) -> None:
        """The market price portfolio updates give the symbol from now on (any
        float: TWS sends 0 or -1 for a price it lacks); subscribed clients holding
        it are sent the update at once."""

        def do() -> None:
            self.market_prices[symbol] = price
            for account, held in list(self.positions):
                if held == symbol:
                    self._push_portfolio(account, symbol)

        self._call(do)

    def drop_connections(self) -> None:
        """Cut every client's connection (the network fell over)."""

        def cut() -> None:
            for client in list(self._clients):
                client.writer.close()

        self._call(cut)

    def refuse_connections(self, refusing: bool = True) -> None:
        """While refusing, a client that connects is hung up on (TWS restarting)."""

        def set_refusing() -> None:
            self.refusing = refusing

        self._call(set_refusing)

    def order(self, order_ref: str) -> _Order | None:
        return self._call(lambda: self._by_ref(order_ref))

    def connected_clients(self) -> list[int]:
        return self._call(lambda: [c.client_id for c in self._clients if c.client_id >= 0])

    # --- the connection ---------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        if self.refusing:
            writer.close()
            return
        try:
            if await reader.readexactly(4) != b"API\0":
                return
            await _read_message(reader)  # "v157..178": we speak 176, inside the range
            stamp = self._clock().strftime("%Y%m%d %H:%M:%S UTC")
            client.send(SERVER_VERSION, stamp)
            self._clients.append(client)
            while True:
                fields = await _read_message(reader)
                if not fields:
                    continue
                self.received.append(int(fields[0]))
                self._handle(client, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("fake TWS failed on a message")
        finally:
            if client in self._clients:
                self._clients.remove(client)
            writer.close()

    def _handle(self, client: _Client, f: list[str]) -> None:
        msg = int(f[0])
        if msg == _START_API:
            self._start_api(client, int(f[2]))
        elif msg == _PLACE_ORDER:
            self._place(client, f)
        elif msg == _CANCEL_ORDER:
            self._cancel(client, int(f[2]))
        elif msg in (_REQ_OPEN_ORDERS, _REQ_ALL_OPEN_ORDERS):
            for order in self.orders.values():
                if not order.done and (msg == _REQ_ALL_OPEN_ORDERS or self._owns(client, order)):
                    client.send(*self._open_order(order))
                    client.send(*self._order_status(order))
            client.send(53, 1)
        elif msg == _REQ_COMPLETED:
            for order in self.orders.values():
                if order.done:
                    client.send(*self._completed_order(order))
            client.send(102)
        elif msg == _REQ_EXECUTIONS:
            req_id = int(f[2])
            for order in self.orders.values():
                for execution in order.executions:
                    client.send(*self._exec_details(order, execution, req_id))
                    client.send(*_commission(execution))
            client.send(55, 1, req_id)
        elif msg == _REQ_POSITIONS:
            for (account, symbol), (quantity, cost) in sorted(self.positions.items()):
                client.send(61, 3, account, *self._contract(symbol, "NASDAQ"), quantity, cost)
            client.send(62, 1)
        elif msg == _REQ_ACCOUNT_UPDATES and f[2] == "1":
            client.account = f[3] or self.accounts[0]
            self._account_updates(client, client.account)
        elif msg == _REQ_ACCOUNT_UPDATES:
            client.account = None
        elif msg == _REQ_ACCOUNT_UPDATES_MULTI:
            req_id, account = int(f[2]), f[3]
            for tag, value in self._account_values(account):
                currency = "" if tag.startswith("Account") else "USD"
                client.send(73, 1, req_id, account, "", tag, value, currency)
            client.send(74, 1, req_id)
        elif msg == _REQ_CONTRACT_DETAILS:
            self._contract_details(client, int(f[2]), f[4], f[5])
        elif msg == _REQ_MKT_DATA:
            req_id, symbol = int(f[2]), f[4]
            client.tickers[req_id] = symbol
            self._send_ticks(client, req_id, symbol)
        elif msg == _CANCEL_MKT_DATA:
            client.tickers.pop(int(f[2]), None)
        elif msg == _REQ_IDS:
            client.send(9, 1, self._next_order_id(client.client_id))
        elif msg == _REQ_CURRENT_TIME:
            client.send(49, 1, int(self._clock().timestamp()))
        # anything else (market data type, news, ...) is accepted and not answered

    def _start_api(self, client: _Client, client_id: int) -> None:
        if any(c.client_id == client_id for c in self._clients if c is not client):
            client.send(
                4,
                2,
                -1,
                326,
                "Unable to connect as the client id is already in use. "
                "Retry with a unique client id.",
                "",
            )
            client.writer.close()
            return
        client.client_id = client_id
        client.send(9, 1, self._next_order_id(client_id))
        client.send(15, 1, ",".join(self.accounts))

    def _next_order_id(self, client_id: int) -> int:
        return self._max_order_id.get(client_id, 0) + 1

    def _owns(self, client: _Client, order: _Order) -> bool:
        return client.client_id in (0, order.client_id)

    def _clients_of(self, order: _Order) -> list[_Client]:
        return [c for c in self._clients if self._owns(c, order)]

    # --- orders -------------------------------------------------------------------

    def _take(self, kind: type[_T]) -> _T | None:
        for fault in self._faults:
            if isinstance(fault, kind):
                self._faults.remove(fault)
                return fault
        return None

    def _place(self, client: _Client, f: list[str]) -> None:
        order_id = int(f[1])
        symbol, action, order_type, tif = f[3], f[16], f[18], f[21]
        existing = next(
            (
                o
                for o in self.orders.values()
                if (o.client_id, o.order_id) == (client.client_id, order_id)
            ),
            None,
        )
        if existing is not None:
            self._modify(client, existing, f)
            return
        if order_id <= self._max_order_id.get(client.client_id, 0):
            client.send(4, 2, order_id, 103, "Duplicate order id", "")
            return
        self._max_order_id[client.client_id] = order_id
        order_ref = f[26]
        self.placements[order_ref] += 1
        order = _Order(
            order_id=order_id,
            client_id=client.client_id,
            perm_id=self._next_perm,
            con_id=self._con_id(symbol),
            symbol=symbol,
            account=f[23] or self.accounts[0],
            action=action,
            quantity=float(f[17]),
            order_type=order_type,
            limit_price=f[19],
            aux_price=f[20],
            tif=tif,
            order_ref=order_ref,
        )
        self._next_perm += 1
        self.orders[order.perm_id] = order
        reject = self._take(Reject)
        if reject is not None:
            order.status = "Inactive"
            client.send(4, 2, order_id, reject.code, reject.message, "")
            client.send(*self._order_status(order))
            return
        if order.account not in self.accounts:
            order.status = "Inactive"
            client.send(
                4,
                2,
                order_id,
                321,
                f"Error validating request.-'bN' : cause - "
                f"The account code {order.account!r} is not valid",
                "",
            )
            return
        self._work(order)
        self._reply(order, client)

    def _modify(self, client: _Client, order: _Order, f: list[str]) -> None:
        if order.done:
            code, text = (
                (104, "Can't modify a filled order")
                if order.status == "Filled"
                else (
                    10148,
                    f"OrderId {order.order_id} that needs to be cancelled cannot be "
                    f"cancelled, state: {order.status}.",
                )
            )
            client.send(4, 2, order.order_id, code, text, "")
            return
        order.quantity = float(f[17])
        order.order_type, order.limit_price, order.aux_price, order.tif = f[18], f[19], f[20], f[21]
        self._work(order)
        self._reply(order, client)

    def _work(self, order: _Order) -> None:
        """Fill what the market allows now; ioc/fok that cannot fill are cancelled."""
        price = self._fill_price(order)
        partial = self._take(PartialFill) if price is not None else None
        if price is not None:
            quantity = (
                order.remaining if partial is None else min(partial.quantity, order.remaining)
            )
            if order.tif == "FOK" and partial is not None:
                order.status = "Cancelled"
                return
            self._execute(order, quantity, price)
        if not order.done and order.tif in {"IOC", "FOK"}:
            order.status = "Cancelled"

    def _reply(self, order: _Order, client: _Client) -> None:
        if self._take(Disconnect) is not None:
            client.writer.close()
            return
        slow = self._take(Slow)
        malformed = self._take(Malformed)

        def send() -> None:
            if malformed is not None:
                client.send(*self._open_order(order))
                client.send(3, order.order_id, order.status, "ten", "", "?", "x")
                return
            self._tell(order, live=True, only=client)

        if slow is None:
            send()
        else:
            assert self._loop is not None
            self._loop.call_later(slow.delay_s, send)

    def _tell(self, order: _Order, *, live: bool, only: _Client | None = None) -> None:
        """openOrder, the executions not yet told, then orderStatus, to the owner."""
        lost = self._take(LostExecution) if order.executions and live else None
        duplicate = self._take(DuplicateExecution) if order.executions and lost is None else None
        for client in [only] if only is not None else self._clients_of(order):
            client.send(*self._open_order(order))
            if lost is None:
                for execution in order.executions[-1:] if order.executions else []:
                    copies = 2 if duplicate is not None else 1
                    for _ in range(copies):
                        client.send(*self._exec_details(order, execution, -1))
                    client.send(*_commission(execution))
            client.send(*self._order_status(order))

    def _cancel(self, client: _Client, order_id: int) -> None:
        order = next(
            (
                o
                for o in self.orders.values()
                if (o.client_id, o.order_id) == (client.client_id, order_id)
            ),
            None,
        )
        if order is None:
            client.send(
                4,
                2,
                order_id,
                10147,
                f"OrderId {order_id} that needs to be cancelled is not found.",
                "",
            )
            return
        self.cancels[order.order_ref] += 1
        if order.done:
            client.send(
                4,
                2,
                order_id,
                10148,
                f"OrderId {order_id} that needs to be cancelled "
                f"cannot be cancelled, state: {order.status}.",
                "",
            )
            return
        late = self._take(FillAfterCancel)
        order.status = "Cancelled"
        client.send(*self._order_status(order))
        client.send(4, 2, order_id, 202, "Order Canceled - reason:", "")
        if late is not None:
            assert self._loop is not None
            self._loop.call_later(late.delay_s, self._late_fill, order)

    def _late_fill(self, order: _Order) -> None:
        self._execute(order, order.remaining, self._touch(order) or 0.0, keep_status=True)
        for c in self._clients_of(order):
            c.send(*self._exec_details(order, order.executions[-1], -1))
            c.send(*_commission(order.executions[-1]))
            c.send(*self._order_status(order))

    def _execute(
        self, order: _Order, quantity: float, price: float, keep_status: bool = False
    ) -> None:
        if quantity <= 0:
            return
        cum = order.filled + quantity
        avg = (order.filled * order.average + quantity * price) / cum
        execution = _Execution(
            exec_id=f"0000e0d5.{self._next_exec:08x}.01.01",
            shares=quantity,
            price=price,
            time=self._clock().strftime("%Y%m%d %H:%M:%S UTC"),
            cum_qty=cum,
            avg_price=avg,
        )
        self._next_exec += 1
        order.executions.append(execution)
        if not keep_status:
            order.status = "Filled" if order.remaining <= 1e-9 else "Submitted"
        key = (order.account, order.symbol)
        held, cost = self.positions.get(key, (0.0, 0.0))
        signed = quantity if order.action == "BUY" else -quantity
        new = held + signed
        if abs(new) < 1e-9:
            self.positions.pop(key, None)
        else:
            same_way = held == 0 or (held > 0) == (signed > 0)
            cost = (held * cost + signed * price) / new if same_way else cost
            self.positions[key] = (new, cost if abs(held) < abs(new) or same_way else price)
        self._push_portfolio(order.account, order.symbol)

    def _touch(self, order: _Order) -> float | None:
        bid, ask, last = self.quotes.get(order.symbol, (None, None, None))
        side = ask if order.action == "BUY" else bid
        return side if side is not None else last

    def _fill_price(self, order: _Order) -> float | None:
        touch = self._touch(order)
        if touch is None:
            return None
        buy = order.action == "BUY"
        if order.order_type == "MKT":
            return touch
        if order.order_type == "LMT":
            limit = float(order.limit_price)
            return touch if (touch <= limit if buy else touch >= limit) else None
        if order.order_type == "STP":
            stop = float(order.aux_price)
            _, _, last = self.quotes.get(order.symbol, (None, None, None))
            prices = [p for p in (touch, last) if p is not None]
            hit = any(p >= stop for p in prices) if buy else any(p <= stop for p in prices)
            return touch if hit else None
        return None

    def _by_ref(self, order_ref: str) -> _Order | None:
        return next((o for o in self.orders.values() if o.order_ref == order_ref), None)

    # --- contracts, market data, account -------------------------------------------------

    def _con_id(self, symbol: str) -> int:
        return self._con_ids.setdefault(symbol, 265_598 + 1000 * len(self._con_ids))

    def _contract(self, symbol: str, exchange: str) -> tuple[object, ...]:
        # conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange,
        # currency, localSymbol, tradingClass
        return (
            self._con_id(symbol),
            symbol,
            "STK",
            "",
            0.0,
            "",
            "",
            exchange,
            "USD",
            symbol,
            "NMS",
        )

    def _contract_details(self, client: _Client, req_id: int, symbol: str, sec_type: str) -> None:
        if symbol in self.unknown_symbols or sec_type not in ("", "STK"):
            message = "No security definition has been found for the request"
            client.send(4, 2, req_id, 200, message, "")
            return
        # fmt: off
        client.send(
            10, req_id, symbol, "STK", "", 0.0, "", "SMART", "USD", symbol, "NMS", "NMS",
            self._con_id(symbol), 0.01,
            # multiplier .. evMultiplier, numSecIds
            "", "ACTIVETIM,LMT,MKT,STP", "SMART,NASDAQ", 1, 0, f"{symbol} INC", "NASDAQ",
            "", "Technology", "Computers", "Computers", "US/Eastern", "", "", "", "", 0,
            # aggGroup .. stockType, minSize, sizeIncrement, suggestedSizeIncrement
            1, "", "", "26,26", "", "COMMON", 1, 1, 100,
        )
        # fmt: on
        client.send(52, 1, req_id)

    def _send_ticks(self, client: _Client, req_id: int, symbol: str) -> None:
        bid, ask, last = self.quotes.get(symbol, (None, None, None))
        for tick_type, price in ((1, bid), (2, ask), (4, last)):
            if price is not None:
                client.send(1, 6, req_id, tick_type, price, 100, 0)

    def _account_values(self, account: str) -> list[tuple[str, str]]:
        return [
            ("AccountCode", account),
            ("AccountType", "INDIVIDUAL"),
            ("NetLiquidation", "1000000.00"),
            ("TotalCashValue", "1000000.00"),
            ("BuyingPower", "4000000.00"),
        ]

    def _account_updates(self, client: _Client, account: str) -> None:
        for tag, value in self._account_values(account):
            client.send(6, 2, tag, value, "" if tag.startswith("Account") else "USD", account)
        for owner, symbol in sorted(self.positions):
            if owner == account:
                self._portfolio_update(client, account, symbol)
        client.send(8, 1, self._clock().strftime("%H:%M"))
        client.send(54, 1, account)

    def _market_price(self, symbol: str, cost: float) -> float:
        """As set by `set_market_price`, else the quote's last price, else its mid
        (or its one side), else the average cost."""
        if symbol in self.market_prices:
            return self.market_prices[symbol]
        bid, ask, last = self.quotes.get(symbol, (None, None, None))
        sides = [p for p in (bid, ask) if p is not None]
        return last if last is not None else (sum(sides) / len(sides) if sides else cost)

    def _portfolio_update(self, client: _Client, account: str, symbol: str) -> None:
        quantity, cost = self.positions.get((account, symbol), (0.0, 0.0))
        price = self._market_price(symbol, cost)
        contract = self._contract(symbol, "")
        # updatePortfolio: the contract without exchange, with primaryExchange; a
        # position of 0 takes the item out of the client's portfolio
        client.send(7, 8, *contract[:7], "NASDAQ", *contract[8:], quantity, price,
                    quantity * price, cost, 0.0, 0.0, account)  # fmt: skip

    def _push_portfolio(self, account: str, symbol: str) -> None:
        for client in self._clients:
            if client.account == account:
                self._portfolio_update(client, account, symbol)

    # --- messages -------------------------------------------------------------------

    # fmt: off
    def _open_order(self, o: _Order) -> list[object]:
        return [
            5, o.order_id, *self._contract(o.symbol, "SMART"),
            o.action, o.quantity, o.order_type, o.limit_price, o.aux_price, o.tif, "",
            o.account, "O", 0, o.order_ref, o.client_id, o.perm_id, 0, 0, 0, "", "", "", "", "",
            "",  # faProfile (server version < 177)
            "", "", "0", "", "", 0, "", "", 0, "", "", "", "", "", 0, 0, 0, 0, "", 3, 0, 0, "",
            0, 0, "", 0, "", "",  # modelCode .. deltaNeutralAuxPrice
            0, 0, "", "", "", "", "",  # continuousUpdate .. comboLegsDescrip
            0, 0, 0,  # combo legs, order combo legs, smart combo routing params
            "", "", "",  # scale init level size, subs level size, price increment
            "",  # hedgeType
            0, "", "", 0, 0,  # optOutSmartRouting .. deltaNeutralContract present
            "",  # algoStrategy
            0, 0, o.status, *[""] * 9, "", "", "", "", "", 0, 0,  # solicited .. randomizePrice
            0,  # conditions
            "", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, "", 0,  # adjustedOrderType ..
            "", 0, 0,  # duration, postToAts, autoCancelParent
            "", "", "", "", "",  # minTradeQty .. midOffsetAtHalf
        ]

    def _completed_order(self, o: _Order) -> list[object]:
        return [
            101, *self._contract(o.symbol, "SMART"),
            o.action, o.quantity, o.order_type, o.limit_price, o.aux_price, o.tif, "",
            o.account, "O", 0, o.order_ref, o.perm_id, 0, 0, 0, "", "", "", "",
            "",  # faProfile
            "", "", "0", "", "", 0, "", "", "", "", "", "", "", 0, 0, 0, "", 3, 0, "", 0, "", "",
            0, 0, "", "", "",  # continuousUpdate .. comboLegsDescrip
            0, 0, 0, "", "", "", "",  # legs, params, scale sizes and increment, hedgeType
            "", "", 0, 0,  # clearingAccount .. deltaNeutralContract present
            "",  # algoStrategy
            0, o.status, 0, 0,  # solicited, status, randomizeSize, randomizePrice
            0,  # conditions
            "", "", "", 0, 0, "", o.filled, 0, 0, "", 0, 0, "",
            self._clock().strftime("%Y%m%d %H:%M:%S UTC"), o.status,
            "", "", "", "", "",  # minTradeQty .. midOffsetAtHalf
        ]
    # fmt: on

    def _order_status(self, o: _Order) -> list[object]:
        last = o.executions[-1].price if o.executions else 0.0
        return [
            3,
            o.order_id,
            o.status,
            o.filled,
            o.remaining,
            o.average,
            o.perm_id,
            0,
            last,
            o.client_id,
            "",
            0.0,
        ]

    def _exec_details(self, o: _Order, e: _Execution, req_id: int) -> list[object]:
        return [
            11,
            req_id,
            o.order_id,
            *self._contract(o.symbol, "NASDAQ"),
            e.exec_id,
            e.time,
            o.account,
            "NASDAQ",
            "BOT" if o.action == "BUY" else "SLD",
            e.shares,
            e.price,
            o.perm_id,
            o.client_id,
            0,
            e.cum_qty,
            e.avg_price,
            o.order_ref,
            "",
            "",
            "",
            1,
        ]


def _commission(e: _Execution) -> list[object]:
    return [59, 1, e.exec_id, 1.0, "USD", "", "", ""]


async def _read_message(reader: asyncio.StreamReader) -> list[str]:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    payload = await reader.readexactly(size)
    fields = payload.decode(errors="backslashreplace").split("\0")
    return fields[:-1] if fields and fields[-1] == "" else fields


def _parse_quote(text: str) -> tuple[str, tuple[float | None, float | None, float | None]]:
    symbol, _, prices = text.partition("=")
    parts = [float(p) if p else None for p in prices.split(",")]
    bid, ask, last = [*parts, None, None, None][:3]
    return symbol, (bid, ask, last)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.tws", description="A fake TWS API server on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=7497)
    parser.add_argument("--account", action="append", help="a managed account (DU123)")
    parser.add_argument(
        "--quote",
        action="append",
        default=[],
        metavar="SYMBOL=BID,ASK,LAST",
        help="a quote (default AAPL=99,101,100)",
    )
    args = parser.parse_args(argv)
    quotes = dict(_parse_quote(q) for q in args.quote) or {"AAPL": (99.0, 101.0, 100.0)}
    fake = FakeTWS(port=args.port, accounts=tuple(args.account or ["DU123"]), quotes=quotes)
    logging.basicConfig(level=logging.INFO)
    print(f"fake TWS on 127.0.0.1:{args.port}, accounts {', '.join(fake.accounts)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fake.serve_forever())


if __name__ == "__main__":
    main()
