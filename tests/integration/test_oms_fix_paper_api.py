"""Paper trading end to end through the HTTP API on `adapter: oms_fix`, against
the fake FIX acceptor (tests/fakes/fix_acceptor): brokers.yaml names it with
exactly SPEC section 11's keys; the credential check (a Logon) opens paper;
submit, fill, a resting order the desk fills later (its ExecutionReport on the
session), replace, cancel, a refusal with the desk's words, positions synced,
the broker's history; `apex-oms brokers check` logs on and off, and `apex-oms
brokers fix-log` prints the session from the store."""

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
from tests.fakes.fix_acceptor import FakeFixAcceptor, Reject
from tests.integration.cli_support import run_main, use_home

ADMIN = Actor.of("t-admin", "admin")


def section(fake: FakeFixAcceptor, extra: str = "") -> str:
    return (
        "paper:\n  adapter: oms_fix\n  host: 127.0.0.1\n"
        f"  port: {fake.port}\n  sender_comp_id: APEX\n  target_comp_id: OMS\n"
        f"  heartbeat_s: 30\n{extra}"
    )


@pytest.fixture
def fake() -> Iterator[FakeFixAcceptor]:
    with FakeFixAcceptor(sender_comp_id="OMS", target_comp_id="APEX") as acceptor:
        acceptor.set_quote("AAPL", bid=150.20, ask=150.30, last=150.25)
        yield acceptor


@pytest.fixture
def service(
    fake: FakeFixAcceptor, tmp_path: Path, clock: FixedClock
) -> Iterator[tuple[Runtime, TestClient[Any], dict[str, dict[str, str]]]]:
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(section(fake, "  position_account: default\n"), encoding="utf-8")
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


def wait_for(check: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_paper_on_oms_fix_end_to_end_through_the_api(
    service: tuple[Runtime, TestClient[Any], dict[str, dict[str, str]]],
    fake: FakeFixAcceptor,
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
    fake.fill(later_id, 20, 150.05)  # the desk fills it later: its report tells us
    streamed = wait_for(lambda: runtime.store.order(later_id).status == "filled")  # type: ignore[union-attr]
    cancelled = post(f"/v1/orders/{resting_id}/cancel")
    fake.inject(Reject("account restricted by the desk"))
    refused = post("/v1/orders", json=make_order(limit_price=150.30, quantity=10))
    synced = runtime.gateway.recover()  # a full pass: positions from the broker
    history = client.get("/v1/orders?source=broker", headers=auth["auditor"])

    assert (filled.status_code, filled.json()["order_status"]) == (201, "filled")
    assert filled.json()["broker"] == "oms_fix-paper"
    assert (resting.status_code, resting.json()["order_status"]) == (201, "accepted")
    assert (replaced.status_code, replaced.json()["order_status"]) == (200, "replaced")
    assert (later.status_code, later.json()["order_status"]) == (201, "accepted")
    assert streamed, "the fill the desk reported on its own was not booked"
    assert cancelled.status_code == 200 and cancelled.json()["order_status"] == "cancelled"
    assert refused.status_code == 502
    assert refused.json()["order_status"] == "blocked"
    assert "account restricted by the desk" in json.dumps(refused.json()["broker_response"])
    assert [r for r in synced if r.get("kind") == "position_sync"] == []  # books agree
    assert runtime.store.positions("default") == {"AAPL": 120}
    assert all(count == 1 for count in fake.new_orders.values())  # nothing sent twice
    assert history.status_code == 200
    text = json.dumps(history.json())
    assert filled.json()["order_id"] in text and later_id in text
    report = verify_store(runtime.store)
    assert report.ok and not report.findings, report.as_dict()
    # the session is in the store, message by message, with its numbers
    logged = runtime.store.fix_log(1000, "oms_fix-paper")
    assert [m.msg_type for m in logged if m.direction == "out"].count("D") == 4
    assert runtime.store.session_log("oms_fix-paper").sequences() == (
        fake.next_in,
        fake.next_out,
    )


def test_brokers_check_and_fix_log_when_an_oms_fix_section_then_logs_on_and_off_and_prints(
    fake: FakeFixAcceptor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    home = use_home(tmp_path, monkeypatch, POLICIES)
    home.mkdir(parents=True, exist_ok=True)
    (home / "brokers.yaml").write_text(section(fake), encoding="utf-8")

    check = run_main(capsys, ("brokers", "check"))
    printed = run_main(capsys, ("brokers", "fix-log", "--role", "paper"))
    as_json = run_main(capsys, ("brokers", "fix-log", "--limit", "1", "--json"))

    assert check.code == 0, check.err
    assert check.out.splitlines()[2].split()[:4] == ["paper", "oms_fix-paper", "oms_fix", "ok"]
    assert [tag_of(m, 35) for m in fake.received] == ["A", "5"]  # on, and off
    assert printed.code == 0
    lines = printed.out.splitlines()
    assert [line.split()[1] for line in lines] == ["out", "in", "out", "in"]
    assert lines[0].split()[2].startswith("8=FIX.4.4|9=")
    assert "|35=A|49=APEX|56=OMS|34=1|52=" in lines[0]
    assert "|35=5|" in lines[3] and lines[3].endswith("|")
    rows = json.loads(as_json.out)
    assert [(r["direction"], r["msg_type"], r["seq"]) for r in rows] == [("in", "5", 2)]


def tag_of(message: Any, number: int) -> str:
    value = message.get(number)
    return "" if value is None else str(value.decode())
