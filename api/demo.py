"""`apex-oms demo`: the service in simulation mode, in-process, on a scratch
database, driven over HTTP by a scripted series of orders."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

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
    logging.disable(logging.WARNING)
    clock = _DemoClock()
    with tempfile.TemporaryDirectory(prefix="apex-demo-") as home:
        settings = Settings.from_env(
            {"APEX_HOME": home, "APEX_POLICIES": str(policies or Path("policies"))}
        )
        runtime = Runtime.start(settings, clock=clock)
        token = runtime.tokens.create("admin", "demo", clock())
        rows: list[dict[str, Any]] = []
        with TestClient(create_app(runtime)) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            _script(client, clock, rows)
            verify = client.get("/v1/audit/verify").json()
        runtime.close()
    if as_json:
        print(json.dumps({"steps": rows, "audit": verify}, indent=2))
    else:
        print(
            table(
                ["step", "http", "order_id", "status", "triggers / detail"],
                [
                    [r["step"], str(r["http"]), r["order_id"], r["status"], r["detail"]]
                    for r in rows
                ],
            )
        )
        state = "OK" if verify["ok"] else f"BROKEN at {verify['first_break']}"
        print(f"\naudit chain {state}: {verify['records']} records, head {verify['head']}")
    return 0 if verify["ok"] else 1


def _script(client: TestClient[Any], clock: _DemoClock, rows: list[dict[str, Any]]) -> None:
    def step(name: str, response: Any) -> dict[str, Any]:
        body = response.json()
        record = body.get("record", body) if isinstance(body, dict) else {}
        triggers = ",".join(record.get("fail_closed_triggers") or [])
        detail = triggers or body.get("code", "") if isinstance(body, dict) else ""
        if isinstance(body, dict) and "omega" in body and "order_status" not in record:
            status = "in force" if body["omega"].get("active") else "cleared"
            record = {"order_status": f"omega {status}"}
        rows.append(
            {
                "step": name,
                "http": response.status_code,
                "order_id": record.get("order_id") or "-",
                "status": record.get("order_status") or body.get("mode", "-"),
                "detail": detail,
            }
        )
        return dict(record)

    step(
        "evaluate in research mode",
        client.post("/v1/orders/evaluate", json=_order("demo-1", clock)),
    )
    step("submit in research mode", client.post("/v1/orders", json=_order("demo-2", clock)))
    step(
        "enter simulation mode",
        client.post("/v1/mode", json={"mode": "simulation", "reason": "demo"}),
    )
    step("market buy fills", client.post("/v1/orders", json=_order("demo-3", clock)))
    resting = step(
        "limit buy rests",
        client.post(
            "/v1/orders", json=_order("demo-4", clock, order_type="limit", limit_price=149.50)
        ),
    )
    step(
        "replace: new limit",
        client.post(
            f"/v1/orders/{resting['order_id']}/replace",
            json={"limit_price": 149.80, "context": _order("x", clock)["context"]},
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
                "timestamp": format_utc(clock()),
            },
        ),
    )
    rows[-1]["status"] = "filled" if rows[-1]["http"] == 200 else rows[-1]["status"]
    rows[-1]["order_id"] = resting["order_id"]
    other = step(
        "limit sell rests",
        client.post(
            "/v1/orders",
            json=_order("demo-5", clock, side="sell", order_type="limit", limit_price=151.00),
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
        step(
            f"blocked: {name}",
            client.post(
                "/v1/orders", json=_order(f"demo-{number}", clock, **copy.deepcopy(change))
            ),
        )
    step(
        "invalid: limit without price",
        client.post("/v1/orders", json=_order("demo-20", clock, order_type="limit")),
    )
    step("omega directive invoked", client.post("/v1/omega", json={"reason": "demo"}))
    step("blocked: omega_directive", client.post("/v1/orders", json=_order("demo-21", clock)))
    step("omega directive cleared", client.delete("/v1/omega", params={"reason": "demo over"}))
