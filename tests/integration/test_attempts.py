"""Every authenticated attempt is in the chain (issue 8, item 2), over HTTP on
SQLite and PostgreSQL: one chain record per authenticated request that tries
to act, whatever its answer (a conflict, a replay, a body of the wrong shape on
every route that takes one, a bad quote, a refused role), and none for a
request without a valid token, so that no one without a token can grow it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import TestClient

from api.auth import token_id_of
from api.runtime import Runtime
from engine.broker import BrokerAck, BrokerOrder

# the routes that take a body, with the role allowed to call each
BODY_ROUTES = [
    ("trader", "/v1/orders/evaluate"),
    ("trader", "/v1/orders"),
    ("trader", "/v1/orders/{order_id}/cancel"),
    ("trader", "/v1/orders/{order_id}/replace"),
    ("compliance", "/v1/mode"),
    ("compliance", "/v1/trading-state"),
    ("compliance", "/v1/omega"),
    ("compliance", "/v1/policies/reload"),
    ("admin", "/v1/sim/quotes"),
]
# `null` is no body where a body is optional: a plain cancel, a plain reload
OPTIONAL_BODY = {"/v1/orders/{order_id}/cancel", "/v1/policies/reload"}
NON_OBJECTS = ["[]", '"x"', "null", "12"]

# (role, method, path): a role the route's guard refuses
REFUSED_ROLES = [
    ("auditor", "POST", "/v1/orders"),
    ("compliance", "POST", "/v1/orders/evaluate"),
    ("auditor", "POST", "/v1/orders/{order_id}/cancel"),
    ("compliance", "POST", "/v1/orders/{order_id}/replace"),
    ("trader", "POST", "/v1/mode"),
    ("trader", "POST", "/v1/omega"),
    ("auditor", "DELETE", "/v1/omega?reason=x"),
    ("trader", "POST", "/v1/trading-state"),
    ("trader", "POST", "/v1/policies/reload"),
    ("trader", "POST", "/v1/sim/quotes"),
    ("trader", "GET", "/v1/audit"),
    ("compliance", "GET", "/v1/orders"),
]


@dataclass
class Desk:
    client: TestClient[Any]
    runtime: Runtime
    tokens: dict[str, str]

    def call(
        self, role: str | None, method: str, path: str, body: str | None = None, token: str = ""
    ) -> Any:
        headers = {"Content-Type": "application/json"}
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, content=body, headers=headers)

    def chain(self) -> list[dict[str, Any]]:
        return list(self.runtime.store.audit_records(0))

    def logged_by(self, role: str | None, method: str, path: str, body: str | None = None) -> Any:
        """The answer, after asserting that the call appended exactly one record."""
        before = len(self.chain())
        response = self.call(role, method, path, body)
        after = self.chain()
        assert len(after) == before + 1, (method, path, body, response.status_code)
        return response, after[-1]

    def assert_verifies(self) -> None:
        report = self.call("auditor", "GET", "/v1/audit/verify").json()
        assert report["ok"] is True, report
        assert report["findings"] == []


@pytest.fixture
def desk(client: TestClient[Any], runtime: Runtime, tokens: dict[str, str]) -> Desk:
    return Desk(client, runtime, tokens)


@pytest.fixture
def resting(desk: Desk, make_order: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Simulation mode and one limit order resting at the broker."""
    mode = desk.call("compliance", "POST", "/v1/mode", '{"mode":"simulation","reason":"t"}')
    assert mode.status_code == 200
    order = desk.call(
        "trader", "POST", "/v1/orders", json.dumps(make_order(client_order_id="rest-1"))
    )
    assert (order.status_code, order.json()["order_status"]) == (201, "accepted")
    return dict(order.json())


def test_attempts_when_a_client_order_id_is_reused_then_one_record_each_naming_the_original(
    desk: Desk, resting: dict[str, Any], make_order: Callable[..., dict[str, Any]]
) -> None:
    same = json.dumps(make_order(client_order_id="rest-1"))
    other = json.dumps(make_order(client_order_id="rest-1", quantity=7))

    replay, replay_record = desk.logged_by("trader", "POST", "/v1/orders", same)
    conflict, conflict_record = desk.logged_by("trader", "POST", "/v1/orders", other)

    # the answers are as before: the original record (201), and a 409
    assert (replay.status_code, replay.json()) == (201, resting)
    assert (conflict.status_code, conflict.json()["code"]) == (409, "client_order_id_conflict")
    assert conflict.json()["record"] == conflict_record
    for record, quantity in ((replay_record, resting["quantity"]), (conflict_record, 7)):
        assert record["order_status"] == "rejected"
        assert record["operation"] == "submit"
        assert record["order_id"] != resting["order_id"]
        assert record["original_order_id"] == resting["order_id"]
        assert record["original_hash"] == resting["hash"]
        assert record["quantity"] == quantity
        assert [e["field"] for e in record["errors"]] == ["client_order_id"]
    assert "retry" in replay_record["errors"][0]["message"]
    assert "different body" in conflict_record["errors"][0]["message"]
    # the original is untouched: its latest record, its status, its place in the list
    original = desk.call("trader", "GET", f"/v1/orders/{resting['order_id']}").json()
    assert original == resting
    listed = desk.call("trader", "GET", "/v1/orders").json()["orders"]
    assert [r["order_id"] for r in listed if r["order_status"] != "rejected"] == [
        resting["order_id"]
    ]
    # looked up by its client order id, the order is found alone, not a retry of it
    found = desk.call("trader", "GET", "/v1/orders?client_order_id=rest-1").json()["orders"]
    assert found == [resting]
    # neither counts as flow: the next new order is not a duplicate of them
    fresh = desk.call(
        "trader", "POST", "/v1/orders", json.dumps(make_order(client_order_id="new-1", quantity=9))
    )
    assert fresh.status_code == 201, fresh.json()
    desk.assert_verifies()


@pytest.mark.parametrize(("role", "path"), BODY_ROUTES)
def test_attempts_when_the_body_is_not_an_object_then_422_and_one_rejected_record(
    desk: Desk, resting: dict[str, Any], role: str, path: str
) -> None:
    target = path.format(order_id=resting["order_id"])
    for body in NON_OBJECTS:
        if body == "null" and path in OPTIONAL_BODY:
            continue
        response, record = desk.logged_by(role, "POST", target, body)

        assert response.status_code == 422, (target, body, response.json())
        assert response.json()["record"] == record
        assert record["order_status"] == "rejected"
        assert record["actor"] == token_id_of(desk.tokens[role])
        assert [e["field"] for e in record["errors"]] == ["(body)"]
    assert desk.call("trader", "GET", f"/v1/orders/{resting['order_id']}").json() == resting
    desk.assert_verifies()


def test_attempts_when_a_quote_or_a_control_change_is_refused_then_one_record_each(
    desk: Desk, resting: dict[str, Any]
) -> None:
    order_id = resting["order_id"]
    cases = [
        ("admin", "POST", "/v1/sim/quotes", '{"symbol":"aapl","bid":-1}', 422),
        ("admin", "POST", "/v1/sim/quotes", '{"symbol":"AAPL","bid":"x"}', 422),
        ("compliance", "POST", "/v1/mode", '{"mode":"live"}', 409),
        ("compliance", "POST", "/v1/mode", '{"mode":"bogus"}', 422),
        ("compliance", "POST", "/v1/omega", "{}", 422),
        ("compliance", "DELETE", "/v1/omega", None, 422),
        ("compliance", "DELETE", "/v1/omega?reason=x&extra=1", None, 400),
        ("compliance", "POST", "/v1/trading-state", '{"scope":"","state":"x"}', 422),
        ("compliance", "POST", "/v1/policies/reload", '{"force":true}', 422),
        ("compliance", "POST", f"/v1/orders/{order_id}/cancel", None, 422),  # no reason
        # a reason is text a record keeps for a reader: no NUL or control, bounded
        ("compliance", "POST", "/v1/mode", '{"mode":"simulation","reason":"a\\u0000b"}', 422),
        ("compliance", "POST", "/v1/omega", '{"reason":"stop\\u001b[2J"}', 422),
        ("compliance", "DELETE", "/v1/omega?reason=a%00b", None, 422),
        ("compliance", "POST", "/v1/trading-state", '{"state":"halted","reason":"x\\u0085"}', 422),
        (
            "compliance",
            "POST",
            f"/v1/orders/{order_id}/cancel",
            '{"reason":"' + "r" * 501 + '"}',
            422,
        ),
        ("trader", "POST", f"/v1/orders/{order_id}/cancel", '{"reason":5}', 422),
        ("trader", "POST", f"/v1/orders/{order_id}/replace", '{"symbol":"MSFT"}', 422),
        ("trader", "POST", "/v1/orders/ORD-2026-999999/cancel", None, 404),
        ("trader", "POST", "/v1/orders/ORD-2026-999999/replace", '{"quantity":5}', 404),
    ]
    for role, method, path, body, status in cases:
        response, record = desk.logged_by(role, method, path, body)

        assert response.status_code == status, (path, body, response.json())
        assert record["order_status"] == "rejected", (path, body)
        assert record["errors"], (path, body)
        if status == 404:  # nothing may show whether the order exists
            assert response.json() == {
                "code": "not_found",
                "detail": f"no order {path.split('/')[3]}",
                "errors": [],
            }
            assert record["original_order_id"] == "ORD-2026-999999"
    cancelled = desk.call("trader", "POST", f"/v1/orders/{order_id}/cancel")
    again, record = desk.logged_by("trader", "POST", f"/v1/orders/{order_id}/cancel")
    assert (cancelled.status_code, again.status_code) == (200, 409)
    assert (record["original_order_id"], record["operation"]) == (order_id, "cancel")
    assert desk.call("compliance", "GET", "/v1/mode").json()["mode"] == "simulation"
    desk.assert_verifies()


@pytest.mark.parametrize(("role", "method", "path"), REFUSED_ROLES)
def test_attempts_when_the_role_is_refused_then_403_logged_with_actor_route_and_reason(
    desk: Desk, resting: dict[str, Any], role: str, method: str, path: str
) -> None:
    target = path.format(order_id=resting["order_id"])
    body = "{}" if method == "POST" else None

    response, record = desk.logged_by(role, method, target, body)

    template = path.split("?")[0]
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    assert response.json()["record"] == record
    assert record["order_status"] == "rejected"
    assert record["actor"] == token_id_of(desk.tokens[role])
    assert record["route"] == f"{method} {template}"
    assert record["errors"] == [
        {"field": "(role)", "message": f"role {role!r} may not call {method} {template}"}
    ]
    if "{order_id}" in path:
        assert record["original_order_id"] == resting["order_id"]
    desk.assert_verifies()


def test_attempts_when_the_token_is_missing_or_wrong_then_401_and_nothing_logged(
    desk: Desk, make_order: Callable[..., dict[str, Any]]
) -> None:
    before = desk.chain()
    order = json.dumps(make_order())
    answers = []
    for method, path, body in (
        ("POST", "/v1/orders", order),
        ("POST", "/v1/orders", "[]"),
        ("POST", "/v1/mode", '{"mode":"simulation"}'),
        ("DELETE", "/v1/omega?reason=x", None),
        ("POST", "/v1/sim/quotes", '{"symbol":"aapl"}'),
        ("GET", "/v1/audit", None),
    ):
        for token in ("", "apx_0000_nope", desk.tokens["admin"] + "x"):
            answers.append(desk.call(None, method, path, body, token=token).status_code)

    assert set(answers) == {401}
    assert desk.chain() == before


def test_attempts_when_16_submits_share_a_client_order_id_then_16_records_and_one_order_sent(
    desk: Desk,
    runtime: Runtime,
    resting: dict[str, Any],
    make_order: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = runtime.gateway.broker_for("simulation")
    assert broker is not None
    sent: list[BrokerOrder] = []
    real = broker.submit

    def recording(order: BrokerOrder) -> BrokerAck:
        sent.append(order)
        return real(order)

    monkeypatch.setattr(broker, "submit", recording)
    bodies = [json.dumps(make_order(client_order_id="race-16", quantity=10 + n)) for n in range(16)]
    start = threading.Barrier(16, timeout=10)
    before = len(desk.chain())

    def submit(body: str) -> Any:
        start.wait()
        return desk.call("trader", "POST", "/v1/orders", body)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(submit, bodies))

    added = desk.chain()[before:]
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * 15
    routed = [a.json() for a in answers if a.status_code == 201]
    assert [o.order_id for o in sent] == [routed[0]["order_id"]]
    # 16 attempts, one record each, plus the original's confirmation by the broker
    assert len({r["order_id"] for r in added}) == 16
    originals = [r for r in added if r["order_status"] != "rejected"]
    conflicts = [r for r in added if r["order_status"] == "rejected"]
    assert [(r["order_id"], r["order_status"]) for r in originals] == [
        (routed[0]["order_id"], "submitted"),
        (routed[0]["order_id"], routed[0]["order_status"]),
    ]
    assert len(conflicts) == 15
    assert {r["original_order_id"] for r in conflicts} == {routed[0]["order_id"]}
    desk.assert_verifies()
