"""A stand-in for a live broker account (no live adapter exists yet, issue 10): it
validates its credentials as a test says, records each check, and accepts orders."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.broker import BrokerAck, BrokerError, BrokerOrder, Capabilities
from engine.lifecycle import OrderStatus
from engine.models import Quote

__all__ = ["FakeLiveBroker"]

LIVE_CAPABILITIES = Capabilities(
    order_types=frozenset({"market", "limit", "stop"}),
    time_in_force=frozenset({"day", "gtc", "ioc", "fok"}),
    reduce_only=True,
    cancel=True,
    replace=False,
    history=True,
    positions=True,
    market_data=False,
)


@dataclass
class FakeLiveBroker:
    """`credentials`: what the next check answers (True, False, or an exception to raise)."""

    name: str = "fake-live"
    capabilities: Capabilities = LIVE_CAPABILITIES
    credentials: bool | Exception = True
    checks: int = 0
    orders: list[BrokerOrder] = field(default_factory=list)

    def check_credentials(self) -> bool:
        self.checks += 1
        if isinstance(self.credentials, Exception):
            raise self.credentials
        return self.credentials

    def submit(self, order: BrokerOrder) -> BrokerAck:
        self.orders.append(order)
        return BrokerAck(order.order_id, f"LIVE-{len(self.orders)}", OrderStatus.ACCEPTED)

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        return BrokerAck(order_id, broker_order_id, OrderStatus.CANCELLED)

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        raise BrokerError("replace is not supported")

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        return BrokerAck(order_id, broker_order_id, OrderStatus.ACCEPTED)

    def find(self, order_id: str) -> BrokerAck | None:
        return None

    def order_history(self) -> list[BrokerAck]:
        return []

    def positions(self, account: str) -> dict[str, float]:
        return {}

    def account(self, account: str) -> dict[str, object]:
        return {}

    def quote(self, symbol: str) -> Quote | None:
        return None

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        return []
