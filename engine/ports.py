"""The store port: what the order gateway needs from storage (the broker port is
`broker.py`). The SQL implementation lives in `adapters/sql`; `api/` wires it in.

Every write happens in `Store.transact(work)`: `work` gets a `Writer` inside one
transaction that holds the chain lock, so everything it reads is current and no
other writer, thread or replica, runs until it commits. A decision is taken
inside that transaction (race-free: nothing it depends on can change under it).
Driver errors never leave the store: they become `StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from .broker import BrokerJournal, Fill
from .lifecycle import OrderStatus
from .models import FlowCounts, OrderRequest, WorkingOrder
from .records import OrderRecord

__all__ = [
    "CHECKPOINT_SETTING",
    "UNREAD",
    "AuditState",
    "Claim",
    "Controls",
    "OrderRow",
    "Snapshot",
    "Store",
    "StoredOrder",
    "TokenRow",
    "Writer",
]

_T = TypeVar("_T")

# The claim on a client order id: (order id, request digest), None if unclaimed,
# UNREAD if it could not be read.
Claim = tuple[str, str] | None
UNREAD: Claim = ("", "")

# The setting that keeps the latest checkpoint record (engine/checkpoints.py),
# written in the transaction that appends it.
CHECKPOINT_SETTING = "checkpoint"


@dataclass(frozen=True)
class Controls:
    """The gateway-wide settings every decision depends on, as stored.
    `states` maps "global" and account names to
    {"state": "active"|"reducing"|"halted", "reason", "actor", "at"};
    a missing entry is `active`. The Omega directive is the global `halted`."""

    mode: str = "research"
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def state_of(self, scope: str) -> str:
        entry = self.states.get(scope)
        return str(entry["state"]) if entry else "active"

    @property
    def omega_active(self) -> bool:
        return self.state_of("global") == "halted"


@dataclass(frozen=True)
class Snapshot:
    """Everything one decision needs from the database, read in one statement."""

    controls: Controls
    position: float  # the account's signed position in the symbol
    flow: FlowCounts
    claim: Claim  # on the order's client order id
    # the account's book, for the credit and self-match checks: every position
    # (symbol -> signed quantity), the mark of each (its last execution price, or
    # the price a broker's position sync gave), its working
    # orders (the one being replaced left out) and the notional executed on `day`
    positions: dict[str, float] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    working: tuple[WorkingOrder, ...] = ()
    executed_today: float = 0.0


@dataclass(frozen=True)
class StoredOrder:
    """One row of the orders table, mapped by the store."""

    order_id: str
    operation: str
    client_order_id: str | None
    account: str | None
    symbol: str | None
    status: OrderStatus
    broker: str | None
    broker_order_id: str | None
    filled_quantity: float
    average_price: float | None
    request: Any  # the request body as received (a dict for a readable one)
    record: OrderRecord  # the latest record of this order in the chain
    created_at: datetime
    updated_at: datetime
    # the same record as stored, with its `prev_hash` and `hash` when it was linked
    linked: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderRow:
    """The columns of an orders row that verification recomputes from the chain."""

    order_id: str
    status: str
    quantity: Any
    limit_price: Any
    stop_price: Any
    record: Any  # the stored record, parsed (its text when it is not JSON)


@dataclass(frozen=True)
class AuditState:
    """The chain and what the store derived from it, read in one snapshot, so
    that a write landing meanwhile cannot pass for a difference."""

    head: tuple[int, str] | None  # chain_head: the last record's seq and hash
    orders: list[OrderRow]
    positions: dict[tuple[str, str], float]  # (account, symbol): signed quantity
    records: Iterator[dict[str, Any]]  # the chain in order, streamed from the snapshot
    # the latest checkpoint record as kept outside the chain rows (the `checkpoint`
    # setting, written with it): a deleted tail shows against it
    checkpoint: Any = None


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    role: str
    accounts: frozenset[str] | None  # None: every allowed account
    label: str
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None  # None: never


class Writer(Protocol):
    """The operations of one write transaction that holds the chain lock. Reads
    see this transaction's own writes."""

    def snapshot(
        self,
        order: OrderRequest,
        now: datetime,
        rate_window_s: float,
        duplicate_window_s: float,
        exclude: str | None = None,
        day: str = "",
    ) -> Snapshot:
        """Everything one decision reads, under the chain lock: the controls, the
        position, the flow counts, the claim on the client order id, and the
        account's book (`day`: the trading day, YYYY-MM-DD, whose executed
        notional counts; `exclude`: the client order id of an order being
        replaced, which is neither flow nor one of the working orders)."""
        ...

    def controls(self) -> Controls: ...

    def next_order_id(self, year: int) -> str: ...

    def head(self) -> tuple[int, str]:
        """The chain head as this transaction sees it: the last record's 1-based
        position and hash ((0, GENESIS) for an empty chain)."""
        ...

    def append(self, record: dict[str, Any], kind: str, at: datetime) -> dict[str, Any]:
        """Link `record` to the chain and append it; the record with its hashes.
        `kind`: the table's class of the record (order, mode, state, anomaly, ...)."""
        ...

    def insert_order(
        self, record: dict[str, Any], request: Any, at: datetime, time_in_force: str | None
    ) -> None:
        """The orders row of a new attempt; `record`: as linked (with hashes)."""
        ...

    def update_order(
        self,
        order_id: str,
        record: dict[str, Any],
        at: datetime,
        *,
        broker_order_id: str | None = None,
        filled_quantity: float | None = None,
        average_price: float | None = None,
        terms: dict[str, Any] | None = None,
    ) -> None:
        """A new latest record and status for an order; `terms`: quantity,
        limit_price, stop_price and request after a replace."""
        ...

    def order(self, order_id: str) -> StoredOrder | None: ...

    def claim(self, client_order_id: str, order_id: str, digest: str) -> None: ...

    def event(self, order_id: str, status: str, detail: dict[str, Any], at: datetime) -> None: ...

    def fills(self, order_id: str) -> list[Fill]:
        """The fills booked for this order, in booking order."""
        ...

    def fill(self, order_id: str, fill: Fill) -> None: ...

    def move_position(
        self, account: str, symbol: str, delta: float, price: float | None = None
    ) -> None:
        """Move the position by a fill of `delta` (signed) at `price` (its mark)."""
        ...

    def add_executed(self, account: str, day: str, notional: float) -> None:
        """Add a fill's notional to what `account` executed on trading day `day`."""
        ...

    def positions(self, account: str) -> dict[str, float]:
        """The account's positions (non-zero), as this transaction sees them."""
        ...

    def set_position(
        self, account: str, symbol: str, quantity: float, price: float | None = None
    ) -> None:
        """Set the position to a broker's `quantity`; `price` (when not None) becomes
        its mark, else the mark stays what it was (the last fill's, or none)."""
        ...

    def set_mark(self, account: str, symbol: str, price: float) -> None:
        """Set the mark of a held position alone (a broker's price for a quantity
        the gate already agrees with); no position: nothing changes."""
        ...

    def set_controls(self, controls: Controls, at: datetime) -> None: ...

    def setting(self, key: str) -> Any: ...

    def set_setting(self, key: str, value: Any, at: datetime) -> None: ...

    def add_token(
        self,
        token_id: str,
        token_hash: str,
        role: str,
        label: str,
        accounts: Collection[str] | None,
        at: datetime,
        expires_at: datetime | None = None,
    ) -> None: ...

    def revoke_token(self, token_id: str, at: datetime) -> bool:
        """Revoke a live token; False when there is none with this id."""
        ...


class Store(Protocol):
    """What the gateway, the API and the tools need from storage."""

    dialect: str

    def migrate(self) -> None: ...

    def close(self) -> None: ...

    def transact(self, work: Callable[[Writer], _T]) -> _T:
        """Run `work` in a write transaction holding the chain lock (group-committed
        with other threads' work); its result, or its exception."""
        ...

    def writing(self) -> AbstractContextManager[Writer]:
        """A write transaction of the caller's own (no group commit)."""
        ...

    def controls(self) -> Controls: ...

    def setting(self, key: str) -> Any: ...

    def claimed(self, client_order_id: str) -> Claim: ...

    def order(self, order_id: str) -> StoredOrder | None: ...

    def list_orders(
        self,
        *,
        status: str | None = None,
        symbol: str | None = None,
        account: str | None = None,
        accounts: Collection[str] | None = None,
        client_order_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Latest records, newest first; `accounts` limits to those accounts."""
        ...

    def orders_in(self, statuses: Collection[OrderStatus]) -> list[StoredOrder]: ...

    def positions(self, account: str) -> dict[str, float]: ...

    def audit_of_kind(self, kind: str, after: int = 0, limit: int = 100) -> list[tuple[int, Any]]:
        """The records of one `kind` after chain position `after`, each with its
        position, in chain order."""
        ...

    def audit_records(
        self, after: int = 0, limit: int | None = None
    ) -> Iterator[dict[str, Any]]: ...

    def audit_count(self) -> int: ...

    def chain_head(self) -> tuple[int, str] | None:
        """The stored head (the last record's position and hash), in one small read."""
        ...

    def audit_state(self) -> AbstractContextManager[AuditState]:
        """The chain head, every orders row, every position and the chain, in one
        read snapshot (valid while the context is open)."""
        ...

    def token(self, token_hash: str) -> TokenRow | None:
        """The token with this hash unless it is revoked; whether it has expired
        is the caller's to judge (by its clock, against `expires_at`)."""
        ...

    def token_count(self) -> int: ...

    def tokens(self) -> list[TokenRow]:
        """Every token, revoked ones included."""
        ...

    def journal(self, broker: str) -> BrokerJournal:
        """Durable memory for an in-process broker of this name."""
        ...

    def ping(self) -> bool: ...
