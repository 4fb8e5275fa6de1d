"""The HTTP API of SPEC section 8 through Litestar's test client, on SQLite and
on PostgreSQL: status codes, error codes, the records, and the audit chain
after every write."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from litestar.testing import TestClient

import engine.policy.evaluator
from api.app import create_app
from api.auth import CACHE_SECONDS, ROLES, token_id_of
from api.runtime import Runtime
from engine.audit import GENESIS
from engine.broker import BrokerAck, BrokerOrder
from engine.errors import StoreUnavailable
from engine.gateway import Actor
from engine.lifecycle import OrderStatus

POLICIES = Path(__file__).resolve().parents[2] / "policies"

# SPEC section 7: the source design's fields and the extra ones
RECORD_FIELDS = {
    "order_id", "symbol", "timestamp", "side", "quantity", "order_type", "limit_price",
    "decision_reason", "risk_checks_run", "risk_check_results", "fail_closed_triggers",
    "order_status", "broker_response", "client_order_id", "mode", "broker", "policy_digest",
    "compliance_digest", "actor", "prev_hash", "hash",
}  # fmt: skip


class MovableClock(Protocol):
    """The `clock` fixture: a fixed instant that a test moves on."""

    def advance(self, seconds: float) -> None: ...


@dataclass
class Api:
    """The test client with a bearer token per role; requests default to the trader."""

    client: TestClient[Any]
    auth: dict[str, dict[str, str]]

    def get(self, path: str, role: str = "trader", **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.auth[role], **kwargs)

    def post(self, path: str, role: str = "trader", **kwargs: Any) -> Any:
        return self.client.post(path, headers=self.auth[role], **kwargs)

    def delete(self, path: str, role: str = "trader", **kwargs: Any) -> Any:
        return self.client.delete(path, headers=self.auth[role], **kwargs)

    def enter(self, mode: str) -> None:
        response = self.post("/v1/mode", "compliance", json={"mode": mode, "reason": "test"})
        assert response.status_code == 200, response.text

    def audit(self) -> list[dict[str, Any]]:
        """The audit log after the service's start, in chain order: the chain opens
        with the verification of the compliance configuration, checked here."""
        return self.chain()[1:]

    def chain(self) -> list[dict[str, Any]]:
        """The whole audit log, in chain order."""
        page = self.get("/v1/audit", "auditor", params={"limit": 1000}).json()
        records: list[dict[str, Any]] = page["records"]
        start = records[0]
        assert (start["kind"], start["trigger"], start["in_force"]) == (
            "verification", "start", True), start  # fmt: skip
        return records

    def assert_chain_ok(self) -> None:
        report = self.get("/v1/audit/verify", "auditor").json()
        assert report["ok"] is True, report
        assert report["first_break"] is None
        assert report["records"] == len(self.chain())


@pytest.fixture
def api(client: TestClient[Any], auth: dict[str, dict[str, str]]) -> Api:
    return Api(client, auth)


@pytest.fixture
def broker_calls(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[BrokerOrder]:
    """Every order the simulated broker is asked to submit."""
    broker = runtime.gateway.broker_for("simulation")
    assert broker is not None
    calls: list[BrokerOrder] = []
    real = broker.submit

    def recording(order: BrokerOrder) -> BrokerAck:
        calls.append(order)
        return real(order)

    monkeypatch.setattr(broker, "submit", recording)
    return calls


def market(**changes: Any) -> dict[str, Any]:
    return {"order_type": "market", "limit_price": None, **changes}


def fail_transactions(
    monkeypatch: pytest.MonkeyPatch, runtime: Runtime, failing: set[int], message: str
) -> list[int]:
    """The store's write transactions numbered in `failing` (1 = the next one) fail
    as a failing disk or database makes them fail (the store's `StoreUnavailable`);
    the list of transactions attempted so far."""
    store = runtime.store
    real = store.transact
    attempts: list[int] = []

    def transact(work: Any) -> Any:
        attempts.append(1)
        if len(attempts) in failing:
            raise StoreUnavailable(message)
        return real(work)

    monkeypatch.setattr(store, "transact", transact)
    return attempts


def refused_attempts(api: Api) -> list[tuple[str, list[str]]]:
    """The chain, each record a refused attempt (`rejected`): its operation and the
    fields it names; anything else in the chain fails the calling test."""
    records = api.audit()
    assert all(r.get("order_status") == "rejected" for r in records), records
    return [(r["operation"], [e["field"] for e in r["errors"]]) for r in records]


def order_rows(api: Api, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = api.get("/v1/orders", params=params).json()["orders"]
    return rows


# --- evaluate --------------------------------------------------------------------------


def test_evaluate_when_every_check_passes_then_200_evaluated_and_logged(
    api: Api, make_order: Callable[..., dict[str, Any]], tokens: dict[str, str]
) -> None:
    response = api.post("/v1/orders/evaluate", json=make_order())

    record = response.json()
    assert response.status_code == 200
    assert set(record) >= RECORD_FIELDS
    assert record["order_id"] == "ORD-2026-000001"
    assert record["order_status"] == "evaluated"
    assert record["timestamp"] == "2026-11-30T15:00:00Z"
    assert record["fail_closed_triggers"] == []
    assert set(record["risk_check_results"].values()) == {"pass"}
    assert list(record["risk_check_results"]) == record["risk_checks_run"]
    assert {"volatility_check", "spread_check", "regime_check", "entropy_check"} <= set(
        record["risk_checks_run"]
    )
    assert (record["mode"], record["broker"], record["broker_response"]) == ("research", None, None)
    assert record["prev_hash"] == api.chain()[0]["hash"]  # the start verification's
    assert api.chain()[0]["prev_hash"] == GENESIS
    assert record["policy_digest"] == api.get("/v1/policies").json()["policy_digest"]
    assert record["actor"] == tokens["trader"].split("_")[1]  # the token id, never the token
    assert api.audit() == [record]
    api.assert_chain_ok()


def test_evaluate_when_symbol_is_restricted_then_200_blocked_with_compliance_failure(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    response = api.post("/v1/orders/evaluate", json=make_order(symbol="RSTR"))

    record = response.json()
    assert response.status_code == 200
    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["compliance_failure"]
    assert record["risk_check_results"]["restricted_symbol_check"] == "fail"
    assert [r["code"] for r in record["reasons"]] == ["SYMBOL_RESTRICTED"]
    api.assert_chain_ok()


def test_evaluate_when_fields_are_invalid_then_422_naming_every_field_path(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    order = make_order(quantity=-5, colour="blue")
    order["context"]["quote"]["bid"] = "150.20"

    response = api.post("/v1/orders/evaluate", json=order)

    body = response.json()
    assert response.status_code == 422
    assert body["code"] == "invalid_order"
    assert {e["field"] for e in body["errors"]} == {"quantity", "colour", "context.quote.bid"}
    assert body["record"]["order_status"] == "rejected"
    assert body["record"]["errors"] == body["errors"]
    assert api.audit()[-1] == body["record"]
    api.assert_chain_ok()


# --- submit: validation ----------------------------------------------------------------

# (case, changes to a valid order, the field the 422 names)
INVALID_ORDERS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown_field", {"colour": "blue"}, "colour"),
    ("quantity_as_text", {"quantity": "100"}, "quantity"),
    ("quantity_not_positive", {"quantity": 0}, "quantity"),
    ("quantity_huge", {"quantity": 1e300}, "quantity"),
    ("quantity_huge_integer", {"quantity": 10**19}, "quantity"),  # no SQLite INTEGER holds it
    ("limit_price_beyond_any_float", {"limit_price": 10**400}, "limit_price"),
    ("limit_without_price", {"limit_price": None}, "limit_price"),
    ("market_with_price", {"order_type": "market"}, "limit_price"),
    ("unknown_side", {"side": "hold"}, "side"),
    ("nested_wrong_type", {"context": {"volatility": "high"}}, "context.volatility"),
    ("bad_symbol", {"symbol": "aapl; drop table"}, "symbol"),
]


def test_submit_when_input_is_invalid_then_422_naming_the_field_and_logged(
    api: Api, make_order: Callable[..., dict[str, Any]], broker_calls: list[BrokerOrder]
) -> None:
    api.enter("simulation")
    got = []

    for case, changes, _ in INVALID_ORDERS:
        response = api.post("/v1/orders", json=make_order(**changes))
        body = response.json()
        fields = [e["field"] for e in body.get("errors", [])]
        got.append((case, response.status_code, body.get("code"), fields))
        assert body["record"]["order_status"] == "rejected", case
        assert api.audit()[-1] == body["record"], case

    assert got == [(case, 422, "invalid_order", [field]) for case, _, field in INVALID_ORDERS]
    assert broker_calls == []
    api.assert_chain_ok()


def test_submit_when_a_number_is_nan_then_422_naming_it(api: Api) -> None:
    content = b'{"client_order_id": "n-1", "symbol": "AAPL", "side": "buy", '
    content += b'"quantity": NaN, "order_type": "market"}'

    response = api.post("/v1/orders", content=content)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "quantity", "message": "Input should be a finite number"}
    ]
    api.assert_chain_ok()


@pytest.mark.parametrize(
    "content",
    [
        b'{"client_order_id": ',
        b'{"client_order_id": "s-1", "decision_reason": "\\ud800"}',
        b'{"client_order_id": "s-1", "\\udfff": 1}',
    ],
    ids=[
        "truncated",
        "lone_surrogate_value",
        "lone_surrogate_key",
    ],
)
def test_submit_when_json_is_malformed_then_422_malformed_json_and_logged(
    api: Api, content: bytes
) -> None:
    response = api.post("/v1/orders", content=content)

    body = response.json()
    assert response.status_code == 422
    assert body["code"] == "malformed_json"
    assert body["errors"][0]["field"] == "(body)"
    assert body["record"]["order_status"] == "rejected"
    assert body["record"]["operation"] == "submit"
    assert api.audit() == [body["record"]]
    api.assert_chain_ok()


@pytest.mark.parametrize(
    ("content", "code", "field"),
    [
        (b'{"client_order_id": "s-1", "decision_reason": "\xed\xa0\x80"}', "not_utf8", "(body)"),
        ('{"client_order_id": "s-1"}'.encode("utf-16"), "not_utf8", "(body)"),
        (b'\xef\xbb\xbf{"client_order_id": "s-1"}', "byte_order_mark", "(body)"),
        (b'{"symbol": "RSTR", "quantity": 5, "symbol": "AAPL"}', "duplicate_key", "symbol"),
        (b'{"context": {"quote": {"bid": 1, "bid": 2}}}', "duplicate_key", "bid"),
        (b"[" * 30_000 + b"]" * 30_000, "nesting_too_deep", "(body)"),
    ],
    ids=[
        "surrogate_as_utf8_bytes",
        "utf16",
        "byte_order_mark",
        "duplicate_key",
        "nested_duplicate",
        "nested_too_deep",
    ],
)
def test_submit_when_body_is_json_only_to_a_lenient_reader_then_422_named_and_logged(
    api: Api, content: bytes, code: str, field: str
) -> None:
    response = api.post("/v1/orders", content=content)

    body = response.json()
    assert response.status_code == 422
    assert (body["code"], body["errors"][0]["field"]) == (code, field)
    assert body["record"]["order_status"] == "rejected"
    assert api.audit() == [body["record"]]
    api.assert_chain_ok()


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_submit_when_body_is_over_64_kib_then_413_body_too_large_and_logged(
    api: Api, chunked: bool
) -> None:
    payload = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    content: Any = iter([payload[:40_000], payload[40_000:]]) if chunked else payload

    response = api.post("/v1/orders", content=content)

    body = response.json()
    assert response.status_code == 413
    assert body["code"] == "body_too_large"
    assert body["detail"] == "body is over 65536 bytes"
    assert body["record"]["order_status"] == "rejected"
    assert api.audit() == [body["record"]]
    api.assert_chain_ok()


def test_submit_when_rejected_then_its_client_order_id_stays_free(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.enter("simulation")
    bad = api.post("/v1/orders", json=make_order(client_order_id="c-1", quantity=0))

    good = api.post("/v1/orders", json=make_order(client_order_id="c-1"))

    assert (bad.status_code, good.status_code) == (422, 201)
    assert good.json()["order_status"] == "accepted"
    api.assert_chain_ok()


# --- submit: modes and routing ---------------------------------------------------------


def test_submit_when_mode_is_research_then_403_mode_research_and_never_routed(
    api: Api, make_order: Callable[..., dict[str, Any]], broker_calls: list[BrokerOrder]
) -> None:
    response = api.post("/v1/orders", json=make_order(**market()))

    record = response.json()
    assert response.status_code == 403
    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["mode_research"]
    assert record["mode"] == "research"
    assert record["broker"] is None
    assert broker_calls == []
    api.assert_chain_ok()


def test_submit_when_in_simulation_then_market_order_is_201_filled(
    api: Api, make_order: Callable[..., dict[str, Any]], broker_calls: list[BrokerOrder]
) -> None:
    api.enter("simulation")

    response = api.post("/v1/orders", json=make_order(**market()))

    record = response.json()
    assert response.status_code == 201
    assert record["order_status"] == "filled"
    assert record["broker_response"] == {
        "status": "filled",
        "broker_order_id": "SIM-000001",
        "filled_quantity": 100.0,
        "average_price": 150.3,
    }
    assert (record["mode"], record["broker"]) == ("simulation", "simulated")
    assert [o.order_id for o in broker_calls] == [record["order_id"]]
    assert api.get(f"/v1/orders/{record['order_id']}").json() == record
    assert [(r.get("kind"), r.get("order_status")) for r in api.audit()] == [
        ("mode_changed", None),
        (None, "submitted"),  # committed before the broker was called
        (None, "filled"),
    ]
    api.assert_chain_ok()


def test_submit_when_repeated_with_same_body_then_same_record_and_status(
    api: Api, make_order: Callable[..., dict[str, Any]], broker_calls: list[BrokerOrder]
) -> None:
    api.enter("simulation")
    order = make_order(**market())
    first = api.post("/v1/orders", json=order)
    logged = len(api.audit())

    again = api.post("/v1/orders", json=order)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert len(broker_calls) == 1
    # the retry is logged: one rejected record naming the original, which stays as it was
    retry = api.audit()[logged:]
    assert [(r["order_status"], r["original_order_id"]) for r in retry] == [
        ("rejected", first.json()["order_id"])
    ]
    assert [r["order_id"] for r in order_rows(api) if r["order_status"] != "rejected"] == [
        first.json()["order_id"]
    ]
    api.assert_chain_ok()


def test_submit_when_blocked_order_is_repeated_then_same_403_record(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    order = make_order()
    first = api.post("/v1/orders", json=order)

    again = api.post("/v1/orders", json=order)

    assert (first.status_code, again.status_code) == (403, 403)
    assert again.json() == first.json()
    api.assert_chain_ok()


def test_submit_when_client_order_id_is_reused_with_another_body_then_409_conflict(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.enter("simulation")
    first = api.post("/v1/orders", json=make_order(client_order_id="dup-1", **market()))

    other = api.post(
        "/v1/orders", json=make_order(client_order_id="dup-1", quantity=200, **market())
    )

    body = other.json()
    assert first.status_code == 201
    assert other.status_code == 409
    assert body["code"] == "client_order_id_conflict"
    # the conflict is an attempt of its own, rejected, naming the original
    assert body["record"]["order_status"] == "rejected"
    assert body["record"]["original_order_id"] == first.json()["order_id"]
    assert body["record"]["original_hash"] == first.json()["hash"]
    assert body["record"] == api.audit()[-1]
    assert [r["order_status"] for r in order_rows(api)] == [
        "rejected",
        first.json()["order_status"],
    ]
    api.assert_chain_ok()


# --- submit: state the gateway keeps between orders --------------------------------------


def test_submit_when_one_client_order_id_races_on_threads_then_one_order_the_rest_replays(
    runtime: Runtime,
    api: Api,
    make_order: Callable[..., dict[str, Any]],
    broker_calls: list[BrokerOrder],
) -> None:
    api.enter("simulation")
    racers = 6
    start = threading.Barrier(racers, timeout=10)  # every racer submits at once
    order = make_order(**market(client_order_id="race-1"))
    trader = Actor.of("t", "trader")

    def race(_: int) -> Any:
        start.wait()
        return runtime.gateway.submit(order, trader)

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(race, range(racers)))

    kinds = sorted(o.kind for o in outcomes)
    assert kinds == ["replayed"] * (racers - 1) + ["routed"]
    assert len({o.record["order_id"] for o in outcomes}) == 1
    assert [b.order_id for b in broker_calls] == [outcomes[0].record["order_id"]]
    # found by its client order id, the order alone; each retry is a rejected
    # attempt of its own naming it
    rows = order_rows(api, client_order_id="race-1")
    assert [r["order_id"] for r in rows] == [outcomes[0].record["order_id"]]
    retries = [r for r in order_rows(api) if r.get("original_order_id") == rows[0]["order_id"]]
    assert [r["order_status"] for r in retries] == ["rejected"] * (racers - 1)
    api.assert_chain_ok()


def test_submit_when_identical_order_follows_within_5_s_then_duplicate_until_window_ends(
    api: Api, make_order: Callable[..., dict[str, Any]], clock: MovableClock
) -> None:
    api.enter("simulation")
    first = api.post("/v1/orders", json=make_order(**market()))

    twin = api.post("/v1/orders", json=make_order(**market()))
    clock.advance(5.5)
    later = api.post("/v1/orders", json=make_order(**market()))

    assert first.status_code == 201
    assert twin.status_code == 403
    assert twin.json()["fail_closed_triggers"] == ["risk_denied"]
    assert [r["code"] for r in twin.json()["reasons"]] == ["DUPLICATE_ORDER"]
    assert (later.status_code, later.json()["order_status"]) == (201, "filled")
    api.assert_chain_ok()


def test_submit_when_account_sends_more_than_20_orders_in_1_s_then_throttled_until_it_passes(
    api: Api, make_order: Callable[..., dict[str, Any]], clock: MovableClock
) -> None:
    api.enter("simulation")

    burst = [api.post("/v1/orders", json=make_order(quantity=n, **market())) for n in range(1, 22)]
    clock.advance(1.5)
    after = api.post("/v1/orders", json=make_order(quantity=99, **market()))

    assert [r.status_code for r in burst] == [201] * 20 + [403]
    assert [r["code"] for r in burst[-1].json()["reasons"]] == ["ORDER_RATE_EXCEEDED"]
    assert after.status_code == 201
    api.assert_chain_ok()


def test_submit_when_fills_move_the_position_then_reduce_only_is_judged_against_it(
    api: Api, runtime: Runtime, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.enter("simulation")
    bought = api.post("/v1/orders", json=make_order(**market()))
    position = runtime.store.positions("default")

    # marked short with a locate: what it would flip to is the reduce-only check's alone
    too_much = make_order(
        side="sell", quantity=250, reduce_only=True, short_sale=True, locate_id="L-1", **market()
    )
    refused = api.post("/v1/orders", json=too_much)
    reduced = api.post(
        "/v1/orders", json=make_order(side="sell", quantity=60, reduce_only=True, **market())
    )

    assert bought.status_code == 201
    assert position == {"AAPL": 100.0}
    assert refused.status_code == 403
    assert [r["code"] for r in refused.json()["reasons"]] == ["REDUCE_ONLY_WOULD_INCREASE"]
    assert (reduced.status_code, reduced.json()["order_status"]) == (201, "filled")
    assert runtime.store.positions("default") == {"AAPL": 40.0}
    api.assert_chain_ok()


# --- resting orders: replace, fills, cancel --------------------------------------------


def test_limit_order_when_it_rests_then_replace_quote_and_cancel_follow_its_lifecycle(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.enter("simulation")
    resting = api.post("/v1/orders", json=make_order())  # buy 150.25 under an ask of 150.30
    order_id = resting.json()["order_id"]

    replaced = api.post(f"/v1/orders/{order_id}/replace", json={"limit_price": 150.0})
    bad_context = make_order(context={"data_hash": "sha256:" + "0" * 64})["context"]
    refused = api.post(
        f"/v1/orders/{order_id}/replace", json={"limit_price": 150.1, "context": bad_context}
    )
    still = api.get(f"/v1/orders/{order_id}").json()
    crossed = api.post(
        "/v1/sim/quotes",
        "admin",
        json={"symbol": "AAPL", "bid": 149.9, "ask": 149.95, "last": 149.92},
    )
    cancel_filled = api.post(f"/v1/orders/{order_id}/cancel")

    assert (resting.status_code, resting.json()["order_status"]) == (201, "accepted")
    assert (replaced.status_code, replaced.json()["order_status"]) == (200, "replaced")
    assert replaced.json()["limit_price"] == 150
    assert refused.status_code == 403
    assert refused.json()["order_status"] == "blocked"
    assert refused.json()["fail_closed_triggers"] == ["data_integrity_mismatch"]
    assert (still["order_status"], still["limit_price"]) == ("replaced", 150)
    assert crossed.status_code == 200
    fill = crossed.json()["orders_changed"]
    assert [(r["order_id"], r["order_status"]) for r in fill] == [(order_id, "filled")]
    assert fill[0]["broker_response"]["average_price"] == 149.95
    assert cancel_filled.status_code == 409
    assert cancel_filled.json()["code"] == "order_not_open"
    assert api.get(f"/v1/orders/{order_id}").json()["order_status"] == "filled"
    api.assert_chain_ok()


def test_cancel_when_order_is_working_then_200_cancelled_and_a_second_cancel_409(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.enter("simulation")
    order_id = api.post("/v1/orders", json=make_order()).json()["order_id"]

    cancelled = api.post(f"/v1/orders/{order_id}/cancel")
    again = api.post(f"/v1/orders/{order_id}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.json()["order_status"] == "cancelled"
    assert cancelled.json()["broker_response"]["status"] == "cancelled"
    assert api.get(f"/v1/orders/{order_id}").json()["order_status"] == "cancelled"
    assert (again.status_code, again.json()["code"]) == (409, "order_not_open")
    api.assert_chain_ok()


def test_cancel_and_replace_when_order_is_unknown_then_404(api: Api) -> None:
    cancel = api.post("/v1/orders/ORD-2026-999999/cancel")
    replace = api.post("/v1/orders/ORD-2026-999999/replace", json={"quantity": 5})

    assert (cancel.status_code, cancel.json()["code"]) == (404, "not_found")
    assert (replace.status_code, replace.json()["code"]) == (404, "not_found")


# --- the Omega directive ----------------------------------------------------------------


def test_omega_when_in_force_then_submit_and_replace_blocked_but_cancel_works(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.enter("simulation")
    order_id = api.post("/v1/orders", json=make_order()).json()["order_id"]

    invoked = api.post("/v1/omega", "compliance", json={"reason": "drill"})
    submit = api.post("/v1/orders", json=make_order(quantity=50, **market()))
    replace = api.post(f"/v1/orders/{order_id}/replace", json={"limit_price": 150.0})
    cancel = api.post(f"/v1/orders/{order_id}/cancel")
    cleared = api.delete("/v1/omega", "compliance", params={"reason": "drill over"})
    after = api.post("/v1/orders", json=make_order(quantity=60, **market()))

    assert invoked.status_code == 200
    assert invoked.json()["omega"]["active"] is True
    assert invoked.json()["omega"]["reason"] == "drill"
    assert submit.status_code == 403
    assert submit.json()["fail_closed_triggers"] == ["omega_directive"]
    assert replace.status_code == 403
    assert replace.json()["fail_closed_triggers"] == ["omega_directive"]
    assert (cancel.status_code, cancel.json()["order_status"]) == (200, "cancelled")
    assert cleared.status_code == 200
    assert cleared.json()["omega"]["active"] is False
    assert api.get("/v1/mode").json()["omega"]["active"] is False
    assert (after.status_code, after.json()["order_status"]) == (201, "filled")
    kinds = [r["kind"] for r in api.audit() if "kind" in r]
    assert kinds == ["mode_changed", "omega_invoked", "omega_cleared"]
    api.assert_chain_ok()


def test_omega_when_invoked_with_cancel_open_orders_then_resting_orders_are_cancelled(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.enter("simulation")
    ids = [api.post("/v1/orders", json=make_order(quantity=q)).json()["order_id"] for q in (10, 20)]

    invoked = api.post(
        "/v1/omega", "compliance", json={"reason": "halt", "cancel_open_orders": True}
    )

    assert invoked.status_code == 200
    assert invoked.json()["event"]["cancel_open_orders"] is True
    assert [api.get(f"/v1/orders/{i}").json()["order_status"] for i in ids] == [
        "cancelled",
        "cancelled",
    ]
    api.assert_chain_ok()


def test_omega_when_reason_is_missing_or_role_is_trader_then_refused(api: Api) -> None:
    no_reason = api.post("/v1/omega", "compliance", json={})
    no_clear_reason = api.delete("/v1/omega", "compliance")
    trader = api.post("/v1/omega", json={"reason": "mine"})

    assert (no_reason.status_code, no_reason.json()["code"]) == (422, "invalid_request")
    assert (no_clear_reason.status_code, no_clear_reason.json()["code"]) == (
        422,
        "invalid_request",
    )
    assert (trader.status_code, trader.json()["code"]) == (403, "forbidden")
    assert api.get("/v1/mode").json()["omega"]["active"] is False
    # three refused attempts, each a rejected record; no Omega record
    attempts = [(r["order_status"], r["operation"]) for r in api.audit()]
    assert attempts == [("rejected", "omega")] * 3


# --- mode -------------------------------------------------------------------------------


def test_mode_when_set_to_simulation_then_persisted_for_every_replica(
    api: Api, start_runtime: Callable[..., Runtime]
) -> None:
    before = api.get("/v1/mode", "auditor").json()

    changed = api.post("/v1/mode", "compliance", json={"mode": "simulation", "reason": "go"})

    assert before["mode"] == "research"
    assert before["requirements"]["simulation"] == []
    assert before["requirements"]["paper"] == ["no broker configured for paper mode"]
    assert changed.status_code == 200
    event = changed.json()["event"]
    assert (event["kind"], event["previous"], event["mode"], event["reason"]) == (
        "mode_changed",
        "research",
        "simulation",
        "go",
    )
    assert api.get("/v1/mode").json()["mode"] == "simulation"
    assert start_runtime().gateway.mode() == "simulation"  # another replica, same store
    api.assert_chain_ok()


def test_mode_when_live_is_requested_then_409_mode_requirements_not_met(api: Api) -> None:
    response = api.post("/v1/mode", "compliance", json={"mode": "live"})

    body = response.json()
    assert response.status_code == 409
    assert body["code"] == "mode_requirements_not_met"
    assert body["missing"] != []
    assert api.get("/v1/mode").json()["mode"] == "research"
    assert refused_attempts(api) == [("mode", ["mode"] * len(body["missing"]))]


# --- auth ---------------------------------------------------------------------------------


def test_auth_when_token_is_missing_or_unknown_then_401_unauthorized(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    none = api.client.post("/v1/orders", json=make_order())
    unknown = api.client.post(
        "/v1/orders", json=make_order(), headers={"Authorization": "Bearer apx_0000_nope"}
    )
    basic = api.client.get("/v1/mode", headers={"Authorization": "Basic dXNlcjpwdw=="})

    for response in (none, unknown, basic):
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
    assert api.audit() == []


# (role, method, path, expected status); 403 answers carry code `forbidden`
ROLE_TABLE = [
    ("trader", "POST", "/v1/mode", 403),
    ("trader", "POST", "/v1/omega", 403),
    ("trader", "POST", "/v1/policies/reload", 403),
    ("trader", "GET", "/v1/audit", 403),
    ("trader", "GET", "/v1/orders", 200),
    ("auditor", "GET", "/v1/audit", 200),
    ("auditor", "GET", "/v1/audit/verify", 200),
    ("auditor", "GET", "/v1/orders", 200),
    ("auditor", "POST", "/v1/orders", 403),
    ("auditor", "POST", "/v1/orders/evaluate", 403),
    ("compliance", "POST", "/v1/orders", 403),
    ("compliance", "GET", "/v1/orders", 403),
    ("compliance", "GET", "/v1/mode", 200),
    ("compliance", "GET", "/v1/policies", 200),
    ("admin", "GET", "/v1/audit", 200),
    ("admin", "POST", "/v1/mode", 409),  # allowed; live is refused on its merits
    ("trader", "POST", "/v1/sim/quotes", 403),
    ("compliance", "POST", "/v1/sim/quotes", 403),
    ("auditor", "POST", "/v1/orders/ORD-2026-000001/cancel", 403),
    ("trader", "GET", "/v1/trading-state", 200),
    ("auditor", "GET", "/v1/trading-state", 200),
    ("trader", "POST", "/v1/trading-state", 403),
    ("auditor", "POST", "/v1/trading-state", 403),
]


def test_auth_when_a_role_calls_each_route_then_only_its_own_routes_answer(api: Api) -> None:
    got = []
    for role, method, path, _ in ROLE_TABLE:
        body = {"mode": "live"} if method == "POST" else None
        response = api.client.request(method, path, headers=api.auth[role], json=body)
        code = response.json().get("code") if response.status_code == 403 else None
        got.append((role, method, path, response.status_code))
        if response.status_code == 403:
            assert code == "forbidden"
            assert response.json()["detail"] == f"role {role!r} may not do this"

    assert got == ROLE_TABLE


# --- reading orders and the audit log ------------------------------------------------------


def test_orders_when_listed_then_filters_and_pagination_apply(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    for quantity in (1, 2, 3):
        api.post("/v1/orders/evaluate", json=make_order(quantity=quantity))
    api.post("/v1/orders/evaluate", json=make_order(symbol="MSFT", client_order_id="ms-1"))
    api.post("/v1/orders/evaluate", json=make_order(quantity=0))
    api.post("/v1/orders", json=make_order(quantity=7))

    def ids(**params: Any) -> list[str]:
        return [r["order_id"][-1] for r in order_rows(api, **params)]

    assert ids() == ["6", "5", "4", "3", "2", "1"]
    assert ids(symbol="MSFT") == ["4"]
    assert ids(client_order_id="ms-1") == ["4"]
    assert ids(status="rejected") == ["5"]
    assert ids(status="blocked") == ["6"]
    assert ids(status="evaluated", symbol="AAPL") == ["3", "2", "1"]
    assert ids(account="paper-1") == []
    assert ids(limit=2) == ["6", "5"]
    assert ids(limit=2, offset=2) == ["4", "3"]
    assert ids(offset=6) == []
    page = api.get("/v1/orders", "auditor", params={"limit": 2, "offset": 4}).json()
    assert (page["limit"], page["offset"], page["count"]) == (2, 4, 2)
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        response = api.get("/v1/orders", params=bad)
        assert (response.status_code, response.json()["code"]) == (422, "invalid_query")
    api.assert_chain_ok()


def test_order_when_fetched_by_id_then_its_latest_record_or_404(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    record = api.post("/v1/orders/evaluate", json=make_order()).json()

    found = api.get(f"/v1/orders/{record['order_id']}", "auditor")
    missing = api.get("/v1/orders/ORD-2026-424242")

    assert (found.status_code, found.json()) == (200, record)
    assert missing.status_code == 404
    assert missing.json() == {
        "code": "not_found",
        "detail": "no order ORD-2026-424242",
        "errors": [],
    }


def test_audit_when_read_then_records_page_in_chain_order_and_verify(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    records = [
        api.post("/v1/orders/evaluate", json=make_order(quantity=q)).json() for q in (1, 2, 3)
    ]

    # position 1 is the start verification: the orders are 2, 3 and 4
    page = api.get("/v1/audit", "auditor", params={"after": 2, "limit": 1}).json()
    verify = api.get("/v1/audit/verify", "auditor").json()
    bad = api.get("/v1/audit", "auditor", params={"limit": 0})

    assert api.audit() == records
    assert page == {"records": records[1:2], "after": 2, "limit": 1}
    assert verify == {
        "ok": True,
        "records": 4,
        "head": records[-1]["hash"],
        "first_break": None,
        "scope": "store",
        "head_compared": True,
        "stored_head": {"seq": 4, "hash": records[-1]["hash"]},
        "rows_compared": True,
        "findings": [],
    }
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_query")


# --- operations ---------------------------------------------------------------------------


def test_operations_endpoints_answer_without_a_token(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.post("/v1/orders/evaluate", json=make_order())
    digest = api.get("/v1/policies").json()["policy_digest"]

    health = api.client.get("/healthz")
    ready = api.client.get("/readyz")
    metrics = api.client.get("/metrics")
    docs = api.client.get("/schema")
    openapi = api.client.get("/schema/openapi.json")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    body = ready.json()
    compliance = body.pop("compliance")
    assert (ready.status_code, body) == (
        200,
        {"ready": True, "database": True, "policy_digest": digest, "reasons": []},
    )
    # no compliance officer in a test's data directory: the development root
    assert (compliance["in_force"], compliance["trust"], compliance["version"]) == (
        True, "development", 1)  # fmt: skip
    assert compliance["policy_digest"] == compliance["loaded_policy_digest"] == digest
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'apex_decisions_total{operation="evaluate",outcome="evaluated"} 1.0' in metrics.text
    assert docs.status_code == 200
    assert openapi.status_code == 200
    paths = openapi.json()["paths"]
    assert {"/v1/orders", "/v1/orders/evaluate", "/v1/audit/verify"} <= set(paths)


def test_create_app_when_built_then_root_logging_is_left_to_the_process(runtime: Runtime) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)

    create_app(runtime)

    assert (list(root.handlers), root.level) == before


# --- policies -----------------------------------------------------------------------------


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


@pytest.fixture
def copy_api(start_runtime: Callable[..., Runtime], policy_copy: Path) -> Iterator[Api]:
    """The API of a runtime whose policies are a copy the test may edit."""
    runtime = start_runtime(policies=policy_copy)
    headers = {
        role: {"Authorization": f"Bearer {runtime.tokens.create(role, role, runtime.clock())}"}
        for role in ROLES
    }
    with TestClient(create_app(runtime)) as test_client:
        yield Api(test_client, headers)


def test_policy_reload_when_new_set_is_invalid_then_422_and_old_set_stays(
    copy_api: Api, policy_copy: Path, make_order: Callable[..., dict[str, Any]]
) -> None:
    before = copy_api.get("/v1/policies").json()
    flow = policy_copy / "order_flow.yaml"
    flow.write_text(flow.read_text().replace("field: session_open", "field: session_opened"))

    response = copy_api.post("/v1/policies/reload", "compliance")

    body = response.json()
    assert response.status_code == 422
    assert body["code"] == "policy_invalid"
    assert [(i["code"], i["rule_id"], i["line"]) for i in body["issues"]] == [
        ("unknown_field", "session_hours_check", 27)
    ]
    assert copy_api.get("/v1/policies").json() == before
    evaluated = copy_api.post("/v1/orders/evaluate", json=make_order()).json()
    assert evaluated["order_status"] == "evaluated"
    assert evaluated["policy_digest"] == before["policy_digest"]
    copy_api.assert_chain_ok()


def test_policy_reload_when_new_set_is_valid_then_it_is_used(
    copy_api: Api, policy_copy: Path, make_order: Callable[..., dict[str, Any]]
) -> None:
    before = copy_api.get("/v1/policies").json()["policy_digest"]
    flow = policy_copy / "order_flow.yaml"
    flow.write_text(flow.read_text().replace("Throttle;", "Throttle (reviewed);"))

    trader = copy_api.post("/v1/policies/reload")
    response = copy_api.post("/v1/policies/reload", "compliance")

    after = response.json()["policy_digest"]
    assert trader.status_code == 403
    assert response.status_code == 200
    assert after != before
    assert copy_api.get("/v1/policies").json()["policy_digest"] == after
    assert copy_api.post("/v1/orders/evaluate", json=make_order()).json()["policy_digest"] == after
    copy_api.assert_chain_ok()


# --- fail-closed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [ConnectionResetError("connection reset by peer"), TimeoutError("no answer in 5 s")],
    ids=["connection_reset", "timeout"],
)
def test_submit_when_broker_call_fails_then_502_blocked_broker_api_error_and_logged(
    api: Api,
    runtime: Runtime,
    make_order: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    fault: Exception,
) -> None:
    api.enter("simulation")

    def failing(order: BrokerOrder) -> BrokerAck:
        raise fault

    monkeypatch.setattr(runtime.gateway.broker_for("simulation"), "submit", failing)

    response = api.post("/v1/orders", json=make_order(**market()))

    record = response.json()
    detail = f"{type(fault).__name__}: {fault}"
    assert response.status_code == 502
    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["broker_api_error"]
    assert record["broker_response"] == {"status": "error", "detail": detail}
    assert record["reasons"][-1]["code"] == "BROKER_API_ERROR"
    assert api.get(f"/v1/orders/{record['order_id']}").json() == record
    assert [r["order_status"] for r in api.audit() if "order_id" in r] == ["submitted", "blocked"]
    api.assert_chain_ok()


def test_submit_when_broker_rejects_then_502_blocked_with_its_answer(
    api: Api,
    runtime: Runtime,
    make_order: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api.enter("simulation")

    def rejecting(order: BrokerOrder) -> BrokerAck:
        # a broker's refusal is a blocked order (SPEC section 7)
        return BrokerAck(
            order.order_id, "SIM-REJ-1", OrderStatus.BLOCKED, detail="insufficient funds"
        )

    monkeypatch.setattr(runtime.gateway.broker_for("simulation"), "submit", rejecting)

    response = api.post("/v1/orders", json=make_order(**market()))

    record = response.json()
    assert response.status_code == 502
    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["broker_api_error"]
    assert record["broker_response"] == {
        "status": "blocked",
        "broker_order_id": "SIM-REJ-1",
        "detail": "insufficient funds",
    }
    assert record["reasons"][-1]["code"] == "BROKER_REJECTED"
    api.assert_chain_ok()


def test_submit_when_audit_log_cannot_be_written_then_503_and_broker_never_called(
    api: Api,
    runtime: Runtime,
    make_order: Callable[..., dict[str, Any]],
    broker_calls: list[BrokerOrder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api.enter("simulation")
    logged = api.audit()
    fail_transactions(monkeypatch, runtime, {1}, "disk I/O error")
    order = make_order(**market())

    response = api.post("/v1/orders", json=order)
    retry = api.post("/v1/orders", json=order)

    body = response.json()
    assert response.status_code == 503
    assert body["code"] == "audit_unavailable"
    assert body["record"]["order_status"] == "blocked"
    assert [o.order_id for o in broker_calls] == [retry.json()["order_id"]]
    assert retry.status_code == 201  # the failed attempt claimed nothing
    assert api.audit()[: len(logged)] == logged
    assert len(order_rows(api)) == 1
    api.assert_chain_ok()


class _SnapshotFails:
    """A store writer whose state read fails; everything else it does as usual."""

    def __init__(self, writer: Any, message: str) -> None:
        self._writer = writer
        self._message = message

    def snapshot(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable(self._message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


def test_submit_when_the_trading_state_cannot_be_read_then_blocked_logged_and_not_sent(
    api: Api,
    runtime: Runtime,
    make_order: Callable[..., dict[str, Any]],
    broker_calls: list[BrokerOrder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api.enter("simulation")
    real = runtime.store.transact
    message = "database disk image is malformed"
    monkeypatch.setattr(
        runtime.store, "transact", lambda work: real(lambda w: work(_SnapshotFails(w, message)))
    )

    evaluated = api.post("/v1/orders/evaluate", json=make_order())
    submitted = api.post("/v1/orders", json=make_order(client_order_id="state-1"))

    assert (evaluated.status_code, submitted.status_code) == (200, 403)
    for record in (evaluated.json(), submitted.json()):
        assert record["order_status"] == "blocked"
        assert record["fail_closed_triggers"] == ["engine_error"]
        assert [r["code"] for r in record["reasons"]] == ["STATE_UNAVAILABLE"]
        assert "malformed" in record["reasons"][0]["detail"]
    assert broker_calls == []
    assert api.audit()[-2:] == [evaluated.json(), submitted.json()]
    api.assert_chain_ok()


def test_submit_when_outcome_cannot_be_logged_after_the_broker_acted_then_503_not_500(
    api: Api,
    runtime: Runtime,
    make_order: Callable[..., dict[str, Any]],
    broker_calls: list[BrokerOrder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api.enter("simulation")
    fail_transactions(monkeypatch, runtime, {2}, "disk I/O error")  # 1: the approval

    response = api.post("/v1/orders", json=make_order(**market()))

    body = response.json()
    assert response.status_code == 503
    assert body["code"] == "audit_unavailable"
    assert len(broker_calls) == 1  # the broker did act: the answer says so
    assert body["record"]["order_status"] == "filled"
    assert body["record"]["broker_response"]["status"] == "filled"
    api.assert_chain_ok()


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1/orders/evaluate", 200), ("/v1/orders", 403)],
    ids=["evaluate", "submit"],
)
def test_order_when_evaluation_raises_then_blocked_engine_error_never_approved(
    api: Api,
    make_order: Callable[..., dict[str, Any]],
    broker_calls: list[BrokerOrder],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    status: int,
) -> None:
    api.enter("simulation")

    def broken(*args: Any) -> Any:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(engine.policy.evaluator, "build_fact", broken)

    response = api.post(path, json=make_order(**market()))

    record = response.json()
    assert response.status_code == status
    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["engine_error"]
    assert set(record["risk_check_results"].values()) == {"error"}
    assert record["reasons"] == [
        {
            "check": "engine",
            "result": "error",
            "code": "ENGINE_ERROR",
            "trigger": "engine_error",
            "detail": "ZeroDivisionError: division by zero",
        }
    ]
    assert broker_calls == []
    api.assert_chain_ok()


# --- ownership: a trader's token is bound to accounts --------------------------------------


@pytest.fixture
def paper_desk(api: Api, runtime: Runtime) -> dict[str, str]:
    """The header of a trader token bound to the account `paper-1` alone."""
    token = runtime.tokens.create("trader", "paper desk", runtime.clock(), ["paper-1"])
    api.auth["paper_desk"] = {"Authorization": f"Bearer {token}"}
    return api.auth["paper_desk"]


def test_orders_when_another_accounts_order_is_read_cancelled_or_replaced_then_404_as_if_absent(
    api: Api, make_order: Callable[..., dict[str, Any]], paper_desk: dict[str, str]
) -> None:
    api.enter("simulation")
    theirs = api.post("/v1/orders", json=make_order()).json()  # account `default`, resting
    order_id = theirs["order_id"]

    read = api.get(f"/v1/orders/{order_id}", "paper_desk")
    cancel = api.post(f"/v1/orders/{order_id}/cancel", "paper_desk")
    replace = api.post(f"/v1/orders/{order_id}/replace", "paper_desk", json={"quantity": 5})
    absent = api.get("/v1/orders/ORD-2026-999999", "paper_desk")

    assert theirs["order_status"] == "accepted"
    for response in (read, cancel, replace):
        assert response.status_code == 404
        assert response.json() == {
            "code": "not_found",
            "detail": f"no order {order_id}",
            "errors": [],
        }
    assert absent.json()["detail"] == "no order ORD-2026-999999"
    assert api.get(f"/v1/orders/{order_id}").json() == theirs  # untouched
    api.assert_chain_ok()


def test_orders_when_listed_by_a_bound_trader_then_only_its_accounts_orders(
    api: Api, make_order: Callable[..., dict[str, Any]], paper_desk: dict[str, str]
) -> None:
    default = api.post("/v1/orders/evaluate", json=make_order()).json()
    paper = api.post("/v1/orders/evaluate", "paper_desk", json=make_order(account="paper-1")).json()

    def listed(role: str, **params: Any) -> list[str]:
        rows = api.get("/v1/orders", role, params=params).json()["orders"]
        return [r["order_id"] for r in rows]

    assert paper["order_status"] == "evaluated"
    assert listed("paper_desk") == [paper["order_id"]]
    assert listed("paper_desk", account="default") == []
    assert listed("trader") == [paper["order_id"], default["order_id"]]  # every allowed account
    assert listed("auditor") == [paper["order_id"], default["order_id"]]
    assert api.get(f"/v1/orders/{paper['order_id']}", "paper_desk").json() == paper


def test_cancel_when_compliance_gives_no_reason_then_422_and_with_one_the_record_keeps_it(
    api: Api, make_order: Callable[..., dict[str, Any]], tokens: dict[str, str]
) -> None:
    api.enter("simulation")
    order_id = api.post("/v1/orders", json=make_order()).json()["order_id"]

    bare = api.post(f"/v1/orders/{order_id}/cancel", "compliance")
    blank = api.post(f"/v1/orders/{order_id}/cancel", "compliance", json={"reason": " "})
    still = api.get(f"/v1/orders/{order_id}").json()["order_status"]
    cancelled = api.post(
        f"/v1/orders/{order_id}/cancel", "compliance", json={"reason": "limit breach review"}
    )

    for refused in (bare, blank):
        assert refused.status_code == 422
        assert refused.json()["code"] == "invalid_request"
        assert refused.json()["errors"] == [{"field": "reason", "message": "required string"}]
    assert still == "accepted"
    record = cancelled.json()
    assert cancelled.status_code == 200
    assert record["order_status"] == "cancelled"
    assert record["comment"] == "limit breach review"
    assert record["actor"] == tokens["compliance"].split("_")[1]
    assert api.audit()[-1] == record
    api.assert_chain_ok()


def test_cancel_when_admin_cancels_with_a_reason_then_any_accounts_order_is_cancelled(
    api: Api, make_order: Callable[..., dict[str, Any]], paper_desk: dict[str, str]
) -> None:
    api.enter("simulation")
    order_id = api.post("/v1/orders", "paper_desk", json=make_order(account="paper-1")).json()[
        "order_id"
    ]

    no_reason = api.post(f"/v1/orders/{order_id}/cancel", "admin")
    cancelled = api.post(f"/v1/orders/{order_id}/cancel", "admin", json={"reason": "desk closed"})

    assert no_reason.status_code == 422
    assert cancelled.status_code == 200
    assert (cancelled.json()["order_status"], cancelled.json()["comment"]) == (
        "cancelled",
        "desk closed",
    )
    api.assert_chain_ok()


def test_cancel_when_the_body_is_not_an_object_with_a_string_reason_then_422(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    api.enter("simulation")
    order_id = api.post("/v1/orders", json=make_order()).json()["order_id"]

    listed = api.post(f"/v1/orders/{order_id}/cancel", json=["now"])
    numeric = api.post(f"/v1/orders/{order_id}/cancel", json={"reason": 7})

    for response in (listed, numeric):
        assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
    assert api.get(f"/v1/orders/{order_id}").json()["order_status"] == "accepted"


# --- simulation market data ----------------------------------------------------------------


def test_sim_quotes_when_not_admin_then_403_and_outside_simulation_then_409(
    api: Api, make_order: Callable[..., dict[str, Any]]
) -> None:
    quote = {"symbol": "AAPL", "bid": 149.9, "ask": 149.95, "last": 149.92}

    trader = api.post("/v1/sim/quotes", json=quote)
    research = api.post("/v1/sim/quotes", "admin", json=quote)
    api.enter("simulation")
    simulation = api.post("/v1/sim/quotes", "admin", json=quote)

    assert (trader.status_code, trader.json()["code"]) == (403, "forbidden")
    assert research.status_code == 409
    assert research.json()["code"] == "not_simulation"
    assert research.json()["detail"] == "quotes are for simulation mode (mode: research)"
    refused = [(r["operation"], r["errors"][0]["field"]) for r in api.audit()[:2]]
    assert refused == [("quote", "(role)"), ("quote", "(mode)")]
    assert simulation.status_code == 200
    assert simulation.json() == {"symbol": "AAPL", "orders_changed": []}


def test_sim_quotes_when_the_quote_is_invalid_then_422_naming_the_fields(api: Api) -> None:
    api.enter("simulation")

    response = api.post("/v1/sim/quotes", "admin", json={"symbol": "aapl", "bid": -1})

    body = response.json()
    assert response.status_code == 422
    assert body["code"] == "invalid_quote"
    assert body["detail"] == "invalid quote: bid, symbol"
    assert [e["field"] for e in body["errors"]] == ["bid", "symbol"]


# --- trading states -------------------------------------------------------------------------


def test_trading_state_when_compliance_sets_an_account_to_reducing_then_every_role_sees_it(
    api: Api, tokens: dict[str, str]
) -> None:
    before = api.get("/v1/trading-state", "auditor").json()

    changed = api.post(
        "/v1/trading-state",
        "compliance",
        json={"scope": "paper-1", "state": "reducing", "reason": "desk review"},
    )

    body = changed.json()
    assert before["global"]["state"] == "active"
    assert before["accounts"] == {}
    assert changed.status_code == 200
    event = body["event"]
    assert (event["kind"], event["scope"], event["state"], event["reason"]) == (
        "trading_state_changed",
        "paper-1",
        "reducing",
        "desk review",
    )
    assert event["actor"] == tokens["compliance"].split("_")[1]
    assert body["trading_state"] == api.get("/v1/trading-state").json()
    entry = body["trading_state"]["accounts"]["paper-1"]
    assert (entry["state"], entry["reason"]) == ("reducing", "desk review")
    assert body["trading_state"]["global"]["state"] == "active"
    assert api.audit()[-1] == event
    api.assert_chain_ok()


def test_trading_state_when_global_is_halted_then_it_is_the_omega_directive(api: Api) -> None:
    halted = api.post(
        "/v1/trading-state",
        "compliance",
        json={"scope": "global", "state": "halted", "reason": "market halt"},
    )

    omega = api.get("/v1/mode").json()["omega"]
    assert halted.status_code == 200
    assert halted.json()["event"]["kind"] == "omega_invoked"
    assert (omega["active"], omega["reason"]) == (True, "market halt")
    api.assert_chain_ok()


# (body, the fields the 422 names)
BAD_STATE_CHANGES: list[tuple[dict[str, Any], list[str]]] = [
    ({"scope": "paper-1", "state": "reducing"}, ["reason"]),
    ({"scope": "paper-1", "state": "reducing", "reason": "  "}, ["reason"]),
    ({"scope": "paper-1", "state": "frozen", "reason": "x"}, ["state"]),
    ({"state": "halted", "reason": "x"}, ["scope"]),
    ({"scope": "", "state": "sleepy", "reason": "x"}, ["scope", "state"]),
]


@pytest.mark.parametrize(("body", "fields"), BAD_STATE_CHANGES)
def test_trading_state_when_the_change_is_invalid_then_422_naming_the_fields_only_attempt_logged(
    api: Api, body: dict[str, Any], fields: list[str]
) -> None:
    response = api.post("/v1/trading-state", "compliance", json=body)

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert [e["field"] for e in response.json()["errors"]] == fields
    assert refused_attempts(api) == [("state", fields)]  # no state change


def test_trading_state_when_the_scope_is_not_an_account_id_then_422_refused_by_the_gateway(
    api: Api,
) -> None:
    response = api.post(
        "/v1/trading-state",
        "compliance",
        json={"scope": "no such account!", "state": "halted", "reason": "x"},
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_trading_state"
    assert refused_attempts(api) == [("state", ["scope"])]  # no state change


# --- readiness --------------------------------------------------------------------------------


def test_readyz_when_the_gateway_is_not_ready_then_503_with_its_reasons(
    api: Api, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = ["broker simulated: 2 orders of unknown outcome"]
    monkeypatch.setattr(runtime.gateway, "readiness", lambda: waiting)

    response = api.client.get("/readyz")

    body = response.json()
    assert response.status_code == 503
    assert (body["ready"], body["database"], body["reasons"]) == (False, True, waiting)


def test_readyz_when_the_database_does_not_answer_then_503_naming_it(
    api: Api, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> bool:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(runtime.store, "ping", down)

    response = api.client.get("/readyz")

    body = response.json()
    assert response.status_code == 503
    assert (body["ready"], body["database"]) == (False, False)
    assert body["reasons"][0] == "database: not answering"


# --- errors: one shape --------------------------------------------------------------------------


def test_errors_when_a_query_parameter_is_unknown_repeated_or_malformed_then_400_error_shape(
    api: Api,
) -> None:
    repeated = api.delete("/v1/omega?reason=a&reason=b", "compliance")
    malformed = api.get("/v1/orders", params={"limit": "many"})

    unknown = api.get("/v1/orders", params={"colour": "blue"})

    assert repeated.status_code == 400
    assert {k: v for k, v in repeated.json().items() if k != "record"} == {
        "code": "bad_request",
        "detail": "the query has parameters this route refuses",
        "errors": [{"field": "reason", "message": "given more than once"}],
    }
    assert repeated.json()["record"]["operation"] == "omega"  # an attempt to act: logged
    assert unknown.status_code == 400
    assert unknown.json()["errors"] == [
        {"field": "colour", "message": "not a parameter of this route"}
    ]
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "bad_request"
    assert [e["field"] for e in malformed.json()["errors"]] == ["limit"]
    assert api.get("/v1/mode").json()["omega"]["active"] is False


def test_options_when_a_path_has_several_methods_then_allow_names_them_all(api: Api) -> None:
    assert api.client.options("/v1/orders").headers["allow"] == "GET, OPTIONS, POST"
    assert api.client.options("/v1/omega").headers["allow"] == "DELETE, OPTIONS, POST"


# --- tokens: revocation on every replica, expiry ----------------------------------------

UNAUTHORIZED = {"code": "unauthorized", "detail": "unknown, revoked or expired token"}


def test_tokens_when_revoked_on_another_replica_then_refused_here_within_one_second(
    runtime: Runtime, client: TestClient[Any], start_runtime: Callable[..., Runtime]
) -> None:
    token = runtime.tokens.create("trader", "replica test", runtime.clock())
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/orders", headers=headers).status_code == 200  # now cached here
    other = start_runtime()  # a second replica on the same database

    assert other.tokens.revoke(token_id_of(token), other.clock()) is True
    answers = []
    for _ in range(30):  # 3 s at most, whatever the machine's speed
        answers.append(client.get("/v1/orders", headers=headers))
        if answers[-1].status_code == 401:
            break
        time.sleep(0.1)

    assert CACHE_SECONDS <= 1.0  # the bound a replica's cache may outlive a revocation
    assert answers[-1].status_code == 401
    assert {k: answers[-1].json()[k] for k in UNAUTHORIZED} == UNAUTHORIZED
    assert other.tokens.check(token) is None


def test_tokens_when_revoked_on_this_replica_then_refused_at_once(
    runtime: Runtime, client: TestClient[Any]
) -> None:
    token = runtime.tokens.create("auditor", "revoke here", runtime.clock())
    headers = {"Authorization": f"Bearer {token}"}
    before = client.get("/v1/audit", headers=headers)

    runtime.tokens.revoke(token_id_of(token), runtime.clock())
    after = client.get("/v1/audit", headers=headers)

    assert before.status_code == 200
    assert after.status_code == 401
    assert {k: after.json()[k] for k in UNAUTHORIZED} == UNAUTHORIZED


def test_tokens_when_expiry_passes_then_401_like_a_revoked_token(
    runtime: Runtime, client: TestClient[Any], clock: MovableClock
) -> None:
    token = runtime.tokens.create(
        "auditor", "short", runtime.clock(), expires_in=timedelta(minutes=5)
    )
    headers = {"Authorization": f"Bearer {token}"}
    (row,) = runtime.store.tokens()
    live = client.get("/v1/audit", headers=headers)

    clock.advance(299)
    last_second = client.get("/v1/audit", headers=headers)
    clock.advance(1)
    expired = client.get("/v1/audit", headers=headers)

    assert row.expires_at == row.created_at + timedelta(minutes=5)
    assert (live.status_code, last_second.status_code, expired.status_code) == (200, 200, 401)
    assert {k: expired.json()[k] for k in UNAUTHORIZED} == UNAUTHORIZED
