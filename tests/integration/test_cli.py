"""The service commands of `apex-oms` (SPEC section 9) on a SQLite store chosen
through APEX_HOME, APEX_DATABASE_URL and APEX_POLICIES."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.auth import CACHE_SECONDS, token_id_of
from api.runtime import Runtime
from api.settings import Settings
from engine.clock import parse_utc
from engine.gateway import Actor
from tests.integration.cli_support import Run, run_main, use_home

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_home(tmp_path, monkeypatch, ROOT / "policies") / "apex.db"


@pytest.fixture
def cli(database: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    def run(*argv: str) -> Run:
        return run_main(capsys, argv)

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


def test_tokens_create_when_role_is_unknown_then_usage_error(cli: Callable[..., Run]) -> None:
    run = cli("tokens", "create", "--role", "king")

    assert run.code == 2
    assert "invalid choice: 'king'" in run.err


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_token(cli: Callable[..., Run], *argv: str) -> dict[str, Any]:
    run = cli("tokens", "create", *argv, "--json")
    assert run.code == 0, run.err
    made: dict[str, Any] = json.loads(run.out)
    return made


def secrets_of(made: dict[str, Any]) -> tuple[str, str]:
    """A token and its stored hash: neither may appear in a listing or a log."""
    return made["token"], hashlib.sha256(made["token"].encode()).hexdigest()


def test_tokens_list_when_json_then_objects_with_expiry_and_neither_token_nor_hash(
    cli: Callable[..., Run], service: Runtime
) -> None:
    trader = create_token(cli, "--role", "trader", "--account", "paper-1")
    auditor = create_token(cli, "--role", "auditor", "--label", "q4", "--expires-in", "30d")

    run = cli("tokens", "list", "--json")

    listed = json.loads(run.out)
    assert run.code == 0
    keys = {"token_id", "role", "accounts", "label", "created_at", "expires_at", "revoked_at"}
    assert [set(entry) for entry in listed] == [keys, keys]
    by_id = {entry["token_id"]: entry for entry in listed}
    bound = by_id[trader["token_id"]]
    assert (bound["role"], bound["accounts"], bound["expires_at"]) == ("trader", ["paper-1"], None)
    lasting = by_id[auditor["token_id"]]
    assert (lasting["role"], lasting["label"], lasting["revoked_at"]) == ("auditor", "q4", None)
    assert lasting["expires_at"] == auditor["expires_at"]
    lifetime = parse_utc(lasting["expires_at"]) - parse_utc(lasting["created_at"])
    assert lifetime == timedelta(days=30)
    for secret in (*secrets_of(trader), *secrets_of(auditor)):
        assert secret not in run.out


def test_tokens_list_when_table_then_one_row_per_token_and_no_secret(
    cli: Callable[..., Run], service: Runtime
) -> None:
    made = create_token(cli, "--role", "compliance", "--label", "desk 9")

    run = cli("tokens", "list")

    lines = run.out.splitlines()
    assert run.code == 0
    assert lines[0].split() == [
        "token_id",
        "role",
        "accounts",
        "label",
        "created",
        "expires",
        "revoked",
    ]
    (row,) = [line for line in lines if line.startswith(made["token_id"])]
    cells = re.split(r"\s{2,}", row)
    assert cells[:4] == [made["token_id"], "compliance", "(all allowed)", "desk 9"]
    assert cells[5:] == ["never"]  # not revoked: the last cell is empty and stripped
    for secret in secrets_of(made):
        assert secret not in run.out


def test_tokens_revoke_when_live_then_the_api_refuses_it_and_the_list_shows_when(
    cli: Callable[..., Run], service: Runtime
) -> None:
    made = create_token(cli, "--role", "trader")
    with TestClient(create_app(service)) as client:
        before = client.get("/v1/orders", headers=bearer(made["token"]))

        run = cli("tokens", "revoke", made["token_id"])
        # another process revoked it: this one re-reads within CACHE_SECONDS
        time.sleep(CACHE_SECONDS)
        after = client.get("/v1/orders", headers=bearer(made["token"]))

    assert before.status_code == 200
    assert (run.code, run.err) == (0, "")
    assert made["token_id"] in run.out
    assert after.status_code == 401
    assert (after.json()["code"], after.json()["detail"]) == (
        "unauthorized",
        "unknown, revoked or expired token",
    )
    (listed,) = json.loads(cli("tokens", "list", "--json").out)
    assert listed["revoked_at"] is not None


def test_tokens_revoke_when_no_such_live_token_then_exit_1(
    cli: Callable[..., Run], service: Runtime
) -> None:
    made = create_token(cli, "--role", "trader")
    assert cli("tokens", "revoke", made["token_id"]).code == 0

    again = cli("tokens", "revoke", made["token_id"])
    unknown = cli("tokens", "revoke", "deadbeef")

    assert (again.code, again.out) == (1, "")
    assert f"no live token with id {made['token_id']!r}" in again.err
    assert (unknown.code, unknown.out) == (1, "")


def test_tokens_revoke_when_no_id_given_then_usage_error(cli: Callable[..., Run]) -> None:
    run = cli("tokens", "revoke")

    assert run.code == 2
    assert "TOKEN_ID" in run.err


def test_tokens_create_when_expires_in_then_the_api_refuses_it_from_that_moment(
    cli: Callable[..., Run], service: Runtime, clock: Any
) -> None:
    made = create_token(cli, "--role", "auditor", "--expires-in", "2h")
    expires = parse_utc(made["expires_at"])

    with TestClient(create_app(service)) as client:
        clock.now = expires - timedelta(seconds=1)
        live = client.get("/v1/audit", headers=bearer(made["token"]))
        clock.now = expires
        expired = client.get("/v1/audit", headers=bearer(made["token"]))

    assert live.status_code == 200
    assert expired.status_code == 401
    assert (expired.json()["code"], expired.json()["detail"]) == (
        "unauthorized",
        "unknown, revoked or expired token",
    )


@pytest.mark.parametrize("value", ["30", "30y", "-5m", "0d", "1.5h", "d", "99999999d"])
def test_tokens_create_when_expires_in_is_bad_then_usage_error_naming_the_option(
    cli: Callable[..., Run], service: Runtime, value: str
) -> None:
    run = cli("tokens", "create", "--role", "auditor", f"--expires-in={value}")

    assert run.code == 2
    assert "argument --expires-in: " in run.err
    assert service.store.token_count() == 0


# --- serve's first start ----------------------------------------------------------------


@pytest.fixture
def serve_once(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`serve` up to the point where uvicorn would take over (it returns at once),
    with the root logger's handlers restored afterwards."""
    import uvicorn

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setattr(uvicorn, "run", lambda *_, **__: None)
    monkeypatch.setattr(Runtime, "start_sweeping", lambda *_, **__: None)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_serve_when_first_start_then_admin_token_is_in_a_0600_file_and_never_printed(
    cli: Callable[..., Run], database: Path, serve_once: None, clock: Any
) -> None:
    run = cli("serve")

    path = database.parent / "admin-token"
    token = path.read_text().strip()
    assert run.code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token.startswith(f"apx_{token_id_of(token)}_")
    assert f"written to {path} (mode 0600)" in run.out
    logged = [json.loads(line)["message"] for line in run.err.splitlines()]
    assert any(f"written to {path}" in message for message in logged)
    assert token not in run.out + run.err
    assert token_id_of(token) in run.out  # the public id, to find it in `tokens list`
    runtime = Runtime.start(Settings.from_env(), clock=clock, recover=False)
    try:
        actor = runtime.tokens.check(token)
    finally:
        runtime.close()
    assert actor is not None and actor.role == "admin"


def test_serve_when_tokens_exist_then_no_admin_token_file_is_written(
    cli: Callable[..., Run], database: Path, serve_once: None
) -> None:
    create_token(cli, "--role", "auditor")
    logging.disable(logging.NOTSET)

    run = cli("serve")

    assert run.code == 0
    assert not (database.parent / "admin-token").exists()
    assert "admin token" not in run.out + run.err


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
    assert kinds == ["verification", "omega_invoked", "omega_cleared"]  # after the start's


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
    assert [r["kind"] for r in service.store.audit_records()] == ["verification", "omega_invoked"]


@pytest.mark.parametrize(
    "argv",
    [["frozen", "--reason", "x"], ["halted"]],
    ids=["unknown_state", "no_reason"],
)
def test_state_set_when_state_or_reason_is_wrong_then_usage_error(
    cli: Callable[..., Run], argv: list[str]
) -> None:
    run = cli("state", "set", *argv)

    assert run.code == 2


def test_state_set_when_the_account_is_not_an_account_id_then_refused_exit_2(
    cli: Callable[..., Run], service: Runtime
) -> None:
    run = cli("state", "set", "halted", "--reason", "x", "--account", "no such account!")

    assert run.code == 2
    assert run.err.startswith("refused: ")
    assert [r["kind"] for r in service.store.audit_records()] == ["verification"]  # the start's


def test_omega_invoke_when_reason_is_missing_then_usage_error(cli: Callable[..., Run]) -> None:
    run = cli("omega", "invoke")

    assert run.code == 2


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
    assert run.err == f"exported 4 records to {target}\n"
    assert len(lines) == 4
    assert verify_offline(lines) is None
    assert [json.loads(line).get("order_id") for line in lines] == [
        None,  # the service's start: the verification of its compliance configuration
        "ORD-2026-000001",
        "ORD-2026-000002",
        "ORD-2026-000003",
    ]


@pytest.mark.usefixtures("three_records")
def test_audit_verify_when_intact_then_ok_and_exit_0(cli: Callable[..., Run]) -> None:
    run = cli("audit", "verify")

    assert run.code == 0
    assert run.out.startswith("audit chain OK: 4 records, head sha256:")


@pytest.mark.usefixtures("three_records")
@pytest.mark.parametrize("k", [1, 2, 3])
def test_audit_verify_when_record_k_is_tampered_in_the_database_then_broken_at_k(
    cli: Callable[..., Run], database: Path, tmp_path: Path, k: int
) -> None:
    tamper(database, k + 1, quantity=999_999)  # record 1 is the start's verification

    human = cli("audit", "verify")
    machine = cli("audit", "verify", "--json")
    cli("audit", "export", "-o", str(tmp_path / "audit.jsonl"))

    assert human.code == 1
    assert f"BROKEN at record {k + 1} (order ORD-2026-{k:06d}): hash mismatch" in human.out
    assert machine.code == 1
    assert json.loads(machine.out)["first_break"]["position"] == k + 1
    exported = (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert verify_offline(exported) == k + 1


@pytest.mark.usefixtures("three_records")
def test_audit_verify_when_the_tail_is_deleted_then_truncated_with_want_and_got_exit_1(
    cli: Callable[..., Run], database: Path
) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq = 4")

    human = cli("audit", "verify")
    machine = cli("audit", "verify", "--json")

    assert human.code == 1
    assert human.out.splitlines()[:2] == [
        "audit chain DIFFERS from the store: 2 findings",
        "  chain_head: chain_truncated (want: {'records': 4, 'hash': "
        + repr(json.loads(machine.out)["stored_head"]["hash"])
        + "}, got: {'records': 3, 'hash': "
        + repr(json.loads(machine.out)["head"])
        + "})",
    ]
    assert "  ORD-2026-000003: order_not_in_chain (want: None, got: 'evaluated')" in human.out
    assert machine.code == 1
    assert [f["code"] for f in json.loads(machine.out)["findings"]] == [
        "chain_truncated",
        "order_not_in_chain",
    ]


@pytest.mark.usefixtures("three_records")
def test_audit_verify_export_when_intact_then_ok_says_no_head_and_exit_0(
    cli: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "audit.jsonl"
    cli("audit", "export", "-o", str(target))
    monkeypatch.setenv("APEX_DATABASE_URL", "sqlite:////nonexistent/no.db")  # no database

    human = cli("audit", "verify", "--export", str(target))
    machine = cli("audit", "verify", "--export", str(target), "--json")

    assert human.code == 0
    assert human.out.splitlines() == [
        f"audit chain OK: 4 records, head {json.loads(machine.out)['head']}",
        "links and hashes only: an export has no stored head, so a deleted tail cannot show",
    ]
    assert machine.code == 0
    report = json.loads(machine.out)
    assert (report["scope"], report["head_compared"], report["stored_head"]) == (
        "export",
        False,
        None,
    )


@pytest.mark.usefixtures("three_records")
def test_audit_verify_export_when_a_line_is_tampered_then_that_line_is_named_exit_1(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    target = tmp_path / "audit.jsonl"
    cli("audit", "export", "-o", str(target))
    lines = target.read_text(encoding="utf-8").splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "quantity": 123456})
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")

    run = cli("audit", "verify", "--export", str(target))

    assert run.code == 1
    assert run.out.startswith(
        "audit chain BROKEN at record 3 (order ORD-2026-000002): hash mismatch"
    )


def test_audit_verify_export_when_the_file_is_unusable_then_exit_2(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe{}")

    missing = cli("audit", "verify", "--export", str(tmp_path / "none.jsonl"))
    undecodable = cli("audit", "verify", "--export", str(binary))

    assert (missing.code, missing.out) == (2, "")
    assert missing.err.startswith(f"apex-oms: cannot read the export {tmp_path / 'none.jsonl'}: ")
    assert (undecodable.code, undecodable.out) == (2, "")
