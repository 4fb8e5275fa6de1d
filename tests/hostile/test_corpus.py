"""The hostile-request corpus (tests/hostile/corpus.jsonl, written by
build_corpus.py) sent over HTTP on SQLite and on PostgreSQL, in simulation mode
so that anything approved would really be routed.

For every entry: the status and error code it expects, never an approval of a
must-block body, never a 5xx, and exactly the chain records it should append
(one per authenticated attempt, none without a token); at the end the chain
verifies. Every problem of every entry is reported together.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from adapters.sql.schema import audit_log
from api.runtime import Runtime
from tests.conftest import OrderBuilder

CORPUS = Path(__file__).resolve().parent / "corpus.jsonl"
APPROVED = {"evaluated", "submitted", "accepted", "partially_filled", "filled", "replaced"}


@dataclass(frozen=True)
class Entry:
    id: str
    method: str
    route: str
    role: str | None
    content: bytes
    expect: dict[str, Any]
    must_block: bool
    records: int


def load_corpus() -> list[Entry]:
    entries = []
    for line in CORPUS.read_text("ascii").splitlines():
        raw = json.loads(line)
        if "body_b64" in raw:
            content = base64.b64decode(raw["body_b64"])
        else:
            content = raw.get("body", "").encode("utf-8", "surrogatepass")
        role = raw["role"]
        entries.append(
            Entry(
                id=raw["id"],
                method=raw["method"],
                route=raw["route"],
                role=role,
                content=content,
                expect=raw["expect"],
                must_block=raw["must_block"],
                records=raw.get("records", 0 if role is None else 1),
            )
        )
    return entries


ENTRIES = load_corpus()


def test_corpus_covers_every_reproduction_once() -> None:
    names = [e.id for e in ENTRIES]
    sources = {json.loads(line)["source"] for line in CORPUS.read_text("ascii").splitlines()}

    assert len(names) == len(set(names))
    assert {"issue 8, reached the database unchecked", "issue 8, passed and should not"} <= sources
    assert sum(e.must_block for e in ENTRIES) >= 70


def chain_length(runtime: Runtime) -> int:
    with runtime.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())


def approved(entry: Entry, status: int, body: Any) -> bool:
    if status in (201, 202):
        return True
    return status == 200 and isinstance(body, dict) and body.get("order_status") in APPROVED


def problems_of(entry: Entry, status: int, body: Any, appended: int) -> list[str]:
    expect, found = entry.expect, []
    if status >= 500:
        found.append(f"a {status}")
    if entry.must_block and approved(entry, status, body):
        found.append(f"APPROVED ({status}, {body.get('order_status')})")
    if status != expect["status"]:
        found.append(f"status {status}, want {expect['status']}")
    content = body if isinstance(body, dict) else {}
    if "code" in expect and content.get("code") != expect["code"]:
        found.append(f"code {content.get('code')!r}, want {expect['code']!r}")
    fields = [e.get("field") for e in content.get("errors", [])]
    if "field" in expect and expect["field"] not in fields:
        found.append(f"fields {fields}, want {expect['field']!r}")
    reasons = {r.get("code") for r in content.get("reasons") or []}
    if "reasons" in expect and not set(expect["reasons"]) <= reasons:
        found.append(f"reasons {sorted(reasons)}, want {expect['reasons']}")
    if appended != entry.records:
        found.append(f"{appended} chain records, want {entry.records}")
    return found


def test_corpus_when_sent_over_http_then_nothing_approved_no_5xx_every_attempt_logged(
    runtime: Runtime,
    client: TestClient[Any],
    auth: dict[str, dict[str, str]],
    make_order: OrderBuilder,
) -> None:
    entered = client.post(
        "/v1/mode", headers=auth["compliance"], json={"mode": "simulation", "reason": "corpus"}
    )
    # a working order (a buy limit below the ask rests at the simulator) to replace
    working = client.post(
        "/v1/orders", headers=auth["trader"], json=make_order(limit_price=150.0)
    ).json()
    assert (entered.status_code, working.get("order_status")) == (200, "accepted"), working
    report: dict[str, list[str]] = {}
    for entry in ENTRIES:
        before = chain_length(runtime)
        headers = {"Content-Type": "application/json", **(auth[entry.role] if entry.role else {})}
        response = client.request(
            entry.method,
            entry.route.format(order_id=working["order_id"]),
            content=entry.content,
            headers=headers,
        )
        try:
            body = response.json()
        except ValueError:
            body = response.text
        found = problems_of(entry, response.status_code, body, chain_length(runtime) - before)
        if found:
            report[entry.id] = found
    verified = client.get("/v1/audit/verify", headers=auth["auditor"]).json()

    assert report == {}
    assert verified["ok"] is True, verified


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.role is None], ids=lambda e: e.id)
def test_corpus_entry_without_a_token_asks_for_none_of_the_chain(entry: Entry) -> None:
    assert entry.records == 0
