"""adapters.alpaca on its own: configuration from brokers.yaml, the live endpoint
refused outside the live role, Alpaca's words kept in every error, quote, account
and positions, and the fake's admin route and command line (tests/fakes/alpaca.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.alpaca import LIVE_URL, PAPER_URL, AlpacaAdapter, from_config
from adapters.base import BrokerConfigError
from engine.broker import BrokerError, BrokerOrder
from engine.lifecycle import OrderStatus
from tests.fakes.alpaca import FakeAlpaca, HttpError, Malformed

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
ENV = {"APCA_KEY": "PKTESTKEY", "APCA_SECRET": "s3cr3t-value-never-shown"}
SECTION = {
    "adapter": "alpaca",
    "base_url": "http://127.0.0.1:8701",
    "data_url": "http://127.0.0.1:8701",
    "key_id_env": "APCA_KEY",
    "secret_key_env": "APCA_SECRET",
}


def clock() -> datetime:
    return NOW


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as running:
        running.set_quote("AAPL", 99.0, 101.0, 100.0)
        yield running


@pytest.fixture
def adapter(fake: FakeAlpaca) -> AlpacaAdapter:
    return AlpacaAdapter(
        key_id=fake.key_id,
        secret_key=fake.secret_key,
        base_url=fake.url,
        data_url=fake.url,
        clock=clock,
        timeout_s=0.5,
    )


def buy(order_id: str, quantity: float = 10.0, side: str = "buy") -> BrokerOrder:
    return BrokerOrder(order_id, "acct-1", "AAPL", side, quantity, "market")  # type: ignore[arg-type]


# --- configuration -----------------------------------------------------------------------


def test_from_config_when_section_is_complete_then_builds_without_connecting() -> None:
    adapter = from_config(SECTION, ENV, role="paper", clock=clock)

    assert (adapter.name, adapter.base_url, adapter.timeout_s) == (
        "alpaca-paper",
        "http://127.0.0.1:8701",
        10.0,
    )
    assert ENV["APCA_SECRET"] not in repr(adapter)


def test_from_config_when_urls_are_omitted_then_alpacas_own_endpoints_by_role() -> None:
    section = {k: v for k, v in SECTION.items() if not k.endswith("url")}

    assert from_config(section, ENV, role="paper", clock=clock).base_url == PAPER_URL
    assert from_config(section, ENV, role="live", clock=clock).base_url == LIVE_URL


@pytest.mark.parametrize(
    ("changes", "role", "field", "words"),
    [
        ({"key_id_env": "NOT_SET_ANYWHERE"}, "paper", "paper.key_id_env", "NOT_SET_ANYWHERE"),
        ({"secret_key_env": "NOPE"}, "live", "live.secret_key_env", "NOPE is not set"),
        ({"key_id_env": None}, "paper", "paper.key_id_env", "name of an environment variable"),
        ({"base_url": LIVE_URL}, "paper", "paper.base_url", "serves only the live role"),
        ({"base_url": "ftp://x"}, "paper", "paper.base_url", "http(s) URL"),
        ({"data_url": 7}, "paper", "paper.data_url", "http(s) URL"),
        ({"timeout_s": 0}, "paper", "paper.timeout_s", "seconds in (0, 300]"),
        ({"token_env": "X"}, "paper", "paper.token_env", "unknown key for adapter alpaca"),
    ],
    ids=[
        "key-missing",
        "secret-missing",
        "key-not-named",
        "live-url-for-paper",
        "bad-url",
        "bad-data-url",
        "bad-timeout",
        "unknown-key",
    ],
)
def test_from_config_when_section_is_wrong_then_error_names_the_field_never_a_value(
    changes: dict[str, Any], role: str, field: str, words: str
) -> None:
    with pytest.raises(BrokerConfigError) as caught:
        from_config({**SECTION, **changes}, ENV, role=role, clock=clock)

    assert caught.value.field == field
    assert words in caught.value.message
    assert ENV["APCA_SECRET"] not in str(caught.value)


def test_adapter_when_built_for_paper_on_the_live_endpoint_then_refused() -> None:
    with pytest.raises(BrokerConfigError, match=r"^paper\.base_url: "):
        AlpacaAdapter(key_id="k", secret_key="s", base_url=LIVE_URL, data_url=LIVE_URL, clock=clock)


# --- Alpaca's words in every failure -------------------------------------------------------


def test_submit_when_the_error_body_is_not_json_then_status_and_body_are_kept(
    fake: FakeAlpaca, adapter: AlpacaAdapter
) -> None:
    fake.inject(HttpError(502, body="<html>bad gateway</html>"))

    with pytest.raises(BrokerError) as caught:
        adapter.submit(buy("ord-1"))

    assert "HTTP 502 '<html>bad gateway</html>'" in str(caught.value)


def test_order_status_when_the_reply_misses_a_field_then_unparseable_names_it(
    fake: FakeAlpaca, adapter: AlpacaAdapter
) -> None:
    submitted = adapter.submit(buy("ord-1"))
    fake.inject(Malformed("missing_field", route="get"))

    with pytest.raises(BrokerError) as caught:
        adapter.order_status("ord-1", submitted.broker_order_id)

    assert caught.value.code == "unparseable_reply"
    assert "created_at: Field required" in str(caught.value)


def test_find_when_lookup_fails_with_500_then_raises_rather_than_none(
    fake: FakeAlpaca, adapter: AlpacaAdapter
) -> None:
    fake.inject(HttpError(500, "try later", route="get"))

    with pytest.raises(BrokerError, match="HTTP 500 'try later'"):
        adapter.find("ord-1")


def test_check_credentials_when_alpaca_fails_otherwise_then_raises(
    fake: FakeAlpaca, adapter: AlpacaAdapter
) -> None:
    fake.inject(HttpError(503, "maintenance", route="account"))

    with pytest.raises(BrokerError, match="HTTP 503 'maintenance'"):
        adapter.check_credentials()


def test_submit_when_429_then_answered_at_once_without_alpaca_py_retry_sleeps(
    fake: FakeAlpaca, adapter: AlpacaAdapter
) -> None:
    fake.inject(HttpError(429, "rate limit exceeded", code=42910000))

    ack = adapter.submit(buy("ord-1"))

    assert ack.status is OrderStatus.BLOCKED
    assert "HTTP 429 'rate limit exceeded' (code 42910000)" in ack.detail
    assert ack.raw == {"http_status": 429, "message": "rate limit exceeded", "code": 42910000}
    assert fake.requests.count(("POST", "/v2/orders")) == 1


# --- account, positions, quote -------------------------------------------------------------


def test_account_when_asked_then_id_number_and_status_only(adapter: AlpacaAdapter) -> None:
    account = adapter.account("acct-1")

    assert account["status"] == "ACTIVE"
    assert str(account["account_number"]).startswith("PA")
    assert set(account) == {
        "account",
        "broker",
        "id",
        "account_number",
        "status",
        "currency",
        "buying_power",
    }


def test_positions_when_short_then_negative(adapter: AlpacaAdapter) -> None:
    adapter.submit(buy("ord-1", 10.0, side="sell"))

    assert adapter.positions("acct-1") == {"AAPL": -10.0}


def test_quote_when_alpaca_has_one_then_bid_and_ask_else_none(
    fake: FakeAlpaca, adapter: AlpacaAdapter
) -> None:
    quote = adapter.quote("AAPL")

    assert quote is not None
    assert (quote.bid, quote.ask) == (99.0, 101.0)
    assert adapter.quote("MSFT") is None


def test_on_quote_when_a_resting_order_filled_at_alpaca_then_the_poll_reports_it_once(
    fake: FakeAlpaca, adapter: AlpacaAdapter
) -> None:
    order = BrokerOrder("ord-1", "acct-1", "AAPL", "buy", 10.0, "limit", limit_price=95.0)
    adapter.submit(order)
    fake.set_quote("AAPL", 94.0, 95.0, 94.5)

    first = adapter.on_quote("AAPL", None)  # type: ignore[arg-type]
    second = adapter.poll()

    assert [(a.order_id, a.status, a.filled_quantity) for a in first] == [
        ("ord-1", OrderStatus.FILLED, 10.0)
    ]
    assert second == []


# --- the fake by hand ----------------------------------------------------------------------


def test_fake_admin_route_when_a_fault_is_posted_then_the_next_submit_gets_it(
    fake: FakeAlpaca, adapter: AlpacaAdapter
) -> None:
    body = json.dumps({"kind": "http_error", "status": 403, "message": "account blocked"})
    request = urllib.request.Request(f"{fake.url}/_fake/faults", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=2) as answer:
        assert answer.status == 200

    ack = adapter.submit(buy("ord-1"))

    assert "HTTP 403 'account blocked'" in ack.detail


def test_fake_when_run_as_a_module_then_prints_how_to_point_brokers_yaml_at_it() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.alpaca", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
    finally:
        process.terminate()
        process.wait(timeout=5)

    assert lines[0].startswith("fake Alpaca on http://127.0.0.1:")
    assert "adapter: alpaca" in lines[3]
