"""Alpaca, through alpaca-py's own `TradingClient` and `StockHistoricalDataClient`
(SPEC section 11; issue 10).

Identity. Our order id is Alpaca's `client_order_id`, so an order whose submit
had no answer is found by it (`find`) and never sent twice. Alpaca answers a
replace with a NEW order (new id, `replaces` the old one, which becomes
`replaced` with `replaced_by`); the gateway keeps the broker id the submit
gave, so this adapter reports the first id of the chain as `broker_order_id`
and follows `replaced_by` to the newest order before every status, cancel or
replace. Nothing about it is kept in memory: a restarted adapter follows the
same chain. The newest order of a chain that replaced another and still works
is reported `replaced`.

Fills. Alpaca's order says how much has filled (`filled_qty`) and at what
average price, not each execution. Each rise of the cumulative quantity this
adapter sees becomes one `Fill` of the difference, priced so that the fills
average to Alpaca's average, with the execution id `<first id>:<cumulative
quantity>`: a repeated or stale poll adds nothing, a later one adds only the
rest. The steps are remembered per order, and with a `BrokerJournal` (the
store's, named as the broker) also saved, entry `order:<first id>` holding the
client order id and the steps, so that a restarted adapter reports the same
steps under the same ids and only the rise since the last one as new. A step
is saved before the call that saw it answers, so it lands with the store's
next commit, the one that books it. A save that fails makes the call raise
`BrokerError` (`journal_unavailable`); the step stands in memory and is saved
again with the next look at that order. Without a journal a restarted
adapter's first look at an order is one fill of everything filled so far
(see docs/alpaca.md for what that means after a partial fill).

Updates. By polling: `on_quote(symbol, ...)` asks Alpaca for that symbol's
orders and returns those whose status or fills changed since this adapter
last reported them; `poll()` does the same for every symbol. And, when a
`stream_url` is configured, on the trade-updates stream: `subscribe(listener)`
starts alpaca-py's own `TradingStream` on a thread and event loop of its own,
and each update of an order this adapter has reported becomes the same ack a
poll would give (the same conversion, the same journaled steps), handed to
`listener` when its status or fills changed. A change seen on both the stream
and a poll is reported once: whichever comes second finds nothing new.
`close()` stops the stream. Without `stream_url` there is no stream and
`subscribe` does nothing: polling only.

Errors. alpaca-py is built on requests with no timeout and retries 429 and 504
three times after 3 s sleeps; this adapter gives every request a timeout and
turns the retries off (a retried submit whose first try reached Alpaca would
be refused as a reused client order id, and the gate resolves unknown
outcomes itself). Every `APIError`, timeout, lost connection or unreadable
answer becomes `BrokerError`, with Alpaca's HTTP status and message in its
text; a submit Alpaca refuses with a 4xx is a `blocked` ack with the same
words in `detail` and `raw`. No credential is ever in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.models.quotes import Quote as AlpacaQuote
from alpaca.data.requests import StockLatestQuoteRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, Position, TradeAccount
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    OrderRequest,
    ReplaceOrderRequest,
    StopOrderRequest,
)
from alpaca.trading.stream import TradingStream
from pydantic import ValidationError

from engine.broker import (
    BrokerAck,
    BrokerError,
    BrokerJournal,
    BrokerOrder,
    BrokerPosition,
    Capabilities,
    Fill,
)
from engine.clock import Clock
from engine.lifecycle import OrderStatus
from engine.models import Quote

from .base import BrokerConfigError, JsonDict, fill_from_json, fill_to_json, load_journal, text

__all__ = [
    "ALPACA_CAPABILITIES",
    "LIVE_URL",
    "PAPER_URL",
    "AlpacaAdapter",
    "AlpacaRefused",
    "from_config",
]

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
_LIVE_HOST = "api.alpaca.markets"
_DEFAULT_TIMEOUT_S = 10.0
_KEYS = frozenset(
    {"adapter", "base_url", "data_url", "stream_url", "key_id_env", "secret_key_env", "timeout_s"}
)
_STREAM_STOP_S = 5.0  # how long close() waits for the stream's thread

log = logging.getLogger(__name__)
Listener = Callable[[BrokerAck], None]

ALPACA_CAPABILITIES = Capabilities(
    order_types=frozenset({"market", "limit", "stop"}),
    time_in_force=frozenset({"day", "gtc", "ioc", "fok", "opg", "cls"}),
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
# Alpaca's order statuses -> the lifecycle. A status absent here is refused as
# unparseable (fail closed) rather than guessed at.
_STATUSES: dict[str, OrderStatus] = {
    "pending_new": S.ACCEPTED,
    "accepted": S.ACCEPTED,
    "new": S.ACCEPTED,
    "accepted_for_bidding": S.ACCEPTED,
    "pending_review": S.ACCEPTED,
    "held": S.ACCEPTED,
    "stopped": S.ACCEPTED,
    "suspended": S.ACCEPTED,
    "done_for_day": S.ACCEPTED,
    "calculated": S.ACCEPTED,
    "partially_filled": S.PARTIALLY_FILLED,
    "filled": S.FILLED,
    "pending_cancel": S.PENDING_CANCEL,
    "canceled": S.CANCELLED,
    "expired": S.EXPIRED,
    "pending_replace": S.PENDING_REPLACE,
    "replaced": S.REPLACED,
    "rejected": S.BLOCKED,
}
_EPSILON = 1e-9
_PRICE_DIGITS = 8
_MAX_CHAIN = 100  # replaces followed before giving up (a loop would be Alpaca's bug)
_HISTORY_LIMIT = 500  # Alpaca's largest page
_MESSAGE_CHARS = 120
_ORDER_KEY = "order:"  # journal entries: order:<first id of the chain>

T = TypeVar("T")


class AlpacaRefused(BrokerError):
    """Alpaca answered 4xx: it did not take the request (the outcome is known).
    `raw`: its HTTP status, message and code."""

    def __init__(self, message: str, raw: dict[str, object]) -> None:
        super().__init__(message)
        self.raw = raw


class _TimeoutSession(requests.Session):
    """requests has no default timeout and alpaca-py sets none: every request
    gets ours."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class _Chain:
    root: Order  # the order the submit made: its id is our broker_order_id
    head: Order  # the newest order of its replaces (the root if never replaced)

    @property
    def replaced(self) -> bool:
        return self.head.id != self.root.id


class AlpacaAdapter:
    """The broker port over Alpaca's trading and market-data REST APIs."""

    def __init__(
        self,
        *,
        key_id: str,
        secret_key: str,
        base_url: str,
        data_url: str,
        clock: Clock,
        timeout_s: float = _DEFAULT_TIMEOUT_S,
        name: str = "alpaca",
        role: str = "paper",
        journal: BrokerJournal | None = None,
        stream_url: str | None = None,
    ) -> None:
        _refuse_live(base_url, role)
        if stream_url is not None:
            _refuse_live(stream_url, role, "stream_url")
        self.name = name
        self.role = role
        self.capabilities = ALPACA_CAPABILITIES
        self.base_url = base_url
        self.data_url = data_url
        self.timeout_s = timeout_s
        self._clock = clock
        self._trading = TradingClient(key_id, secret_key, url_override=base_url)
        self._data = StockHistoricalDataClient(key_id, secret_key, url_override=data_url)
        for client in (self._trading, self._data):
            _configure(client, timeout_s)
        self._lock = threading.Lock()
        self._fills: dict[str, list[Fill]] = {}  # by root id: the steps seen
        # the journal: per root id, how many steps are saved; one save at a time,
        # so an entry is never overwritten by an older one
        self._journal = journal
        self._saved: dict[str, int] = {}
        self._save_lock = threading.Lock()
        if journal is not None:
            self._restore(journal)
        # by root id: the newest order and its updated_at when last reported, and the ack
        self._last: dict[str, tuple[str, datetime, BrokerAck]] = {}
        # the trade-updates stream (none without stream_url): started by subscribe
        self.stream_url = stream_url
        self._stream = (
            None
            if stream_url is None
            else TradingStream(key_id, secret_key, raw_data=True, url_override=stream_url)
        )
        self._listeners: list[Listener] = []
        # one "what changed since the last report" at a time (stream and poll), and
        # the stream's delivery under it: a change is reported by one of them only
        self._report_lock = threading.RLock()
        self._stream_run: (
            tuple[asyncio.AbstractEventLoop, asyncio.Task[None], threading.Thread] | None
        ) = None
        self._closed = False

    def __repr__(self) -> str:  # never the keys
        return f"AlpacaAdapter(name={self.name!r}, role={self.role!r}, base_url={self.base_url!r})"

    # --- orders ----------------------------------------------------------------

    def submit(self, order: BrokerOrder) -> BrokerAck:
        request = _order_request(order)
        if isinstance(request, str):
            return BrokerAck(order.order_id, "", S.BLOCKED, detail=request)
        try:
            placed = self._call(
                f"submit of {order.order_id!r}", self._trading.submit_order, request
            )
        except AlpacaRefused as refused:
            detail = f"{self.name} refused the order (want: HTTP 2xx, got: {refused})"
            return BrokerAck(order.order_id, "", S.BLOCKED, detail=detail, raw=refused.raw)
        return self._ack(_Chain(_order(placed), _order(placed)))

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        chain = self._chain(order_id, broker_order_id)
        head_id = str(chain.head.id)
        self._call(f"cancel of {order_id!r}", self._trading.cancel_order_by_id, head_id)
        head = _order(self._call(f"status of {order_id!r}", self._trading.get_order_by_id, head_id))
        return self._ack(self._follow(_Chain(chain.root, head)))

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        chain = self._chain(order.order_id, broker_order_id)
        request = _replace_request(chain.head, order)
        what = f"replace of {order.order_id!r}"
        head = self._call(what, self._trading.replace_order_by_id, str(chain.head.id), request)
        return self._ack(_Chain(chain.root, _order(head)))

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        return self._ack(self._chain(order_id, broker_order_id))

    def find(self, order_id: str) -> BrokerAck | None:
        what = f"lookup of {order_id!r}"
        try:
            found = self._call(what, self._trading.get_order_by_client_id, order_id)
        except AlpacaRefused as refused:
            if refused.raw.get("http_status") == 404:
                return None
            raise
        return self._ack(self._follow(self._back(_order(found))))

    def order_history(self) -> list[BrokerAck]:
        return [self._ack(chain) for chain in self._chains(None)]

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        """Poll Alpaca for this symbol's orders (the quote itself goes nowhere:
        Alpaca has its own market); the acks of those that changed."""
        return self._changed(self._chains(symbol))

    def poll(self) -> list[BrokerAck]:
        """Poll Alpaca for every order; the acks of those that changed since this
        adapter last reported them."""
        return self._changed(self._chains(None))

    # --- the trade-updates stream ------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(ack)` (on the stream's thread) for every change the
        trade-updates stream reports of an order this adapter has reported: a
        resting order filling, a cancel, a fill after a cancel. The service hands
        these to `Gateway.report`. Starts the stream on the first call; without
        `stream_url` it does nothing (the sweep's `poll` brings the updates)."""
        stream = self._stream
        if stream is None:
            return
        with self._lock:
            if self._closed:
                return
            self._listeners.append(listener)
            if self._stream_run is not None:
                return
            stream.subscribe_trade_updates(self._on_update)
            loop = asyncio.new_event_loop()
            task = loop.create_task(self._stream_forever(stream))
            thread = threading.Thread(
                target=_run_until_cancelled,
                args=(loop, task),
                name=f"{self.name}-trade-updates",
                daemon=True,
            )
            self._stream_run = (loop, task, thread)
        thread.start()

    def close(self) -> None:
        """Stop the trade-updates stream and its thread (idempotent)."""
        with self._lock:
            self._closed = True
            running, self._stream_run = self._stream_run, None
        if running is None:
            return
        loop, task, thread = running
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            loop.call_soon_threadsafe(task.cancel)
        thread.join(_STREAM_STOP_S)
        if thread.is_alive():
            log.warning("%s: the trade-updates stream did not stop in time", self.name)
        else:
            loop.close()

    async def _stream_forever(self, stream: TradingStream) -> None:
        """alpaca-py's own loop (connect, authenticate, listen, reconnect with
        backoff) until cancelled by `close`; then the socket is closed."""
        try:
            await stream._run_forever()  # type: ignore[no-untyped-call]
        finally:
            try:
                await stream.close()
            except Exception as exc:
                log.debug("%s: closing the trade-updates stream: %s", self.name, exc)

    async def _on_update(self, message: object) -> None:
        """One trade update (raw: `{"stream": "trade_updates", "data": {...}}`)."""
        try:
            chain = self._update(message)
        except Exception as exc:
            # fail closed: nothing is booked from an update that cannot be read; the
            # sweep's poll and reconciliation look at the order again
            log.warning("%s: a trade update was not used (%s)", self.name, exc)
            return
        with self._lock:
            listeners = list(self._listeners)
        with self._report_lock:  # delivered before a poll can see the next change
            try:
                acks = self._changed([chain])
            except Exception as exc:
                log.warning("%s: a trade update was not used (%s)", self.name, exc)
                return
            for ack in acks:
                for listener in listeners:
                    try:
                        listener(ack)
                    except Exception:
                        log.exception("%s: a listener failed on %s", self.name, ack.order_id)

    def _update(self, message: object) -> _Chain:
        """The chain of the order a trade update carries (asks Alpaca for the rest
        of a replace chain)."""
        data = message.get("data") if isinstance(message, dict) else None
        found = data.get("order") if isinstance(data, dict) else None
        if not isinstance(found, dict):
            raise self._unparseable("trade update", "an update carrying its order")
        try:
            order = Order(**found)
        except ValidationError as exc:
            raise self._unparseable(
                "trade update", f"a valid order ({exc.error_count()} errors)"
            ) from exc
        return self._follow(self._back(order))

    # --- account -------------------------------------------------------------------

    def positions(self, account: str) -> dict[str, float]:
        """The positions of the account the keys reach (Alpaca has one per key)."""
        return {s: p.quantity for s, p in self.held_positions(account).items()}

    def held_positions(self, account: str) -> dict[str, BrokerPosition]:
        """The positions, each with Alpaca's `current_price` (per share), or its
        `avg_entry_price` (a cost basis) only when `current_price` is absent. A
        price that is not a finite number > 0 is no price: the quantity stands."""
        held = self._call("positions", self._trading.get_all_positions)
        out: dict[str, BrokerPosition] = {}
        for position in held if isinstance(held, list) else []:
            if not isinstance(position, Position):
                raise self._unparseable("positions", f"a position, got {type(position).__name__}")
            quantity = _float(position.qty, "qty")
            if str(position.side) in ("short", "PositionSide.SHORT") and quantity > 0:
                quantity = -quantity
            if abs(quantity) > _EPSILON:
                price = position.current_price
                if price is None:
                    price = position.avg_entry_price
                out[position.symbol] = BrokerPosition(quantity, _price(price))
        return dict(sorted(out.items()))

    def account(self, account: str) -> dict[str, object]:
        found = self._call("account", self._trading.get_account)
        if not isinstance(found, TradeAccount):
            raise self._unparseable("account", "an account")
        return {
            "account": account,
            "broker": self.name,
            "id": str(found.id),
            "account_number": found.account_number,
            "status": _text(found.status),
            "currency": found.currency,
            "buying_power": found.buying_power,
        }

    def check_credentials(self) -> bool:
        try:
            self._call("credential check", self._trading.get_account)
        except AlpacaRefused as refused:
            if refused.raw.get("http_status") == 401:
                return False
            raise
        return True

    def quote(self, symbol: str) -> Quote | None:
        request = StockLatestQuoteRequest(symbol_or_symbols=symbol)
        quotes = self._call(f"quote of {symbol}", self._data.get_stock_latest_quote, request)
        found = quotes.get(symbol) if isinstance(quotes, dict) else None
        if found is None:
            return None
        if not isinstance(found, AlpacaQuote):
            raise self._unparseable(f"quote of {symbol}", "a quote")
        try:
            return Quote(
                bid=_positive(found.bid_price),
                ask=_positive(found.ask_price),
                timestamp=found.timestamp,
            )
        except ValidationError as exc:
            raise self._unparseable(
                f"quote of {symbol}", f"a valid quote ({exc.error_count()} errors)"
            ) from exc

    # --- chains and acks -------------------------------------------------------------

    def _chain(self, order_id: str, broker_order_id: str) -> _Chain:
        what = f"status of {order_id!r}"
        try:
            first = _order(self._call(what, self._trading.get_order_by_id, broker_order_id))
        except AlpacaRefused as refused:
            if refused.raw.get("http_status") == 404:
                raise BrokerError(
                    f"{self.name}: order {order_id!r} ({broker_order_id}) is not known",
                    code="order_not_found",
                ) from refused
            raise
        chain = self._follow(self._back(first))
        if chain.root.client_order_id != order_id:
            raise BrokerError(
                f"{self.name}: order {broker_order_id} was not sent as {order_id!r} "
                f"(want: {order_id!r}, got: {chain.root.client_order_id!r})",
                code="order_not_found",
            )
        return chain

    def _back(self, order: Order) -> _Chain:
        """The chain from its first order to `order`."""
        root = order
        for _ in range(_MAX_CHAIN):
            if root.replaces is None:
                return _Chain(root, order)
            root = _order(
                self._call("replace chain", self._trading.get_order_by_id, str(root.replaces))
            )
        raise self._unparseable("replace chain", f"at most {_MAX_CHAIN} replaces")

    def _follow(self, chain: _Chain, known: Mapping[str, Order] | None = None) -> _Chain:
        """The same chain up to its newest order."""
        head = chain.head
        for _ in range(_MAX_CHAIN):
            if head.replaced_by is None:
                return _Chain(chain.root, head)
            newer = str(head.replaced_by)
            if known is not None and newer in known:
                head = known[newer]
            else:
                head = _order(self._call("replace chain", self._trading.get_order_by_id, newer))
        raise self._unparseable("replace chain", f"at most {_MAX_CHAIN} replaces")

    def _chains(self, symbol: str | None) -> list[_Chain]:
        request = GetOrdersRequest(
            status=QueryOrderStatus.ALL,
            limit=_HISTORY_LIMIT,
            direction=Sort.ASC,
            nested=False,
            symbols=None if symbol is None else [symbol],
        )
        listed = self._call("order history", self._trading.get_orders, request)
        orders = [_order(o) for o in (listed if isinstance(listed, list) else [])]
        by_id = {str(o.id): o for o in orders}
        roots = [o for o in orders if o.replaces is None or str(o.replaces) not in by_id]
        roots.sort(key=lambda o: o.created_at)
        return [self._follow(self._back(root), by_id) for root in roots]

    def _changed(self, chains: list[_Chain]) -> list[BrokerAck]:
        out = []
        for chain in chains:
            root = str(chain.root.id)
            with self._report_lock:
                with self._lock:
                    last = self._last.get(root)
                if last is None:
                    continue  # never reported by this adapter: recovery asks for it by id
                before = last[2]
                ack = self._ack(chain)
                if (ack.status, ack.filled_quantity) != (before.status, before.filled_quantity):
                    out.append(ack)
        return out

    def _ack(self, chain: _Chain) -> BrokerAck:
        head, root_id = chain.head, str(chain.root.id)
        with self._lock:
            last = self._last.get(root_id)
        if last is not None and last[0] == str(head.id) and head.updated_at < last[1]:
            return last[2]  # an older report than one already seen (replayed): no news
        raw_status = _text(head.status)
        status = _STATUSES.get(raw_status)
        if status is None:
            raise self._unparseable(f"order {root_id}", f"a known status, got {raw_status!r}")
        if chain.replaced and status == S.ACCEPTED:
            status = S.REPLACED
        cumulative = _float(head.filled_qty or 0, "filled_qty")
        average = None
        if cumulative > _EPSILON:
            average = _float(head.filled_avg_price, "filled_avg_price")
        at = head.filled_at or head.updated_at
        fills = self._fills_of(root_id, cumulative, average, at)
        self._persist(root_id, chain.root.client_order_id, fills)
        detail = ""
        if status == S.BLOCKED:
            detail = (
                f"{self.name} rejected the order (want: an accepted order, got: status rejected)"
            )
        ack = BrokerAck(
            order_id=chain.root.client_order_id,
            broker_order_id=root_id,
            status=status,
            filled_quantity=sum((f.quantity for f in fills), 0.0) if fills else 0.0,
            average_price=None if average is None else round(average, _PRICE_DIGITS),
            fills=fills,
            detail=detail,
            raw={"alpaca_order_id": str(head.id), "alpaca_status": raw_status},
        )
        with self._lock:
            self._last[root_id] = (str(head.id), head.updated_at, ack)
        return ack

    def _fills_of(
        self, root_id: str, cumulative: float, average: float | None, at: datetime
    ) -> tuple[Fill, ...]:
        """Every fill of the chain so far; a rise of the cumulative quantity adds one."""
        with self._lock:
            steps = self._fills.setdefault(root_id, [])
            booked = sum((f.quantity for f in steps), 0.0)
            if average is not None and cumulative > booked + _EPSILON:
                notional = sum((f.quantity * f.price for f in steps), 0.0)
                quantity = cumulative - booked
                price = (cumulative * average - notional) / quantity
                if not (math.isfinite(price) and price > 0):
                    price = average  # Alpaca's average moved oddly: take it as the price
                steps.append(
                    Fill(
                        quantity=round(quantity, 9),
                        price=round(price, _PRICE_DIGITS),
                        at=at,
                        execution_id=f"{root_id}:{_qty_text(cumulative)}",
                    )
                )
            return tuple(steps)

    # --- memory -------------------------------------------------------------------

    def _persist(self, root_id: str, client_order_id: str, fills: tuple[Fill, ...]) -> None:
        """Save the order's steps unless they are saved already (or a later list is)."""
        journal = self._journal
        if journal is None or not fills:
            return
        with self._save_lock:
            if self._saved.get(root_id, 0) >= len(fills):
                return
            entry: JsonDict = {
                "client_order_id": client_order_id,
                "fills": [fill_to_json(f) for f in fills],
            }
            try:
                journal.save(_ORDER_KEY + root_id, entry)
            except Exception as exc:
                raise BrokerError(
                    f"{self.name}: could not save its memory ({type(exc).__name__}: {exc})",
                    code="journal_unavailable",
                ) from exc
            self._saved[root_id] = len(fills)

    def _restore(self, journal: BrokerJournal) -> None:
        """The steps reported before a restart."""
        entries = load_journal(self.name, journal)
        for key, value in entries.items():
            try:
                if not key.startswith(_ORDER_KEY):
                    raise ValueError(f"key (want: {_ORDER_KEY}..., got: {key!r})")
                text(value, "client_order_id")
                listed = value.get("fills")
                if not isinstance(listed, list) or not all(isinstance(f, dict) for f in listed):
                    raise ValueError(f"fills (want: a list of fills, got: {type(listed).__name__})")
                steps = [fill_from_json(f) for f in listed]
            except (ValueError, KeyError, TypeError) as exc:
                raise BrokerError(
                    f"{self.name}: journal entry {key!r} is unreadable ({exc})",
                    code="journal_unreadable",
                ) from exc
            root_id = key.removeprefix(_ORDER_KEY)
            self._fills[root_id] = steps
            self._saved[root_id] = len(steps)

    # --- calls --------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: object) -> T:
        """One alpaca-py call; every failure becomes BrokerError with Alpaca's words."""
        try:
            return fn(*args)
        except APIError as exc:
            status = exc.status_code
            message, code = _words(exc)
            text = f"HTTP {status} {message!r}" + ("" if code is None else f" (code {code})")
            raw: dict[str, object] = {"http_status": status, "message": message, "code": code}
            if isinstance(status, int) and 400 <= status < 500 and status != 408:
                raise AlpacaRefused(f"{self.name} {what}: {text}", raw) from exc
            raise BrokerError(f"{self.name} {what}: {text}") from exc
        except requests.Timeout as exc:
            raise BrokerError(
                f"{self.name} {what}: no answer within {self.timeout_s:g}s (timeout)",
                code="timeout",
            ) from exc
        except requests.ConnectionError as exc:
            raise BrokerError(
                f"{self.name} {what}: connection lost ({type(exc).__name__})",
                code="broker_unreachable",
            ) from exc
        except (requests.RequestException, ValueError, TypeError, KeyError) as exc:
            # requests' JSONDecodeError, pydantic's ValidationError (a ValueError)
            raise self._unparseable(what, f"a readable answer, got: {_got(exc)}") from exc

    def _unparseable(self, what: str, want: str) -> BrokerError:
        return BrokerError(
            f"{self.name} {what}: unparseable reply (want: {want})", code="unparseable_reply"
        )


# --- requests ---------------------------------------------------------------------------


def _order_request(order: BrokerOrder) -> OrderRequest | str:
    """alpaca-py's request for this order, or why it cannot be made (want and got)."""
    common: dict[str, Any] = {
        "symbol": order.symbol,
        "qty": order.quantity,
        "side": OrderSide.BUY if order.side == "buy" else OrderSide.SELL,
        "time_in_force": TimeInForce(order.time_in_force),
        "client_order_id": order.order_id,
    }
    try:
        if order.order_type == "market":
            return MarketOrderRequest(**common)
        if order.order_type == "limit":
            return LimitOrderRequest(**common, limit_price=order.limit_price)
        if order.order_type == "stop":
            return StopOrderRequest(**common, stop_price=order.stop_price)
    except (ValidationError, ValueError) as exc:
        return f"order cannot be sent to Alpaca (want: a valid order, got: {_first_line(exc)})"
    return f"order type not supported (want: market, limit or stop, got: {order.order_type!r})"


def _replace_request(head: Order, order: BrokerOrder) -> ReplaceOrderRequest:
    """Alpaca's replace changes quantity, prices and time in force only, and takes
    whole shares."""
    for name, have in (("symbol", head.symbol), ("side", _text(head.side))):
        got = getattr(order, name)
        if have != got:
            raise BrokerError(
                f"alpaca: {name} cannot change on a replace (want: {have!r}, got: {got!r})"
            )
    if _text(head.type) != order.order_type:
        raise BrokerError(
            f"alpaca: order type cannot change on a replace "
            f"(want: {_text(head.type)!r}, got: {order.order_type!r})"
        )
    if not float(order.quantity).is_integer():
        raise BrokerError(
            "alpaca: a replace takes whole shares "
            f"(want: an integer quantity, got: {order.quantity})"
        )
    try:
        return ReplaceOrderRequest(
            qty=int(order.quantity),
            time_in_force=TimeInForce(order.time_in_force),
            limit_price=order.limit_price,
            stop_price=order.stop_price,
        )
    except (ValidationError, ValueError) as exc:
        raise BrokerError(f"alpaca: replace cannot be sent ({_first_line(exc)})") from exc


# --- configuration --------------------------------------------------------------------------


def from_config(
    section: Mapping[str, object],
    env: Mapping[str, str],
    *,
    role: str,
    clock: Clock,
    journal: Callable[[str], BrokerJournal] | None = None,
) -> AlpacaAdapter:
    """An adapter from a brokers.yaml section (SPEC section 11): `base_url` (default:
    Alpaca's paper endpoint for paper, its live endpoint for live), `data_url`,
    `key_id_env` and `secret_key_env` (the NAMES of the environment variables that
    hold the keys), optional `timeout_s`, optional `stream_url` (the trade-updates
    websocket, e.g. wss://paper-api.alpaca.markets/stream; without it: polling
    only). Alpaca's live endpoint serves only the live role. `journal` gives the
    store's journal of a name: the adapter's is its broker name (`alpaca-<role>`).
    Does not connect."""
    for key in section:
        if key not in _KEYS:
            raise BrokerConfigError(
                f"{role}.{key}", f"unknown key for adapter alpaca (want: one of {sorted(_KEYS)})"
            )
    if role not in ("paper", "live"):
        raise BrokerConfigError(role, f"want: paper or live, got: {role!r}")
    base_url = _url(section, "base_url", role, LIVE_URL if role == "live" else PAPER_URL)
    data_url = _url(section, "data_url", role, DATA_URL)
    _refuse_live(base_url, role)
    stream_url = None
    if "stream_url" in section:
        stream_url = _ws_url(section.get("stream_url"), role)
        _refuse_live(stream_url, role, "stream_url")
    key_id = _secret(section, env, "key_id_env", role)
    secret_key = _secret(section, env, "secret_key_env", role)
    timeout = section.get("timeout_s", _DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise BrokerConfigError(f"{role}.timeout_s", f"want: seconds in (0, 300], got: {timeout!r}")
    return AlpacaAdapter(
        key_id=key_id,
        secret_key=secret_key,
        base_url=base_url,
        data_url=data_url,
        clock=clock,
        timeout_s=float(timeout),
        name=f"alpaca-{role}",
        role=role,
        journal=None if journal is None else journal(f"alpaca-{role}"),
        stream_url=stream_url,
    )


def _run_until_cancelled(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    """The stream's thread: its loop runs the stream's task until `close` cancels it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass  # closed
    except Exception:
        log.exception("the trade-updates stream ended")


def _refuse_live(base_url: str, role: str, key: str = "base_url") -> None:
    """Fail closed: Alpaca's live endpoint (real money) serves only the live role,
    which the gate's live unlock guards."""
    if role != "live" and urlsplit(base_url).hostname == _LIVE_HOST:
        raise BrokerConfigError(
            f"{role}.{key}",
            f"Alpaca's live endpoint serves only the live role (want: a paper endpoint "
            f"such as {PAPER_URL}, got: {base_url})",
        )


def _url(section: Mapping[str, object], key: str, role: str, default: str) -> str:
    value = section.get(key, default)
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise BrokerConfigError(f"{role}.{key}", f"want: an http(s) URL, got: {value!r}")
    return str(value).rstrip("/")


def _ws_url(value: object, role: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise BrokerConfigError(f"{role}.stream_url", f"want: a ws(s) URL, got: {value!r}")
    return str(value)


def _secret(section: Mapping[str, object], env: Mapping[str, str], key: str, role: str) -> str:
    name = section.get(key)
    if not isinstance(name, str) or not name:
        raise BrokerConfigError(
            f"{role}.{key}", f"want: the name of an environment variable, got: {name!r}"
        )
    value = env.get(name)
    if not value:
        # the variable's name only, never a value
        raise BrokerConfigError(f"{role}.{key}", f"environment variable {name} is not set")
    return value


# --- small helpers ------------------------------------------------------------------------


def _configure(client: RESTClient, timeout_s: float) -> None:
    """A timeout on every request, and no retry inside alpaca-py (it would sleep
    3 s per 429 or 504, and retry a submit whose outcome is unknown)."""
    client._session = _TimeoutSession(timeout_s)
    client._retry = 0


def _order(value: object) -> Order:
    if not isinstance(value, Order):
        raise BrokerError(
            f"alpaca: unparseable reply (want: an order, got: {type(value).__name__})",
            code="unparseable_reply",
        )
    return value


def _words(exc: APIError) -> tuple[str, object]:
    """Alpaca's message and code; its body may not be JSON (`.message` would raise)."""
    body = str(exc)
    try:
        data = json.loads(body)
    except ValueError:
        return _clip(body), None
    if isinstance(data, dict):
        return _clip(str(data.get("message", body))), data.get("code")
    return _clip(body), None


def _got(exc: BaseException) -> str:
    """What made an answer unreadable: the start of a body that is not JSON, or the
    first field alpaca-py's model missed."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {_clip(exc.doc)[:60]!r}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')} ({exc.error_count()} errors)"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _clip(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."


def _text(value: object) -> str:
    """An alpaca-py enum's value (they are str enums), or the text itself."""
    return str(getattr(value, "value", value))


def _price(value: object) -> float | None:
    """A price Alpaca sent as text: finite and > 0, else None."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _float(value: object, name: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise BrokerError(
            f"alpaca: unparseable reply (want: a number for {name}, got: {value!r})",
            code="unparseable_reply",
        ) from exc
    if not math.isfinite(number):
        raise BrokerError(
            f"alpaca: unparseable reply (want: a finite {name}, got: {value!r})",
            code="unparseable_reply",
        )
    return number


def _positive(value: float) -> float | None:
    return value if value > 0 else None


def _qty_text(quantity: float) -> str:
    return f"{quantity:.9f}".rstrip("0").rstrip(".")


def _first_line(exc: BaseException) -> str:
    return _clip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
