"""Paper trading end to end through the HTTP API on `adapter: ib`, against the
fake TWS (tests/fakes/tws.py) with ib_async's real client: brokers.yaml names
it; the credential check opens paper; submit, fill, a resting order filling
later through IB's event stream, replace, cancel, a refusal with IB's words,
positions synced from the broker, the broker's own history."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from engine.audit_replay import verify_store
from engine.gateway import Actor
from tests.conftest import POLICIES, FixedClock, OrderBuilder, role_tokens
from tests.fakes.tws import FakeTWS, Reject

ADMIN = Actor.of("t-admin", "admin")


@pytest.fixture
def fake(clock: FixedClock) -> Iterator[FakeTWS]:
    tws = FakeTWS(accounts=("DU123",), quotes={"AAPL": (150.20, 150.30, 150.25)}, clock=clock)
    tws.start()
    try:
        yield tws
    finally:
        tws.stop()


@pytest.fixture
def service(
    fake: FakeTWS, tmp_path: Path, clock: FixedClock
) -> Iterator[tuple[Runtime, TestClient[Any], dict[str, dict[str, str]]]]:
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(
        "paper:\n  adapter: ib\n  host: 127.0.0.1\n"
        f"  port: {fake.port}\n  client_id: 17\n  account: DU123\n"
        "  request_timeout_s: 2\n  position_account: default\n",
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


def wait_for(check: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_paper_on_ib_end_to_end_through_the_api(
    service: tuple[Runtime, TestClient[Any], dict[str, dict[str, str]]],
    fake: FakeTWS,
    make_order: OrderBuilder,
) -> None:
    runtime, client, auth = service
    assert runtime.gateway.check_broker("paper", ADMIN)["ok"] is True
    entered = client.post("/v1/mode", headers=auth["compliance"], json={"mode": "paper"})
    assert entered.status_code == 200, entered.text

    def post(path: str, **kw: Any) -> Any:
        return client.post(path, headers=auth["trader"], **kw)

    filled = post("/v1/orders", json=make_order(limit_price=150.30))
    resting = post("/v1/orders", json=make_order(limit_price=150.00, quantity=50))
    resting_id = resting.json()["order_id"]
    replaced = post(f"/v1/orders/{resting_id}/replace", json={"limit_price": 150.10})
    later = post("/v1/orders", json=make_order(limit_price=150.05, quantity=20))
    later_id = later.json()["order_id"]
    fake.fill(later_id, 20, 150.05)  # IB fills it later: its event stream tells us
    streamed = wait_for(lambda: runtime.store.order(later_id).status == "filled")  # type: ignore[union-attr]
    cancelled = post(f"/v1/orders/{resting_id}/cancel")
    fake.inject(Reject())
    refused = post("/v1/orders", json=make_order(limit_price=150.30, quantity=10))
    synced = runtime.gateway.recover()  # a full pass: positions from the broker
    history = client.get("/v1/orders?source=broker", headers=auth["auditor"])

    assert (filled.status_code, filled.json()["order_status"]) == (201, "filled")
    assert filled.json()["broker"] == "ib-paper"
    assert (resting.status_code, resting.json()["order_status"]) == (201, "accepted")
    assert (replaced.status_code, replaced.json()["order_status"]) == (200, "replaced")
    assert (later.status_code, later.json()["order_status"]) == (201, "accepted")
    assert streamed, "the fill IB reported on its own was not booked"
    assert cancelled.status_code in (200, 202) and cancelled.json()["order_status"] in (
        "cancelled", "pending_cancel")  # fmt: skip
    assert refused.status_code == 502
    assert refused.json()["order_status"] == "blocked"
    assert "MARGIN REQUIREMENT" in json.dumps(refused.json()["broker_response"])
    assert [r for r in synced if r.get("kind") == "position_sync"] == []  # books agree
    assert runtime.store.positions("default") == {"AAPL": 120}
    assert all(count == 1 for count in fake.placements.values())  # nothing sent twice
    assert history.status_code == 200
    text = json.dumps(history.json())
    assert filled.json()["order_id"] in text and later_id in text
    report = verify_store(runtime.store)
    assert report.ok and not report.findings, report.as_dict()
