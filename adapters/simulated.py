"""The in-process simulated broker: the reference implementation of the broker port.

Fills are deterministic: every order fills completely at one price taken from
the last quote of its symbol, so the same calls under the same clock give the
same acks. Quotes arrive with the order (`BrokerOrder.quote`) or through
`on_quote`; only `on_quote` sweeps resting orders, because it is the one call
whose answer reports the orders it changed.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from engine.broker import BrokerAck, BrokerError, BrokerOrder, BrokerStatus, Capabilities, Fill
from engine.clock import Clock
from engine.models import Quote

__all__ = ["SIMULATED_CAPABILITIES", "SimulatedBroker"]

SIMULATED_CAPABILITIES = Capabilities(
    order_types=frozenset({"market", "limit", "stop"}),
    time_in_force=frozenset({"day", "gtc", "ioc", "fok"}),
    reduce_only=True,
    cancel=True,
    replace=True,
    history=True,
    positions=True,
    market_data=True,
)

_OPEN: frozenset[BrokerStatus] = frozenset({"accepted", "partially_filled", "replaced"})
_IMMEDIATE = frozenset({"ioc", "fok"})
# Float noise below this is not a position, and prices are rounded to it so
# that `100 * (1 + 5 / 1e4)` compares equal to `100.05`.
_EPSILON = 1e-9
_PRICE_DIGITS = 8


@dataclass
class _SimOrder:
    """The simulator's mutable record of one order; acks are snapshots of it."""

    broker_order_id: str
    order: BrokerOrder
    status: BrokerStatus
    client_ids: set[str] = field(default_factory=set)
    fills: list[Fill] = field(default_factory=list)
    detail: str = ""

    @property
    def filled_quantity(self) -> float:
        return sum(f.quantity for f in self.fills)

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

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


class SimulatedBroker:
    """A deterministic broker in memory: quotes, resting orders, positions; one lock."""

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 0,
        slippage_bps: float = 0.0,
        name: str = "simulated",
    ) -> None:
        if not math.isfinite(slippage_bps) or slippage_bps < 0:
            raise ValueError(f"slippage_bps must be finite and >= 0 (got: {slippage_bps})")
        self.name = name
        self.capabilities = SIMULATED_CAPABILITIES
        # The fill model draws no random numbers today; the seed is kept so a
        # stochastic model (partial fills, latency) stays reproducible.
        self.seed = seed
        self.slippage_bps = slippage_bps
        self._clock = clock
        self._lock = threading.Lock()
        self._orders: dict[str, _SimOrder] = {}
        self._by_client_id: dict[str, str] = {}
        self._quotes: dict[str, Quote] = {}
        self._positions: dict[tuple[str, str], float] = {}
        self._next_id = 1

    # --- the broker port -------------------------------------------------

    def submit(self, order: BrokerOrder) -> BrokerAck:
        with self._lock:
            record = _SimOrder(self._new_broker_id(), order, "accepted", {order.order_id})
            self._orders[record.broker_order_id] = record
            refusal = _invalid(order, self.capabilities)
            if refusal is None and order.order_id in self._by_client_id:
                refusal = f"duplicate order id {order.order_id!r}"
            self._by_client_id.setdefault(order.order_id, record.broker_order_id)
            if refusal is not None:
                return self._close(record, "rejected", refusal)
            if order.quote is not None:
                self._quotes[order.symbol] = order.quote
            price = self._fill_price(order)
            if price is None:
                if order.order_type == "market":
                    return self._close(record, "rejected", "no quote")
                if order.time_in_force in _IMMEDIATE:
                    return self._close(record, "cancelled", _not_marketable(order))
                return record.ack()
            violation = self._reduce_only_violation(order, order.quantity)
            if violation is not None:
                return self._close(record, "rejected", violation)
            self._fill(record, order.quantity, price)
            return record.ack()

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        with self._lock:
            record = self._open_order(order_id, broker_order_id)
            return self._close(record, "cancelled", "")

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        with self._lock:
            record = self._open_order(None, broker_order_id)
            refusal = self._replace_refusal(record, order)
            if refusal is not None:
                raise BrokerError(
                    f"replace of {broker_order_id} refused: {refusal}", code="replace_rejected"
                )
            if order.quote is not None:
                self._quotes[order.symbol] = order.quote
            remaining = order.quantity - record.filled_quantity
            price = self._fill_price(order)
            refusal = "no quote" if price is None and order.order_type == "market" else None
            if price is not None:
                refusal = self._reduce_only_violation(order, remaining)
            if refusal is not None:
                raise BrokerError(
                    f"replace of {broker_order_id} refused: {refusal}", code="replace_rejected"
                )
            record.order = order
            record.client_ids.add(order.order_id)
            self._by_client_id[order.order_id] = broker_order_id
            if price is not None:
                self._fill(record, remaining, price)
                return record.ack()
            if order.time_in_force in _IMMEDIATE:
                return self._close(record, "cancelled", _not_marketable(order))
            record.status = "replaced"
            record.detail = ""
            return record.ack()

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        with self._lock:
            record = self._orders.get(broker_order_id)
            if record is None or order_id not in record.client_ids:
                raise BrokerError(
                    f"order {order_id!r} ({broker_order_id}) is not known",
                    code="order_not_found",
                )
            return record.ack()

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

    def account(self, account: str) -> dict[str, object]:
        return {"account": account, "status": "ACTIVE"}

    def check_credentials(self) -> bool:
        return True

    def quote(self, symbol: str) -> Quote | None:
        with self._lock:
            return self._quotes.get(symbol)

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        with self._lock:
            self._quotes[symbol] = quote
            changed: list[BrokerAck] = []
            for record in list(self._orders.values()):
                order = record.order
                if order.symbol != symbol or not record.is_open:
                    continue
                price = self._fill_price(order)
                if price is None:
                    continue
                remaining = order.quantity - record.filled_quantity
                violation = self._reduce_only_violation(order, remaining)
                if violation is not None:
                    changed.append(self._close(record, "cancelled", violation))
                else:
                    self._fill(record, remaining, price)
                    changed.append(record.ack())
            return changed

    # --- internals; callers hold the lock --------------------------------

    def _new_broker_id(self) -> str:
        broker_order_id = f"SIM-{self._next_id:06d}"
        self._next_id += 1
        return broker_order_id

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
            return f"duplicate order id {order.order_id!r}"
        return _invalid(order, self.capabilities)

    def _fill_price(self, order: BrokerOrder) -> float | None:
        """The price this order fills at against the last quote now, or None if it rests."""
        quote = self._quotes.get(order.symbol)
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
        if not order.reduce_only:
            return None
        before = self._positions.get((order.account, order.symbol), 0.0)
        after = before + _signed(order, quantity)
        if before * after < 0 and abs(after) > _EPSILON:
            return f"reduce-only order would flip the position (position: {before}, after: {after})"
        if abs(after) > abs(before) + _EPSILON:
            return (
                f"reduce-only order would increase the position "
                f"(position: {before}, after: {after})"
            )
        return None

    def _fill(self, record: _SimOrder, quantity: float, price: float) -> None:
        order = record.order
        record.fills.append(Fill(quantity=quantity, price=price, at=self._clock()))
        record.status = "filled"
        record.detail = ""
        key = (order.account, order.symbol)
        position = self._positions.get(key, 0.0) + _signed(order, quantity)
        if abs(position) <= _EPSILON:
            self._positions.pop(key, None)
        else:
            self._positions[key] = position

    def _close(self, record: _SimOrder, status: BrokerStatus, detail: str) -> BrokerAck:
        record.status = status
        record.detail = detail
        return record.ack()


def _invalid(order: BrokerOrder, capabilities: Capabilities) -> str | None:
    """Why the simulator cannot take this order at all, or None."""
    if not (math.isfinite(order.quantity) and order.quantity > 0):
        return f"quantity must be positive (got: {order.quantity})"
    refusal = capabilities.refusal(order.order_type, order.time_in_force, order.reduce_only)
    if refusal is not None:
        return refusal
    if order.order_type == "limit" and order.limit_price is None:
        return "limit_price is required for a limit order"
    if order.order_type == "stop" and order.stop_price is None:
        return "stop_price is required for a stop order"
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


def _not_marketable(order: BrokerOrder) -> str:
    return f"not marketable at once ({order.time_in_force})"
