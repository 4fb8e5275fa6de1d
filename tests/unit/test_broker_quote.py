"""The routed broker's own quote in the integrity check (issue 10, item 5): a
client's quote beyond `market_data.max_quote_deviation_bps` from the broker's
is blocked with `data_integrity_mismatch`, both prices in the reason; a broker
quote missing where one is required is `error`; a broker whose quotes are no
reference (the simulator) is never asked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.sql import SqlStore
from engine import Evaluator
from engine.broker import BrokerError, Capabilities
from engine.gateway import Actor, Gateway
from engine.models import Quote
from engine.ports import Controls, Writer
from tests.conftest import POLICIES, FixedClock, _load_policies_once, build_order
from tests.live_broker import LIVE_CAPABILITIES, FakeLiveBroker

TRADER = Actor.of("t-1", "trader")
QUOTING = Capabilities(
    **{**LIVE_CAPABILITIES.__dict__, "market_data": True, "paper": True, "live": True}
)


@dataclass
class QuotingBroker(FakeLiveBroker):
    """A broker whose own quotes are a reference; `answer` is what `quote` gives."""

    name: str = "quoting-paper"
    capabilities: Capabilities = QUOTING
    answer: Quote | Exception | None = None
    asked: list[str] = field(default_factory=list)

    def quote(self, symbol: str) -> Quote | None:
        self.asked.append(symbol)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def paper(store_url: str, clock: FixedClock) -> Iterator[tuple[Gateway, QuotingBroker]]:
    store = SqlStore(store_url)
    store.migrate()
    broker = QuotingBroker()
    gateway = Gateway(
        store, Evaluator(_load_policies_once(POLICIES), clock), {"paper": broker}, clock
    )
    gateway.recover()

    def to_paper(w: Writer) -> None:
        w.set_controls(Controls("paper", {}), clock())

    store.transact(to_paper)
    yield gateway, broker
    store.close()


def submit(gateway: Gateway, clock: FixedClock, cid: str) -> dict[str, Any]:
    outcome = gateway.submit(build_order(cid, clock()), TRADER)
    return outcome.record


def reasons(record: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {r["check"]: (r["result"], r["code"], r["detail"]) for r in record["reasons"]}


def test_broker_quote_when_it_agrees_with_the_client_then_routed(
    paper: tuple[Gateway, QuotingBroker], clock: FixedClock
) -> None:
    gateway, broker = paper
    broker.answer = Quote(bid=150.21, ask=150.29, timestamp=clock())

    record = submit(gateway, clock, "agree-1")

    assert record["order_status"] == "accepted", record["reasons"]
    assert record["risk_check_results"]["broker_quote_check"] == "pass"
    assert broker.asked == ["AAPL"]
    assert len(broker.orders) == 1


def test_broker_quote_when_beyond_tolerance_then_blocked_with_both_prices(
    paper: tuple[Gateway, QuotingBroker], clock: FixedClock
) -> None:
    gateway, broker = paper
    broker.answer = Quote(bid=151.20, ask=151.30, timestamp=clock())

    record = submit(gateway, clock, "off-1")

    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["data_integrity_mismatch"]
    result, code, detail = reasons(record)["broker_quote_check"]
    assert (result, code) == ("fail", "BROKER_QUOTE_DEVIATION")
    assert "market_data.max_quote_deviation_bps=50" in detail
    assert "client 150.2500, broker quoting-paper 151.2500" in detail
    assert broker.orders == []  # nothing reached the broker


@pytest.mark.parametrize(
    "answer", [None, BrokerError("quote endpoint timed out"), Quote(timestamp=None)],
    ids=["no-quote", "broker-error", "empty-quote"],
)  # fmt: skip
def test_broker_quote_when_missing_where_required_then_error_which_blocks(
    paper: tuple[Gateway, QuotingBroker], clock: FixedClock, answer: Any
) -> None:
    gateway, broker = paper
    broker.answer = answer

    record = submit(gateway, clock, "missing-1")

    assert record["order_status"] == "blocked"
    assert record["risk_check_results"]["broker_quote_check"] == "error"
    assert "data_integrity_mismatch" in record["fail_closed_triggers"]
    assert broker.orders == []


def test_broker_quote_when_the_broker_is_the_simulator_then_never_asked(
    store_url: str, clock: FixedClock
) -> None:
    from adapters.simulated import SimulatedBroker

    store = SqlStore(store_url)
    store.migrate()
    sim = SimulatedBroker(clock, journal=store.journal("simulated"))
    asked: list[str] = []
    real = sim.quote

    def spy(symbol: str) -> Quote | None:
        asked.append(symbol)
        return real(symbol)

    sim.quote = spy  # type: ignore[method-assign]
    gateway = Gateway(
        store, Evaluator(_load_policies_once(POLICIES), clock), {"simulation": sim}, clock
    )
    gateway.recover()
    gateway.set_mode("simulation", Actor.of("c", "compliance"), "test")
    try:
        record = gateway.submit(build_order("sim-1", clock()), TRADER).record
    finally:
        store.close()

    assert record["risk_check_results"]["broker_quote_check"] == "pass"
    assert asked == []
