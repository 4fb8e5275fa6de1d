"""The oms_rest adapter's own rules: its brokers.yaml section (errors name the
field, never the token), the token never in a message or a repr, the OMS's
words kept in refusals, unreadable answers refused, a wrong token is a failed
check, and the fake runnable by a user."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from adapters import registry
from adapters.base import BrokerConfigError, MemoryJournal
from adapters.oms_rest import OMS_REST_CAPABILITIES, OmsRestAdapter, from_config
from engine.broker import BrokerAck, BrokerError, BrokerOrder
from engine.lifecycle import OrderStatus
from tests.fakes.oms_rest import FakeOms, HttpError, Slow

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
TOKEN = "oms-secret-token-Z9"
ENV = {"OMS_TOKEN": TOKEN}
SECTION: dict[str, object] = {
    "adapter": "oms_rest",
    "base_url": "http://127.0.0.1:1",
    "ws_url": "ws://127.0.0.1:2/v1/stream",
    "token_env": "OMS_TOKEN",
}


def clock() -> datetime:
    return NOW


@pytest.fixture
def fake() -> Iterator[FakeOms]:
    with FakeOms(token=TOKEN) as running:
        running.set_quote("AAPL", 99.0, 101.0)
        yield running


@pytest.fixture
def adapter(fake: FakeOms) -> Iterator[OmsRestAdapter]:
    built = OmsRestAdapter(base_url=fake.url, token=TOKEN, clock=clock, timeout_s=2.0)
    yield built
    built.close()


def buy(order_id: str, quantity: float = 10.0) -> BrokerOrder:
    return BrokerOrder(order_id, "acct-1", "AAPL", "buy", quantity, "market")


# --- configuration ---------------------------------------------------------------------------


def test_from_config_when_section_is_complete_then_builds_without_connecting() -> None:
    journals: list[str] = []

    def journal(name: str) -> MemoryJournal:
        journals.append(name)
        return MemoryJournal()

    adapter = from_config(
        {**SECTION, "timeout_s": 3}, ENV, role="paper", clock=clock, journal=journal
    )

    assert (adapter.name, adapter.base_url, adapter.ws_url) == (
        "oms_rest-paper",
        "http://127.0.0.1:1",
        "ws://127.0.0.1:2/v1/stream",
    )
    assert adapter.timeout_s == 3.0
    assert journals == ["oms_rest-paper"]
    assert adapter.capabilities == OMS_REST_CAPABILITIES
    assert (adapter.capabilities.paper, adapter.capabilities.live) == (True, True)
    assert adapter.capabilities.market_data is False
    assert TOKEN not in repr(adapter)
    adapter.close()


def test_from_config_when_ws_url_is_omitted_then_polling_only() -> None:
    section = {k: v for k, v in SECTION.items() if k != "ws_url"}

    adapter = from_config(section, ENV, role="live", clock=clock)

    assert (adapter.name, adapter.ws_url, adapter.stream_state) == ("oms_rest-live", None, "off")
    adapter.subscribe(lambda ack: None)  # nothing to start
    assert adapter.stream_state == "off"
    adapter.close()


@pytest.mark.parametrize(
    ("changes", "env", "field", "message"),
    [
        ({"token_env": None}, ENV, "paper.token_env",
         "want: the name of an environment variable, got: None"),
        ({}, {}, "paper.token_env", "environment variable OMS_TOKEN is not set"),
        ({}, {"OMS_TOKEN": ""}, "paper.token_env", "environment variable OMS_TOKEN is not set"),
        ({"base_url": "ftp://h"}, ENV, "paper.base_url", "want: an http(s) URL, got: 'ftp://h'"),
        ({"base_url": None}, ENV, "paper.base_url", "want: an http(s) URL, got: None"),
        ({"ws_url": "http://h/s"}, ENV, "paper.ws_url", "want: a ws(s) URL, got: 'http://h/s'"),
        ({"timeout_s": 0}, ENV, "paper.timeout_s", "want: seconds in (0, 300], got: 0"),
        ({"token": TOKEN}, ENV, "paper.token",
         "unknown key for adapter oms_rest (want: one of ['adapter', 'base_url', 'timeout_s', "
         "'token_env', 'ws_url'])"),
    ],
    ids=["token-env-missing", "env-unset", "env-empty", "base-url-scheme", "base-url-missing",
         "ws-url-scheme", "timeout", "unknown-key"],
)  # fmt: skip
def test_from_config_when_section_is_wrong_then_error_names_the_field_never_the_token(
    changes: dict[str, object], env: dict[str, str], field: str, message: str
) -> None:
    section = {k: v for k, v in {**SECTION, **changes}.items() if v is not None}

    with pytest.raises(BrokerConfigError) as caught:
        from_config(section, env, role="paper", clock=clock)

    assert (caught.value.field, caught.value.message) == (field, message)
    assert TOKEN not in str(caught.value)


def test_registry_when_a_section_names_oms_rest_then_its_adapter_is_built() -> None:
    broker = registry.build("paper", SECTION, ENV, clock=clock)

    assert isinstance(broker, OmsRestAdapter)
    assert registry.adapter_name(broker) == "oms_rest"
    broker.close()


# --- calls -------------------------------------------------------------------------------------


def test_check_credentials_when_the_token_is_wrong_then_false_and_the_token_not_shown(
    fake: FakeOms,
) -> None:
    wrong = OmsRestAdapter(base_url=fake.url, token="not-the-token", clock=clock, timeout_s=2.0)
    try:
        assert wrong.check_credentials() is False
        refused = wrong.submit(buy("ord-1"))
    finally:
        wrong.close()

    assert refused.status is OrderStatus.BLOCKED
    assert "HTTP 401 'bad or missing token' (code unauthorized)" in refused.detail
    assert "not-the-token" not in refused.detail + repr(refused.raw)
    assert fake.orders() == []


def test_submit_when_the_oms_answers_5xx_then_broker_error_with_its_words_not_a_refusal(
    fake: FakeOms, adapter: OmsRestAdapter
) -> None:
    fake.inject(HttpError(500, "database unavailable", code="internal"))

    with pytest.raises(BrokerError) as caught:
        adapter.submit(buy("ord-1"))

    assert str(caught.value) == (
        "oms_rest submit of 'ord-1': HTTP 500 'database unavailable' (code internal)"
    )
    assert fake.received("ord-1") == 1
    assert adapter.find("ord-1") is None


def test_submit_when_client_order_id_is_reused_then_blocked_with_the_oms_code(
    adapter: OmsRestAdapter,
) -> None:
    first = adapter.submit(buy("ord-1"))

    again = adapter.submit(buy("ord-1"))

    assert again.status is OrderStatus.BLOCKED
    assert "(code duplicate_client_order_id)" in again.detail
    assert again.raw["order"] == {"order_id": first.broker_order_id, "status": "filled"}


def test_order_status_when_the_broker_id_is_another_orders_then_refused(
    adapter: OmsRestAdapter,
) -> None:
    adapter.submit(buy("ord-1"))
    other = adapter.submit(buy("ord-2"))

    with pytest.raises(BrokerError) as caught:
        adapter.order_status("ord-1", other.broker_order_id)

    assert caught.value.code == "order_not_found"


def test_positions_and_account_when_asked_then_per_account_and_the_oms_account(
    adapter: OmsRestAdapter,
) -> None:
    adapter.submit(buy("ord-1", 7))

    assert adapter.positions("acct-1") == {"AAPL": 7.0}
    assert adapter.positions("acct-2") == {}
    assert adapter.account("acct-1") == {
        "account": "acct-1",
        "broker": "oms_rest",
        "id": "OMS-FAKE-1",
        "status": "active",
        "currency": "USD",
        "buying_power": 1_000_000.0,
    }


def test_poll_when_a_resting_order_fills_at_the_oms_then_reported_once(
    fake: FakeOms, adapter: OmsRestAdapter
) -> None:
    resting = adapter.submit(
        BrokerOrder("ord-1", "acct-1", "AAPL", "buy", 10.0, "limit", limit_price=50.0)
    )
    fake.fill("ord-1", 10, 50.0)

    first = adapter.poll()
    second = adapter.poll()

    assert [(a.order_id, a.broker_order_id, a.status) for a in first] == [
        ("ord-1", resting.broker_order_id, OrderStatus.FILLED)
    ]
    assert [f.execution_id for f in first[0].fills] == [f"X-{resting.broker_order_id}-1"]
    assert second == []
    assert adapter.booked == fake.last_sequence


def test_fake_when_run_as_a_module_then_prints_the_urls_and_the_token_to_use() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.oms_rest", "--port", "0", "--token", "tok-1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(10)]
    finally:
        process.terminate()
        process.wait(timeout=5)

    assert lines[0].startswith("fake OMS (docs/oms-rest.md v1) on http://127.0.0.1:")
    assert "stream on ws://127.0.0.1:" in lines[0]
    assert "adapter: oms_rest" in lines[3]
    assert "export OMS_TOKEN=tok-1" in "".join(lines)


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [
        ("cursor", {"sequence": "7"}, "sequence (want: an integer, got: '7')"),
        ("order:ord-1", {"oms_order_id": "OMS-1", "fills": "none"}, "fills (want: a list"),
        ("other", {}, "key (want: cursor or order:..., got: 'other')"),
    ],
    ids=["cursor", "fills", "key"],
)
def test_restart_when_a_journal_entry_is_damaged_then_refused_naming_it(
    key: str, value: dict[str, object], want: str
) -> None:
    journal = MemoryJournal()
    journal.save(key, value)

    with pytest.raises(BrokerError) as caught:
        OmsRestAdapter(base_url="http://127.0.0.1:1", token=TOKEN, clock=clock, journal=journal)

    assert caught.value.code == "journal_unreadable"
    assert f"journal entry {key!r} is unreadable ({want}" in str(caught.value)


def test_restart_when_the_journal_has_a_cursor_then_the_adapter_resumes_from_it(
    fake: FakeOms,
) -> None:
    journal = MemoryJournal()
    first = OmsRestAdapter(base_url=fake.url, token=TOKEN, clock=clock, journal=journal)
    resting = first.submit(
        BrokerOrder("ord-1", "acct-1", "AAPL", "buy", 10.0, "limit", limit_price=50.0)
    )
    first.poll()
    first.close()
    fake.fill("ord-1", 4, 50.0)

    again = OmsRestAdapter(base_url=fake.url, token=TOKEN, clock=clock, journal=journal)
    try:
        booked = again.booked
        reported = again.poll()
    finally:
        again.close()

    assert booked == 1
    assert [(a.order_id, a.status, a.filled_quantity) for a in reported] == [
        ("ord-1", OrderStatus.PARTIALLY_FILLED, 4.0)
    ]
    assert reported[0].broker_order_id == resting.broker_order_id


def test_stream_when_an_event_arrives_while_our_call_is_in_flight_then_the_answer_reports_it(
    fake: FakeOms,
) -> None:
    streamed: list[BrokerAck] = []
    adapter = OmsRestAdapter(
        base_url=fake.url, ws_url=fake.ws_url, token=TOKEN, clock=clock, timeout_s=2.0
    )
    try:
        adapter.subscribe(streamed.append)
        resting = adapter.submit(
            BrokerOrder("ord-1", "acct-1", "AAPL", "buy", 10.0, "limit", limit_price=50.0)
        )
        fake.inject(Slow(seconds=0.5, route="cancel"))  # the socket tells first

        cancelled = adapter.cancel("ord-1", resting.broker_order_id)
        booked = wait_until(lambda: adapter.booked == fake.last_sequence)
    finally:
        adapter.close()

    assert cancelled.status is OrderStatus.CANCELLED
    assert booked
    assert streamed == []  # the socket's news was the call's answer, reported once


def wait_until(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_answer_about_another_order_when_the_oms_sends_one_then_refused_and_nothing_held() -> None:
    """An OMS that answers with another order's body (a bug on its side) is never
    taken at its word: that order's fills would be booked to ours."""
    other = {"client_order_id": "someone-else", "order_id": "OMS-9", "status": "filled",
             "sequence": 3, "executions": [{"execution_id": "X-9", "quantity": 10.0,
             "price": 101.0, "executed_at": "2026-11-30T15:00:00Z"}]}  # fmt: skip
    asked: list[tuple[str, str]] = []

    def oms(request: httpx.Request) -> httpx.Response:
        asked.append((request.method, request.url.path))
        return httpx.Response(201 if request.method == "POST" else 200, json=other)

    adapter = OmsRestAdapter(base_url="http://oms.test", token=TOKEN, clock=clock)
    adapter._http = httpx.Client(base_url="http://oms.test", transport=httpx.MockTransport(oms))
    try:
        with pytest.raises(BrokerError) as submitted:
            adapter.submit(buy("ord-1"))
        with pytest.raises(BrokerError) as looked_up:
            adapter.find("ord-1")
    finally:
        adapter.close()

    for caught in (submitted.value, looked_up.value):
        assert caught.code == "unparseable_reply"
        assert "want: the order 'ord-1', got the order 'someone-else'" in str(caught)
    assert asked == [("POST", "/v1/orders"), ("GET", "/v1/orders/ord-1")]  # one submit
    assert "ord-1" not in adapter._held
