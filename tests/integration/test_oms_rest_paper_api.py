"""Paper trading end to end through the HTTP API on `adapter: oms_rest`, against
the fake OMS (tests/fakes/oms_rest.py): brokers.yaml names the fake's URLs and
the environment variable holding the token; the check opens paper; submit,
fill, replace, cancel, the OMS's refusal, a resting order filled at the OMS,
positions and the OMS's history. Once with the WebSocket stream, once with the
socket down (the REST cursor brings the fill), and a fill delivered on both
paths booked once. The token never shows in an answer or the chain."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from adapters.oms_rest import OmsRestAdapter
from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from engine.audit import verify_chain
from engine.gateway import Actor
from engine.lifecycle import OrderStatus
from tests.conftest import POLICIES, FixedClock, OrderBuilder, role_tokens
from tests.fakes.oms_rest import FakeOms, Reject
from tests.integration.cli_support import run_main, use_home

ADMIN = Actor.of("t-admin", "admin")
TOKEN = "oms-fake-token-K7Q"
WAIT_S = 10.0

Service = tuple[Runtime, TestClient[Any], dict[str, dict[str, str]]]


@pytest.fixture
def fake() -> Iterator[FakeOms]:
    with FakeOms(token=TOKEN, heartbeat_s=0.2) as running:
        running.set_quote("AAPL", 150.20, 150.30)
        yield running


@pytest.fixture
def service(
    fake: FakeOms, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    monkeypatch.setenv("FAKE_OMS_TOKEN", TOKEN)
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(
        "paper:\n"
        "  adapter: oms_rest\n"
        f"  base_url: {fake.url}\n"
        f"  ws_url: {fake.ws_url}\n"
        "  token_env: FAKE_OMS_TOKEN\n"
        "  timeout_s: 2\n",
        encoding="utf-8",
    )
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'apex.db'}",
                        policies=POLICIES, keys=tmp_path / "no-keys", brokers=brokers)  # fmt: skip
    runtime = Runtime.start(settings, clock=clock)
    client = TestClient(create_app(runtime)).__enter__()
    auth = {r: {"Authorization": f"Bearer {t}"} for r, t in role_tokens(runtime).items()}
    try:
        yield runtime, client, auth
    finally:
        client.__exit__(None, None, None)
        runtime.close()


def wait_for(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def adapter_of(runtime: Runtime) -> OmsRestAdapter:
    adapter = runtime.gateway.brokers()["paper"]
    assert isinstance(adapter, OmsRestAdapter)
    return adapter


def no_sweep_polling(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's sweep may not run: only the adapter's own paths book."""

    def refuse() -> None:
        raise AssertionError("the sweep polled")

    monkeypatch.setattr(runtime, "_poll_brokers", refuse)


def status_of(runtime: Runtime, order_id: str) -> OrderStatus | None:
    found = runtime.store.order(order_id)
    return None if found is None else found.status


def open_paper(runtime: Runtime, client: TestClient[Any], auth: dict[str, dict[str, str]]) -> None:
    assert runtime.gateway.check_broker("paper", ADMIN)["ok"] is True
    entered = client.post("/v1/mode", headers=auth["compliance"], json={"mode": "paper"})
    assert entered.status_code == 200


def test_paper_on_oms_rest_with_the_stream_end_to_end_through_the_api(
    service: Service, fake: FakeOms, make_order: OrderBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client, auth = service
    no_sweep_polling(runtime, monkeypatch)
    open_paper(runtime, client, auth)
    assert wait_for(lambda: adapter_of(runtime).stream_state == "streaming")

    def post(path: str, **kw: Any) -> Any:
        return client.post(path, headers=auth["trader"], **kw)

    filled = post("/v1/orders", json=make_order(limit_price=150.30))
    resting = post("/v1/orders", json=make_order(limit_price=150.00, quantity=50))
    resting_id = resting.json()["order_id"]
    replaced = post(f"/v1/orders/{resting_id}/replace", json={"limit_price": 150.10})
    cancelled = post(f"/v1/orders/{resting_id}/cancel")
    fake.inject(Reject("instrument halted"))
    refused = post("/v1/orders", json=make_order(limit_price=150.30, quantity=10))
    later = post("/v1/orders", json=make_order(limit_price=150.00, quantity=40))
    later_id = later.json()["order_id"]
    fake.fill(later_id, 40, 150.00)  # at the OMS; only the socket tells us

    assert (filled.status_code, filled.json()["order_status"]) == (201, "filled")
    assert filled.json()["broker"] == "oms_rest-paper"
    assert (resting.status_code, resting.json()["order_status"]) == (201, "accepted")
    assert (replaced.status_code, replaced.json()["order_status"]) == (200, "replaced")
    assert (cancelled.status_code, cancelled.json()["order_status"]) == (200, "cancelled")
    assert refused.status_code == 502
    assert refused.json()["order_status"] == "blocked"
    assert "instrument halted" in refused.json()["broker_response"]["detail"]
    assert wait_for(lambda: status_of(runtime, later_id) == OrderStatus.FILLED)
    assert runtime.store.positions("default") == {"AAPL": 140}
    assert fake.order(resting_id)["status"] == "canceled"
    assert fake.order(resting_id)["limit_price"] == 150.10
    assert all(fake.received(o["client_order_id"]) == 1 for o in fake.orders())

    history = client.get("/v1/orders?source=broker", headers=auth["auditor"])
    assert history.status_code == 200
    text = json.dumps(history.json())
    assert filled.json()["order_id"] in text and later_id in text

    chain = list(runtime.store.audit_records())
    assert verify_chain(chain).ok
    assert TOKEN not in json.dumps(chain)
    assert TOKEN not in text


def test_paper_on_oms_rest_with_the_socket_down_then_fills_come_by_the_rest_cursor(
    service: Service, fake: FakeOms, make_order: OrderBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client, auth = service
    no_sweep_polling(runtime, monkeypatch)
    fake.socket_down(True)
    open_paper(runtime, client, auth)
    adapter = adapter_of(runtime)
    assert wait_for(lambda: adapter.stream_state == "polling")

    resting = client.post(
        "/v1/orders", headers=auth["trader"], json=make_order(limit_price=150.00, quantity=30)
    )
    order_id = resting.json()["order_id"]
    fake.fill(order_id, 30, 150.00)

    assert resting.json()["order_status"] == "accepted"
    assert wait_for(lambda: status_of(runtime, order_id) == OrderStatus.FILLED)
    assert runtime.store.positions("default") == {"AAPL": 30}
    assert fake.received(order_id) == 1
    assert adapter.stream_state == "polling"
    assert verify_chain(list(runtime.store.audit_records())).ok


def test_get_brokers_when_the_socket_goes_down_then_the_stream_shows_it_and_still_ready(
    service: Service, fake: FakeOms, make_order: OrderBuilder
) -> None:
    runtime, client, auth = service
    open_paper(runtime, client, auth)
    adapter = adapter_of(runtime)
    assert wait_for(lambda: adapter.stream_state == "streaming")

    def paper_view() -> dict[str, Any]:
        answer = client.get("/v1/brokers", headers=auth["auditor"])
        assert answer.status_code == 200
        views = {b["mode"]: b for b in answer.json()["brokers"]}
        assert views["simulation"]["stream"] is None  # no stream beside its commands
        return dict(views["paper"])

    streaming = paper_view()
    fake.socket_down(True)
    assert wait_for(lambda: adapter.stream_state == "polling")
    polling = paper_view()
    routed = client.post(
        "/v1/orders", headers=auth["trader"], json=make_order(limit_price=150.00, quantity=10)
    )
    fake.socket_down(False)
    assert wait_for(lambda: adapter.stream_state == "streaming")
    assert wait_for(lambda: adapter.booked == fake.last_sequence)
    back = paper_view()

    assert (streaming["ready"], streaming["stream"]["state"]) == (True, "streaming")
    # the socket down is information, not a connection problem: REST still takes orders
    assert (polling["ready"], polling["why_not"], polling["stream"]["state"]) == (
        True, None, "polling",
    )  # fmt: skip
    assert routed.status_code == 201 and routed.json()["order_status"] == "accepted"
    assert set(polling["stream"]) == {
        "state", "booked", "connections", "gaps", "garbled", "duplicates", "unreadable",
    }  # fmt: skip
    assert back["stream"]["state"] == "streaming"
    assert back["stream"]["connections"] > streaming["stream"]["connections"]
    assert back["stream"]["booked"] == fake.last_sequence


def test_a_fill_delivered_by_the_socket_and_by_the_cursor_is_booked_once(
    service: Service, fake: FakeOms, make_order: OrderBuilder
) -> None:
    runtime, client, auth = service
    open_paper(runtime, client, auth)
    adapter = adapter_of(runtime)
    assert wait_for(lambda: adapter.stream_state == "streaming")
    resting = client.post(
        "/v1/orders", headers=auth["trader"], json=make_order(limit_price=150.00, quantity=20)
    )
    order_id = resting.json()["order_id"]
    fake.fill(order_id, 20, 150.00)
    assert wait_for(lambda: status_of(runtime, order_id) == OrderStatus.FILLED)

    adapter.booked = 0  # the cursor read again from the start: every event comes twice
    runtime._poll_brokers()

    fills = runtime.store.transact(lambda w: w.fills(order_id))
    assert [(f.quantity, f.price) for f in fills] == [(20.0, 150.00)]
    assert adapter.duplicates == 1
    assert adapter.booked == fake.last_sequence
    assert runtime.store.positions("default") == {"AAPL": 20}
    records = list(runtime.store.audit_records())
    assert [r for r in records if r.get("kind") == "execution_anomaly"] == []
    assert verify_chain(records).ok


def test_brokers_check_when_an_oms_rest_section_then_health_and_account_and_a_wrong_token_fails(
    fake: FakeOms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    home = use_home(tmp_path, monkeypatch, POLICIES)
    home.mkdir(parents=True, exist_ok=True)
    (home / "brokers.yaml").write_text(
        f"paper:\n  adapter: oms_rest\n  base_url: {fake.url}\n  token_env: FAKE_OMS_TOKEN\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("FAKE_OMS_TOKEN", TOKEN)
    good = run_main(capsys, ("brokers", "check"))
    monkeypatch.setenv("FAKE_OMS_TOKEN", "a-wrong-token")
    bad = run_main(capsys, ("brokers", "check", "--json"))

    assert good.code == 0
    assert good.out.splitlines()[2].split()[:6] == [
        "paper", "oms_rest-paper", "oms_rest", "ok", "OMS-FAKE-1", "active"
    ]  # fmt: skip
    assert fake.requests[:2] == [("GET", "/v1/health"), ("GET", "/v1/account")]
    assert bad.code == 1
    assert json.loads(bad.out)[0]["ok"] is False
    assert TOKEN not in good.out + good.err + bad.out + bad.err
    assert "a-wrong-token" not in bad.out + bad.err
