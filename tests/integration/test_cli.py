"""The service commands of `apex-oms` (SPEC section 9) on a SQLite store chosen
through APEX_HOME, APEX_DATABASE_URL and APEX_POLICIES."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.cli import main
from api.runtime import Runtime
from api.settings import Settings
from engine.gateway import Actor

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`tokens create` and `demo` silence logging for the whole process."""
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("APEX_HOME", str(home))
    monkeypatch.setenv("APEX_DATABASE_URL", f"sqlite:///{home / 'apex.db'}")
    monkeypatch.setenv("APEX_POLICIES", str(ROOT / "policies"))
    return home / "apex.db"


@pytest.fixture
def cli(database: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def run(*argv: str) -> Run:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def service(database: Path, clock: Callable[[], Any]) -> Iterator[Runtime]:
    """The same store, opened in-process with the test clock, to seed and inspect it."""
    runtime = Runtime.start(Settings.from_env(), clock=clock)
    yield runtime
    runtime.close()


@pytest.fixture
def three_records(service: Runtime, make_order: Callable[..., dict[str, Any]]) -> None:
    seed = Actor.of("seed", "trader")
    for quantity in (100, 200):
        service.gateway.evaluate(make_order(quantity=quantity), seed)
    service.gateway.evaluate(make_order(symbol="MSFT"), seed)


def verify_offline(lines: list[str]) -> int | None:
    """SPEC section 7 with nothing but hashlib and json: the first bad line (1-based)."""
    prev = "sha256:" + "0" * 64
    for number, line in enumerate(lines, start=1):
        record = json.loads(line)
        body = {k: v for k, v in record.items() if k != "hash"}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
        if record["prev_hash"] != prev or record["hash"] != digest:
            return number
        prev = digest
    return None


def tamper(database: Path, seq: int, **changes: Any) -> None:
    with sqlite3.connect(database) as conn:
        (text,) = conn.execute("SELECT record FROM audit_log WHERE seq = ?", (seq,)).fetchone()
        record = {**json.loads(text), **changes}
        conn.execute("UPDATE audit_log SET record = ? WHERE seq = ?", (json.dumps(record), seq))


# --- tokens ---------------------------------------------------------------------------


def test_tokens_create_when_run_then_prints_only_the_token_which_authenticates(
    cli: Callable[..., Run], service: Runtime
) -> None:
    run = cli("tokens", "create", "--role", "trader", "--label", "desk 7")

    lines = run.out.splitlines()
    assert run.code == 0
    assert len(lines) == 1
    token = lines[0]
    assert token.startswith("apx_")
    with TestClient(create_app(service)) as client:
        ok = client.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})
        forbidden = client.get("/v1/audit", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert forbidden.status_code == 403  # a trader token, not an auditor's


def test_tokens_create_when_bound_to_accounts_then_the_trader_sees_only_their_orders(
    cli: Callable[..., Run], service: Runtime, make_order: Callable[..., dict[str, Any]]
) -> None:
    seed = Actor.of("seed", "admin")
    service.gateway.evaluate(make_order(account="default"), seed)
    paper = service.gateway.evaluate(make_order(account="paper-1"), seed).record

    run = cli("tokens", "create", "--role", "trader", "--account", "paper-1", "--json")

    made = json.loads(run.out)
    assert run.code == 0
    assert (made["role"], made["accounts"], made["label"]) == ("trader", ["paper-1"], "")
    assert made["token"].startswith(f"apx_{made['token_id']}_")
    with TestClient(create_app(service)) as client:
        page = client.get("/v1/orders", headers={"Authorization": f"Bearer {made['token']}"})
    assert [r["order_id"] for r in page.json()["orders"]] == [paper["order_id"]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--role", "auditor", "--account", "paper-1"], "only a trader token is bound"),
        (["--role", "trader", "--account", "no such account!"], "not an account id"),
    ],
    ids=["not_a_trader", "bad_account_id"],
)
def test_tokens_create_when_accounts_cannot_be_bound_then_usage_error_and_no_token(
    cli: Callable[..., Run], service: Runtime, argv: list[str], message: str
) -> None:
    run = cli("tokens", "create", *argv)

    assert (run.code, run.out) == (2, "")
    assert message in run.err
    assert service.store.token_count() == 0


def test_tokens_create_when_role_is_unknown_then_usage_error(
    cli: Callable[..., Run], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("tokens", "create", "--role", "king")

    assert exit_.value.code == 2
    assert "invalid choice: 'king'" in capsys.readouterr().err


# --- mode and the Omega directive ------------------------------------------------------


def test_mode_show_when_store_is_new_then_research_and_requirements(
    cli: Callable[..., Run],
) -> None:
    human = cli("mode", "show")
    machine = cli("mode", "show", "--json")

    assert human.code == 0
    assert human.out.splitlines()[:2] == ["mode: research", "omega directive: clear"]
    view = json.loads(machine.out)
    assert (view["mode"], view["omega"]["active"]) == ("research", False)
    assert view["requirements"]["simulation"] == []


def test_mode_set_when_simulation_then_persisted_and_live_is_refused(
    cli: Callable[..., Run], service: Runtime
) -> None:
    entered = cli("mode", "set", "simulation", "--reason", "dry run week")
    refused = cli("mode", "set", "live")

    assert (entered.code, entered.out) == (0, "mode is now simulation\n")
    assert refused.code == 1
    assert refused.err.startswith("refused: cannot enter live: ")
    assert json.loads(cli("mode", "show", "--json").out)["mode"] == "simulation"
    assert service.gateway.mode() == "simulation"
    event = list(service.store.audit_records())[-1]
    assert (event["kind"], event["mode"], event["actor"], event["reason"]) == (
        "mode_changed",
        "simulation",
        "cli",
        "dry run week",
    )


def test_omega_when_invoked_then_cleared_then_state_follows(
    cli: Callable[..., Run], service: Runtime
) -> None:
    invoked = cli("omega", "invoke", "--reason", "x")
    in_force = service.gateway.omega()
    shown = cli("mode", "show")
    cleared = cli("omega", "clear", "--reason", "y")

    assert invoked.code == 0
    assert (in_force["active"], in_force["reason"], in_force["actor"]) == (True, "x", "cli")
    assert "omega directive: IN FORCE" in shown.out
    assert cleared.code == 0
    assert cleared.out == "Omega directive cleared\n"
    assert (service.gateway.omega()["active"], service.gateway.omega()["reason"]) == (False, "y")
    kinds = [r["kind"] for r in service.store.audit_records()]
    assert kinds == ["omega_invoked", "omega_cleared"]


# --- trading states -----------------------------------------------------------------------


def test_state_show_when_store_is_new_then_everything_is_active(cli: Callable[..., Run]) -> None:
    human = cli("state", "show")
    machine = cli("state", "show", "--json")

    assert human.code == 0
    assert human.out.splitlines()[0].split() == ["scope", "state", "reason", "actor", "since"]
    assert human.out.splitlines()[2].split() == ["global", "active"]
    states = json.loads(machine.out)
    assert (states["global"]["state"], states["accounts"]) == ("active", {})


def test_state_set_when_an_account_is_set_reducing_then_shown_and_audited(
    cli: Callable[..., Run], service: Runtime
) -> None:
    run = cli("state", "set", "reducing", "--reason", "desk review", "--account", "paper-1")
    shown = json.loads(cli("state", "show", "--json").out)
    table = cli("state", "show").out

    assert (run.code, run.out) == (0, "paper-1 is now reducing\n")
    entry = shown["accounts"]["paper-1"]
    assert (entry["state"], entry["reason"], entry["actor"]) == ("reducing", "desk review", "cli")
    assert shown["global"]["state"] == "active"
    assert table.splitlines()[3].split()[:4] == ["paper-1", "reducing", "desk", "review"]
    record = list(service.store.audit_records())[-1]
    assert (record["kind"], record["scope"], record["state"], record["actor"]) == (
        "trading_state_changed",
        "paper-1",
        "reducing",
        "cli",
    )


def test_state_set_when_no_account_is_named_then_the_whole_gateway_is_halted(
    cli: Callable[..., Run], service: Runtime
) -> None:
    run = cli("state", "set", "halted", "--reason", "market halt")

    assert (run.code, run.out) == (0, "global is now halted\n")
    assert service.gateway.omega()["active"] is True
    assert [r["kind"] for r in service.store.audit_records()] == ["omega_invoked"]


@pytest.mark.parametrize(
    "argv",
    [["frozen", "--reason", "x"], ["halted"]],
    ids=["unknown_state", "no_reason"],
)
def test_state_set_when_state_or_reason_is_wrong_then_usage_error(
    cli: Callable[..., Run], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("state", "set", *argv)

    assert exit_.value.code == 2


def test_state_set_when_the_account_is_not_an_account_id_then_refused_exit_2(
    cli: Callable[..., Run], service: Runtime
) -> None:
    run = cli("state", "set", "halted", "--reason", "x", "--account", "no such account!")

    assert run.code == 2
    assert run.err.startswith("refused: ")
    assert list(service.store.audit_records()) == []


def test_omega_invoke_when_reason_is_missing_then_usage_error(cli: Callable[..., Run]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("omega", "invoke")

    assert exit_.value.code == 2


# --- orders and the audit log ---------------------------------------------------------------


@pytest.mark.usefixtures("three_records")
def test_orders_list_when_json_then_records_newest_first_with_filters(
    cli: Callable[..., Run],
) -> None:
    everything = cli("orders", "list", "--json")
    msft = cli("orders", "list", "--json", "--symbol", "MSFT")
    limited = cli("orders", "list", "--json", "--limit", "1")
    table = cli("orders", "list")

    assert everything.code == 0
    records = json.loads(everything.out)
    assert [r["order_id"] for r in records] == [
        "ORD-2026-000003",
        "ORD-2026-000002",
        "ORD-2026-000001",
    ]
    assert {r["order_status"] for r in records} == {"evaluated"}
    assert [r["order_id"] for r in json.loads(msft.out)] == ["ORD-2026-000003"]
    assert [r["order_id"] for r in json.loads(limited.out)] == ["ORD-2026-000003"]
    assert table.out.splitlines()[0].split() == [
        "order_id", "client_order_id", "side", "qty", "symbol", "type", "status", "triggers",
    ]  # fmt: skip
    assert "ORD-2026-000001" in table.out


@pytest.mark.usefixtures("three_records")
def test_audit_export_when_written_then_lines_verify_with_only_hashlib_and_json(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    target = tmp_path / "audit.jsonl"

    run = cli("audit", "export", "-o", str(target))

    lines = target.read_text(encoding="utf-8").splitlines()
    assert run.code == 0
    assert run.err == f"exported 3 records to {target}\n"
    assert len(lines) == 3
    assert verify_offline(lines) is None
    assert [json.loads(line)["order_id"] for line in lines] == [
        "ORD-2026-000001",
        "ORD-2026-000002",
        "ORD-2026-000003",
    ]


@pytest.mark.usefixtures("three_records")
def test_audit_verify_when_intact_then_ok_and_exit_0(cli: Callable[..., Run]) -> None:
    run = cli("audit", "verify")

    assert run.code == 0
    assert run.out.startswith("audit chain OK: 3 records, head sha256:")


@pytest.mark.usefixtures("three_records")
@pytest.mark.parametrize("k", [1, 2, 3])
def test_audit_verify_when_record_k_is_tampered_in_the_database_then_broken_at_k(
    cli: Callable[..., Run], database: Path, tmp_path: Path, k: int
) -> None:
    tamper(database, k, quantity=999_999)

    human = cli("audit", "verify")
    machine = cli("audit", "verify", "--json")
    cli("audit", "export", "-o", str(tmp_path / "audit.jsonl"))

    assert human.code == 1
    assert f"BROKEN at record {k} (order ORD-2026-{k:06d}): hash mismatch" in human.out
    assert machine.code == 1
    assert json.loads(machine.out)["first_break"]["position"] == k
    exported = (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert verify_offline(exported) == k


# --- demo ---------------------------------------------------------------------------------------


def test_demo_when_run_then_exit_0_and_audit_chain_ok(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the demo reads ./policies

    run = cli("demo")

    assert run.code == 0
    assert "\naudit chain OK: " in run.out
    assert "omega_directive" in run.out


def test_demo_when_run_then_every_step_answers_as_scripted(
    cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)

    run = cli("demo", "--json")

    steps = [(s["step"], s["http"], s["status"]) for s in json.loads(run.out)["steps"]]
    assert steps == [
        ("evaluate in research mode", 200, "evaluated"),
        ("submit in research mode", 403, "blocked"),
        ("enter simulation mode", 200, "simulation"),
        ("market buy fills", 201, "filled"),
        ("limit buy rests", 201, "accepted"),
        ("replace: new limit", 200, "replaced"),
        ("quote crosses: filled", 200, "filled"),
        ("limit sell rests", 201, "accepted"),
        ("cancel it", 200, "cancelled"),
        ("blocked: risk_denied (spread)", 403, "blocked"),
        ("blocked: drift_entropy_unsafe", 403, "blocked"),
        ("blocked: data_integrity_mismatch", 403, "blocked"),
        ("blocked: protocol_mismatch", 403, "blocked"),
        ("blocked: compliance_failure", 403, "blocked"),
        ("blocked: broker_capability (opg)", 403, "blocked"),
        ("invalid: limit without price", 422, "rejected"),
        ("omega directive invoked", 200, "omega in force"),
        ("blocked: omega_directive", 403, "blocked"),
        ("omega directive cleared", 200, "omega cleared"),
    ]
