"""Shadow mode (issue 12, item 8): a candidate set judges every order beside the
enforced one, its differences recorded and counted, deciding nothing, never
holding an order up, failing without harm, bounded over the service's life."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.runtime import Runtime
from engine.gateway.shadow import SHADOW_LIMIT, Shadow
from engine.policy.loader import rule_files
from tests.conftest import FixedClock
from tests.integration.served import served
from tests.integration.test_whatif import candidate

OrderBuilder = Callable[..., dict[str, Any]]
WAIT_S = 60.0  # a loaded CI machine: the worker gets there well before


def as_body(directory: Path) -> dict[str, Any]:
    files = {path.name: path.read_text("utf-8") for path in rule_files(directory)}
    return {"files": files, "compliance": (directory / "compliance.yaml").read_text("utf-8")}


class Desk:
    def __init__(self, client: TestClient[Any], tokens: dict[str, str], clock: FixedClock):
        self.client = client
        self.tokens = tokens
        self.clock = clock

    def call(self, method: str, path: str, role: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return self.client.request(method, path, headers=headers, **kwargs)

    def load(self, directory: Path) -> Any:
        return self.call("POST", "/v1/policies/shadow", "compliance", json=as_body(directory))

    def submit(self, order: dict[str, Any]) -> Any:
        self.clock.advance(2)  # past the throttle's window and the duplicate window's reach
        return self.call("POST", "/v1/orders", "trader", json=order)


@pytest.fixture
def desk(client: TestClient[Any], tokens: dict[str, str], clock: FixedClock) -> Desk:
    answer = client.post(
        "/v1/mode",
        json={"mode": "simulation", "reason": "test"},
        headers={"Authorization": f"Bearer {tokens['compliance']}"},
    )
    assert answer.status_code == 200, answer.text
    return Desk(client, tokens, clock)


def current(runtime: Runtime) -> Shadow:
    shadow = runtime.gateway.shadows.current
    assert shadow is not None
    return shadow


def metric(client: TestClient[Any], line: str) -> bool:
    return line in client.get("/metrics").text.splitlines()


def test_shadow_records_and_counts_each_verdict_that_differs_and_changes_no_decision(
    runtime: Runtime, desk: Desk, make_order: OrderBuilder, tmp_path: Path
) -> None:
    loaded = desk.load(candidate(tmp_path, "lower", max_order_quantity=150))
    small = desk.submit(make_order(quantity=100))
    large = desk.submit(make_order(quantity=200, limit_price=150.3))
    assert current(runtime).wait_idle(WAIT_S)

    view = desk.call("GET", "/v1/policies/shadow", "compliance").json()

    assert loaded.status_code == 200, loaded.text
    assert (small.status_code, large.status_code) == (201, 201)  # the enforced set decides
    large_id = large.json()["order_id"]
    assert view["shadow"]["judged"] == 2
    assert (view["shadow"]["differences"], view["shadow"]["errors"]) == (1, 0)
    [difference] = view["differences"]
    assert (difference["kind"], difference["order_id"]) == ("shadow_difference", large_id)
    assert (difference["from"], difference["to"], difference["rules"]) == (
        "approved", "blocked", ["max_quantity_check"])  # fmt: skip
    assert difference["shadow_triggers"] == ["risk_denied"]
    records = list(runtime.store.audit_records())
    [decision] = [r for r in records if r.get("order_id") == large_id and "judged_on" in r]
    assert (difference["decision_hash"], decision["order_status"]) == (
        decision["hash"],
        "submitted",
    )
    assert [r for r in records if r.get("kind") == "shadow_difference"] == [difference]
    assert metric(desk.client, 'apex_shadow_differences_total{to="blocked"} 1.0')
    assert metric(desk.client, 'apex_shadow_decisions_total{result="judged"} 2.0')
    report = desk.call("GET", "/v1/audit/verify", "auditor").json()
    assert report["ok"] is True, report


def test_a_failing_shadow_blocks_nothing_and_is_counted(
    runtime: Runtime,
    desk: Desk,
    make_order: OrderBuilder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    desk.load(candidate(tmp_path, "lower", max_order_quantity=150))

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the shadow's rules engine fell over")

    monkeypatch.setattr(current(runtime).evaluator, "evaluate", broken)
    answers = [desk.submit(make_order(quantity=q, limit_price=150.3)) for q in (100, 200)]
    assert current(runtime).wait_idle(WAIT_S)

    shadow = desk.call("GET", "/v1/policies/shadow", "compliance").json()["shadow"]
    assert [a.status_code for a in answers] == [201, 201]
    assert (shadow["judged"], shadow["errors"], shadow["differences"]) == (0, 2, 0)
    assert metric(desk.client, 'apex_shadow_decisions_total{result="error"} 2.0')


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_stuck_shadow_holds_no_order_up_and_drops_what_its_queue_cannot_take(
    runtime: Runtime,
    desk: Desk,
    make_order: OrderBuilder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime.gateway.shadows.queue_size = 1
    desk.load(candidate(tmp_path, "lower", max_order_quantity=150))
    shadow = current(runtime)
    release, taken = threading.Event(), threading.Event()
    judge = shadow.evaluator.evaluate

    def stuck(*args: Any, **kwargs: Any) -> Any:
        taken.set()
        assert release.wait(WAIT_S)
        return judge(*args, **kwargs)

    monkeypatch.setattr(shadow.evaluator, "evaluate", stuck)
    first = desk.submit(make_order(quantity=100))
    assert taken.wait(WAIT_S)  # the worker holds the first; the queue takes one more
    later = [desk.submit(make_order(quantity=q, limit_price=150.3)) for q in (101, 102, 103)]
    dropped = shadow.dropped
    release.set()
    assert shadow.wait_idle(WAIT_S)

    assert [a.status_code for a in (first, *later)] == [201] * 4
    assert (dropped, shadow.judged) == (2, 2)
    assert metric(desk.client, 'apex_shadow_decisions_total{result="dropped"} 2.0')


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_service_compiles_at_most_the_stated_number_of_shadow_sets(
    runtime: Runtime, desk: Desk, tmp_path: Path
) -> None:
    sets = [
        candidate(tmp_path, f"set{n}", max_order_quantity=1000 + n) for n in range(SHADOW_LIMIT + 1)
    ]
    loads = [desk.load(directory).status_code for directory in sets[:SHADOW_LIMIT]]

    over = desk.load(sets[SHADOW_LIMIT])
    again = desk.load(sets[0])  # compiled before: costs nothing, counts nothing

    assert loads == [200] * SHADOW_LIMIT
    assert over.status_code == 409
    assert over.json()["code"] == "shadow_limit_reached"
    assert again.status_code == 200
    assert (again.json()["loads"], again.json()["limit"]) == (SHADOW_LIMIT, SHADOW_LIMIT)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_shadow_routes_refuse_an_invalid_set_another_role_and_a_drop_of_nothing(
    runtime: Runtime, desk: Desk, tmp_path: Path
) -> None:
    broken = candidate(tmp_path, "broken")
    (broken / "order_limits.yaml").write_text("rules:\n  - id: Bad Id\n", "utf-8")

    invalid = desk.load(broken)
    trader = desk.call("POST", "/v1/policies/shadow", "trader", json=as_body(broken))
    no_files = desk.call("POST", "/v1/policies/shadow", "compliance", json={"compliance": ""})
    nothing = desk.call("DELETE", "/v1/policies/shadow", "compliance")
    desk.load(candidate(tmp_path, "good"))
    dropped = desk.call("DELETE", "/v1/policies/shadow", "compliance")
    after = desk.call("GET", "/v1/policies/shadow", "compliance")

    assert (invalid.status_code, invalid.json()["code"]) == (422, "policy_invalid")
    assert {i["file"] for i in invalid.json()["issues"]} == {"order_limits.yaml"}
    assert (trader.status_code, trader.json()["code"]) == (403, "forbidden")
    assert (no_files.status_code, no_files.json()["code"]) == (422, "invalid_request")
    assert (nothing.status_code, nothing.json()["code"]) == (404, "no_shadow")
    assert dropped.status_code == 200 and dropped.json()["shadow"]["judged"] == 0
    assert after.json()["shadow"] is None
    assert runtime.gateway.shadows.current is None


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Any]:
    with served(tmp_path) as running:
        running.env["APEX_URL"] = running.url
        running.env["APEX_TOKEN"] = running.token
        yield running


def test_policy_shadow_cli_loads_shows_and_drops_the_shadow_of_a_running_service(
    service: Any, tmp_path: Path
) -> None:
    lower = candidate(tmp_path, "lower", max_order_quantity=150)
    broken = candidate(tmp_path, "broken")
    (broken / "order_limits.yaml").write_text("rules:\n  - id: Bad Id\n", "utf-8")

    loaded = service.cli("policy", "shadow", str(lower))
    shown = service.cli("policy", "shadow", "--json")
    refused = service.cli("policy", "shadow", str(broken))
    dropped = service.cli("policy", "shadow", "--drop")
    none = service.cli("policy", "shadow")

    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("shadow: sha256:")
    assert '"judged": 0' in shown.stdout
    assert refused.returncode == 2
    assert "422 policy_invalid" in refused.stderr and "order_limits.yaml" in refused.stderr
    assert dropped.returncode == 0 and dropped.stdout.startswith("dropped: sha256:")
    assert none.stdout.startswith("no shadow set is loaded (shadow sets compiled: 1 of at most")
