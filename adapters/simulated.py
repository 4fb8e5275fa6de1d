"""The in-process simulated broker: the reference implementation of the broker port.

Fill model. Fills are deterministic: every order fills completely, in one fill,
at one price taken from the last quote of its symbol, so the same calls under
the same clock give the same acks, broker ids (`SIM-000001`) and execution ids
(`SIM-EXEC-000001`). Buys take the ask and sells the bid (the last price when
that side is missing), moved against the order by `slippage_bps`; a marketable
limit fills at the touch, not at its limit; a stop triggers when the ask (buy)
or bid (sell) or the last price reaches it, then fills like a market order.
Quotes arrive with the order (`BrokerOrder.quote`) or through `on_quote`; only
`on_quote` sweeps resting orders, because it is the one call whose answer
reports the orders it changed.

Refusals. An order the simulator cannot take (invalid, a client order id it has
seen, a market order without a quote, a reduce-only order that would grow or
flip the position) is answered `blocked` with the reason in `detail`, as want
and got (SPEC section 7: a broker's refusal is a blocked order). A refused
cancel or replace raises `BrokerError` and leaves the order working.

Memory. With a `BrokerJournal` every change is saved before the call answers,
and a new simulator on the same journal rebuilds its orders, fills, client
order ids, positions, last quotes and counters: a restart loses nothing. An
entry is `order:<broker id>` (the order with the quote it brought, status,
client ids, fills) or `quote:<symbol>` (a quote from `on_quote`); the last
quote of a symbol is the one set by the latest change (`quote_seq`). A submit
costs one save. Saves run outside the simulator's lock, so that concurrent
callers' saves can share the store's commits; a save older than one already
made of the same entry is skipped, so the journal never goes back in time. A
save that fails makes the call raise `BrokerError` (`journal_unavailable`):
the change stands in memory and is saved again with the next call.

Faults (off by default). `inject` makes the next call misbehave the way real
brokers sometimes do (see `Fault`); `late_fill` reports a fill on an order the
simulator has cancelled. Both serve the gateway's anomaly and recovery tests.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

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
from engine.errors import InvalidArgument
from engine.lifecycle import OrderStatus
from engine.models import Quote

from .base import (
    JsonDict,
    fill_from_json,
    fill_to_json,
    integer,
    load_journal,
    mapping,
    order_from_json,
    order_to_json,
    quote_from_json,
    quote_to_json,
    sequence,
    text,
)

__all__ = [
    "SIMULATED_CAPABILITIES",
    "AnswerLost",
    "DuplicateExecution",
    "Fault",
    "NotReached",
    "Overfill",
    "SimulatedBroker",
]

SIMULATED_CAPABILITIES = Capabilities(
    order_types=frozenset({"market", "limit", "stop"}),
    time_in_force=frozenset({"day", "gtc", "ioc", "fok"}),
    reduce_only=True,
    cancel=True,
    replace=True,
    history=True,
    positions=True,
    market_data=True,
    # its quotes are fed by an admin or come with the orders: no reference
    reference_quotes=False,
    # it may stand in for a paper account (brokers.yaml `adapter: simulated`), never
    # for live; its "credentials" always validate
    paper=True,
    credentials=True,
)

S = OrderStatus
_WORKING = frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.REPLACED})
_IMMEDIATE = frozenset({"ioc", "fok"})
# Float noise below this is not a position, and prices are rounded to it so
# that `100 * (1 + 5 / 1e4)` compares equal to `100.05`.
_EPSILON = 1e-9
_PRICE_DIGITS = 8
# Saves of different entries run side by side; saves of one entry in turn.
_SAVE_STRIPES = 32
_ORDER_KEY = "order:"
_QUOTE_KEY = "quote:"


# --- faults ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Overfill:
    """The next fill is `extra` more than the order has left, so its fills add up
    to more than its quantity (positions follow, as at a real broker)."""

    extra: float


@dataclass(frozen=True)
class DuplicateExecution:
    """The next ack that carries fills lists its last fill twice (one execution id
    reported twice); the simulator's own books count it once."""


@dataclass(frozen=True)
class AnswerLost:
    """The next submit, cancel or replace takes effect (and is saved), then raises
    `BrokerError` as if the answer never came: the ambiguous outcome. `find` and
    `order_status` tell what happened."""

    code: str = "timeout"


@dataclass(frozen=True)
class NotReached:
    """The next submit, cancel or replace raises `BrokerError` and changes nothing:
    the call never reached the broker (`find` answers None for a submit)."""

    code: str = "broker_unreachable"


Fault = Overfill | DuplicateExecution | AnswerLost | NotReached
_F = TypeVar("_F", Overfill, DuplicateExecution, AnswerLost, NotReached)


# --- one order ---------------------------------------------------------------------------


@dataclass
class _SimOrder:
    """The simulator's mutable record of one order; acks are snapshots of it."""

    broker_order_id: str
    order: BrokerOrder
    status: OrderStatus
    client_ids: set[str] = field(default_factory=set)
    fills: list[Fill] = field(default_factory=list)
    detail: str = ""
    # the quote this order's submit or replace made the last of its symbol, and the
    # change that did (kept apart from `order`: a replace without a quote keeps it)
    quote: Quote | None = None
    quote_seq: int | None = None

    @property
    def filled_quantity(self) -> float:
        return sum((f.quantity for f in self.fills), 0.0)

    @property
    def is_open(self) -> bool:
        return self.status in _WORKING

    def ack(self) -> BrokerAck:
        filled = self.filled_quantity
        average = None
        if filled > 0:
            notional = sum(f.quantity * f.price for f in self.fills)
            average = round(notional / filled, _PRICE_DIGITS)
        return BrokerAck(
            order_id=self.order.order_id,
            broker_order_id=self.broker_order_id,
            status=self.status,
            filled_quantity=filled,
            average_price=average,
            fills=tuple(self.fills),
            detail=self.detail,
        )

    def to_json(self) -> JsonDict:
        return {
            "broker_order_id": self.broker_order_id,
            # an order's quote is saved once, in `quote`, when taken (a refused order's
            # quote was never taken and is not kept)
            "order": order_to_json(replace(self.order, quote=None)),
            "quote": None if self.quote is None else quote_to_json(self.quote),
            "quote_seq": self.quote_seq,
            "status": str(self.status),
            "detail": self.detail,
            "client_ids": sorted(self.client_ids),
            "fills": [fill_to_json(f) for f in self.fills],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> _SimOrder:
        quote = data.get("quote")
        quote_seq = data.get("quote_seq")
        return cls(
            broker_order_id=text(data, "broker_order_id"),
            order=order_from_json(mapping(data, "order")),
            status=OrderStatus(text(data, "status")),
            client_ids={_as_text(c, "client_ids") for c in sequence(data, "client_ids")},
            fills=[fill_from_json(_as_mapping(f, "fills")) for f in sequence(data, "fills")],
            detail=text(data, "detail"),
            quote=None if quote is None else quote_from_json(mapping(data, "quote")),
            quote_seq=None if quote_seq is None else integer(data, "quote_seq"),
        )


class SimulatedBroker:
    """A deterministic broker in memory: quotes, resting orders, positions; one lock."""

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 0,
        slippage_bps: float = 0.0,
        name: str = "simulated",
        journal: BrokerJournal | None = None,
    ) -> None:
        if not math.isfinite(slippage_bps) or slippage_bps < 0:
            raise InvalidArgument(f"slippage_bps must be finite and >= 0 (got: {slippage_bps})")
        self.name = name
        self.capabilities = SIMULATED_CAPABILITIES
        # The fill model draws no random numbers today; the seed is kept so a
        # stochastic model (partial fills, latency) stays reproducible.
        self.seed = seed
        self.slippage_bps = slippage_bps
        self._clock = clock
        self._lock = threading.Lock()
        self._orders: dict[str, _SimOrder] = {}
        self._open: dict[str, None] = {}  # working orders by broker id, in submission order
        self._by_client_id: dict[str, str] = {}
        self._quotes: dict[str, Quote] = {}
        self._quote_seq: dict[str, int] = {}
        self._positions: dict[tuple[str, str], float] = {}
        self._next_id = 1
        self._next_execution = 1
        self._seq = 0  # one per change; orders a symbol's quotes and each entry's saves
        self._faults: list[Fault] = []
        self._journal = journal
        self._dirty: set[str] = set()
        self._saved: dict[str, int] = {}
        self._save_locks = tuple(threading.Lock() for _ in range(_SAVE_STRIPES))
        if journal is not None:
            self._restore(journal)

    # --- the broker port -------------------------------------------------

    def submit(self, order: BrokerOrder) -> BrokerAck:
        with self._change():
            self._reach("submit", order.order_id)
            ack = self._answer(self._submit(order))
            lost = self._lose("submit", order.order_id)
        if lost is not None:
            raise lost
        return ack

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        with self._change():
            self._reach("cancel", order_id)
            record = self._open_order(order_id, broker_order_id)
            ack = self._answer(self._close(record, S.CANCELLED, ""))
            lost = self._lose("cancel", order_id)
        if lost is not None:
            raise lost
        return ack

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        with self._change():
            self._reach("replace", order.order_id)
            ack = self._answer(self._replace(broker_order_id, order))
            lost = self._lose("replace", order.order_id)
        if lost is not None:
            raise lost
        return ack

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        with self._lock:
            record = self._orders.get(broker_order_id)
            if record is None or order_id not in record.client_ids:
                raise BrokerError(
                    f"order {order_id!r} ({broker_order_id}) is not known",
                    code="order_not_found",
                )
            return self._answer(record)

    def find(self, order_id: str) -> BrokerAck | None:
        with self._lock:
            broker_order_id = self._by_client_id.get(order_id)
            if broker_order_id is None:
                return None
            return self._answer(self._orders[broker_order_id])

    def order_history(self) -> list[BrokerAck]:
        with self._lock:
            # Broker ids are sequential and dicts keep insertion order, so this
            # is submission order.
            return [record.ack() for record in self._orders.values()]

    def positions(self, account: str) -> dict[str, float]:
        with self._lock:
            return {
                symbol: quantity
                for (owner, symbol), quantity in sorted(self._positions.items())
                if owner == account
            }

    def held_positions(self, account: str) -> dict[str, BrokerPosition]:
        """The positions, each with the simulator's price of its symbol (its last
        quote's); None when it has no quote of it."""
        with self._lock:
            return {
                symbol: BrokerPosition(quantity, self._price_of(symbol))
                for (owner, symbol), quantity in sorted(self._positions.items())
                if owner == account
            }

    def account(self, account: str) -> dict[str, object]:
        return {"account": account, "status": "ACTIVE"}

    def check_credentials(self) -> bool:
        return True

    def quote(self, symbol: str) -> Quote | None:
        with self._lock:
            return self._quotes.get(symbol)

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        with self._change():
            self._quotes[symbol] = quote
            self._quote_seq[symbol] = self._seq
            self._mark(_QUOTE_KEY + symbol)
            changed: list[_SimOrder] = []
            for broker_order_id in list(self._open):
                record = self._orders[broker_order_id]
                order = record.order
                if order.symbol != symbol:
                    continue
                price = self._fill_price(order, quote)
                if price is None:
                    continue
                remaining = order.quantity - record.filled_quantity
                violation = self._reduce_only_violation(order, remaining)
                if violation is not None:
                    self._close(record, S.CANCELLED, violation)
                else:
                    self._fill(record, remaining, price)
                changed.append(record)
            acks = [self._answer(record) for record in changed]
        return acks

    # --- faults ------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Make a coming call misbehave once (see `Overfill`, `DuplicateExecution`,
        `AnswerLost`, `NotReached`); faults of one kind apply in the order given."""
        if isinstance(fault, Overfill) and not (math.isfinite(fault.extra) and fault.extra > 0):
            raise InvalidArgument(
                f"overfill extra must be positive (want: > 0, got: {fault.extra})"
            )
        with self._lock:
            self._faults.append(fault)

    def late_fill(self, order_id: str, quantity: float, price: float) -> BrokerAck:
        """Report a fill on the cancelled order sent as `order_id`, as a broker does
        when an execution overtook the cancel: the fill is booked (positions follow),
        the order stays `cancelled`, and its ack is returned."""
        for name, value in (("quantity", quantity), ("price", price)):
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(
                    f"late fill {name} must be positive (want: > 0, got: {value})"
                )
        with self._change():
            broker_order_id = self._by_client_id.get(order_id)
            record = None if broker_order_id is None else self._orders[broker_order_id]
            if record is None or record.status != S.CANCELLED:
                got = "unknown order" if record is None else str(record.status)
                raise InvalidArgument(f"late fill of {order_id!r} (want: cancelled, got: {got})")
            self._add_fill(record, quantity, price)
            ack = self._answer(record)
        return ack

    # --- what each call does; callers hold the lock --------------------------

    def _submit(self, order: BrokerOrder) -> _SimOrder:
        record = _SimOrder(self._new_broker_id(), order, S.ACCEPTED, {order.order_id})
        self._orders[record.broker_order_id] = record
        self._mark(_ORDER_KEY + record.broker_order_id)
        refusal = _invalid(order, self.capabilities)
        owner = self._by_client_id.setdefault(order.order_id, record.broker_order_id)
        if refusal is None and owner != record.broker_order_id:
            refusal = (
                f"client order id already used (want: a new client order id, "
                f"got: {order.order_id!r} of {owner})"
            )
        if refusal is not None:
            return self._close(record, S.BLOCKED, refusal)
        if order.quote is not None:
            self._set_quote(record, order.quote)
        price = self._fill_price(order, self._quotes.get(order.symbol))
        if price is None:
            if order.order_type == "market":
                return self._close(record, S.BLOCKED, _no_quote(order))
            if order.time_in_force in _IMMEDIATE:
                return self._close(record, S.CANCELLED, _not_marketable(order))
            return self._set_status(record, S.ACCEPTED)
        violation = self._reduce_only_violation(order, order.quantity)
        if violation is not None:
            return self._close(record, S.BLOCKED, violation)
        self._fill(record, order.quantity, price)
        return record

    def _replace(self, broker_order_id: str, order: BrokerOrder) -> _SimOrder:
        record = self._open_order(None, broker_order_id)
        refusal = self._replace_refusal(record, order)
        # judged against the quote the order brings, which becomes the last quote
        # only if the replace is taken: a refused call changes nothing
        quote = order.quote if order.quote is not None else self._quotes.get(order.symbol)
        remaining = order.quantity - record.filled_quantity
        price = None if refusal is not None else self._fill_price(order, quote)
        if refusal is None and price is None and order.order_type == "market":
            refusal = _no_quote(order)
        if refusal is None and price is not None:
            refusal = self._reduce_only_violation(order, remaining)
        if refusal is not None:
            raise BrokerError(
                f"replace of {broker_order_id} refused: {refusal}", code="replace_rejected"
            )
        self._mark(_ORDER_KEY + broker_order_id)
        record.order = order
        record.client_ids.add(order.order_id)
        self._by_client_id[order.order_id] = broker_order_id
        if order.quote is not None:
            self._set_quote(record, order.quote)
        if price is not None:
            self._fill(record, remaining, price)
            return record
        if order.time_in_force in _IMMEDIATE:
            return self._close(record, S.CANCELLED, _not_marketable(order))
        record.detail = ""
        return self._set_status(record, S.REPLACED)

    def _open_order(self, order_id: str | None, broker_order_id: str) -> _SimOrder:
        record = self._orders.get(broker_order_id)
        if record is None or (order_id is not None and order_id not in record.client_ids):
            raise BrokerError(
                f"order {broker_order_id} is not open (status: unknown)", code="order_not_open"
            )
        if not record.is_open:
            raise BrokerError(
                f"order {broker_order_id} is not open (status: {record.status})",
                code="order_not_open",
            )
        return record

    def _replace_refusal(self, record: _SimOrder, order: BrokerOrder) -> str | None:
        current = record.order
        for name in ("account", "symbol", "side"):
            want, got = getattr(current, name), getattr(order, name)
            if want != got:
                return f"{name} cannot change (want: {want!r}, got: {got!r})"
        filled = record.filled_quantity
        if not order.quantity > filled:
            return (
                f"quantity must exceed the filled quantity "
                f"(want: > {filled}, got: {order.quantity})"
            )
        owner = self._by_client_id.get(order.order_id)
        if owner is not None and owner != record.broker_order_id:
            return (
                f"client order id already used (want: a new client order id, "
                f"got: {order.order_id!r} of {owner})"
            )
        return _invalid(order, self.capabilities)

    def _fill_price(self, order: BrokerOrder, quote: Quote | None) -> float | None:
        """The price this order fills at against `quote`, or None if it rests."""
        if quote is None:
            return None
        touch = _touch(order, quote)
        if order.order_type == "market":
            return None if touch is None else self._slipped(order, touch)
        if order.order_type == "stop":
            if not _stop_triggered(order, quote) or touch is None:
                return None
            return self._slipped(order, touch)
        limit = order.limit_price
        if touch is None or limit is None:
            return None
        if order.side == "buy":
            return min(touch, limit) if limit >= touch else None
        return max(touch, limit) if limit <= touch else None

    def _slipped(self, order: BrokerOrder, price: float) -> float:
        factor = self.slippage_bps / 1e4
        moved = price * (1 + factor) if order.side == "buy" else price * (1 - factor)
        return round(moved, _PRICE_DIGITS)

    def _reduce_only_violation(self, order: BrokerOrder, quantity: float) -> str | None:
        """Why filling `quantity` of this reduce-only order would not reduce, or None."""
        if not order.reduce_only:
            return None
        before = self._positions.get((order.account, order.symbol), 0.0)
        after = before + _signed(order, quantity)
        low, high = min(0.0, before), max(0.0, before)
        if low - _EPSILON <= after <= high + _EPSILON:
            return None
        what = "flip" if before * after < 0 else "increase"
        want = "position 0.0" if before == 0 else f"position between {low} and {high}"
        return f"reduce-only order would {what} the position (want: {want}, got: {after})"

    def _fill(self, record: _SimOrder, quantity: float, price: float) -> None:
        overfill = self._take(Overfill)
        if overfill is not None:
            quantity += overfill.extra
        self._add_fill(record, quantity, price)
        record.detail = ""
        self._set_status(record, S.FILLED)

    def _add_fill(self, record: _SimOrder, quantity: float, price: float) -> None:
        execution_id = f"SIM-EXEC-{self._next_execution:06d}"
        self._next_execution += 1
        fill = Fill(quantity=quantity, price=price, at=self._clock(), execution_id=execution_id)
        record.fills.append(fill)
        self._mark(_ORDER_KEY + record.broker_order_id)
        self._book(record.order, quantity)

    def _book(self, order: BrokerOrder, quantity: float) -> None:
        key = (order.account, order.symbol)
        position = self._positions.get(key, 0.0) + _signed(order, quantity)
        if abs(position) <= _EPSILON:
            self._positions.pop(key, None)
        else:
            self._positions[key] = position

    def _close(self, record: _SimOrder, status: OrderStatus, detail: str) -> _SimOrder:
        record.detail = detail
        return self._set_status(record, status)

    def _set_status(self, record: _SimOrder, status: OrderStatus) -> _SimOrder:
        record.status = status
        if status in _WORKING:
            self._open.setdefault(record.broker_order_id, None)
        else:
            self._open.pop(record.broker_order_id, None)
        self._mark(_ORDER_KEY + record.broker_order_id)
        return record

    def _set_quote(self, record: _SimOrder, quote: Quote) -> None:
        """The quote an order brings becomes the last; its entry keeps it."""
        symbol = record.order.symbol
        self._quotes[symbol] = quote
        self._quote_seq[symbol] = self._seq
        record.quote = quote
        record.quote_seq = self._seq

    def _price_of(self, symbol: str) -> float | None:
        """The last quote's last price, else its mid (or its one side). Every fill
        is priced from a quote the simulator keeps (journalled with it), so a
        symbol it filled always has one."""
        quote = self._quotes.get(symbol)
        if quote is None:
            return None
        if quote.last is not None:
            return quote.last
        sides = [p for p in (quote.bid, quote.ask) if p is not None]
        return round(sum(sides) / len(sides), _PRICE_DIGITS) if sides else None

    def _new_broker_id(self) -> str:
        broker_order_id = f"SIM-{self._next_id:06d}"
        self._next_id += 1
        return broker_order_id

    def _answer(self, record: _SimOrder) -> BrokerAck:
        ack = record.ack()
        if ack.fills and self._take(DuplicateExecution) is not None:
            return replace(ack, fills=(*ack.fills, ack.fills[-1]))
        return ack

    def _take(self, kind: type[_F]) -> _F | None:
        if not self._faults:
            return None
        for i, fault in enumerate(self._faults):
            if isinstance(fault, kind):
                del self._faults[i]
                return fault
        return None

    def _reach(self, call: str, order_id: str) -> None:
        fault = self._take(NotReached)
        if fault is not None:
            raise BrokerError(
                f"{self.name}: {call} of {order_id!r} did not reach the broker (injected)",
                code=fault.code,
            )

    def _lose(self, call: str, order_id: str) -> BrokerError | None:
        fault = self._take(AnswerLost)
        if fault is None:
            return None
        return BrokerError(
            f"{self.name}: no answer to {call} of {order_id!r} (injected; the call took effect)",
            code=fault.code,
        )

    # --- memory ------------------------------------------------------------------

    @contextmanager
    def _change(self) -> Iterator[None]:
        """One call that changes state: done under the lock, saved after it."""
        with self._lock:
            self._seq += 1
            yield
            pending = self._pending()
        self._persist(pending)

    def _mark(self, key: str) -> None:
        if self._journal is not None:
            self._dirty.add(key)

    def _pending(self) -> list[tuple[str, int, JsonDict]]:
        """The entries this change (and any earlier failed save) must write."""
        if not self._dirty:
            return []
        pending = [(key, self._seq, self._entry(key)) for key in sorted(self._dirty)]
        self._dirty.clear()
        return pending

    def _entry(self, key: str) -> JsonDict:
        if key.startswith(_ORDER_KEY):
            return self._orders[key.removeprefix(_ORDER_KEY)].to_json()
        symbol = key.removeprefix(_QUOTE_KEY)
        return {
            "symbol": symbol,
            "quote": quote_to_json(self._quotes[symbol]),
            "quote_seq": self._quote_seq[symbol],
        }

    def _persist(self, pending: list[tuple[str, int, JsonDict]]) -> None:
        journal = self._journal
        if journal is None or not pending:
            return
        failure: Exception | None = None
        for key, version, value in pending:
            with self._save_locks[hash(key) % _SAVE_STRIPES]:
                if self._saved.get(key, 0) >= version:
                    continue  # a later change of this entry is saved already
                try:
                    journal.save(key, value)
                except Exception as exc:
                    failure = failure or exc
                    with self._lock:
                        self._dirty.add(key)
                    continue
                self._saved[key] = version
        if failure is not None:
            raise BrokerError(
                f"{self.name}: could not save its memory ({type(failure).__name__}: {failure})",
                code="journal_unavailable",
            ) from failure

    def _restore(self, journal: BrokerJournal) -> None:
        """Rebuild everything from the journal (a restart)."""
        entries = load_journal(self.name, journal)
        records: list[_SimOrder] = []
        quotes: dict[str, tuple[int, Quote]] = {}
        for key, value in entries.items():
            try:
                if key.startswith(_ORDER_KEY):
                    record = _SimOrder.from_json(value)
                    records.append(record)
                    if record.quote is not None and record.quote_seq is not None:
                        _latest(quotes, record.order.symbol, record.quote_seq, record.quote)
                elif key.startswith(_QUOTE_KEY):
                    quote = quote_from_json(mapping(value, "quote"))
                    _latest(quotes, text(value, "symbol"), integer(value, "quote_seq"), quote)
                else:
                    raise InvalidArgument(f"key (want: order:... or quote:..., got: {key!r})")
            except (ValueError, KeyError, TypeError) as exc:
                raise BrokerError(
                    f"{self.name}: journal entry {key!r} is unreadable ({exc})",
                    code="journal_unreadable",
                ) from exc
        records.sort(key=lambda r: _number_of(r.broker_order_id))
        executions: list[tuple[int, BrokerOrder, float]] = []
        for record in records:
            self._orders[record.broker_order_id] = record
            if record.is_open:
                self._open[record.broker_order_id] = None
            # the first order sent with a client id owns it; later ones were refused
            for client_id in sorted(record.client_ids):
                self._by_client_id.setdefault(client_id, record.broker_order_id)
            executions.extend(
                (_number_of(f.execution_id), record.order, f.quantity) for f in record.fills
            )
            self._next_id = max(self._next_id, _number_of(record.broker_order_id) + 1)
        # positions replayed in execution order add the same floats in the same order
        executions.sort(key=lambda e: e[0])
        for number, order, quantity in executions:
            self._book(order, quantity)
            self._next_execution = max(self._next_execution, number + 1)
        for symbol, (seq, quote) in quotes.items():
            self._quotes[symbol] = quote
            self._quote_seq[symbol] = seq
            self._seq = max(self._seq, seq)


def _latest(quotes: dict[str, tuple[int, Quote]], symbol: str, seq: int, quote: Quote) -> None:
    if symbol not in quotes or quotes[symbol][0] < seq:
        quotes[symbol] = (seq, quote)


def _number_of(identifier: str) -> int:
    """1 for `SIM-000001` and for `SIM-EXEC-000001`."""
    tail = identifier.rsplit("-", 1)[-1]
    if not tail.isdigit():
        raise InvalidArgument(f"id (want: SIM-<number>, got: {identifier!r})")
    return int(tail)


def _as_text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where} (want: text, got: {value!r})")
    return value


def _as_mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} (want: an object, got: {value!r})")
    return value


def _invalid(order: BrokerOrder, capabilities: Capabilities) -> str | None:
    """Why the simulator cannot take this order at all, or None."""
    if not (math.isfinite(order.quantity) and order.quantity > 0):
        return f"quantity must be positive (want: > 0, got: {order.quantity})"
    if order.order_type not in capabilities.order_types:
        return (
            f"order type not supported (want: one of {sorted(capabilities.order_types)}, "
            f"got: {order.order_type!r})"
        )
    if order.time_in_force not in capabilities.time_in_force:
        return (
            f"time in force not supported (want: one of {sorted(capabilities.time_in_force)}, "
            f"got: {order.time_in_force!r})"
        )
    if order.reduce_only and not capabilities.reduce_only:
        return "reduce-only orders not supported (want: reduce_only false, got: true)"
    if order.order_type == "limit" and order.limit_price is None:
        return "limit price missing (want: a limit price for a limit order, got: none)"
    if order.order_type == "stop" and order.stop_price is None:
        return "stop price missing (want: a stop price for a stop order, got: none)"
    return None


def _touch(order: BrokerOrder, quote: Quote) -> float | None:
    """The price on the side this order takes: ask for buys, bid for sells, else last."""
    side_price = quote.ask if order.side == "buy" else quote.bid
    return side_price if side_price is not None else quote.last


def _stop_triggered(order: BrokerOrder, quote: Quote) -> bool:
    stop = order.stop_price
    if stop is None:
        return False
    if order.side == "buy":
        prices = (quote.ask, quote.last)
        return any(p is not None and p >= stop for p in prices)
    prices = (quote.bid, quote.last)
    return any(p is not None and p <= stop for p in prices)


def _signed(order: BrokerOrder, quantity: float) -> float:
    return quantity if order.side == "buy" else -quantity


def _no_quote(order: BrokerOrder) -> str:
    return f"no quote to fill a market order (want: a quote of {order.symbol}, got: none)"


def _not_marketable(order: BrokerOrder) -> str:
    return f"not marketable at once ({order.time_in_force})"
