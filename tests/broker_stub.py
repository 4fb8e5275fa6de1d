"""A broker adapter module for the broker-configuration tests: it follows the
`from_config` convention of adapters/base.py, so a test can point an adapter
name at it (`adapters.registry.MODULES["alpaca"] = "tests.broker_stub"`).

It reads the two credentials an alpaca section names from `env`; they are
valid when the secret is `GOOD_SECRET`. Orders are accepted and fill when a
test says; nothing leaves the process. `STUB_CAPABILITIES` has no native
reduce-only (the gate emulates it) and `SENT` keeps every order sent to any
stub, for assertions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from adapters.base import BrokerConfigError
from engine.broker import BrokerAck, BrokerError, BrokerOrder, Capabilities
from engine.clock import Clock
from engine.lifecycle import OrderStatus
from engine.models import Quote

__all__ = ["GOOD_SECRET", "SENT", "STUB_CAPABILITIES", "StubBroker", "from_config"]

GOOD_SECRET = "stub-good-secret-0123456789"
STUB_CAPABILITIES = Capabilities(
    order_types=frozenset({"market", "limit"}),
    time_in_force=frozenset({"day", "gtc"}),
    reduce_only=False,
    reduce_only_emulated=True,
    cancel=True,
    replace=False,
    history=True,
    positions=True,
    market_data=False,
    paper=True,
    live=True,
    credentials=True,
)
SENT: list[BrokerOrder] = []


@dataclass
class StubBroker:
    name: str
    secret: str
    capabilities: Capabilities = STUB_CAPABILITIES
    known: dict[str, BrokerAck] = field(default_factory=dict)

    def check_credentials(self) -> bool:
        if self.secret != GOOD_SECRET:
            raise BrokerError("401 request is not authorized")
        return True

    def account(self, account: str) -> dict[str, object]:
        return {
            "id": "stub-account-1",
            "account_number": "PA0001",
            "status": "ACTIVE",
            "secret": self.secret,
        }  # fmt: skip  (a careless broker: never shown)

    def submit(self, order: BrokerOrder) -> BrokerAck:
        SENT.append(order)
        ack = BrokerAck(order.order_id, f"STUB-{len(SENT)}", OrderStatus.ACCEPTED)
        self.known[order.order_id] = ack
        return ack

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        ack = BrokerAck(order_id, broker_order_id, OrderStatus.CANCELLED)
        self.known[order_id] = ack
        return ack

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        raise BrokerError("replace is not supported")

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        return self.known[order_id]

    def find(self, order_id: str) -> BrokerAck | None:
        return self.known.get(order_id)

    def order_history(self) -> list[BrokerAck]:
        return list(self.known.values())

    def positions(self, account: str) -> dict[str, float]:
        return {}

    def quote(self, symbol: str) -> Quote | None:
        return None

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        return []


def from_config(
    section: Mapping[str, object], env: Mapping[str, str], *, role: str, clock: Clock
) -> StubBroker:
    secret_env = str(section["secret_key_env"])
    secret = env.get(secret_env)
    if not secret:
        raise BrokerConfigError(f"{role}.secret_key_env", f"{secret_env} is not set")
    broker = StubBroker(name=f"stub-{role}", secret=secret)
    # a test asks for a broker that cannot cancel, or serves paper only, by its URL
    if section.get("base_url") == "http://127.0.0.1:1/no-cancel":
        broker.capabilities = replace(STUB_CAPABILITIES, cancel=False)
    if section.get("base_url") == "http://127.0.0.1:1/paper-only":
        broker.capabilities = replace(STUB_CAPABILITIES, live=False)
    return broker
