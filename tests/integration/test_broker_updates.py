"""How a configured broker's updates reach the gateway (issue 10, items 3, 4 and
6), through `Runtime` and brokers.yaml against the fake Alpaca: polling books a
fill of a resting order that no call of ours saw, and `position_account` syncs
the broker's positions into that account at a full reconciliation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.runtime import Runtime
from api.settings import Settings
from engine.audit_replay import verify_store
from engine.gateway import Actor
from engine.lifecycle import OrderStatus
from tests.conftest import POLICIES, FixedClock, OrderBuilder
from tests.fakes.alpaca import FakeAlpaca

ADMIN = Actor.of("t-admin", "admin")
TRADER = Actor.of("t-trader", "trader")
COMPLIANCE = Actor.of("t-compliance", "compliance")
SECRET = "alpaca-fake-secret-U7"


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(secret_key=SECRET) as running:
        running.set_quote("AAPL", 150.20, 150.30, 150.25)
        yield running


def start(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
    extra: str = "",
) -> Runtime:  # fmt: skip
    monkeypatch.setenv("FAKE_APCA_KEY", fake.key_id)
    monkeypatch.setenv("FAKE_APCA_SECRET", SECRET)
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(
        "paper:\n  adapter: alpaca\n"
        f"  base_url: {fake.url}\n  data_url: {fake.url}\n"
        "  key_id_env: FAKE_APCA_KEY\n  secret_key_env: FAKE_APCA_SECRET\n  timeout_s: 2\n" + extra,
        encoding="utf-8",
    )
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'apex.db'}",
                        policies=POLICIES, keys=tmp_path / "no-keys", brokers=brokers)  # fmt: skip
    runtime = Runtime.start(settings, clock=clock)
    assert runtime.gateway.check_broker("paper", ADMIN)["ok"] is True
    runtime.gateway.set_mode("paper", COMPLIANCE, "updates test")
    return runtime


def test_polling_when_a_resting_order_fills_at_the_broker_then_the_sweep_books_it(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
    make_order: OrderBuilder,
) -> None:  # fmt: skip
    runtime = start(fake, tmp_path, clock, monkeypatch)
    try:
        resting = runtime.gateway.submit(make_order(limit_price=150.00, quantity=40), TRADER)
        order_id = resting.record["order_id"]
        assert resting.record["order_status"] == "accepted"
        fake.fill(order_id, 40, 150.00)  # at the broker; no call of ours sees it
        before = runtime.store.order(order_id)
        runtime._poll_brokers()
        again = len(list(runtime.store.audit_records()))
        runtime._poll_brokers()  # nothing new: nothing booked twice
        after = runtime.store.order(order_id)
        positions = runtime.store.positions("default")
        report = verify_store(runtime.store)
        total = len(list(runtime.store.audit_records()))
    finally:
        runtime.close()

    assert before is not None and before.status == OrderStatus.ACCEPTED
    assert after is not None and after.status == OrderStatus.FILLED
    assert positions == {"AAPL": 40.0}
    assert total == again
    assert report.ok and not report.findings, report.as_dict()


def test_position_account_when_the_broker_holds_more_then_a_full_pass_syncs_it(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
    make_order: OrderBuilder,
) -> None:  # fmt: skip
    runtime = start(fake, tmp_path, clock, monkeypatch, extra="  position_account: default\n")
    try:
        bought = runtime.gateway.submit(make_order(limit_price=150.30, quantity=10), TRADER)
        assert bought.record["order_status"] == "filled"
        # bought outside the gate, on the same Alpaca account
        outside = runtime.gateway.brokers()["paper"].submit  # the adapter itself
        from engine.broker import BrokerOrder

        outside(BrokerOrder("OUTSIDE-1", "default", "AAPL", "buy", 5, "market"))
        records = runtime.gateway.recover()
        positions = runtime.store.positions("default")
        report = verify_store(runtime.store)
    finally:
        runtime.close()

    syncs = [
        (r["symbol"], r["before"], r["after"]) for r in records if r.get("kind") == "position_sync"
    ]
    assert syncs == [("AAPL", 10.0, 15.0)]
    assert positions == {"AAPL": 15.0}
    assert report.ok and not report.findings, report.as_dict()


def test_position_account_when_it_is_not_text_then_refused_naming_the_field(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapters.base import BrokerConfigError

    with pytest.raises(BrokerConfigError) as refused:
        start(fake, tmp_path, clock, monkeypatch, extra="  position_account: 12\n")

    assert refused.value.field == "paper.position_account"
