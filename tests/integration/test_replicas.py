"""Two real `apex-oms serve` replicas on one PostgreSQL database (SPEC section 10).

Each replica is its own process with its own data directory; the only thing
they share is `APEX_DATABASE_URL`. They must agree on the mode and the kill
switch, hand out order ids that never collide, and build one unbroken audit
chain, even when both take orders at the same time.

PostgreSQL is a requirement of this test, not an option: if it does not
answer on 127.0.0.1:5432 the test fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api.example_order import example_order

ROOT = Path(__file__).resolve().parents[2]
APEX = Path(sys.executable).with_name("apex-oms")
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ORDER_ID = re.compile(r"^ORD-(\d{4})-(\d{6,})$")
TOKEN_LINE = re.compile(r"admin token \w+ written to (\S+) \(mode 0600\)")
START_TIMEOUT_S = 40.0
REPLICAS = 2
THREADS_PER_REPLICA = 4
ORDERS_PER_THREAD = 25


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; a failure if PostgreSQL is down."""
    name = f"apex_replicas_{uuid.uuid4().hex}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not answering on 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """The default policies, open around the clock and without the order-rate throttle:
    the evaluation clock is real time here, and the test sends orders in bursts."""
    target = tmp_path / "policies"
    target.mkdir()
    for source in (ROOT / "policies").glob("*.yaml"):
        (target / source.name).write_bytes(source.read_bytes())
    config = target / "compliance.yaml"
    text = config.read_text(encoding="utf-8")
    for pattern, replacement in (
        (r"(?m)^(\s*calendar:\s*)\S+", r"\g<1>always"),
        (r"(?m)^(\s*max_orders_per_window:\s*)\d+", r"\g<1>1000000"),
        (r"(?m)^expires: .*$", 'expires: "2099-12-31T00:00:00Z"'),  # the real clock
    ):
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"compliance.yaml no longer has {pattern!r}"
    config.write_text(text, encoding="utf-8")
    return target


@dataclass
class Replica:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        out = self.stdout.read_text(errors="replace")
        err = self.stderr.read_text(errors="replace")
        return (
            f"--- {self.name} stdout ---\n{out}\n--- {self.name} stderr (tail) ---\n{err[-4000:]}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_replica(name: str, home: Path, database_url: str, policies: Path) -> Replica:
    home.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "APEX_HOME": str(home),
        "APEX_DATABASE_URL": database_url,
        "APEX_POLICIES": str(policies),
        "PYTHONUNBUFFERED": "1",
        # each replica has a home, and so a service key, of its own: no checkpoint by
        # time while the test counts the chain's records (docs/audit.md: share one key)
        "APEX_CHECKPOINT_SECONDS": "3600",
    }
    stdout, stderr = home / "stdout.log", home / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(APEX), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    return Replica(name, f"http://127.0.0.1:{port}", process, stdout, stderr)


def wait_healthy(replica: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            pytest.fail(
                f"{replica.name} exited with {replica.process.returncode}\n{replica.output()}"
            )
        try:
            if httpx.get(f"{replica.url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(
        f"{replica.name} did not answer /healthz in {START_TIMEOUT_S:g} s\n{replica.output()}"
    )


def stop(replica: Replica) -> None:
    if replica.process.poll() is None:
        replica.process.terminate()
        try:
            replica.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait(timeout=10)


@dataclass
class Cluster:
    replicas: list[Replica]
    token: str

    def client(self, index: int) -> httpx.Client:
        return httpx.Client(
            base_url=self.replicas[index].url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30.0,
        )


@pytest.fixture
def cluster(tmp_path: Path, database_url: str, policy_dir: Path) -> Iterator[Cluster]:
    """Replica A starts first and says where it wrote the admin token; B starts once A is up."""
    replicas: list[Replica] = []
    try:
        first = start_replica("replica-a", tmp_path / "home-a", database_url, policy_dir)
        replicas.append(first)
        wait_healthy(first)
        match = TOKEN_LINE.search(first.stdout.read_text())
        assert match, f"replica A printed no admin token\n{first.output()}"
        second = start_replica("replica-b", tmp_path / "home-b", database_url, policy_dir)
        replicas.append(second)
        wait_healthy(second)
        assert not TOKEN_LINE.search(second.stdout.read_text()), (
            "replica B printed a new admin token: tokens are not shared through the database"
        )
        yield Cluster(replicas, Path(match.group(1)).read_text().strip())
    finally:
        for replica in replicas:
            stop(replica)


# --- orders ----------------------------------------------------------------------------


def market_order(client_order_id: str, quantity: float, side: str) -> dict[str, Any]:
    """A market order, quoted now with correct digests (as `apex-oms orders example`)."""
    order = example_order(
        datetime.now(UTC),
        side=side,
        order_type="market",
        quantity=quantity,
        client_order_id=client_order_id,
    )
    return {**order, "decision_reason": "replica_test"}


def audit_records(client: httpx.Client) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        page = client.get("/v1/audit", params={"after": len(records), "limit": 1000})
        assert page.status_code == 200, page.text
        batch = page.json()["records"]
        records.extend(batch)
        if len(batch) < 1000:
            return records


# --- the test --------------------------------------------------------------------------


def test_two_replicas_on_one_postgresql_share_mode_kill_switch_order_ids_and_one_chain(
    cluster: Cluster,
) -> None:
    a, b = cluster.client(0), cluster.client(1)
    run = uuid.uuid4().hex[:8]
    with a, b:
        # the mode set through A is the mode B reports
        changed = a.post("/v1/mode", json={"mode": "simulation", "reason": "replica test"})
        assert changed.status_code == 200, changed.text
        assert b.get("/v1/mode").json()["mode"] == "simulation"

        # the kill switch invoked through B blocks submits on A, until it is cleared
        invoked = b.post("/v1/omega", json={"reason": "replica test"})
        assert invoked.status_code == 200, invoked.text
        assert a.get("/v1/mode").json()["omega"]["active"] is True
        blocked = a.post("/v1/orders", json=market_order(f"omega-{run}", 7, "buy"))
        assert blocked.status_code == 403, blocked.text
        assert "omega_directive" in blocked.json()["fail_closed_triggers"]
        cleared = a.delete("/v1/omega", params={"reason": "replica test done"})
        assert cleared.status_code == 200, cleared.text
        assert b.get("/v1/mode").json()["omega"]["active"] is False

        # then both replicas take orders at once
        answers = submit_concurrently(cluster, run)
        statuses = Counter(status for status, _ in answers)
        assert statuses == {201: len(answers)}, _first_failures(answers)
        routed = [record for _, record in answers]
        ids = [record["order_id"] for record in routed]
        assert len(set(ids)) == len(ids), "an order id was handed out twice"
        years = {datetime.now(UTC).year - 1, datetime.now(UTC).year}
        for order_id in [*ids, blocked.json()["order_id"]]:
            match = ORDER_ID.match(order_id)
            assert match and int(match.group(1)) in years, order_id
        assert {r["order_status"] for r in routed} == {"filled"}

        # one chain, seen identically through both replicas
        reports = [a.get("/v1/audit/verify").json(), b.get("/v1/audit/verify").json()]
        for report in reports:
            assert report["ok"] is True, report
        assert reports[0]["records"] == reports[1]["records"]
        assert reports[0]["head"] == reports[1]["head"]

        # every attempt is in the chain: 3 events, the blocked order, 2 records per fill
        records = audit_records(b)
        assert len(records) == reports[0]["records"]
        assert records[-1]["hash"] == reports[0]["head"]
        by_order: dict[str, list[str]] = defaultdict(list)
        for record in records:
            if "kind" not in record:
                by_order[record["order_id"]].append(record["order_status"])
        events = [r["kind"] for r in records if "kind" in r and r["kind"] != "checkpoint"]
        # each replica verified the configuration when it started: two records
        assert events == ["verification"] * 2 + ["mode_changed", "omega_invoked", "omega_cleared"]
        starts = [r for r in records if r.get("kind") == "verification"]
        assert [(r["trigger"], r["in_force"]) for r in starts] == [("start", True)] * 2
        assert by_order.pop(blocked.json()["order_id"]) == ["blocked"]
        assert set(by_order) == set(ids)
        for order_id in ids:
            assert by_order[order_id] == ["submitted", "filled"], order_id
        judged = [r for r in records if r.get("kind") != "checkpoint"]
        assert len(judged) == 2 + 3 + 1 + 2 * len(answers)

        # and each order can be read back through the replica that did not take it
        for index, (order_id, record) in enumerate(zip(ids, routed, strict=True)):
            other = b if index < len(ids) // 2 else a
            found = other.get(f"/v1/orders/{order_id}")
            assert found.status_code == 200, found.text
            assert found.json()["hash"] == record["hash"]


def submit_concurrently(cluster: Cluster, run: str) -> list[tuple[int, dict[str, Any]]]:
    """REPLICAS x THREADS_PER_REPLICA threads, each with its own client, started together.
    Answers come back ordered by replica, so the first half were taken by replica A."""
    workers = [(r, t) for r in range(REPLICAS) for t in range(THREADS_PER_REPLICA)]
    barrier = threading.Barrier(len(workers))

    def work(replica: int, thread: int) -> list[tuple[int, dict[str, Any]]]:
        out = []
        with cluster.client(replica) as client:
            client.get("/healthz")  # connect before the race starts
            barrier.wait(timeout=30)
            for i in range(ORDERS_PER_THREAD):
                n = (replica * THREADS_PER_REPLICA + thread) * ORDERS_PER_THREAD + i
                order = market_order(f"rep-{run}-{n:04d}", n + 1, "buy" if n % 2 else "sell")
                answer = client.post("/v1/orders", json=order)
                out.append((answer.status_code, answer.json()))
        return out

    with ThreadPoolExecutor(len(workers)) as pool:
        futures = [pool.submit(work, r, t) for r, t in workers]
        return [answer for future in futures for answer in future.result()]


def _first_failures(answers: list[tuple[int, dict[str, Any]]]) -> str:
    failures = [(s, body) for s, body in answers if s != 201][:3]
    return "\n".join(f"{s}: {body}" for s, body in failures)
