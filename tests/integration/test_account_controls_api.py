"""The account-wide controls through the HTTP API, on SQLite and on PostgreSQL:
credit and exposure limits (SEC 15c3-5), self-match prevention and short sales
(Reg SHO), each proven by POSTing real orders to a simulated broker and
reading the answers, the records and what reached the broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from litestar.testing import TestClient

from api.app import create_app
from engine.broker import BrokerOrder
from tests.conftest import StartRuntime, copy_policies, role_tokens

Order = Callable[..., dict[str, Any]]
Post = Callable[..., Any]


def market(**changes: Any) -> dict[str, Any]:
    return {"order_type": "market", "limit_price": None, **changes}


class Desk:
    """A running service in simulation mode, its trader's POST, and what its
    simulated broker was sent."""

    def __init__(self, client: TestClient[Any], auth: dict[str, dict[str, str]]) -> None:
        self.client = client
        self.auth = auth
        self.sent: list[BrokerOrder] = []

    def post(self, path: str, json: Any = None, role: str = "trader") -> Any:
        return self.client.post(path, headers=self.auth[role], json=json)

    def submit(self, order: dict[str, Any]) -> Any:
        return self.post("/v1/orders", order)

    def cancel(self, order_id: str) -> Any:
        return self.post(f"/v1/orders/{order_id}/cancel", {"reason": "test"})

    def chain_ok(self) -> bool:
        report = self.client.get("/v1/audit/verify", headers=self.auth["auditor"]).json()
        return bool(report["ok"])


@pytest.fixture
def start_desk(
    start_runtime: StartRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Desk]]:
    """`start_desk(**risk)`: the shipped policies with these `risk` parameters."""
    clients: list[TestClient[Any]] = []

    def start(**risk: Any) -> Desk:
        policies = copy_policies(tmp_path / f"policies-{len(clients)}")
        config_path = policies / "compliance.yaml"
        config = yaml.safe_load(config_path.read_text("utf-8"))
        config["risk"].update(risk)
        config_path.write_text(yaml.safe_dump(config), "utf-8")
        runtime = start_runtime(policies)
        client = TestClient(create_app(runtime))
        client.__enter__()
        clients.append(client)
        auth = {r: {"Authorization": f"Bearer {t}"} for r, t in role_tokens(runtime).items()}
        desk = Desk(client, auth)
        broker = runtime.gateway.broker_for("simulation")
        assert broker is not None
        real = broker.submit

        def recording(order: BrokerOrder) -> Any:
            desk.sent.append(order)
            return real(order)

        monkeypatch.setattr(broker, "submit", recording)
        entered = desk.post("/v1/mode", {"mode": "simulation", "reason": "test"}, "compliance")
        assert entered.status_code == 200, entered.text
        return desk

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def codes(response: Any) -> list[str]:
    return [r["code"] for r in response.json()["reasons"]]


# --- credit and exposure ---------------------------------------------------------------


def test_open_notional_when_working_orders_and_the_order_pass_the_limit_then_403_till_cancel(
    start_desk: Callable[..., Desk], make_order: Order
) -> None:
    desk = start_desk(max_open_notional=100_000)
    # resting below the market: 500 x 149 = 74,500 working
    resting = desk.submit(make_order(quantity=500, limit_price=149.0))
    refused = desk.submit(make_order(quantity=200, limit_price=149.0))  # + 29,800 > 100,000
    cancelled = desk.cancel(resting.json()["order_id"])
    retried = desk.submit(make_order(quantity=200, limit_price=149.0))

    assert (resting.status_code, resting.json()["order_status"]) == (201, "accepted")
    assert refused.status_code == 403
    assert codes(refused) == ["OPEN_NOTIONAL_EXCEEDS_CREDIT_LIMIT"]
    assert refused.json()["risk_check_results"]["open_notional_check"] == "fail"
    assert (
        "open_notional_after=104300.0 > risk.max_open_notional=100000"
        in (refused.json()["reasons"][0]["detail"])
    )
    assert cancelled.status_code == 200
    assert retried.status_code == 201
    assert len(desk.sent) == 2  # the refused order never reached the broker
    assert desk.chain_ok()


def test_daily_notional_when_the_day_executed_near_the_limit_then_the_next_order_is_403(
    start_desk: Callable[..., Desk], make_order: Order
) -> None:
    desk = start_desk(max_daily_notional=50_000)
    filled = desk.submit(make_order(quantity=300, **market()))  # 300 x 150.30 = 45,090
    refused = desk.submit(make_order(quantity=100, **market()))  # + 15,030 > 50,000
    smaller = desk.submit(make_order(quantity=30, **market()))  # + 4,509

    assert (filled.status_code, filled.json()["order_status"]) == (201, "filled")
    assert refused.status_code == 403
    assert codes(refused) == ["DAILY_NOTIONAL_EXCEEDS_LIMIT"]
    assert smaller.status_code == 201
    assert desk.chain_ok()


def test_gross_exposure_when_holdings_elsewhere_and_the_order_pass_the_limit_then_403(
    start_desk: Callable[..., Desk], make_order: Order
) -> None:
    desk = start_desk(max_gross_exposure=50_000)
    held = desk.submit(make_order(quantity=300, **market()))  # AAPL 300 marked at 150.30
    refused = desk.submit(make_order(symbol="MSFT", quantity=100, **market()))  # 45,090 + 15,030
    reducing = desk.submit(make_order(side="sell", quantity=100, **market()))  # AAPL down to 200

    assert held.status_code == 201
    assert refused.status_code == 403
    assert codes(refused) == ["GROSS_EXPOSURE_EXCEEDS_LIMIT"]
    assert reducing.status_code == 201
    assert desk.chain_ok()


# --- self-match prevention -------------------------------------------------------------


def test_self_match_when_an_order_would_cross_a_working_order_of_the_account_then_403_naming_it(
    start_desk: Callable[..., Desk], make_order: Order
) -> None:
    desk = start_desk()
    bought = desk.submit(make_order(quantity=100, **market()))
    offer = desk.submit(make_order(side="sell", quantity=100, limit_price=151.0))  # rests
    offer_id = offer.json()["order_id"]

    crossing_limit = desk.submit(make_order(quantity=10, limit_price=151.0))
    crossing_market = desk.submit(make_order(quantity=10, **market()))
    below = desk.submit(make_order(quantity=10, limit_price=149.0))  # rests, crosses nothing
    desk.cancel(offer_id)
    after_cancel = desk.submit(make_order(quantity=10, **market()))

    assert bought.status_code == 201
    assert (offer.status_code, offer.json()["order_status"]) == (201, "accepted")
    for refused in (crossing_limit, crossing_market):
        assert refused.status_code == 403
        assert codes(refused) == ["SELF_MATCH"]
        assert (
            f"would cross {offer_id} (sell 100 limit 151)" in refused.json()["reasons"][0]["detail"]
        )
    assert (below.status_code, below.json()["order_status"]) == (201, "accepted")
    assert (after_cancel.status_code, after_cancel.json()["order_status"]) == (201, "filled")
    assert [o.order_id for o in desk.sent] == [
        bought.json()["order_id"],
        offer_id,
        below.json()["order_id"],
        after_cancel.json()["order_id"],
    ]
    assert desk.chain_ok()


def test_self_match_when_another_account_works_the_other_side_then_no_self_match(
    start_desk: Callable[..., Desk], make_order: Order
) -> None:
    desk = start_desk()
    offer = desk.submit(
        make_order(side="sell", limit_price=151.0, short_sale=True, locate_id="LOC-9")
    )
    theirs = desk.submit(make_order(account="paper-1", limit_price=151.0))

    assert (offer.status_code, offer.json()["order_status"]) == (201, "accepted")
    assert theirs.status_code == 201


# --- short sales (Reg SHO) -------------------------------------------------------------


def test_short_sale_when_unmarked_then_403_and_when_marked_with_a_locate_then_routed_with_it(
    start_desk: Callable[..., Desk], make_order: Order
) -> None:
    desk = start_desk()
    unmarked = desk.submit(make_order(side="sell", **market()))
    no_locate = desk.submit(make_order(side="sell", short_sale=True, **market()))
    located = desk.submit(
        make_order(side="sell", short_sale=True, locate_id="LOC-2026-0042", **market())
    )

    assert unmarked.status_code == 403
    assert codes(unmarked) == ["SHORT_SALE_NO_LOCATE"]
    assert unmarked.json()["fail_closed_triggers"] == ["compliance_failure"]
    assert no_locate.status_code == 403
    assert codes(no_locate) == ["SHORT_SALE_NO_LOCATE"]
    assert (located.status_code, located.json()["order_status"]) == (201, "filled")
    record = located.json()
    assert (record["short_sale"], record["locate_id"]) == (True, "LOC-2026-0042")
    assert [(o.side, o.short_sale, o.locate_id) for o in desk.sent] == [
        ("sell", True, "LOC-2026-0042")
    ]
    assert desk.chain_ok()


def test_short_sale_when_a_buy_is_marked_short_then_422_naming_the_field(
    start_desk: Callable[..., Desk], make_order: Order
) -> None:
    desk = start_desk()
    marked = desk.submit(make_order(short_sale=True))
    located = desk.submit(make_order(locate_id="LOC-1"))
    garbled = desk.submit(make_order(side="sell", short_sale=True, locate_id="LOC 1"))

    assert [r.status_code for r in (marked, located, garbled)] == [422, 422, 422]
    assert [[e["field"] for e in r.json()["errors"]] for r in (marked, located, garbled)] == [
        ["short_sale"],
        ["locate_id"],
        ["locate_id"],
    ]
    assert desk.sent == []
