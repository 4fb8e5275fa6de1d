"""Alpaca's trade-updates stream (issue 10, item 3), through `Runtime` and
brokers.yaml against the fake Alpaca, which serves both paths: with
`stream_url` configured a change at the broker reaches the store on the stream,
with no sweep and no poll; a change seen on the stream and again by a poll is
booked once. The polling path is tests/integration/test_broker_updates.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.alpaca import AlpacaAdapter
from adapters.base import BrokerConfigError
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
SECRET = "alpaca-fake-secret-S3"
WAIT_S = 5.0


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(secret_key=SECRET) as running:
        running.set_quote("AAPL", 150.20, 150.30, 150.25)
        yield running


def start(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
    stream_url: str | None = None,
) -> Runtime:  # fmt: skip
    monkeypatch.setenv("FAKE_APCA_KEY", fake.key_id)
    monkeypatch.setenv("FAKE_APCA_SECRET", SECRET)
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(
        "paper:\n  adapter: alpaca\n"
        f"  base_url: {fake.url}\n  data_url: {fake.url}\n"
        f"  stream_url: {stream_url or fake.stream_url}\n"
        "  key_id_env: FAKE_APCA_KEY\n  secret_key_env: FAKE_APCA_SECRET\n  timeout_s: 2\n",
        encoding="utf-8",
    )
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'apex.db'}",
                        policies=POLICIES, keys=tmp_path / "no-keys", brokers=brokers)  # fmt: skip
    runtime = Runtime.start(settings, clock=clock)
    assert runtime.gateway.check_broker("paper", ADMIN)["ok"] is True
    runtime.gateway.set_mode("paper", COMPLIANCE, "stream test")
    return runtime


def no_polling(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's poll may not run: only the stream can bring the update."""

    def refuse() -> None:
        raise AssertionError("polled")

    monkeypatch.setattr(runtime, "_poll_brokers", refuse)
    adapter = runtime.gateway.brokers()["paper"]
    monkeypatch.setattr(adapter, "poll", refuse)
    monkeypatch.setattr(adapter, "on_quote", lambda *_: refuse())


def wait_for(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def streaming(runtime: Runtime) -> bool:
    adapter = runtime.gateway.brokers()["paper"]
    assert isinstance(adapter, AlpacaAdapter)
    stream = adapter._stream
    return wait_for(lambda: stream is not None and bool(stream._running))


def status_of(runtime: Runtime, order_id: str) -> OrderStatus | None:
    found = runtime.store.order(order_id)
    return None if found is None else found.status


def test_stream_when_a_resting_order_fills_at_the_broker_then_it_is_booked_without_a_poll(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
    make_order: OrderBuilder,
) -> None:  # fmt: skip
    runtime = start(fake, tmp_path, clock, monkeypatch)
    try:
        no_polling(runtime, monkeypatch)
        assert streaming(runtime)
        resting = runtime.gateway.submit(make_order(limit_price=150.00, quantity=40), TRADER)
        order_id = resting.record["order_id"]
        assert resting.record["order_status"] == "accepted"
        fake.fill(order_id, 40, 150.00)  # at the broker; no call of ours sees it
        filled = wait_for(lambda: status_of(runtime, order_id) == OrderStatus.FILLED)
        positions = runtime.store.positions("default")
        report = verify_store(runtime.store)
    finally:
        runtime.close()

    assert filled
    assert positions == {"AAPL": 40.0}
    assert report.ok and not report.findings, report.as_dict()


def test_stream_when_partial_then_full_fill_then_exactly_the_total_is_booked(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
    make_order: OrderBuilder,
) -> None:  # fmt: skip
    runtime = start(fake, tmp_path, clock, monkeypatch)
    try:
        no_polling(runtime, monkeypatch)
        assert streaming(runtime)
        resting = runtime.gateway.submit(make_order(limit_price=150.00, quantity=40), TRADER)
        order_id = resting.record["order_id"]
        fake.fill(order_id, 15, 149.90)
        partial = wait_for(lambda: status_of(runtime, order_id) == OrderStatus.PARTIALLY_FILLED)
        middle = runtime.store.positions("default")
        fake.fill(order_id, 25, 150.00)
        filled = wait_for(lambda: status_of(runtime, order_id) == OrderStatus.FILLED)
        positions = runtime.store.positions("default")
        fills = runtime.store.transact(lambda w: w.fills(order_id))
        report = verify_store(runtime.store)
    finally:
        runtime.close()

    assert partial and filled
    assert middle == {"AAPL": 15.0}
    assert positions == {"AAPL": 40.0}
    assert sorted((f.quantity, f.price) for f in fills) == [(15.0, 149.9), (25.0, 150.0)]
    assert report.ok and not report.findings, report.as_dict()


def test_stream_when_a_poll_follows_a_streamed_fill_then_nothing_is_booked_twice(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
    make_order: OrderBuilder,
) -> None:  # fmt: skip
    runtime = start(fake, tmp_path, clock, monkeypatch)
    try:
        assert streaming(runtime)
        resting = runtime.gateway.submit(make_order(limit_price=150.00, quantity=40), TRADER)
        order_id = resting.record["order_id"]
        fake.fill(order_id, 40, 150.00)
        filled = wait_for(lambda: status_of(runtime, order_id) == OrderStatus.FILLED)
        booked = len(list(runtime.store.audit_records()))
        runtime._poll_brokers()
        runtime.gateway.recover()  # a full reconciliation asks Alpaca again
        after = len(list(runtime.store.audit_records()))
        positions = runtime.store.positions("default")
        report = verify_store(runtime.store)
    finally:
        runtime.close()

    assert filled
    assert after == booked
    assert positions == {"AAPL": 40.0}
    assert report.ok and not report.findings, report.as_dict()


def test_stream_when_closed_then_its_thread_stops(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = start(fake, tmp_path, clock, monkeypatch)
    adapter = runtime.gateway.brokers()["paper"]
    assert isinstance(adapter, AlpacaAdapter)
    assert streaming(runtime)
    running = adapter._stream_run
    began = time.monotonic()
    runtime.close()
    took = time.monotonic() - began

    assert running is not None and not running[2].is_alive()
    assert took < 2.0


def test_stream_url_when_not_a_websocket_then_refused_naming_the_field(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BrokerConfigError) as refused:
        start(fake, tmp_path, clock, monkeypatch, stream_url=fake.url)

    assert refused.value.field == "paper.stream_url"


def test_stream_url_when_alpacas_live_stream_serves_paper_then_refused_naming_the_field(
    clock: FixedClock,
) -> None:
    from adapters.alpaca import from_config

    section = {
        "adapter": "alpaca",
        "base_url": "http://127.0.0.1:9",
        "stream_url": "wss://api.alpaca.markets/stream",
        "key_id_env": "K",
        "secret_key_env": "S",
    }
    with pytest.raises(BrokerConfigError) as refused:
        from_config(section, {"K": "key", "S": "secret"}, role="paper", clock=clock)

    assert refused.value.field == "paper.stream_url"
