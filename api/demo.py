"""`apex-oms demo`: the service in simulation mode, in-process, on a scratch
database, driven over HTTP by a scripted series of orders.

It shows every fail-closed trigger (SPEC section 4) with each reason's code and
detail. Two of them need a fault, and both faults are real, not pretended:
`broker_api_error` comes from the simulated broker's own fault injection (the
next submit does not reach it), and `engine_error` from an unreadable position
written straight into the scratch database, so that the gateway cannot compute
the order's position and blocks it rather than guess. The row is restored at
once, and the audit chain still verifies at the end."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import sqlite3
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from adapters.simulated import NotReached, SimulatedBroker
from engine.canonical import sha256_digest
from engine.clock import format_utc

from ._table import table
from .app import create_app
from .runtime import Runtime
from .settings import Settings

__all__ = ["run_demo"]

_START = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York


class _DemoClock:
    """Starts at a fixed trading time and moves 50 ms per reading: deterministic."""

    def __init__(self) -> None:
        self._ticks: Iterator[int] = itertools.count()

    def __call__(self) -> datetime:
        return _START + timedelta(milliseconds=50 * next(self._ticks))


def _order(cid: str, clock: _DemoClock, **changes: Any) -> dict[str, Any]:
    quote = {"bid": 150.20, "ask": 150.30, "last": 150.25, "timestamp": format_utc(clock())}
    quote.update(changes.pop("quote", {}))
    context: dict[str, Any] = {
        "quote": quote,
        "volatility": 0.23,
        "regime": "trending",
        "entropy": 0.41,
        "drift": 0.12,
        "protocols_fired": ["T01", "T07"],
    }
    context.update(changes.pop("context", {}))
    context.setdefault("data_hash", sha256_digest(context["quote"]))
    context.setdefault("protocol_hash", sha256_digest(sorted(context["protocols_fired"])))
    order = {
        "client_order_id": cid,
        "account": "default",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 100,
        "order_type": "market",
        "time_in_force": "day",
        "decision_reason": "demo",
        "context": context,
    }
    order["quantity"] = 100 + int(cid.rsplit("-", 1)[-1]) if cid[-1].isdigit() else 100
    order.update(changes)
    return order


def run_demo(as_json: bool = False, policies: Path | None = None) -> int:
    # the two faults are logged as errors by the service: the tables say it all
    logging.disable(logging.CRITICAL)
    clock = _DemoClock()
    with tempfile.TemporaryDirectory(prefix="apex-demo-") as home:
        # a scratch data directory and no trust file: the development root of the
        # scratch directory signs the configuration, whatever ./keys holds
        settings = Settings.from_env(
            {
                "APEX_HOME": home,
                "APEX_POLICIES": str(policies or Path("policies")),
                "APEX_KEYS": str(Path(home) / "keys"),
            }
        )
        runtime = Runtime.start(settings, clock=clock)
        compliance = runtime.gateway.standing.view()
        token = runtime.tokens.create("admin", "demo", clock())
        rows: list[dict[str, Any]] = []
        try:
            with TestClient(create_app(runtime)) as client:
                client.headers["Authorization"] = f"Bearer {token}"
                _script(_Demo(client, clock, runtime, Path(home) / "apex.db", rows))
                verify = client.get("/v1/audit/verify").json()
        finally:
            runtime.close()
            logging.disable(logging.NOTSET)
    if as_json:
        print(json.dumps({"compliance": compliance, "steps": rows, "audit": verify}, indent=2))
    else:
        print(
            f"compliance configuration: version {compliance['version']}, trust "
            f"{compliance['trust']} (the scratch directory's development root; never live)\n"
        )
        _print(rows)
        state = "OK" if verify["ok"] else f"BROKEN at {verify['first_break']}"
        print(f"\naudit chain {state}: {verify['records']} records, head {verify['head']}")
    return 0 if verify["ok"] else 1


def _print(rows: list[dict[str, Any]]) -> None:
    print(
        table(
            ["#", "step", "http", "order_id", "status", "triggers"],
            [
                [str(n), r["step"], str(r["http"]), r["order_id"], r["status"], r["triggers"]]
                for n, r in enumerate(rows, start=1)
            ],
        )
    )
    reasons = [
        [str(n), reason["check"], reason["code"], reason["detail"]]
        for n, r in enumerate(rows, start=1)
        for reason in r["reasons"]
    ]
    print("\nWhy: each reason's code and detail, by step\n")
    print(table(["#", "check", "code", "detail"], reasons))
    notes = [(n, r["how"]) for n, r in enumerate(rows, start=1) if r.get("how")]
    if notes:
        print("\nHow the faults were caused\n")
        for n, how in notes:
            print(textwrap.fill(how, 96, initial_indent=f"{n:>2}  ", subsequent_indent="    "))


class _Demo:
    """What the script drives: the HTTP client, the clock, the runtime (for the
    simulated broker's fault injection) and the scratch database file."""

    def __init__(
        self,
        client: TestClient[Any],
        clock: _DemoClock,
        runtime: Runtime,
        database: Path,
        rows: list[dict[str, Any]],
    ) -> None:
        self.client, self.clock, self.runtime, self.database = client, clock, runtime, database
        self.rows = rows

    def step(self, name: str, response: Any, how: str = "") -> dict[str, Any]:
        body = response.json()
        body = body if isinstance(body, dict) else {}
        record = body.get("record", body)
        record = record if isinstance(record, dict) else {}
        status = record.get("order_status") or body.get("mode") or "-"
        if "omega" in body and "order_status" not in record:
            status = "omega " + ("in force" if body["omega"].get("active") else "cleared")
        self.rows.append(
            {
                "step": name,
                "http": response.status_code,
                "order_id": record.get("order_id") or "-",
                "status": status,
                "triggers": ",".join(record.get("fail_closed_triggers") or []),
                "reasons": _reasons(body, record),
                "how": how,
            }
        )
        return dict(record)

    def order(self, cid: str, **changes: Any) -> dict[str, Any]:
        return _order(cid, self.clock, **copy.deepcopy(changes))


def _reasons(body: dict[str, Any], record: dict[str, Any]) -> list[dict[str, str]]:
    """The record's reasons (check, code, detail); for a refused request, the
    error's code with each bad field."""
    reasons = [
        {"check": str(r.get("check", "")), "code": str(r["code"]), "detail": str(r["detail"])}
        for r in record.get("reasons") or []
        if isinstance(r, dict) and "code" in r
    ]
    if reasons or "code" not in body:
        return reasons
    errors = body.get("errors") or record.get("errors") or []
    details = [f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
    return [
        {"check": "(request)", "code": str(body["code"]), "detail": d}
        for d in details or [str(body.get("detail", ""))]
    ]


def _script(demo: _Demo) -> None:
    client, step, order = demo.client, demo.step, demo.order
    step("evaluate in research mode", client.post("/v1/orders/evaluate", json=order("demo-1")))
    step("submit in research mode", client.post("/v1/orders", json=order("demo-2")))
    step(
        "enter simulation mode",
        client.post("/v1/mode", json={"mode": "simulation", "reason": "demo"}),
    )
    step("market buy fills", client.post("/v1/orders", json=order("demo-3")))
    resting = step(
        "limit buy rests",
        client.post("/v1/orders", json=order("demo-4", order_type="limit", limit_price=149.50)),
    )
    step(
        "replace: new limit",
        client.post(
            f"/v1/orders/{resting['order_id']}/replace",
            json={"limit_price": 149.80, "context": order("x")["context"]},
        ),
    )
    step(
        "quote crosses: filled",
        client.post(
            "/v1/sim/quotes",
            json={
                "symbol": "AAPL",
                "bid": 149.70,
                "ask": 149.78,
                "last": 149.75,
                "timestamp": format_utc(demo.clock()),
            },
        ),
    )
    demo.rows[-1]["status"] = "filled" if demo.rows[-1]["http"] == 200 else demo.rows[-1]["status"]
    demo.rows[-1]["order_id"] = resting["order_id"]
    other = step(
        "limit sell rests",
        client.post(
            "/v1/orders",
            json=order("demo-5", side="sell", order_type="limit", limit_price=151.00),
        ),
    )
    step(
        "cancel it",
        client.post(
            f"/v1/orders/{other['order_id']}/cancel", json={"reason": "demo: no longer wanted"}
        ),
    )
    blocked: dict[str, dict[str, Any]] = {
        "risk_denied (spread)": {"quote": {"bid": 150.00, "ask": 150.80}},
        "drift_entropy_unsafe": {"context": {"entropy": 0.97}},
        "data_integrity_mismatch": {"context": {"data_hash": "sha256:" + "0" * 64}},
        "protocol_mismatch": {"context": {"protocol_hash": "sha256:" + "1" * 64}},
        "compliance_failure": {"symbol": "RSTR"},
        "broker_capability (opg)": {"time_in_force": "opg"},
    }
    for number, (name, change) in enumerate(blocked.items(), start=6):
        step(f"blocked: {name}", client.post("/v1/orders", json=order(f"demo-{number}", **change)))
    _broker_api_error(demo)
    _engine_error(demo)
    step(
        "invalid: limit without price",
        client.post("/v1/orders", json=order("demo-20", order_type="limit")),
    )
    step("omega directive invoked", client.post("/v1/omega", json={"reason": "demo"}))
    step("blocked: omega_directive", client.post("/v1/orders", json=order("demo-21")))
    step("omega directive cleared", client.delete("/v1/omega", params={"reason": "demo over"}))


def _broker_api_error(demo: _Demo) -> None:
    """The simulated broker's fault injection: its next call fails as if the
    broker could not be reached. The gateway asks the broker whether the order
    arrived (it did not) and blocks it, HTTP 502."""
    broker = demo.runtime.gateway.broker_for("simulation")
    if not isinstance(broker, SimulatedBroker):
        raise RuntimeError("the demo needs the simulated broker in simulation mode")
    broker.inject(NotReached())
    demo.step(
        "blocked: broker_api_error",
        demo.client.post("/v1/orders", json=demo.order("demo-12")),
        how="broker_api_error: the simulated broker was told (fault injection, NotReached) "
        "to fail its next call as if it could not be reached; the gateway found the order "
        "had not arrived and blocked it (HTTP 502)",
    )


def _engine_error(demo: _Demo) -> None:
    """An unreadable stored position, written into the scratch database from
    outside the service (as a stray tool or a damaged disk might): the order's
    position cannot be computed, so the order is blocked, never approved. The
    row is restored at once, so the audit chain still verifies."""
    where = "account = 'default' AND symbol = 'AAPL'"
    with sqlite3.connect(demo.database) as db:
        (kept,) = db.execute(f"SELECT quantity FROM positions WHERE {where}").fetchone()
        db.execute(f"UPDATE positions SET quantity = 'unreadable' WHERE {where}")
    try:
        demo.step(
            "blocked: engine_error",
            demo.client.post("/v1/orders", json=demo.order("demo-13")),
            how=f"engine_error: the AAPL position row (quantity {kept:g}) was overwritten with "
            "the text 'unreadable' straight in the scratch database; the gateway could not "
            "read the position the checks need, so it blocked the order; the row was then "
            "restored",
        )
    finally:
        with sqlite3.connect(demo.database) as db:
            db.execute(f"UPDATE positions SET quantity = ? WHERE {where}", (kept,))
