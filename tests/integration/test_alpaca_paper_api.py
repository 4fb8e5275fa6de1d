"""Paper trading end to end through the HTTP API on `adapter: alpaca`, against the
fake Alpaca (tests/fakes/alpaca.py) with alpaca-py's real clients: brokers.yaml
names the fake and the environment variables holding the keys; the credential
check opens paper; submit, fill, cancel, replace, positions and the broker's
own history; the secret never shows in an answer or the chain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from engine.audit import verify_chain
from engine.gateway import Actor
from tests.conftest import POLICIES, FixedClock, OrderBuilder, role_tokens
from tests.fakes.alpaca import FakeAlpaca, HttpError

ADMIN = Actor.of("t-admin", "admin")
SECRET = "alpaca-fake-secret-Q9Z"


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(secret_key=SECRET) as running:
        running.set_quote("AAPL", 150.20, 150.30, 150.25)
        yield running


@pytest.fixture
def service(
    fake: FakeAlpaca, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Runtime, TestClient[Any], dict[str, dict[str, str]]]]:
    monkeypatch.setenv("FAKE_APCA_KEY", fake.key_id)
    monkeypatch.setenv("FAKE_APCA_SECRET", SECRET)
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(
        "paper:\n"
        "  adapter: alpaca\n"
        f"  base_url: {fake.url}\n"
        f"  data_url: {fake.url}\n"
        "  key_id_env: FAKE_APCA_KEY\n"
        "  secret_key_env: FAKE_APCA_SECRET\n"
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


def test_paper_on_alpaca_end_to_end_through_the_api(
    service: tuple[Runtime, TestClient[Any], dict[str, dict[str, str]]],
    fake: FakeAlpaca,
    make_order: OrderBuilder,
) -> None:
    runtime, client, auth = service
    assert runtime.gateway.check_broker("paper", ADMIN)["ok"] is True
    entered = client.post("/v1/mode", headers=auth["compliance"], json={"mode": "paper"})
    assert entered.status_code == 200

    def post(path: str, **kw: Any) -> Any:
        return client.post(path, headers=auth["trader"], **kw)

    filled = post("/v1/orders", json=make_order(limit_price=150.30))
    resting = post("/v1/orders", json=make_order(limit_price=150.00, quantity=50))
    resting_id = resting.json()["order_id"]
    replaced = post(f"/v1/orders/{resting_id}/replace", json={"limit_price": 150.10})
    cancelled = post(f"/v1/orders/{resting_id}/cancel")
    fake.inject(HttpError(403, "insufficient buying power", code=40310000))
    refused = post("/v1/orders", json=make_order(limit_price=150.30, quantity=10))

    assert (filled.status_code, filled.json()["order_status"]) == (201, "filled")
    assert filled.json()["broker"] == "alpaca-paper"
    assert (resting.status_code, resting.json()["order_status"]) == (201, "accepted")
    assert (replaced.status_code, replaced.json()["order_status"]) == (200, "replaced")
    assert (cancelled.status_code, cancelled.json()["order_status"]) == (200, "cancelled")
    assert refused.status_code == 502
    assert refused.json()["order_status"] == "blocked"
    assert "insufficient buying power" in refused.json()["broker_response"]["detail"]
    assert runtime.store.positions("default") == {"AAPL": 100}
    assert fake.order(resting_id)["status"] == "canceled"
    assert fake.order(resting_id)["replaces"] is not None  # the replace made a new order
    assert all(fake.received(o["client_order_id"]) == 1 for o in fake.orders() if not o["replaces"])

    history = client.get("/v1/orders?source=broker", headers=auth["auditor"])
    assert history.status_code == 200
    text = json.dumps(history.json())
    assert filled.json()["order_id"] in text and resting_id in text

    chain = list(runtime.store.audit_records())
    assert verify_chain(chain).ok
    assert SECRET not in json.dumps(chain)
    assert SECRET not in text
