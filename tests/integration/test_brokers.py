"""Brokers from brokers.yaml through the service (issue 10, items 1-2): paper end to
end on `adapter: simulated` through the HTTP API, `GET /v1/brokers`, the broker's
own history (`GET /v1/orders?source=broker`), a cancel the broker cannot take,
and `apex-oms brokers check` (a simulated paper broker; a registered adapter
whose credentials fail). No secret ever shows in an answer, an output or the chain."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from adapters import registry
from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from engine.audit import verify_chain
from engine.gateway import Actor
from tests.broker_stub import GOOD_SECRET
from tests.conftest import POLICIES, FixedClock, OrderBuilder, role_tokens
from tests.integration.cli_support import Run, run_main, use_home

BAD_SECRET = "wrong-secret-XYZ987"
SIMULATED_PAPER = "paper:\n  adapter: simulated\n"
STUB = "  adapter: alpaca\n  key_id_env: STUB_KEY\n  secret_key_env: STUB_SECRET\n"
ADMIN = Actor.of("t-admin", "admin")


@dataclass
class Service:
    runtime: Runtime
    client: TestClient[Any]
    auth: dict[str, dict[str, str]]

    def get(self, path: str, role: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.auth[role], **kw)

    def post(self, path: str, role: str, **kw: Any) -> Any:
        return self.client.post(path, headers=self.auth[role], **kw)


@pytest.fixture
def serve(
    store_url: str, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Service]]:
    """The service with `brokers.yaml` as given (the stub adapter stands for alpaca)."""
    monkeypatch.setitem(registry.MODULES, "alpaca", "tests.broker_stub")
    monkeypatch.setenv("STUB_KEY", "key-id")
    monkeypatch.setenv("STUB_SECRET", GOOD_SECRET)
    started: list[tuple[Runtime, TestClient[Any]]] = []

    def start(text: str) -> Service:
        path = tmp_path / "brokers.yaml"
        path.write_text(text, encoding="utf-8")
        settings = Settings(home=tmp_path / "home", database_url=store_url, policies=POLICIES,
                            keys=tmp_path / "no-keys", brokers=path)  # fmt: skip
        runtime = Runtime.start(settings, clock=clock)
        client = TestClient(create_app(runtime)).__enter__()
        started.append((runtime, client))
        auth = {r: {"Authorization": f"Bearer {t}"} for r, t in role_tokens(runtime).items()}
        bound = runtime.tokens.create("trader", "paper desk", clock(), ["paper-1"])
        auth["paper_desk"] = {"Authorization": f"Bearer {bound}"}
        return Service(runtime, client, auth)

    yield start
    for runtime, client in started:
        client.__exit__(None, None, None)
        runtime.close()


def test_paper_on_the_simulated_adapter_end_to_end_through_the_api(
    serve: Callable[[str], Service], make_order: OrderBuilder
) -> None:
    service = serve(SIMULATED_PAPER)
    gateway = service.runtime.gateway

    refused = service.post("/v1/mode", "compliance", json={"mode": "paper"})
    assert refused.status_code == 409
    assert refused.json()["missing"] == [
        "simulated-paper credentials have not been checked (run `apex-oms brokers check`)"
    ]
    assert gateway.check_broker("paper", ADMIN)["ok"] is True
    entered = service.post("/v1/mode", "compliance", json={"mode": "paper"})
    assert entered.status_code == 200

    filled = service.post("/v1/orders", "trader", json=make_order(order_type="market",
                                                                 limit_price=None))  # fmt: skip
    resting = service.post("/v1/orders", "trader", json=make_order(limit_price=150.0))
    cancelled = service.post(f"/v1/orders/{resting.json()['order_id']}/cancel", "trader")

    assert (filled.status_code, filled.json()["order_status"]) == (201, "filled")
    assert filled.json()["broker"] == "simulated-paper"
    assert (resting.status_code, resting.json()["order_status"]) == (201, "accepted")
    assert (cancelled.status_code, cancelled.json()["order_status"]) == (200, "cancelled")
    assert service.runtime.store.positions("default") == {"AAPL": 100}
    paper = gateway.broker_for("paper")
    assert paper is not None and paper.positions("default") == {"AAPL": 100}
    simulation = gateway.broker_for("simulation")
    assert simulation is not None and simulation.order_history() == []  # paper is its own
    chain = list(service.runtime.store.audit_records())
    kinds = [r.get("kind") or r["order_status"] for r in chain]
    assert kinds == [
        "verification", "rejected", "broker_check", "mode_changed",  # the refused mode change
        "submitted", "filled", "submitted", "accepted", "cancelled",
    ]  # fmt: skip
    assert verify_chain(chain).ok


def test_get_brokers_lists_each_mode_with_capabilities_readiness_and_last_check(
    serve: Callable[[str], Service],
) -> None:
    service = serve(SIMULATED_PAPER + "live:\n" + STUB)
    service.runtime.gateway.check_broker("paper", ADMIN)

    views = {role: service.get("/v1/brokers", role) for role in ("trader", "auditor", "compliance")}

    assert {v.status_code for v in views.values()} == {200}
    body = views["auditor"].json()
    assert body["mode"] == "research"
    assert [(b["mode"], b["name"], b["adapter"]) for b in body["brokers"]] == [
        ("simulation", "simulated", "simulated"),
        ("paper", "simulated-paper", "simulated"),
        ("live", "stub-live", "alpaca"),
    ]
    paper, live = body["brokers"][1], body["brokers"][2]
    assert paper["capabilities"] == {
        "order_types": ["limit", "market", "stop"], "time_in_force": ["day", "fok", "gtc", "ioc"],
        "reduce_only": True, "reduce_only_emulated": False, "cancel": True, "replace": True,
        "history": True, "positions": True, "market_data": True, "reference_quotes": False,
        "paper": True, "live": False, "credentials": True,
    }  # fmt: skip
    assert (paper["ready"], paper["why_not"]) == (True, None)
    assert paper["last_check"]["ok"] is True and paper["last_check"]["broker"] == "simulated-paper"
    assert paper["last_reconciliation"]["checked"] == 0
    assert live["capabilities"]["reduce_only_emulated"] is True
    assert live["last_check"] is None
    assert GOOD_SECRET not in views["auditor"].text
    assert service.client.get("/v1/brokers").status_code == 401


def test_orders_source_broker_shows_the_brokers_history_to_whom_may_see_it(
    serve: Callable[[str], Service], make_order: OrderBuilder
) -> None:
    service = serve(SIMULATED_PAPER)
    gateway = service.runtime.gateway
    in_research = service.get("/v1/orders", "auditor", params={"source": "broker"})
    gateway.check_broker("paper", ADMIN)
    service.post("/v1/mode", "compliance", json={"mode": "paper"})
    mine = service.post("/v1/orders", "trader", json=make_order(limit_price=150.0)).json()

    auditor = service.get("/v1/orders", "auditor", params={"source": "broker"})
    trader = service.get("/v1/orders", "trader", params={"source": "broker"})
    other_desk = service.get("/v1/orders", "paper_desk", params={"source": "broker"})
    named = service.get("/v1/orders", "admin", params={"source": "broker", "broker": "simulated"})

    assert (in_research.status_code, in_research.json()["code"]) == (409, "no_broker")
    assert auditor.status_code == 200
    assert auditor.json()["broker"] == "simulated-paper"
    [row] = auditor.json()["orders"]
    assert (row["order_id"], row["status"], row["account"]) == (mine["order_id"], "accepted",
                                                                 "default")  # fmt: skip
    assert row["broker_order_id"] == "SIM-000001"
    assert [r["order_id"] for r in trader.json()["orders"]] == [mine["order_id"]]
    assert other_desk.json()["orders"] == []  # its account is paper-1
    assert (named.json()["broker"], named.json()["orders"]) == ("simulated", [])
    for params, field in (
        ({"source": "elsewhere"}, "source"),
        ({"source": "broker", "broker": "nope"}, "broker"),
        ({"broker": "simulated"}, "broker"),
        ({"source": "broker", "symbol": "AAPL"}, "symbol"),
    ):
        refused = service.get("/v1/orders", "auditor", params=params)
        assert refused.status_code == 422, params
        assert [e["field"] for e in refused.json()["errors"]] == [field]
    assert service.get("/v1/orders", "compliance", params={"source": "broker"}).status_code == 403


def test_cancel_when_the_routed_broker_cannot_cancel_then_403_broker_capability_record(
    serve: Callable[[str], Service], make_order: OrderBuilder
) -> None:
    service = serve("paper:\n" + STUB + "  base_url: http://127.0.0.1:1/no-cancel\n")
    service.runtime.gateway.check_broker("paper", ADMIN)
    service.post("/v1/mode", "compliance", json={"mode": "paper"})
    order = service.post("/v1/orders", "trader", json=make_order()).json()

    refused = service.post(f"/v1/orders/{order['order_id']}/cancel", "trader")

    assert refused.status_code == 403
    body = refused.json()
    assert body["order_status"] == "accepted"
    assert body["fail_closed_triggers"] == ["broker_capability"]
    assert body["reasons"][-1]["detail"] == (
        "broker stub-paper cannot cancel orders (capability cancel: false)"
    )
    listed = service.get(f"/v1/orders/{order['order_id']}", "trader").json()
    assert listed["order_status"] == "accepted"


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_home(tmp_path, monkeypatch, POLICIES)


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def run(*argv: str) -> Run:
        return run_main(capsys, argv)

    return run


def configure(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "brokers.yaml").write_text(text, encoding="utf-8")


def stored(home: Path) -> Runtime:
    return Runtime.start(Settings.from_env(), recover=False, verify=False)


def test_brokers_check_when_simulated_paper_then_ok_recorded_and_paper_may_be_entered(
    cli: Callable[..., Run], home: Path
) -> None:
    configure(home, SIMULATED_PAPER)

    before = cli("mode", "set", "paper")
    run = cli("brokers", "check")
    after = cli("mode", "set", "paper")

    assert before.code == 1 and "credentials have not been checked" in before.err
    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[0].split() == ["role", "broker", "adapter", "check", "account", "reason"]
    assert lines[2].split()[:4] == ["paper", "simulated-paper", "simulated", "ok"]
    assert (after.code, after.out) == (0, "mode is now paper\n")
    runtime = stored(home)
    try:
        checks = [r for r in runtime.store.audit_records() if r.get("kind") == "broker_check"]
    finally:
        runtime.close()
    assert [(r["broker"], r["role"], r["ok"], r["actor"]) for r in checks] == [
        ("simulated-paper", "paper", True, "cli")
    ]


def test_brokers_check_when_a_brokers_credentials_fail_then_exit_1_naming_it_and_no_secret(
    cli: Callable[..., Run], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.MODULES, "alpaca", "tests.broker_stub")
    monkeypatch.setenv("STUB_KEY", "key-id")
    monkeypatch.setenv("STUB_SECRET", BAD_SECRET)
    configure(home, SIMULATED_PAPER + "live:\n" + STUB)

    run = cli("brokers", "check", "--json")

    assert run.code == 1
    results = json.loads(run.out)
    assert [(r["role"], r["broker"], r["ok"]) for r in results] == [
        ("paper", "simulated-paper", True), ("live", "stub-live", False)
    ]  # fmt: skip
    assert results[1]["reason"] == (
        "stub-live credential check failed: BrokerError: 401 request is not authorized"
    )
    assert results[1]["account"] == {}
    runtime = stored(home)
    try:
        chain = json.dumps(list(runtime.store.audit_records()))
    finally:
        runtime.close()
    assert BAD_SECRET not in run.out + run.err + chain


def test_brokers_check_when_ok_then_the_account_shown_holds_no_secret(
    cli: Callable[..., Run], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.MODULES, "alpaca", "tests.broker_stub")
    monkeypatch.setenv("STUB_SECRET", GOOD_SECRET)
    configure(home, "paper:\n" + STUB)

    run = cli("brokers", "check")

    assert run.code == 0
    assert run.out.splitlines()[2].split()[:6] == [
        "paper", "stub-paper", "alpaca", "ok", "stub-account-1", "(PA0001)"
    ]  # fmt: skip
    assert GOOD_SECRET not in run.out + run.err


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"paper:\n  adapter: alpaca\n  key_id: {BAD_SECRET}\n  secret_key_env: S\n",
         "apex-oms: paper.key_id: credentials are never in this file"),
        ("paper:\n  adapter: oms_rest\n  base_url: http://h\n  token_env: NO_SUCH_TOKEN_ENV\n",
         "apex-oms: paper.token_env: environment variable NO_SUCH_TOKEN_ENV is not set"),
        ("live:\n  adapter: simulated\n",
         "apex-oms: live.adapter: the simulated broker never serves live"),
        ("", "apex-oms: no broker configured"),
    ],
    ids=["credential-pasted", "token-env-unset", "simulated-live", "nothing-configured"],
)  # fmt: skip
def test_brokers_check_when_the_configuration_is_unusable_then_exit_2_one_line(
    cli: Callable[..., Run], home: Path, text: str, line: str
) -> None:
    configure(home, text)

    run = cli("brokers", "check")

    assert run.code == 2
    assert run.err.startswith(line)
    assert len(run.err.strip().splitlines()) == 1
    assert BAD_SECRET not in run.out + run.err


def test_serve_when_brokers_yaml_is_bad_then_exit_2_naming_the_field(
    cli: Callable[..., Run], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(uvicorn, "run", lambda *_, **__: None)
    configure(
        home, f"paper:\n  adapter: alpaca\n  key_id_env: {BAD_SECRET}!\n  secret_key_env: S\n"
    )
    try:
        run = cli("serve")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    assert run.code == 2
    assert "apex-oms: paper.key_id_env: want: the NAME of an environment variable" in run.err
    assert BAD_SECRET not in run.out + run.err
