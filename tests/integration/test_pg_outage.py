"""PostgreSQL stops in the middle of traffic, then starts again: every answer in
between is a normal answer or a 503 (`store_unavailable`, `audit_unavailable`),
never a 500 and never a 401 for a valid token; once the database is back the
service answers normally again without a restart, and the chain verifies with
every 2xx and 403 order answer's record in it.

The test runs a PostgreSQL cluster of its own on a free port (the shared server
on 5432 is never stopped). `initdb` refuses to run as root, so the cluster is
created and run by an unprivileged OS user (`postgres`, made if missing).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from adapters.sql import SqlStore
from api.app import create_app
from api.auth import TokenBook
from api.runtime import Runtime
from api.settings import Settings
from engine.errors import StoreUnavailable
from tests.conftest import FixedClock, build_order, copy_policies, role_tokens

CLIENTS = 4
PG_USER = "postgres"
OUTAGE_S = 2.0  # longer than the token cache (0.5 s): token checks reach the database
RECOVERY_BOUND_S = 30.0
STORE_DOWN = {"store_unavailable", "audit_unavailable"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindir() -> Path:
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert found, "no PostgreSQL server binaries (pg_config --bindir, /usr/lib/postgresql/*/bin)"
    return found[-1].parent


def _ensure_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary directory, run as `postgres`."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="apex-pg-outage-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/apex"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{argv[0]} failed: {done.stdout}{done.stderr}"

    def create(self) -> None:
        if os.geteuid() == 0:
            _ensure_user()
            shutil.chown(self.root, PG_USER)
        flags = ("-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self._run("initdb", "-D", str(self.data), *flags)
        self.start()
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as admin:
            admin.execute("CREATE DATABASE apex")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
            " -c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log), "-o", options)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError):  # already stopped
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    pg = Cluster()
    try:
        pg.create()
        yield pg
    finally:
        pg.remove()


@pytest.fixture
def outage_runtime(cluster: Cluster, tmp_path: Path) -> Iterator[Runtime]:
    # the calendar is `always` and the throttle lifted: most orders are routed
    policies = copy_policies(tmp_path / "policies")
    config = policies / "compliance.yaml"
    text = config.read_text().replace("calendar: us_equities", "calendar: always")
    config.write_text(text.replace("max_orders_per_window: 20 ", "max_orders_per_window: 100000 "))
    settings = Settings(home=tmp_path / "home", database_url=cluster.url, policies=policies)
    runtime = Runtime.start(settings, clock=FixedClock())
    try:
        yield runtime
    finally:
        runtime.close()


class Traffic:
    """Clients that evaluate, submit, and read orders, the audit log and the mode,
    each request with a valid token, recording every answer."""

    def __init__(self, client: TestClient[Any], clock: Callable[[], Any], auth: dict[str, str]):
        self.client = client
        self.clock = clock
        self.auth = auth
        self.answers: list[tuple[str, int, dict[str, Any]]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(CLIENTS)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def _run(self, n: int) -> None:
        headers = {role: {"Authorization": f"Bearer {token}"} for role, token in self.auth.items()}
        i = 0
        while not self.stop.is_set():
            i += 1
            order = build_order(f"c{n}-{i}", self.clock(), quantity=1 + (n + CLIENTS * i) % 300)
            kind = i % 5
            if kind == 0:
                r = self.client.post("/v1/orders/evaluate", json=order, headers=headers["trader"])
                name = "evaluate"
            elif kind == 1:
                r = self.client.post("/v1/orders", json=order, headers=headers["trader"])
                name = "submit"
            elif kind == 2:
                r = self.client.get("/v1/orders", params={"limit": 5}, headers=headers["auditor"])
                name = "orders"
            elif kind == 3:
                params = {"limit": 5}
                r = self.client.get("/v1/audit", params=params, headers=headers["auditor"])
                name = "audit"
            else:
                r = self.client.get("/v1/mode", headers=headers["trader"])
                name = "mode"
            try:
                body = r.json()
            except ValueError:
                body = {"text": r.text[:200]}
            with self._lock:
                self.answers.append((name, r.status_code, body if isinstance(body, dict) else {}))


def _wait_for(condition: Callable[[], bool], bound_s: float, what: str) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {bound_s} s: {what}"
        time.sleep(0.05)


def _normal(name: str, status: int) -> bool:
    if name == "submit":
        return status in (201, 202, 403, 502)
    return status == 200


def test_postgres_stops_mid_traffic_then_every_answer_is_normal_or_503_and_service_recovers(
    cluster: Cluster, outage_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = outage_runtime
    runtime.start_sweeping(every_s=0.2)  # it must outlive the outage
    auth = role_tokens(runtime)
    with TestClient(create_app(runtime)) as client:
        mode = client.post(
            "/v1/mode",
            json={"mode": "simulation", "reason": "outage test"},
            headers={"Authorization": f"Bearer {auth['compliance']}"},
        )
        assert mode.status_code == 200, mode.text

        with Traffic(client, runtime.clock, auth) as traffic:
            _wait_for(lambda: traffic.count() >= 40, 20, "traffic before the outage")
            cluster.stop()
            down_from = traffic.count()
            time.sleep(OUTAGE_S)  # the outage lasts; the clients keep asking
            ready, alive = client.get("/readyz"), client.get("/healthz")
            down_to = traffic.count()
            cluster.start()
            back_from = traffic.count()
            # normal again: a run of every kind of request answered normally
            _wait_for(
                lambda: _recovered(traffic.answers[back_from:]),
                RECOVERY_BOUND_S,
                "every kind of request answered normally after the restart",
            )
        # ready again (the database answers, every broker reconciled), polled: a
        # broker the outage left unreconciled is the sweep's to settle
        _wait_for(lambda: client.get("/readyz").status_code == 200, RECOVERY_BOUND_S, "ready again")
        report = client.get(
            "/v1/audit/verify", headers={"Authorization": f"Bearer {auth['auditor']}"}
        ).json()
        chain = _chain(client, auth["auditor"])

    answers = traffic.answers
    wrong = [
        (name, status, body)
        for name, status, body in answers
        if not _normal(name, status) and not (status == 503 and body.get("code") in STORE_DOWN)
    ]
    assert wrong == [], f"{len(wrong)} of {len(answers)} answers were neither normal nor 503"
    during = answers[down_from:down_to]
    assert any(status == 503 for _, status, _ in during), "the outage was never seen"
    assert ready.status_code == 503
    assert ready.json()["database"] is False and ready.json()["reasons"]
    assert alive.status_code == 200  # liveness: the process is fine, do not restart it
    assert runtime.sweeping
    assert any("sweep cannot reach the store" in r.getMessage() for r in caplog.records)
    assert report["ok"] is True, report
    in_chain = {r["hash"] for r in chain}
    for name, status, body in answers:
        if name in ("evaluate", "submit") and (200 <= status < 300 or status == 403):
            assert body.get("hash") in in_chain, (name, status, body)


def _recovered(answers: list[tuple[str, int, dict[str, Any]]]) -> bool:
    """Every kind of request has been answered normally since the restart."""
    kinds = {"evaluate", "submit", "orders", "audit", "mode"}
    return kinds <= {name for name, status, _ in answers if _normal(name, status)}


def _chain(client: TestClient[Any], token: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        page = client.get(
            "/v1/audit", params={"after": len(records), "limit": 1000}, headers=headers
        ).json()["records"]
        records.extend(page)
        if len(page) < 1000:
            return records


# --- what the store unit tests (tests/unit/test_sql_store.py) leave out --------------


def _audit_state(store: SqlStore) -> None:
    with store.audit_state():
        pass


# Every other store call is held to the same in the store's own unit tests.
STORE_CALLS: dict[str, Callable[[SqlStore], object]] = {
    "audit_state": _audit_state,
    "token_check": lambda s: TokenBook(s).check("apx_00000000_secret"),
}


@pytest.fixture(params=["postgresql", "sqlite"])
def absent_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """A store whose database cannot be reached: nothing listens at the port, or
    the SQLite file's directory does not exist."""
    if request.param == "postgresql":
        url = f"postgresql://postgres@127.0.0.1:{_free_port()}/apex"
    else:
        url = f"sqlite:///{tmp_path / 'missing' / 'apex.db'}"
    store = SqlStore(url)
    yield store
    store.close()


@pytest.mark.parametrize("call", sorted(STORE_CALLS), ids=sorted(STORE_CALLS))
def test_store_when_the_database_cannot_be_reached_then_the_call_raises_store_unavailable(
    absent_store: SqlStore, call: str
) -> None:
    """The token check must not answer "no such token" (a 401) for a database
    that is down: it raises, and the API answers 503."""
    with pytest.raises(StoreUnavailable):
        STORE_CALLS[call](absent_store)
