"""Signed checkpoints in a real `apex-oms serve`: written by count, by time and on
shutdown, never while idle; shown by `audit checkpoint` and
`GET /v1/audit/checkpoint`; and `audit verify` naming a cut tail and a forged
checkpoint."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from engine.audit import GENESIS, link
from tests.integration.served import Served, served


def change_state(service: Served, n: int = 1) -> None:
    """Append `n` records (trading state changes) through the API."""
    for i in range(n):
        answer = httpx.post(
            f"{service.url}/v1/trading-state",
            json={"scope": "global", "state": "active", "reason": f"test {i}"},
            headers=service.auth,
            timeout=10,
        )
        assert answer.status_code == 200, answer.text


def kinds(database: Path) -> list[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT record FROM audit_log ORDER BY seq").fetchall()
    return [json.loads(text).get("kind") or "order" for (text,) in rows]


def wait_for(condition: Callable[[], bool], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def checkpoints(database: Path) -> int:
    return kinds(database).count("checkpoint")


def test_serve_when_n_records_are_appended_then_a_checkpoint_shown_by_cli_and_http(
    tmp_path: Path,
) -> None:
    env = {"APEX_CHECKPOINT_RECORDS": "3", "APEX_CHECKPOINT_SECONDS": "3600"}
    with served(tmp_path, env=env) as service:
        database = service.home / "apex.db"
        before = httpx.get(f"{service.url}/v1/audit/checkpoint", headers=service.auth)
        none_yet = service.cli("audit", "checkpoint")
        change_state(service, 3)
        assert wait_for(lambda: checkpoints(database) == 1), kinds(database)
        answer = httpx.get(f"{service.url}/v1/audit/checkpoint", headers=service.auth)
        printed = service.cli("audit", "checkpoint")
        pubkey = service.cli("audit", "pubkey", "--json")

    assert (before.status_code, before.json()["code"]) == (404, "no_checkpoint")
    assert (none_yet.returncode, none_yet.stdout) == (1, "")
    assert "no checkpoint yet" in none_yet.stderr
    assert answer.status_code == 200
    checkpoint = answer.json()
    assert json.loads(printed.stdout) == checkpoint
    assert checkpoint["kind"] == "checkpoint"
    assert checkpoint["sequence"] == len(kinds(database)[: kinds(database).index("checkpoint")])
    assert json.loads(pubkey.stdout)["keyid"] == checkpoint["keyid"]
    assert json.loads(pubkey.stdout)["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")


def test_serve_when_t_seconds_pass_then_one_checkpoint_and_none_more_while_idle(
    tmp_path: Path,
) -> None:
    env = {"APEX_CHECKPOINT_SECONDS": "0.5"}
    with served(tmp_path, env=env) as service:
        database = service.home / "apex.db"
        change_state(service)
        assert wait_for(lambda: kinds(database)[-1] == "checkpoint")
        settled = kinds(database)
        time.sleep(3)  # six periods with nothing appended
        idle = kinds(database)

    assert idle == settled
    assert kinds(database) == settled  # a shutdown with nothing new adds nothing


def test_serve_when_stopped_then_the_last_records_are_signed_and_audit_verify_passes(
    tmp_path: Path,
) -> None:
    env = {"APEX_CHECKPOINT_SECONDS": "3600"}
    with served(tmp_path, env=env) as service:
        database = service.home / "apex.db"
        change_state(service, 2)
        running = kinds(database)

    stopped = kinds(database)
    assert "checkpoint" not in running
    assert stopped == [*running, "checkpoint"]
    verify = service.cli("audit", "verify")  # the CLI needs no running service
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "1 signed checkpoints verified" in verify.stdout


def _sign_tail(tmp_path: Path) -> tuple[Served, Path]:
    """A stopped service with a few records and two checkpoints; its CLI."""
    with served(tmp_path, env={"APEX_CHECKPOINT_RECORDS": "2"}) as service:
        database = service.home / "apex.db"
        change_state(service, 2)
        assert wait_for(lambda: checkpoints(database) == 1)
        change_state(service, 2)
        assert wait_for(lambda: checkpoints(database) == 2)
    return service, database


def relink(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with every hash recomputed, as a forger would."""
    out, previous = [], GENESIS
    for record in records:
        linked = link(record, previous)
        out.append(linked)
        previous = linked["hash"]
    return out


def flip(sig: str) -> str:
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_audit_verify_when_the_tail_after_the_last_checkpoint_is_cut_then_named(
    tmp_path: Path,
) -> None:
    service, database = _sign_tail(tmp_path)
    last = json.loads(service.cli("audit", "checkpoint").stdout)
    with sqlite3.connect(database) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq > ?", (last["sequence"] - 2,))
        conn.execute(
            "UPDATE chain_head SET seq = ?, hash = (SELECT hash FROM audit_log WHERE seq = ?)",
            (last["sequence"] - 2, last["sequence"] - 2),
        )

    run = service.cli("audit", "verify", "--json")

    assert run.returncode == 1
    found = [(f["subject"], f["code"]) for f in json.loads(run.stdout)["findings"]]
    assert (f"kept checkpoint {last['sequence']}", "chain_ends_before_checkpoint") in found


def test_audit_verify_export_when_a_checkpoint_is_forged_then_named_by_its_sequence(
    tmp_path: Path,
) -> None:
    service, _ = _sign_tail(tmp_path)
    export = tmp_path / "audit.jsonl"
    assert service.cli("audit", "export", "-o", str(export)).returncode == 0
    records = [json.loads(line) for line in export.read_text().splitlines()]
    at = next(i for i, r in enumerate(records) if r.get("kind") == "checkpoint")
    results = {}
    for name, change in {
        "sig": {"sig": flip(records[at]["sig"])},
        "head_hash": {"head_hash": "sha256:" + "ab" * 32},
    }.items():
        forged = relink([*records[:at], {**records[at], **change}, *records[at + 1 :]])
        target = tmp_path / f"forged-{name}.jsonl"
        target.write_text("".join(json.dumps(r) + "\n" for r in forged))
        results[name] = service.cli("audit", "verify", "--export", str(target))
    intact = service.cli("audit", "verify", "--export", str(export))

    assert intact.returncode == 0, intact.stdout
    sequence = records[at]["sequence"]
    for name, run in results.items():
        assert run.returncode == 1, name
        assert (
            f"checkpoint {sequence} (record {at + 1}): checkpoint_signature_invalid" in run.stdout
        ), (name, run.stdout)
