"""What the `oms_fix` adapter remembers of each order (internal): its ClOrdID
chain, the counterparty's OrderID, its last OrdStatus and the executions booked,
kept in the broker journal (entry `order:<gate order id>`) so a restart finds
it, and turned into the broker port's `BrokerAck`.

ClOrdID. The first is the gate's order id; every cancel or replace request gets
a new one, `<order id>.<n>` with `n` a counter kept with the order, and names the
current one in OrigClOrdID (41); the current one moves to the request's when
the counterparty confirms it (ExecType 4 or 5).

Executions (ExecType F) are booked by ExecID once. CumQty (14) guards them:
- an ExecID seen before, not marked PossDup: nothing booked, and the booked
  execution is reported twice in the next ack, which the gateway records as a
  `duplicate_execution` anomaly;
- an execution that CumQty says is already counted (booked + LastQty > CumQty):
  the same;
- a CumQty above what we booked (an execution we never saw): the difference is
  booked as one execution `<OrderID>:cum:<CumQty>`, priced so the average is the
  counterparty's AvgPx (6) (without one, at the report's LastPx), so positions
  follow the broker, and `detail` says so; with neither price it is not booked
  (never at a price nobody stated) until a later report prices it, and `detail`
  says that;
- a CumQty below what we booked: told once as a duplicate (an anomaly), and
  `detail` says so;
- fills beyond the order's quantity are booked as reported: the gateway
  records the overfill (engine/gateway/executions.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from engine.broker import BrokerAck, BrokerOrder, Fill
from engine.lifecycle import OrderStatus

from .base import JsonDict, fill_from_json, fill_to_json, order_from_json, order_to_json
from .fix_codec import FixMessage, decimal, parse_time, quantity_text
from .fix_session import text_of

__all__ = ["ORDER_KEY", "BookedOrder", "status_of"]

ORDER_KEY = "order:"
S = OrderStatus
_EPSILON = 1e-9
_PRICE_DIGITS = 8
_TRADES = frozenset({"F", "1", "2"})  # ExecType trade (4.4), and partial/fill (4.2)
# OrdStatus (39) -> the lifecycle; working ones become REPLACED after a replace
_STATUSES: dict[str, OrderStatus] = {
    "0": S.ACCEPTED,
    "1": S.PARTIALLY_FILLED,
    "2": S.FILLED,
    "3": S.ACCEPTED,  # done for day: may work again tomorrow
    "4": S.CANCELLED,
    "5": S.REPLACED,
    "6": S.PENDING_CANCEL,
    "7": S.ACCEPTED,  # stopped
    "8": S.BLOCKED,
    "9": S.ACCEPTED,  # suspended
    "A": S.ACCEPTED,  # pending new
    "B": S.ACCEPTED,  # calculated
    "C": S.EXPIRED,
    "D": S.ACCEPTED,  # accepted for bidding
    "E": S.PENDING_REPLACE,
}
_WORKING = frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.REPLACED})


def status_of(ord_status: str) -> OrderStatus | None:
    return _STATUSES.get(ord_status)


@dataclass
class BookedOrder:
    order: BrokerOrder
    number: int  # submission order, for the history
    cl_ord_id: str = ""  # the current ClOrdID
    counter: int = 0
    broker_order_id: str = ""
    ord_status: str = ""  # "" until the counterparty said anything
    replaced: bool = False
    detail: str = ""
    fills: list[Fill] = field(default_factory=list)
    pending: dict[str, JsonDict] = field(default_factory=dict)  # ClOrdID -> requested terms
    unreported: list[Fill] = field(default_factory=list)  # duplicates to tell once
    disagreed: float | None = None  # the CumQty last found below what we booked

    @classmethod
    def new(cls, order: BrokerOrder, number: int) -> BookedOrder:
        return cls(order=order, number=number, cl_ord_id=order.order_id)

    @property
    def chain(self) -> list[str]:
        return [
            self.order.order_id,
            *(f"{self.order.order_id}.{n}" for n in range(1, self.counter + 1)),
        ]

    def next_cl_ord_id(self) -> str:
        self.counter += 1
        return f"{self.order.order_id}.{self.counter}"

    @property
    def filled(self) -> float:
        return sum((f.quantity for f in self.fills), 0.0)

    @property
    def status(self) -> OrderStatus:
        status = _STATUSES.get(self.ord_status, S.SUBMITTED)
        if status == S.FILLED and self.filled + _EPSILON < self.order.quantity:
            return S.PARTIALLY_FILLED if self.filled > 0 else S.ACCEPTED
        if status in _WORKING:
            if self.replaced:
                return S.REPLACED
            if self.filled > 0:
                return S.PARTIALLY_FILLED
        return status

    @property
    def working(self) -> bool:
        return self.status in _WORKING or self.status in (
            S.SUBMITTED, S.PENDING_CANCEL, S.PENDING_REPLACE,
        )  # fmt: skip

    def ack(self, *, consume: bool = False) -> BrokerAck:
        """The port's view of the order; `consume`: the duplicates it carries are
        being told to the gateway now, and not again."""
        filled = self.filled
        average = None
        if filled > 0:
            total = sum(f.quantity * f.price for f in self.fills)
            average = round(total / filled, _PRICE_DIGITS)
        extra = tuple(self.unreported)
        if consume:
            self.unreported.clear()
        return BrokerAck(
            order_id=self.order.order_id,
            broker_order_id=self.broker_order_id,
            status=self.status,
            filled_quantity=filled,
            average_price=average,
            fills=(*self.fills, *extra),
            detail=self.detail,
        )

    # --- what an ExecutionReport changes ----------------------------------------------

    def apply(self, report: FixMessage, now: datetime, venue: str) -> bool:
        """Book one ExecutionReport (35=8); whether anything changed."""
        before = (self.ord_status, len(self.fills), self.broker_order_id, self.replaced,
                  len(self.unreported), self.detail)  # fmt: skip
        exec_type = text_of(report, 150)
        order_id = text_of(report, 37)
        if order_id and order_id.upper() != "NONE" and not self.broker_order_id:
            self.broker_order_id = order_id
        cl = text_of(report, 11)
        if exec_type == "5" and cl in self.pending:  # replaced: the new terms stand
            self.order = order_from_json(self.pending.pop(cl))
            self.cl_ord_id, self.replaced = cl, True
        elif exec_type == "4" and cl in self.chain:
            self.cl_ord_id = cl
        if exec_type in _TRADES:
            self._trade(report, now)
        if exec_type == "8":
            reason = text_of(report, 103)
            said = text_of(report, 58) or "no reason given"
            self.detail = f"{venue} rejected the order: {said}" + (
                f" (OrdRejReason {reason})" if reason else ""
            )
        cum = decimal(report.get(14))
        if cum is not None and cum > self.filled + _EPSILON:
            average = decimal(report.get(6)) or None  # absent or 0: not told
            last_px = decimal(report.get(31)) or None
            received = self.filled
            if self._missed(cum, average, last_px, now):
                self.detail = (f"CumQty {cum:g} above the executions received ({received:g}): "
                               "the rest booked from CumQty")  # fmt: skip
            else:
                self.detail = (f"CumQty {cum:g} above the executions received ({received:g}), "
                               "with no AvgPx or LastPx to price the rest: not booked until "
                               "a report prices it")  # fmt: skip
        elif cum is not None and cum + _EPSILON < self.filled and self.disagreed != cum:
            # we booked more than the counterparty says: told once as a duplicate
            self.disagreed = cum
            self.unreported.append(self.fills[-1])
            self.detail = f"CumQty {cum:g} below the executions booked ({self.filled:g})"
        ord_status = text_of(report, 39)
        if ord_status in _STATUSES and not (
            exec_type == "I" and ord_status == "8" and self.ord_status
        ):
            self.ord_status = ord_status
        after = (self.ord_status, len(self.fills), self.broker_order_id, self.replaced,
                 len(self.unreported), self.detail)  # fmt: skip
        return after != before

    def _trade(self, report: FixMessage, now: datetime) -> None:
        exec_id = text_of(report, 17)
        quantity = decimal(report.get(32))
        price = decimal(report.get(31))
        if not exec_id or quantity is None or price is None or quantity <= 0:
            return
        booked = next((f for f in self.fills if f.execution_id == exec_id), None)
        if booked is not None:
            if text_of(report, 43) != "Y":  # the same execution again, not a replay
                self.unreported.append(booked)
            return
        cum = decimal(report.get(14))
        if cum is not None and self.fills and self.filled + quantity > cum + _EPSILON:
            # CumQty says this one is already counted: a duplicate under a new ExecID
            self.unreported.append(self.fills[-1])
            return
        at = parse_time(report.get(60)) or now
        self.fills.append(Fill(quantity=quantity, price=price, at=at, execution_id=exec_id))

    def _missed(
        self, cum: float, average: float | None, last_px: float | None, now: datetime
    ) -> bool:
        """Book what CumQty says was executed beyond the executions received, priced
        so the average is AvgPx, else at the report's LastPx (a FIX 4.2-style
        report); never at a price nobody stated (no price: nothing booked, False)."""
        missing = cum - self.filled
        paid = sum(f.quantity * f.price for f in self.fills)
        price = (average * cum - paid) / missing if average else 0.0
        if price <= 0:  # no usable AvgPx: the counterparty's own price, if it gave one
            price = average or last_px or 0.0
        if price <= 0:
            return False
        ident = f"{self.broker_order_id or self.order.order_id}:cum:{quantity_text(cum)}"
        self.fills.append(Fill(quantity=missing, price=round(price, _PRICE_DIGITS), at=now,
                               execution_id=ident))  # fmt: skip
        return True

    # --- the journal ------------------------------------------------------------------

    def to_json(self) -> JsonDict:
        return {
            "order": order_to_json(self.order),
            "number": self.number,
            "cl_ord_id": self.cl_ord_id,
            "counter": self.counter,
            "broker_order_id": self.broker_order_id,
            "ord_status": self.ord_status,
            "replaced": self.replaced,
            "detail": self.detail,
            "fills": [fill_to_json(f) for f in self.fills],
            "pending": dict(self.pending),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> BookedOrder:
        order = data.get("order")
        fills = data.get("fills")
        pending = data.get("pending")
        if not isinstance(order, dict) or not isinstance(fills, list):
            raise ValueError("order entry (want: order and fills, got: something else)")
        return cls(
            order=order_from_json(order),
            number=int(str(data.get("number", 0))),
            cl_ord_id=str(data.get("cl_ord_id", "")),
            counter=int(str(data.get("counter", 0))),
            broker_order_id=str(data.get("broker_order_id", "")),
            ord_status=str(data.get("ord_status", "")),
            replaced=bool(data.get("replaced", False)),
            detail=str(data.get("detail", "")),
            fills=[fill_from_json(f) for f in fills if isinstance(f, dict)],
            pending=dict(pending) if isinstance(pending, dict) else {},
        )
