"""Interactive Brokers through ib_async (the maintained continuation of ib_insync).

The broker port is synchronous and ib_async is asyncio: the adapter runs one
`IB` on an event loop of its own in a daemon thread, and every port call is a
coroutine sent to that loop with a deadline (`run_coroutine_threadsafe`). All of
ib_async's state is touched only on that loop.

Identity. Our order id travels as IB's `orderRef`; the broker keeps it, so the
mapping from our order id to IB's order survives our restart: `find` asks TWS
for its open orders, its completed orders and its executions, and matches them
by orderRef. The broker order id we report is IB's `permId` (stable across
client ids and sessions; the per-connection `orderId` is kept to cancel and
modify). A client order id already seen at this broker is refused before
anything is sent: nothing is ever sent twice.

Statuses. IB's `Submitted`/`PreSubmitted`/`PendingSubmit`/`PendingCancel` are
`accepted` (`partially_filled` once executions arrived; `replaced` in the answer
to a modify), `Filled` is `filled` only when the executions add up (a fill we
have no execution for is asked of TWS with reqExecutions first, and never
claimed without one), `Cancelled`/`ApiCancelled` are `cancelled`, and an order
refused before TWS acknowledged it (`Inactive`, or an error on a new order) is
`blocked` with IB's error code and words in `detail`. Executions are IB's, by
`execId`: the same execId twice is one execution.

Connection. `connection_problem()` says why the adapter is not connected (the
gateway blocks the broker's new orders while it answers, and until a
reconciliation has run once it is back). A lost connection fails every call in
flight with `BrokerError` and is retried with exponential backoff; ib_async
resynchronises open orders, completed orders and executions on every connect.

Faults. Every failure is a `BrokerError` naming what was asked; a call that got
no answer in `request_timeout_s` raises `BrokerError(code="timeout")`, an
outcome the gateway resolves with `find` before anything is retried.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from ib_async import IB, Contract, ExecutionFilter, Order, Stock, Ticker, Trade
from ib_async import Fill as IBFill

from engine.broker import (
    BrokerAck,
    BrokerError,
    BrokerOrder,
    BrokerPosition,
    Capabilities,
    Fill,
)
from engine.clock import Clock
from engine.lifecycle import OrderStatus
from engine.models import Quote

from .base import BrokerConfigError

__all__ = ["IB_CAPABILITIES", "IBAdapter", "from_config"]

log = logging.getLogger("apex.broker.ib")

IB_CAPABILITIES = Capabilities(
    order_types=frozenset({"market", "limit", "stop"}),
    time_in_force=frozenset({"day", "gtc", "ioc", "fok", "opg"}),
    # IB has no reduce-only flag for stocks: the gate proves the order only reduces
    # the position (reduce_only_check) and sends it as a plain order
    reduce_only=False,
    reduce_only_emulated=True,
    cancel=True,
    replace=True,
    history=True,
    positions=True,
    market_data=True,
    paper=True,
    live=True,
    credentials=True,
)

S = OrderStatus
_T = TypeVar("_T")
_EPSILON = 1e-9
_PRICE_DIGITS = 8
_ORDER_TYPES = {"market": "MKT", "limit": "LMT", "stop": "STP"}
_TIF = {"day": "DAY", "gtc": "GTC", "ioc": "IOC", "fok": "FOK", "opg": "OPG"}
_PENDING = frozenset({"PendingSubmit", "ApiPending"})
_DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
_CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
# IB error codes that are not a refusal of the order (ib_async's warnings, and the
# confirmation of a cancel)
_NOT_REFUSALS = frozenset({202, 399, 404, 10167})
_KEYS = frozenset(
    {
        "adapter",
        "host",
        "port",
        "client_id",
        "account",
        "connect_timeout_s",
        "request_timeout_s",
        "quote_timeout_s",
        "reconnect_max_s",
    }
)

Listener = Callable[[BrokerAck], None]


@dataclass
class _View:
    """What TWS says of one order: merged from a live trade, open and completed
    orders, and executions."""

    order_ref: str
    perm_id: int
    status: str
    total: float
    fills: dict[str, IBFill] = field(default_factory=dict)
    reported_filled: float = 0.0


class IBAdapter:
    """The broker port over one TWS / IB Gateway connection (one client id, one account)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: int,
        account: str,
        clock: Clock,
        name: str = "ib",
        connect_timeout_s: float = 2.0,
        request_timeout_s: float = 5.0,
        quote_timeout_s: float = 1.0,
        reconnect_min_s: float = 0.25,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.name = name
        self.capabilities = IB_CAPABILITIES
        self.host, self.port, self.client_id = host, port, client_id
        self.ib_account = account  # `account()` is the port's method
        self._clock = clock
        self._connect_timeout = connect_timeout_s
        self._timeout = request_timeout_s
        self._quote_timeout = quote_timeout_s
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ib: IB | None = None
        self._problem: str | None = "not connected yet"
        # successful connections so far: a service that sees it grow knows the
        # adapter reconnected, and can run a full reconciliation pass
        self.connections = 0
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._errors: dict[int, list[tuple[int, str]]] = {}
        self._contracts: dict[str, Contract] = {}
        self._tickers: dict[str, Ticker] = {}
        self._busy: set[str] = set()  # order refs with a call of ours in flight
        self._call_lock: asyncio.Lock | None = None
        self._listeners: list[Listener] = []
        self._dispatch = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"{name}-events"
        )

    # --- the loop and the connection ---------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        """Start the loop and make the first connection attempt (once; callers
        that arrive meanwhile wait for it, so none sees a half-started adapter)."""
        with self._start_lock:
            if self._loop is not None:
                return self._loop
            if self._closing:
                raise BrokerError(f"{self.name}: the adapter is closed")
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
            self._thread.start()
            self._loop = loop
            try:
                self._submit_to_loop(self._first_connect()).result(self._connect_timeout * 3 + 1)
            except Exception as exc:
                log.warning("%s: first connection failed: %s", self.name, exc)
            return loop

    def _submit_to_loop(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _first_connect(self) -> None:
        self._call_lock = asyncio.Lock()
        ib = IB()
        ib.orderStatusEvent += self._on_order_event
        ib.execDetailsEvent += self._on_exec
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        self._ib = ib
        try:
            await self._connect()
        except BrokerError:
            self._schedule_reconnect()
            raise

    async def _connect(self) -> None:
        ib = self._need_ib()
        try:
            await ib.connectAsync(
                self.host,
                self.port,
                clientId=self.client_id,
                timeout=self._connect_timeout,
                account=self.ib_account,
            )
        except Exception as exc:  # refused, reset, timed out, or garbled: not connected
            self._problem = f"cannot connect to {self.host}:{self.port}: {_words(exc)}"
            raise BrokerError(f"{self.name}: {self._problem}") from exc
        self._errors.clear()
        self._contracts.clear()
        self._tickers.clear()
        self._problem = None
        self.connections += 1
        log.info(
            "%s: connected to %s:%s as client %s", self.name, self.host, self.port, self.client_id
        )

    def _on_disconnected(self) -> None:
        if self._closing:
            return
        if self._problem is None:
            self._problem = f"connection to {self.host}:{self.port} lost"
        log.warning("%s: %s", self.name, self._problem)
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(
                    BrokerError(f"{self.name}: {self._problem} before IB answered")
                )
        self._waiters.clear()
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._closing or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay, ceiling = self._backoff
        while not self._closing and self._problem is not None:
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                await self._connect()
            except BrokerError as exc:
                log.info("%s: reconnect failed, next in %.2fs: %s", self.name, delay, exc)
                delay = min(delay * 2, ceiling)

    def close(self) -> None:
        """Disconnect and stop the loop and its thread (idempotent)."""
        with self._start_lock:
            self._closing = True
            loop, thread = self._loop, self._thread
            self._loop = None
        if loop is not None and thread is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
            except Exception:
                log.exception("%s: shutdown", self.name)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
        self._dispatch.shutdown(wait=True)

    async def _shutdown(self) -> None:
        if self._ib is not None and self._ib.isConnected():
            self._ib.disconnect()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def connection_problem(self) -> str | None:
        """Why the adapter is not connected now; None when it is."""
        self._start()
        return self._problem

    def _need_ib(self) -> IB:
        if self._ib is None:
            raise BrokerError(f"{self.name}: not connected")
        return self._ib

    def _call(
        self, make: Callable[[], Awaitable[_T]], what: str, deadline: float | None = None
    ) -> _T:
        """Run `make()` on the loop, connected, one call at a time, within a deadline."""
        self._start()

        async def call() -> _T:
            assert self._call_lock is not None
            async with self._call_lock:
                if self._problem is not None:
                    raise BrokerError(f"{self.name}: not connected ({self._problem})")
                return await make()

        wait = (deadline or self._timeout) * 3 + 1.0
        try:
            return self._submit_to_loop(call()).result(wait)
        except BrokerError:
            raise
        except concurrent.futures.TimeoutError as exc:
            raise BrokerError(
                f"{self.name}: timeout: {what} got no answer", code="timeout"
            ) from exc
        except Exception as exc:
            raise BrokerError(f"{self.name}: {what} failed: {_words(exc)}") from exc

    # --- waiting for TWS ------------------------------------------------------------------

    def _poke(self) -> None:
        for predicate, future in list(self._waiters):
            if future.done():
                continue
            try:
                if predicate():
                    future.set_result(None)
            except Exception as exc:
                future.set_exception(exc)

    async def _until(
        self, predicate: Callable[[], bool], what: str, timeout: float | None = None
    ) -> None:
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout or self._timeout)
        except TimeoutError as exc:
            raise BrokerError(
                f"{self.name}: timeout: IB did not answer {what} within "
                f"{timeout or self._timeout:g}s",
                code="timeout",
            ) from exc
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _on_error(self, req_id: int, code: int, message: str, _contract: object = None) -> None:
        self._errors.setdefault(req_id, []).append((code, message))
        self._poke()

    def _on_exec(self, trade: Trade, _fill: IBFill) -> None:
        self._on_order_event(trade)

    def _on_order_event(self, trade: Trade) -> None:
        self._poke()
        ref = trade.order.orderRef
        if not ref or ref in self._busy or not self._listeners:
            return
        ack = self._ack(ref, _view_of(trade))
        for listener in list(self._listeners):
            self._dispatch.submit(_tell, listener, ack)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(ack)` (on a thread of its own) for every change IB reports
        of an order outside a call of ours: a resting order filling, a fill after a
        cancel. The service hands these to `Gateway.report`."""
        self._listeners.append(listener)

    def _new_errors(self, order_id: int, mark: int) -> list[tuple[int, str]]:
        return [e for e in self._errors.get(order_id, [])[mark:] if e[0] not in _NOT_REFUSALS]

    # --- the broker port ------------------------------------------------------------------

    def submit(self, order: BrokerOrder) -> BrokerAck:
        return self._call(lambda: self._submit(order), f"submit of {order.order_id}")

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        return self._call(lambda: self._cancel(order_id, broker_order_id), f"cancel of {order_id}")

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        return self._call(
            lambda: self._replace(broker_order_id, order), f"replace of {order.order_id}"
        )

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        async def status() -> BrokerAck:
            view = next(
                (
                    v
                    for v in await self._views()
                    if v.order_ref == order_id and str(v.perm_id) == broker_order_id
                ),
                None,
            )
            if view is None:
                raise BrokerError(
                    f"order {order_id!r} ({broker_order_id}) is not known to IB",
                    code="order_not_found",
                )
            return self._ack(order_id, view)

        return self._call(status, f"status of {order_id}")

    def find(self, order_id: str) -> BrokerAck | None:
        async def find() -> BrokerAck | None:
            view = next((v for v in await self._views() if v.order_ref == order_id), None)
            return None if view is None else self._ack(order_id, view)

        return self._call(find, f"lookup of {order_id}")

    def order_history(self) -> list[BrokerAck]:
        async def history() -> list[BrokerAck]:
            return [self._ack(v.order_ref, v) for v in await self._views()]

        return self._call(history, "order history")

    def positions(self, account: str) -> dict[str, float]:
        """The positions of the IB account this adapter routes to (every order of
        the gateway's accounts goes to it), by symbol."""
        return {s: p.quantity for s, p in self.held_positions(account).items()}

    def held_positions(self, account: str) -> dict[str, BrokerPosition]:
        """The positions (reqPositions), each with the market price TWS last sent
        for it on the account subscription (`portfolio()`, PortfolioItem.marketPrice;
        the adapter subscribes to its account on connect). reqPositions carries only
        `avgCost`, a cost basis times the multiplier, which is never taken for a
        price: no portfolio item for the symbol, several with different prices
        (contracts sharing a symbol), or a price not finite and > 0 give none."""

        async def positions() -> dict[str, BrokerPosition]:
            ib = self._need_ib()
            rows = await ib.reqPositionsAsync()
            held: dict[str, float] = {}
            for row in rows:
                if row.account == self.ib_account and abs(row.position) > _EPSILON:
                    held[row.contract.symbol] = held.get(row.contract.symbol, 0.0) + row.position
            prices: dict[str, set[float]] = {}
            for item in ib.portfolio(self.ib_account):
                prices.setdefault(item.contract.symbol, set()).add(item.marketPrice)
            return {
                symbol: BrokerPosition(quantity, _market_price(prices.get(symbol, set())))
                for symbol, quantity in sorted(held.items())
            }

        return self._call(positions, "positions")

    def account(self, account: str) -> dict[str, object]:
        async def values() -> dict[str, object]:
            ib = self._need_ib()
            found = {
                (v.tag if not v.currency else f"{v.tag}:{v.currency}"): v.value
                for v in ib.accountValues(self.ib_account)
            }
            return {"account": self.ib_account, "status": "ACTIVE", "values": found}

        return self._call(values, "account values")

    def check_credentials(self) -> bool:
        """Connected, and the configured account is one TWS manages."""

        async def check() -> bool:
            return self.ib_account in self._need_ib().managedAccounts()

        return self._call(check, "credential check")

    def quote(self, symbol: str) -> Quote | None:
        """The latest quote of a subscribed market data line (subscribed on first
        ask, the contract qualified first); None when IB sent no price in time."""
        return self._call(lambda: self._quote(symbol), f"quote of {symbol}", self._quote_timeout)

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        return []  # IB's market is its own: a quote fed to the gateway changes nothing there

    # --- what each call does, on the loop -----------------------------------------------

    async def _submit(self, order: BrokerOrder) -> BrokerAck:
        ib = self._need_ib()
        used = next((v for v in self._local_views() if v.order_ref == order.order_id), None)
        if used is not None:
            return self._refused(
                order.order_id,
                f"client order id already sent (want: a new order id, got: {order.order_id!r}, "
                f"IB order {used.perm_id})",
            )
        invalid = _invalid(order)
        if invalid is not None:
            return self._refused(order.order_id, invalid)
        contract = await self._contract(order.symbol)
        if isinstance(contract, str):
            return self._refused(order.order_id, contract)
        ib_order = Order(
            action="BUY" if order.side == "buy" else "SELL",
            totalQuantity=order.quantity,
            orderType=_ORDER_TYPES[order.order_type],
            tif=_TIF[order.time_in_force],
            orderRef=order.order_id,
            account=self.ib_account,
        )
        _set_prices(ib_order, order)
        self._busy.add(order.order_id)
        try:
            trade = ib.placeOrder(contract, ib_order)
            order_id = trade.order.orderId
            await self._until(
                lambda: (
                    trade.orderStatus.status not in _PENDING or bool(self._new_errors(order_id, 0))
                ),
                f"the order {order.order_id}",
            )
            await self._fill_gaps(trade)
        finally:
            self._busy.discard(order.order_id)
        return self._ack(order.order_id, _view_of(trade), errors=self._new_errors(order_id, 0))

    async def _cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        trade = await self._open_trade(order_id, broker_order_id, "cancelled")
        ib_id = trade.order.orderId
        mark = len(self._errors.get(ib_id, []))
        self._busy.add(order_id)
        try:
            self._need_ib().cancelOrder(trade.order)
            await self._until(
                lambda: trade.orderStatus.status in _DONE or bool(self._new_errors(ib_id, mark)),
                f"the cancel of {order_id}",
            )
            refused = self._new_errors(ib_id, mark)
            if refused and trade.orderStatus.status not in _CANCELLED:
                raise BrokerError(f"IB refused the cancel of {order_id}: {_ib_words(refused)}")
            await self._fill_gaps(trade)
        finally:
            self._busy.discard(order_id)
        return self._ack(order_id, _view_of(trade))

    async def _replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        trade = await self._open_trade(order.order_id, broker_order_id, "replaced")
        invalid = _invalid(order)
        if invalid is not None:
            raise BrokerError(f"IB cannot take the replace of {order.order_id}: {invalid}")
        wanted = _ORDER_TYPES[order.order_type]
        if trade.order.orderType != wanted:
            raise BrokerError(
                f"IB cannot change the order type (want: {trade.order.orderType}, got: {wanted})"
            )
        ib_id = trade.order.orderId
        mark_errors = len(self._errors.get(ib_id, []))
        trade.order.totalQuantity = order.quantity
        trade.order.tif = _TIF[order.time_in_force]
        _set_prices(trade.order, order)
        self._busy.add(order.order_id)
        try:
            self._need_ib().placeOrder(trade.contract, trade.order)
            mark = len(trade.log)

            def answered() -> bool:
                after = trade.log[mark:]
                return (
                    trade.orderStatus.status in _DONE
                    or any(entry.message in ("", "Modified") for entry in after)
                    or bool(self._errors.get(ib_id, [])[mark_errors:])
                )

            await self._until(answered, f"the replace of {order.order_id}")
            errors = [e for e in self._errors.get(ib_id, [])[mark_errors:] if e[0] != 202]
            if errors and trade.orderStatus.status not in ("Filled",):
                raise BrokerError(
                    f"IB refused the replace of {order.order_id}: {_ib_words(errors)}"
                )
            await self._fill_gaps(trade)
        finally:
            self._busy.discard(order.order_id)
        return self._ack(order.order_id, _view_of(trade), replaced=True)

    async def _open_trade(self, order_id: str, broker_order_id: str, verb: str) -> Trade:
        ib = self._need_ib()
        for trade in ib.openTrades():
            if str(trade.order.permId) == broker_order_id and trade.order.orderRef == order_id:
                return trade
        view = next(
            (
                v
                for v in await self._views()
                if v.order_ref == order_id and str(v.perm_id) == broker_order_id
            ),
            None,
        )
        if view is None:
            raise BrokerError(
                f"order {order_id!r} ({broker_order_id}) is not known to IB", code="order_not_found"
            )
        for trade in ib.openTrades():
            if trade.order.permId == view.perm_id:
                return trade
        got = self._ack(order_id, view).status
        raise BrokerError(
            f"order {order_id!r} ({broker_order_id}) cannot be {verb} "
            f"(want: a working order, got: {got})"
        )

    async def _fill_gaps(self, trade: Trade) -> None:
        """IB says more was filled than the executions we received: ask TWS for its
        executions (a lost report), which ib_async adds to the trade."""
        have = sum(f.execution.shares for f in trade.fills)
        if trade.orderStatus.filled > have + _EPSILON:
            await self._need_ib().reqExecutionsAsync(ExecutionFilter(clientId=self.client_id))

    async def _views(self) -> list[_View]:
        """Every order TWS knows of this client: open, completed, and their
        executions, merged by permId, in permId order."""
        ib = self._need_ib()
        open_trades = await asyncio.wait_for(ib.reqOpenOrdersAsync(), self._timeout)
        completed = await asyncio.wait_for(ib.reqCompletedOrdersAsync(False), self._timeout)
        fills = await asyncio.wait_for(ib.reqExecutionsAsync(), self._timeout)
        views: dict[int, _View] = {}
        for trade in [*completed, *open_trades]:
            if trade.order.permId:
                views[trade.order.permId] = _view_of(trade)
        for fill in fills:
            view = views.get(fill.execution.permId)
            if view is None:  # an execution of an order TWS no longer lists
                view = views[fill.execution.permId] = _View(
                    fill.execution.orderRef, fill.execution.permId, "Filled", 0.0
                )
            view.fills.setdefault(fill.execution.execId, fill)
        for view in views.values():
            if not view.total:
                view.total = sum(f.execution.shares for f in view.fills.values())
        return [views[perm] for perm in sorted(views)]

    def _local_views(self) -> list[_View]:
        ib = self._need_ib()
        views = [_view_of(trade) for trade in ib.trades()]
        views += [
            _View(f.execution.orderRef, f.execution.permId, "Filled", f.execution.shares)
            for f in ib.fills()
        ]
        return views

    async def _contract(self, symbol: str) -> Contract | str:
        """The qualified contract of a US stock, or why IB does not know it."""
        known = self._contracts.get(symbol)
        if known is not None:
            return known
        ib = self._need_ib()
        contract = Stock(symbol, "SMART", "USD")
        mark = {k: len(v) for k, v in self._errors.items()}
        qualified = await asyncio.wait_for(ib.qualifyContractsAsync(contract), self._timeout)
        if not qualified or qualified[0] is None or not contract.conId:
            said = [e for k, v in self._errors.items() for e in v[mark.get(k, 0) :]]
            words = _ib_words(said) if said else "no contract details"
            return f"IB does not know the stock {symbol!r} (want: one contract, got: {words})"
        self._contracts[symbol] = contract
        return contract

    async def _quote(self, symbol: str) -> Quote | None:
        ticker = self._tickers.get(symbol)
        if ticker is None:
            contract = await self._contract(symbol)
            if isinstance(contract, str):
                raise BrokerError(contract)
            ticker = self._need_ib().reqMktData(contract, "", False, False)
            self._tickers[symbol] = ticker
            ticker.updateEvent += lambda _t: self._poke()
            # ticks come one price at a time: wait for both sides, and answer with
            # what came (or None) when the line stays one-sided past the timeout
            with contextlib.suppress(BrokerError):
                await self._until(
                    lambda: _two_sided(ticker), f"market data for {symbol}", self._quote_timeout
                )
        return _quote_of(ticker, self._clock())

    # --- acks -----------------------------------------------------------------------------

    def _refused(self, order_id: str, detail: str) -> BrokerAck:
        return BrokerAck(order_id, "", S.BLOCKED, detail=detail)

    def _ack(
        self,
        order_id: str,
        view: _View,
        *,
        errors: list[tuple[int, str]] | None = None,
        replaced: bool = False,
    ) -> BrokerAck:
        executions = sorted(
            view.fills.values(), key=lambda f: (f.execution.time, f.execution.execId)
        )
        fills = tuple(
            Fill(
                quantity=f.execution.shares,
                price=f.execution.price,
                at=f.execution.time,
                execution_id=f.execution.execId,
            )
            for f in executions
        )
        filled = sum((f.quantity for f in fills), 0.0)
        average = None
        if filled > 0:
            average = round(sum(f.quantity * f.price for f in fills) / filled, _PRICE_DIGITS)
        detail = ""
        if view.status == "Filled" and filled + _EPSILON < view.total:
            status = S.PARTIALLY_FILLED if filled > 0 else S.ACCEPTED
            detail = (
                f"IB reports the order filled; executions received for {filled:g} of {view.total:g}"
            )
        elif view.status == "Filled":
            status = S.FILLED
        elif view.status == "Inactive" or (view.status in _CANCELLED and errors and filled == 0):
            status = S.BLOCKED if filled == 0 else S.CANCELLED
            detail = _ib_words(errors) if errors else "IB made the order inactive (refused)"
        elif view.status in _CANCELLED:
            status = S.CANCELLED
        elif filled > 0:
            status = S.PARTIALLY_FILLED
        else:
            status = S.REPLACED if replaced else S.ACCEPTED
        if replaced and status in (S.ACCEPTED, S.PARTIALLY_FILLED):
            status = S.REPLACED
        broker_order_id = str(view.perm_id) if view.perm_id else ""
        return BrokerAck(
            order_id=order_id,
            broker_order_id=broker_order_id,
            status=status,
            filled_quantity=filled,
            average_price=average,
            fills=fills,
            detail=detail,
        )


# --- helpers ------------------------------------------------------------------------------


def _view_of(trade: Trade) -> _View:
    return _View(
        order_ref=trade.order.orderRef,
        perm_id=trade.order.permId or trade.orderStatus.permId,
        status=trade.orderStatus.status,
        total=float(trade.order.totalQuantity),
        fills={f.execution.execId: f for f in trade.fills},
        reported_filled=trade.orderStatus.filled,
    )


def _set_prices(ib_order: Order, order: BrokerOrder) -> None:
    if order.order_type == "limit" and order.limit_price is not None:
        ib_order.lmtPrice = order.limit_price
    if order.order_type == "stop" and order.stop_price is not None:
        ib_order.auxPrice = order.stop_price


def _invalid(order: BrokerOrder) -> str | None:
    if not (math.isfinite(order.quantity) and order.quantity > 0):
        return f"quantity must be positive (want: > 0, got: {order.quantity})"
    if order.order_type not in _ORDER_TYPES:
        want = sorted(_ORDER_TYPES)
        return f"order type not supported by IB (want: one of {want}, got: {order.order_type!r})"
    if order.time_in_force not in _TIF:
        want = sorted(_TIF)
        return f"time in force not supported (want: one of {want}, got: {order.time_in_force!r})"
    if order.order_type == "limit" and order.limit_price is None:
        return "limit price missing (want: a limit price for a limit order, got: none)"
    if order.order_type == "stop" and order.stop_price is None:
        return "stop price missing (want: a stop price for a stop order, got: none)"
    return None


def _quote_of(ticker: Ticker, now: datetime) -> Quote | None:
    def price(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) and value > 0 else None

    bid, ask, last = price(ticker.bid), price(ticker.ask), price(ticker.last)
    if bid is None and ask is None and last is None:
        return None
    # stamped with our clock: the line is live, and the gate compares it with its own now
    return Quote(bid=bid, ask=ask, last=last, timestamp=now)


def _market_price(prices: set[float]) -> float | None:
    """The one market price TWS sent for a symbol's portfolio items, when it is
    finite and > 0 (TWS sends 0 or -1 for a price it does not have)."""
    if len(prices) != 1:
        return None
    (price,) = prices
    return price if math.isfinite(price) and price > 0 else None


def _two_sided(ticker: Ticker) -> bool:
    return all(
        value is not None and math.isfinite(value) and value > 0
        for value in (ticker.bid, ticker.ask)
    )


def _ib_words(errors: Iterable[tuple[int, str]]) -> str:
    return "; ".join(f"IB error {code}: {message}" for code, message in errors)


def _words(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _tell(listener: Listener, ack: BrokerAck) -> None:
    try:
        listener(ack)
    except Exception:
        log.exception("a listener failed on %s", ack.order_id)


# --- configuration --------------------------------------------------------------------------


def from_config(
    section: Mapping[str, object], env: Mapping[str, str], *, role: str, clock: Clock
) -> IBAdapter:
    """An adapter from a brokers.yaml section (SPEC section 11): `host`, `port`,
    `client_id`, `account`, and optional `connect_timeout_s`, `request_timeout_s`,
    `quote_timeout_s`, `reconnect_max_s`. TWS holds the login: no credential is
    read from `env`. Does not connect."""
    for key in section:
        if key not in _KEYS:
            raise BrokerConfigError(
                f"{role}.{key}", f"unknown key for adapter ib (want: one of {sorted(_KEYS)})"
            )
    host = section.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise BrokerConfigError(f"{role}.host", f"want: a host name, got: {_kind(host)}")
    port = _integer(section, "port", role, 1, 65535)
    client_id = _integer(section, "client_id", role, 0, 2**31 - 1)
    account = section.get("account")
    if not isinstance(account, str) or not account.strip():
        raise BrokerConfigError(
            f"{role}.account", f"want: the IB account code, got: {_kind(account)}"
        )
    # IB paper accounts are DU... (DF... for advisors): a paper section that names a
    # real account, or a live one that names a paper account, is a mistake
    if role == "paper" and not account.startswith("D"):
        raise BrokerConfigError(
            f"{role}.account", "want: an IB paper account (DU...), got: an account that is not one"
        )
    if role == "live" and account.startswith("D"):
        raise BrokerConfigError(
            f"{role}.account", "want: an IB live account, got: a paper account (D...)"
        )
    timeouts = {
        key: _seconds(section, key, role)
        for key in ("connect_timeout_s", "request_timeout_s", "quote_timeout_s", "reconnect_max_s")
        if key in section
    }
    return IBAdapter(
        host=host,
        port=port,
        client_id=client_id,
        account=account,
        clock=clock,
        name=f"ib-{role}",
        **timeouts,
    )


def _integer(section: Mapping[str, object], key: str, role: str, low: int, high: int) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BrokerConfigError(
            f"{role}.{key}", f"want: an integer in {low}..{high}, got: {_kind(value)}"
        )
    return value


def _seconds(section: Mapping[str, object], key: str, role: str) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value <= 3600):
        raise BrokerConfigError(f"{role}.{key}", f"want: seconds in (0, 3600], got: {_kind(value)}")
    return float(value)


def _kind(value: object) -> str:
    """What a wrong value is, never the value (it may be something secret put in
    the wrong place)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number out of range"
    if isinstance(value, str):
        return "empty text" if not value.strip() else "text"
    return type(value).__name__
