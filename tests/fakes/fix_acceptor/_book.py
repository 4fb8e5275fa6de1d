"""The fake desk's book: orders by OrderID, their ClOrdID chains, quotes,
executions and positions per account, and the ExecutionReport fields that
describe an order. No I/O here: the acceptor decides what to send."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from ._wire import format_number, format_utc

__all__ = ["TERMINAL", "Book", "Execution", "Order"]

# OrdStatus (39) values an order cannot leave
TERMINAL = frozenset({"2", "4", "8"})
Fields = list[tuple[int, str]]


@dataclass
class Execution:
    exec_id: str
    quantity: float
    price: float


@dataclass
class Order:
    order_id: str
    cl_ord_ids: list[str]
    symbol: str
    side: str  # 54: 1 buy, 2 sell, 5 sell short
    quantity: float
    ord_type: str  # 40: 1 market, 2 limit, 3 stop, 4 stop limit
    price: float | None
    stop_px: float | None
    tif: str  # 59
    account: str
    status: str = "0"  # 39
    triggered: bool = False  # a stop whose price the market has reached
    executions: list[Execution] = field(default_factory=list)

    @property
    def cum_qty(self) -> float:
        return sum(e.quantity for e in self.executions)

    @property
    def leaves_qty(self) -> float:
        return 0.0 if self.status in TERMINAL else max(self.quantity - self.cum_qty, 0.0)

    @property
    def avg_px(self) -> float:
        cum = self.cum_qty
        return sum(e.quantity * e.price for e in self.executions) / cum if cum else 0.0

    @property
    def buy(self) -> bool:
        return self.side == "1"

    def view(self) -> dict[str, object]:
        return {
            "order_id": self.order_id,
            "cl_ord_ids": list(self.cl_ord_ids),
            "symbol": self.symbol,
            "side": self.side,
            "quantity": self.quantity,
            "ord_type": self.ord_type,
            "price": self.price,
            "stop_px": self.stop_px,
            "tif": self.tif,
            "account": self.account,
            "status": self.status,
            "cum_qty": self.cum_qty,
            "leaves_qty": self.leaves_qty,
            "avg_px": self.avg_px,
            "executions": [(e.exec_id, e.quantity, e.price) for e in self.executions],
        }


class Book:
    def __init__(self, *, prefix: str, decimal_quantities: bool) -> None:
        self.prefix = prefix
        self.decimal = decimal_quantities
        self.orders: dict[str, Order] = {}
        self.quotes: dict[str, tuple[float, float, float]] = {}  # bid, ask, last
        self.positions: dict[tuple[str, str], float] = {}  # (account, symbol) -> net
        self._next_order = 1
        self._next_exec = 1

    # --- ids and lookup -------------------------------------------------------------

    def new_order_id(self) -> str:
        self._next_order += 1
        return f"{self.prefix}-O{self._next_order - 1}"

    def new_exec_id(self) -> str:
        self._next_exec += 1
        return f"{self.prefix}-X{self._next_exec - 1}"

    def find(self, cl_ord_id: str | None = None, order_id: str | None = None) -> Order | None:
        if order_id is not None and order_id in self.orders:
            return self.orders[order_id]
        if cl_ord_id is None:
            return None
        return next((o for o in self.orders.values() if cl_ord_id in o.cl_ord_ids), None)

    # --- the market -----------------------------------------------------------------

    def touch(self, order: Order) -> float | None:
        quote = self.quotes.get(order.symbol)
        if quote is None:
            return None
        bid, ask, _ = quote
        return ask if order.buy else bid

    def fill_price(self, order: Order) -> float | None:
        """The price `order` trades at now, or None if it cannot trade."""
        touch = self.touch(order)
        if touch is None or order.status in TERMINAL:
            return None
        if order.ord_type in ("3", "4") and not order.triggered:
            _, _, last = self.quotes[order.symbol]
            assert order.stop_px is not None
            hit = (
                max(touch, last) >= order.stop_px
                if order.buy
                else min(touch, last) <= order.stop_px
            )
            if not hit:
                return None
            order.triggered = True
        if order.ord_type in ("1", "3"):
            return touch
        assert order.price is not None
        return touch if (touch <= order.price if order.buy else touch >= order.price) else None

    def execute(self, order: Order, quantity: float, price: float) -> Execution:
        execution = Execution(self.new_exec_id(), quantity, price)
        order.executions.append(execution)
        order.status = "2" if order.quantity - order.cum_qty <= 1e-9 else "1"
        key = (order.account, order.symbol)
        signed = quantity if order.buy else -quantity
        self.positions[key] = self.positions.get(key, 0.0) + signed
        return execution

    # --- reports --------------------------------------------------------------------

    def num(self, value: float) -> str:
        return format_number(value, decimal=self.decimal)

    def report(
        self,
        order: Order,
        exec_type: str,
        *,
        cl_ord_id: str | None = None,
        orig_cl_ord_id: str | None = None,
        execution: Execution | None = None,
        text: str | None = None,
        reason: str | None = None,
        extra: Fields | None = None,
    ) -> Fields:
        """ExecutionReport (35=8) body fields for `order` as it stands now."""
        f: Fields = [
            (37, order.order_id),
            (11, cl_ord_id or order.cl_ord_ids[-1]),
        ]
        if orig_cl_ord_id is not None:
            f.append((41, orig_cl_ord_id))
        f += [
            (17, execution.exec_id if execution else self.new_exec_id()),
            (150, exec_type),
            (39, order.status),
        ]
        if order.account:
            f.append((1, order.account))
        f += [(55, order.symbol), (54, order.side), (38, self.num(order.quantity))]
        f.append((40, order.ord_type))
        if order.price is not None:
            f.append((44, self.num(order.price)))
        if order.stop_px is not None:
            f.append((99, self.num(order.stop_px)))
        f.append((59, order.tif))
        if execution is not None:
            f += [(32, self.num(execution.quantity)), (31, self.num(execution.price))]
        f += [
            (151, self.num(order.leaves_qty)),
            (14, self.num(order.cum_qty)),
            (6, self.num(order.avg_px)),
            (60, format_utc(datetime.now(UTC))),
        ]
        if reason is not None:
            f.append((103, reason))
        if text:
            f.append((58, text))
        return f + (extra or [])
