"""The broker port: what the engine needs from any broker (SPEC section 11).

The engine routes approved orders through a `BrokerAdapter`; which adapter
stands behind it is decided in `api/`. Adapters import only this module and
`engine.models`. Calls are synchronous; an adapter whose SDK is asynchronous
runs its own loop. Every failure is a `BrokerError`, never a bare exception
from the SDK, so the gateway can block the order with `broker_api_error`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from .errors import ApexError
from .lifecycle import OrderStatus
from .models import OrderType, Quote, Side, TimeInForce

__all__ = [
    "BrokerAck",
    "BrokerAdapter",
    "BrokerError",
    "BrokerJournal",
    "BrokerOrder",
    "BrokerPosition",
    "BrokerStatus",
    "Capabilities",
    "Fill",
    "LoggedMessage",
    "SessionLog",
]

# What a broker may say of an order: the lifecycle's statuses (engine/lifecycle.py);
# a broker's refusal is `blocked` (SPEC section 7: blocked with broker_api_error).
BrokerStatus = OrderStatus


class BrokerError(ApexError):
    """The broker call failed, timed out, or answered something we cannot parse."""

    code = "broker_api_error"

    def __init__(self, message: str, *, code: str = "broker_api_error") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Capabilities:
    """What a broker can take; an order outside this is blocked before routing."""

    order_types: frozenset[str]
    time_in_force: frozenset[str]
    reduce_only: bool
    cancel: bool
    replace: bool
    history: bool
    positions: bool
    market_data: bool
    # the gate emulates reduce-only for a broker without it natively: the policies'
    # reduce_only_check proves the order only reduces the position, and it is sent
    # as a plain order (SPEC section 11)
    reduce_only_emulated: bool = False
    # which modes the adapter may serve, and whether it can validate credentials
    paper: bool = False
    live: bool = False
    credentials: bool = False
    # the broker's own quote is a reference the client's quote is checked against
    # (SPEC section 4, data_integrity_mismatch); None: as `market_data`. A broker
    # whose quotes come from the clients themselves (the simulator) says False
    reference_quotes: bool | None = None

    @property
    def quotes_are_reference(self) -> bool:
        return self.market_data if self.reference_quotes is None else self.reference_quotes

    def refusal(self, order_type: str, time_in_force: str, reduce_only: bool) -> str | None:
        """Why this broker cannot take the order, or None."""
        if order_type not in self.order_types:
            return f"order type {order_type!r} not supported (supports: {sorted(self.order_types)})"
        if time_in_force not in self.time_in_force:
            return f"time in force {time_in_force!r} not supported"
        if reduce_only and not self.reduce_only:
            return "reduce-only orders not supported"
        return None


@dataclass(frozen=True)
class BrokerOrder:
    """An approved order as sent to a broker; `order_id` doubles as the broker's client id."""

    order_id: str
    account: str
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType
    limit_price: float | None = None
    stop_price: float | None = None
    time_in_force: TimeInForce = "day"
    reduce_only: bool = False
    quote: Quote | None = None
    # Reg SHO: a sale marked short and its borrow locate, for a broker whose
    # protocol carries them (FIX Side=5 and LocateReqd/LocateBroker); others
    # ignore them, the gate's short_sale_check having judged the order
    short_sale: bool = False
    locate_id: str | None = None


@dataclass(frozen=True)
class Fill:
    """One execution. `execution_id` is the broker's id of it (unique per broker):
    the same id twice is a duplicate report, never a second execution."""

    quantity: float
    price: float
    at: datetime
    execution_id: str = ""


@dataclass(frozen=True)
class BrokerPosition:
    """One position as a broker reports it: the signed quantity (short is
    negative) and, when the broker's answer carries one, the price per unit it
    values the holding at (finite and > 0; None: it gave none we can use). The
    price becomes the holding's mark in the gate (`positions.price`), which the
    account's gross exposure is valued at (engine/gateway/portfolio.py)."""

    quantity: float
    price: float | None = None


@dataclass(frozen=True)
class BrokerAck:
    """The broker's view of one order after a call or an event."""

    order_id: str
    broker_order_id: str
    status: BrokerStatus
    filled_quantity: float = 0.0
    average_price: float | None = None
    fills: tuple[Fill, ...] = ()
    detail: str = ""
    raw: dict[str, object] = field(default_factory=dict)

    def response(self) -> dict[str, object]:
        """The `broker_response` of the order log record."""
        out: dict[str, object] = {"status": self.status, "broker_order_id": self.broker_order_id}
        if self.filled_quantity:
            out["filled_quantity"] = self.filled_quantity
            out["average_price"] = self.average_price
        if self.detail:
            out["detail"] = self.detail
        return out


@runtime_checkable
class BrokerAdapter(Protocol):
    name: str
    capabilities: Capabilities

    def submit(self, order: BrokerOrder) -> BrokerAck: ...

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck: ...

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck: ...

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck: ...

    def find(self, order_id: str) -> BrokerAck | None:
        """The broker's view of the order sent with this client order id (our
        `order_id`), or None when the broker never received it. Raises
        `BrokerError` when the broker cannot be asked: the outcome stays unknown."""
        ...

    def order_history(self) -> list[BrokerAck]: ...

    def positions(self, account: str) -> dict[str, float]: ...

    # Optional, for an adapter whose broker gives a price with each position:
    #     held_positions(account) -> dict[str, BrokerPosition]
    # the positions `positions(account)` answers (the same symbols and quantities),
    # each with the broker's price from the same answer: one round trip, and a
    # quantity and price that belong together, where a second method asking for
    # prices alone would cost another call and could see another moment. The
    # portfolio sync uses it when present, to learn the mark of a holding bought
    # outside the gate; without it a synced holding keeps the mark the gate's own
    # fills left (or none). `positions` stays the port every caller may rely on.

    def account(self, account: str) -> dict[str, object]: ...

    def check_credentials(self) -> bool: ...

    def quote(self, symbol: str) -> Quote | None: ...

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        """Feed a market quote; returns the orders it changed (resting orders that filled)."""
        ...

    # Optional, for an adapter that keeps a connection (IB, FIX, a socket): a method
    #     connection_problem() -> str | None
    # saying why it is not connected now (None: connected). While it answers, the
    # broker takes no new order (broker_ready is false); once connected again it
    # stays unready until the recovery sweep has reconciled its working orders.


class BrokerJournal(Protocol):
    """Durable memory for an in-process broker (the simulator), so that a restart
    loses no working order or fill; the store provides it (adapters/sql)."""

    def load(self) -> dict[str, dict[str, object]]:
        """Every entry saved, by key."""
        ...

    def save(self, key: str, value: dict[str, object]) -> None:
        """Write one entry, durable no later than the store's next commit and
        atomically with it. The gateway books each broker answer in a transaction
        right after the call, so the broker's memory and the gateway's booking of
        an order land together or not at all."""
        ...


@dataclass(frozen=True)
class LoggedMessage:
    """One message of a FIX session's log: as sent or received, byte for byte."""

    direction: str  # "in" | "out"
    seq: int
    msg_type: str
    message: bytes
    at: datetime
    cl_ord_id: str | None = None


class SessionLog(Protocol):
    """Durable memory of one FIX session: its sequence numbers and every message in
    and out (the FIX message log, not the audit chain).

    Unlike `BrokerJournal`, each write is durable when the call returns, in a
    transaction of its own: an outgoing message is logged (and `next_out` moved
    past it) before it is written to the socket, so a crash never makes the
    adapter reuse a sequence number the counterparty may have seen, and a
    ResendRequest can be answered with the messages as they were sent."""

    def sequences(self) -> tuple[int, int]:
        """(next_out, next_in): the next MsgSeqNum to send and to expect; (1, 1)
        for a session never used."""
        ...

    def sent(self, seq: int, msg_type: str, message: bytes, at: datetime,
             cl_ord_id: str | None = None) -> None:  # fmt: skip
        """Log an outgoing message and move `next_out` to `seq + 1` (a resend of
        an earlier `seq` leaves it), durable before returning."""
        ...

    def received(
        self, seq: int, msg_type: str, message: bytes, at: datetime, next_in: int | None
    ) -> None:
        """Log an incoming message; `next_in` (when not None) is the next MsgSeqNum
        expected after it. Durable before returning."""
        ...

    def reset(self, next_out: int, next_in: int) -> None:
        """Set both sequence numbers (a session reset)."""
        ...

    def outgoing(self, begin: int, end: int) -> list[LoggedMessage]:
        """The messages sent with MsgSeqNum in [begin, end] since the last reset,
        in order, the first sending of each (what a ResendRequest replays)."""
        ...

    def sent_for(self, cl_ord_id: str) -> list[LoggedMessage]:
        """The application messages sent with this ClOrdID (11), in order."""
        ...

    def tail(self, limit: int) -> list[LoggedMessage]:
        """The last `limit` messages in and out, oldest first."""
        ...
