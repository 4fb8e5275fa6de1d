"""The ports the order gateway needs, beside the broker port (`broker.py`):
the store. The SQL implementation lives in `adapters/sql`; `api/` wires it in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from .models import FlowCounts, OrderRequest

__all__ = ["UNREAD", "Claim", "Snapshot", "Store", "Writer"]

_T = TypeVar("_T")


# The claim on a client order id: (order id, request digest), None if unclaimed,
# UNREAD if it could not be read.
Claim = tuple[str, str] | None
UNREAD: Claim = ("", "")


@dataclass(frozen=True)
class Snapshot:
    mode: str
    omega: dict[str, Any]
    position: float
    flow: FlowCounts
    claim: Claim  # on the order's client order id


class Writer(Protocol):
    """The operations of one write transaction that holds the chain lock."""

    def next_order_id(self, year: int) -> str: ...

    def append(self, record: dict[str, Any], kind: str, at: datetime) -> dict[str, Any]: ...

    def append_text(
        self, record: dict[str, Any], kind: str, at: datetime
    ) -> tuple[dict[str, Any], str]: ...

    def insert_order(self, values: dict[str, Any]) -> None: ...

    def filled_quantity(self, order_id: str) -> float: ...

    def update_order(self, order_id: str, values: dict[str, Any]) -> None: ...

    def claim(self, client_order_id: str, order_id: str, digest: str) -> None: ...

    def event(self, order_id: str, status: str, detail: dict[str, Any], at: datetime) -> None: ...

    def fill(self, order_id: str, quantity: float, price: float, at: datetime) -> None: ...

    def move_position(self, account: str, symbol: str, delta: float) -> None: ...

    def set_setting(self, key: str, value: Any, at: datetime) -> None: ...

    def setting(self, key: str) -> Any: ...


class Store(Protocol):
    """What the gateway needs from storage."""

    def transact(self, work: Callable[[Writer], _T]) -> _T: ...

    def snapshot(
        self,
        order: OrderRequest,
        now: datetime,
        rate_window_s: float,
        duplicate_window_s: float,
        exclude: str | None = None,
    ) -> Snapshot: ...

    def claimed(self, client_order_id: str) -> Claim: ...

    def setting(self, key: str) -> Any: ...

    def order(self, order_id: str) -> dict[str, Any] | None: ...

    def order_record(self, order_id: str) -> dict[str, Any] | None: ...

    def open_orders(self) -> list[dict[str, Any]]: ...
