"""The live unlock through the API (both stores) and the CLI (issue 9, item 7):
compliance officers alone take the steps, in order; compliance, auditors and the
admin read it; a refusal is a 409 and a record; a bad step or body a 422 naming
the field; live is entered by step 5 and left by a mode change, both audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from adapters.simulated import SimulatedBroker
from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from engine.gateway.unlock import CONFIRMATION
from tests.conftest import FixedClock, OrderBuilder, role_tokens
from tests.integration.cli_support import run_main, use_home
from tests.live_broker import FakeLiveBroker
from tests.signing_support import Officers, officers

ENABLE = {"confirm": CONFIRMATION}


@dataclass
class Service:
    runtime: Runtime
    client: TestClient[Any]
    auth: dict[str, dict[str, str]]

    def get(self, path: str, role: str = "compliance", **kw: Any) -> Any:
        return self.client.get(path, headers=self.auth[role], **kw)

    def post(self, path: str, role: str = "compliance", **kw: Any) -> Any:
        return self.client.post(path, headers=self.auth[role], **kw)

    def walk(self, through: int = 5) -> list[Any]:
        return [
            self.post(f"/v1/unlock/{n}", json=ENABLE if n == 5 else None)
            for n in range(1, through + 1)
        ]

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.runtime.store.audit_records() if r.get("kind") == kind]


@pytest.fixture
def team(tmp_path: Path) -> Officers:
    return officers(tmp_path / "team")


@pytest.fixture
def serve(store_url: str, tmp_path: Path, clock: FixedClock, team: Officers) -> Iterator[Any]:
    runtimes: list[Runtime] = []
    clients: list[TestClient[Any]] = []

    def start(live: bool = True) -> Service:
        settings = Settings(home=tmp_path / "home", database_url=store_url,
                            policies=team.policies, keys=team.keys)  # fmt: skip
        brokers: dict[str, Any] = {"simulation": SimulatedBroker(clock)}
        if live:
            brokers["live"] = FakeLiveBroker()
        runtime = Runtime.start(settings, clock=clock, brokers=brokers)
        runtimes.append(runtime)
        client = TestClient(create_app(runtime)).__enter__()
        clients.append(client)
        auth = {r: {"Authorization": f"Bearer {t}"} for r, t in role_tokens(runtime).items()}
        return Service(runtime, client, auth)

    yield start
    for client in clients:
        client.__exit__(None, None, None)
    for runtime in runtimes:
        runtime.close()


def test_unlock_when_an_officer_walks_every_step_then_live_and_each_step_recorded(
    serve: Any, make_order: OrderBuilder
) -> None:
    svc = serve()
    answers = svc.walk()
    view = svc.get("/v1/unlock", "auditor").json()
    mode = svc.get("/v1/mode", "trader").json()
    order = svc.post("/v1/orders/evaluate", "trader", json=make_order()).json()
    verified = svc.get("/v1/audit/verify", "auditor").json()

    assert [a.status_code for a in answers] == [200] * 5, answers[-1].text
    steps = [a.json()["event"] for a in answers]
    assert [(s["kind"], s["step"], s["outcome"]) for s in steps] == [
        ("unlock_step", n, "done") for n in range(1, 6)
    ]
    officer = steps[0]["actor"]
    assert officer not in ("cli", "system")  # the compliance token's id
    assert (view["unlocked"], view["mode"], view["next_step"]) == (True, "live", None)
    assert [(s["status"], s["actor"]) for s in view["steps"]] == [("done", officer)] * 5
    assert [(r["name"], r["ok"]) for r in view["requirements"]] == [
        ("manual_enable", True), ("signed_config", True), ("credentials", True),
        ("risk_armed", True),
    ]  # fmt: skip
    assert mode["mode"] == "live" and mode["requirements"]["live"] == []
    assert order["order_status"] == "evaluated"
    first = svc.runtime.store.audit_records().__next__()
    assert (first["kind"], first["trigger"]) == ("verification", "start")
    assert verified["ok"] is True


def test_unlock_when_the_admin_or_an_auditor_takes_a_step_then_403_logged_and_nothing_done(
    serve: Any,
) -> None:
    svc = serve()
    for role in ("admin", "auditor", "trader"):
        answer = svc.post("/v1/unlock/1", role)
        assert answer.status_code == 403, role
        assert answer.json()["code"] == "forbidden"
        assert answer.json()["record"]["order_status"] == "rejected"
    assert svc.get("/v1/unlock", "trader").status_code == 403
    assert svc.get("/v1/unlock", "admin").status_code == 200
    assert svc.records("unlock_step") == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [("/v1/unlock/9", None, "step"), ("/v1/unlock/launch", None, "step"),
     ("/v1/unlock/1", {"confrim": "x"}, "confrim"), ("/v1/unlock/1", {"confirm": "x"}, "confirm"),
     ("/v1/unlock/5", None, "confirm"), ("/v1/unlock/5", {"confirm": 1}, "confirm"),
     ("/v1/unlock/enable", {"confirm": "enable live trading"}, "confirm")],
    ids=["step-9", "unknown-name", "unknown-field", "confirm-on-step-1", "no-confirm",
         "confirm-not-text", "wrong-confirm"],
)  # fmt: skip
def test_unlock_when_the_step_or_body_is_bad_then_422_naming_the_field(
    serve: Any, path: str, body: Any, field: str
) -> None:
    svc = serve()
    answer = svc.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == field
    assert svc.records("unlock_step") == []


def test_unlock_when_a_step_is_out_of_order_then_409_with_the_reason_and_recorded(
    serve: Any,
) -> None:
    svc = serve()
    answer = svc.post("/v1/unlock/acknowledge")
    assert answer.status_code == 409
    body = answer.json()
    refusal = [{"field": "step", "message": "step 1 (access) must be done first"}]
    assert (body["code"], body["errors"]) == ("unlock_refused", refusal)
    assert (body["record"]["kind"], body["record"]["outcome"]) == ("unlock_step", "refused")
    assert svc.records("unlock_step") == [body["record"]]


def test_unlock_when_no_live_broker_then_the_walk_stops_at_credentials_and_live_is_refused(
    serve: Any,
) -> None:
    svc = serve(live=False)
    answers = svc.walk(through=4)
    mode = svc.post("/v1/mode", json={"mode": "live"})

    assert [a.status_code for a in answers] == [200, 200, 200, 409]
    assert answers[3].json()["errors"][0]["message"] == "no broker is configured for live"
    assert mode.status_code == 409
    assert mode.json()["missing"] == [
        "the live unlock is not complete: step 4 (credentials) pending (walk it: "
        "POST /v1/unlock/{step}, or apex-oms unlock step N)"
    ]


def test_mode_when_leaving_live_then_allowed_audited_and_step_5_pending_again(
    serve: Any,
) -> None:
    svc = serve()
    svc.walk()
    left = svc.post("/v1/mode", json={"mode": "simulation", "reason": "closing"})
    back = svc.post("/v1/mode", json={"mode": "live"})
    view = svc.get("/v1/unlock").json()

    assert left.status_code == 200, left.text
    assert [(r["previous"], r["mode"], r["reason"]) for r in svc.records("mode_changed")] == [
        ("research", "live", "live unlock step 5: enabled explicitly"),
        ("live", "simulation", "closing"),
    ]
    assert back.status_code == 409
    assert back.json()["missing"][0].startswith(
        "the live unlock is not complete: step 5 (enable) pending"
    )
    assert (view["next_step"], view["unlocked"], view["mode"]) == (5, False, "simulation")
    assert svc.post("/v1/unlock/5", json=ENABLE).status_code == 200


def test_unlock_when_the_service_restarts_then_the_walk_is_kept(
    serve: Any,
) -> None:
    first = serve()
    first.walk()
    second = serve()
    assert second.get("/v1/unlock", "auditor").json()["unlocked"] is True


# --- the CLI ------------------------------------------------------------------------


def test_cli_unlock_when_walked_then_steps_as_cli_and_stops_at_the_broker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    team: Officers,
) -> None:
    use_home(tmp_path, monkeypatch, team.policies)
    monkeypatch.setenv("APEX_KEYS", str(team.keys))
    steps = [run_main(capsys, ("unlock", "step", str(n))) for n in (1, 2, 3, 4)]
    status = run_main(capsys, ("unlock", "status", "--json"))
    human = run_main(capsys, ("unlock", "status"))
    enable = run_main(capsys, ("unlock", "step", "5"))

    assert [s.code for s in steps] == [0, 0, 0, 1]
    assert steps[0].out == "step 1 (access) done\n"
    assert steps[3].err == (
        "refused: step 4 (credentials) refused: no broker is configured for live\n"
    )
    view = json.loads(status.out)
    assert [(s["status"], s["actor"]) for s in view["steps"]] == [("done", "cli")] * 3 + [
        ("pending", None)] * 2  # fmt: skip
    assert human.code == 0 and "credentials    NO     no broker is configured for live" in human.out
    assert (enable.code, enable.err) == (
        2, "apex-oms: unlock step: confirm: step 5 needs confirm = 'ENABLE LIVE TRADING' "
        "(got: nothing)\n")  # fmt: skip
