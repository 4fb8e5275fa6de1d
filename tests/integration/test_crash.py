"""`kill -9` of `apex-oms serve` during a submit storm, then a restart: no order is
left `submitted` (each was resolved with the simulated broker's journal: booked
if it reached the broker, blocked NOT_AT_BROKER if not), nothing was sent twice,
and `apex-oms audit verify` passes. On both backends, with the real server
process and real HTTP clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import build_order, copy_policies

CLIENTS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """`apex-oms serve` in a process of its own, on a policy set whose session
    calendar is `always` (the test runs at any hour) and whose throttle is lifted."""

    def __init__(self, tmp_path: Path, store_url: str) -> None:
        policies = copy_policies(tmp_path / "policies", lasting=True)
        config = policies / "compliance.yaml"
        text = config.read_text().replace("calendar: us_equities", "calendar: always")
        # a storm is far beyond the default throttle (20 orders a second)
        text = text.replace("max_orders_per_window: 20 ", "max_orders_per_window: 100000 ")
        config.write_text(text)
        self.env = {
            **os.environ,
            "APEX_HOME": str(tmp_path / "home"),
            "APEX_DATABASE_URL": store_url,
            "APEX_POLICIES": str(policies),
        }
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the service did not become ready within 60 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def service(tmp_path: Path, store_url: str) -> Iterator[Service]:
    svc = Service(tmp_path, store_url)
    yield svc
    svc.stop()


def test_kill_9_during_a_submit_storm_then_restart_leaves_nothing_submitted_and_chain_ok(
    service: Service,
) -> None:
    assert service.cli("mode", "set", "simulation", "--reason", "crash test").returncode == 0
    trader = service.cli("tokens", "create", "--role", "trader").stdout.strip()
    auditor = service.cli("tokens", "create", "--role", "auditor").stdout.strip()
    service.start()
    answered: list[int] = []
    stop = threading.Event()

    def client(n: int) -> None:
        headers = {"Authorization": f"Bearer {trader}"}
        with httpx.Client(base_url=service.url, headers=headers, timeout=10) as http:
            for i in range(10_000):
                if stop.is_set():
                    return
                # distinct quantities: no order is a duplicate of another
                order = _order(f"c{n}-{i}", quantity=1 + (n + CLIENTS * i) % 300, rest=i % 2 == 1)
                try:
                    answered.append(http.post("/v1/orders", json=order).status_code)
                except httpx.HTTPError:
                    return  # the server died under us

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    while len(answered) < 150:
        time.sleep(0.01)
    service.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    service.start()  # recovery runs before /readyz answers 200
    headers = {"Authorization": f"Bearer {auditor}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as http:
        left = http.get("/v1/orders", params={"status": "submitted", "limit": 1000}).json()
        records = _all_records(http)
    verify = service.cli("audit", "verify", "--json")

    assert answered.count(201) > 0, "no order was routed before the kill: the test proved nothing"
    assert left["orders"] == []
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
    # the resting orders were reconciled with the simulator's journal, and found there
    reconciled = [r for r in records if r.get("kind") == "reconciliation"]
    assert reconciled and reconciled[-1]["checked"] > 0 and reconciled[-1]["unresolved"] == []
    assert [r for r in records if r.get("kind") == "execution_anomaly"] == []
    submitted = [r["order_id"] for r in records if r.get("order_status") == "submitted"]
    assert len(submitted) == len(set(submitted)), "an order was approved twice"


def _order(client_order_id: str, *, quantity: int, rest: bool) -> dict[str, Any]:
    """A market order (fills at once), or a limit order below the ask (rests, working)."""
    if rest:
        return build_order(client_order_id, datetime.now(UTC), limit_price=150.0, quantity=quantity)
    return build_order(
        client_order_id, datetime.now(UTC), order_type="market", limit_price=None, quantity=quantity
    )


def _all_records(http: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = http.get("/v1/audit", params={"after": after, "limit": 1000}).json()["records"]
        out.extend(page)
        if len(page) < 1000:
            return out
        after += len(page)
