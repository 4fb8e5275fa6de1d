"""Shared fixtures: a store on every backend, a running service with a fixed
clock, a test client, a bearer token per role, and an order builder.

`store_url` runs a test once on SQLite and once on PostgreSQL. The PostgreSQL
case needs a server on 127.0.0.1:5432 (trust auth, user postgres, database
test); when none answers it fails, it does not skip, so a green run always
means both backends were exercised.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from psycopg import sql

import api.runtime
from adapters.sql import SqlStore
from api.app import create_app
from api.auth import ROLES
from api.runtime import Runtime
from api.settings import Settings
from engine import Evaluator, LoadedPolicies, load_policies
from engine.canonical import sha256_digest
from engine.clock import format_utc

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
START = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


class FixedClock:
    """Reads the same instant until a test moves it."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


# --- stores ---------------------------------------------------------------------


def _admin_execute(statement: sql.Composed) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(statement)


def _create_database() -> str:
    name = f"apex_test_{uuid.uuid4().hex}"
    _admin_execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_database(name: str) -> None:
    _admin_execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class _Databases:
    """Fresh PostgreSQL databases, one per test. CREATE and DROP DATABASE take
    most of a second each, so the next database is created while a test runs
    and the last one is dropped in the background; every name is used once."""

    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="apex-pg")
        self._next: Future[str] | None = None

    def take(self) -> str:
        current = self._next or self._worker.submit(_create_database)
        self._next = self._worker.submit(_create_database)
        try:
            return current.result()
        except psycopg.OperationalError as exc:
            problem = str(exc).strip()
        pytest.fail(
            f"PostgreSQL is not answering at {PG_ADMIN_URL}: {problem}\n"
            "Start it (`.ci/run` does, as CI does) and run again; "
            "the postgresql cases fail rather than skip.",
            pytrace=False,
        )

    def give_back(self, name: str) -> None:
        self._worker.submit(_drop_database, name)

    def close(self) -> None:
        if self._next is not None:
            with contextlib.suppress(psycopg.OperationalError):
                self._worker.submit(_drop_database, self._next.result())
        self._worker.shutdown(wait=True)


@pytest.fixture(scope="session")
def _pg_databases() -> Iterator[_Databases]:
    databases = _Databases()
    yield databases
    databases.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_databases: _Databases
) -> Iterator[str]:
    """A fresh, empty database: a file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'apex.db'}"
        return
    name = _pg_databases.take()
    try:
        yield PG_URL.format(name=name)
    finally:
        _pg_databases.give_back(name)


@pytest.fixture
def sql_store(store_url: str) -> Iterator[SqlStore]:
    """A migrated SqlStore on the test's fresh database (each backend in turn)."""
    store = SqlStore(store_url)
    store.migrate()
    yield store
    store.close()


# --- the service ------------------------------------------------------------------

StartRuntime = Callable[..., Runtime]


_parsed_default_policies: list[LoadedPolicies] = []


def _load_policies_once(directory: Path) -> LoadedPolicies:
    """Parsing the YAML of policies/ takes a good part of a second and the files do
    not change during a run, so it is parsed once; any other directory (a test's
    edited copy) is loaded afresh."""
    if directory != POLICIES:
        return load_policies(directory)
    if not _parsed_default_policies:
        _parsed_default_policies.append(load_policies(directory))
    return _parsed_default_policies[0]


@pytest.fixture
def start_runtime(
    store_url: str, tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StartRuntime]:
    """Start a runtime on the test's store; `policies=` points it at another directory."""
    monkeypatch.setattr(api.runtime, "load_policies", _load_policies_once)
    started: list[Runtime] = []

    def start(policies: Path = POLICIES, keys: Path | None = None) -> Runtime:
        """`keys`: the trust root (default: an empty directory of the test's, so the
        development root stands in, whatever the repository's keys/ holds)."""
        settings = Settings(
            home=tmp_path,
            database_url=store_url,
            policies=policies,
            keys=keys if keys is not None else tmp_path / "no-keys",
        )
        runtime = Runtime.start(settings, clock=clock)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.close()


@pytest.fixture
def runtime(start_runtime: StartRuntime) -> Runtime:
    return start_runtime()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(runtime)) as test_client:
        yield test_client


def role_tokens(runtime: Runtime) -> dict[str, str]:
    return {role: runtime.tokens.create(role, f"test {role}", runtime.clock()) for role in ROLES}


@pytest.fixture
def tokens(runtime: Runtime) -> dict[str, str]:
    """A bearer token for each role: trader, compliance, auditor, admin."""
    return role_tokens(runtime)


@pytest.fixture
def auth(tokens: dict[str, str]) -> dict[str, dict[str, str]]:
    """The Authorization header for each role: `headers=auth["trader"]`."""
    return {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}


# --- orders -------------------------------------------------------------------------

OrderBuilder = Callable[..., dict[str, Any]]


def build_order(
    client_order_id: str, now: datetime, *, context: dict[str, Any] | None = None, **changes: Any
) -> dict[str, Any]:
    """The order of SPEC section 6, quoted at `now`, with correct digests.

    `context` entries replace those of the default context; the digests are
    computed after, unless the test sets them itself.
    """
    ctx: dict[str, Any] = {
        "quote": {"bid": 150.20, "ask": 150.30, "last": 150.25, "timestamp": format_utc(now)},
        "volatility": 0.23,
        "regime": "trending",
        "entropy": 0.41,
        "drift": 0.12,
        "protocols_fired": ["T01", "T07"],
    }
    ctx.update(context or {})
    ctx.setdefault("data_hash", sha256_digest(ctx["quote"]))
    ctx.setdefault("protocol_hash", sha256_digest(sorted(ctx["protocols_fired"])))
    order: dict[str, Any] = {
        "client_order_id": client_order_id,
        "account": "default",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 100,
        "order_type": "limit",
        "limit_price": 150.25,
        "stop_price": None,
        "time_in_force": "day",
        "reduce_only": False,
        "decision_reason": "manual_trigger",
        "context": ctx,
    }
    order.update(changes)
    return order


@pytest.fixture
def make_order(clock: FixedClock) -> OrderBuilder:
    """`make_order(**changes)`: a fresh client_order_id each call, quoted at the clock's now."""
    numbers = itertools.count(1)

    def make(**changes: Any) -> dict[str, Any]:
        changes.setdefault("client_order_id", f"strat7-{next(numbers):06d}")
        return build_order(now=clock(), **changes)

    return make


# --- the engine alone: policy directories, a loaded set, an evaluator ---------------

NOW = START  # every engine test judges at this instant unless it says otherwise


LASTING = "2099-12-31T00:00:00Z"


def copy_policies(target: Path, *, rules: bool = True, lasting: bool = False) -> Path:
    """Copy compliance.yaml (and, with `rules`, every rule file) of policies/ into
    `target`. `lasting`: the configuration expires in 2099, for a service judging on
    the real clock (a test must not depend on today being before the shipped
    `expires`)."""
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(POLICIES.glob("*.yaml")):
        if rules or source.name == "compliance.yaml":
            (target / source.name).write_bytes(source.read_bytes())
    if lasting:
        make_lasting(target)
    return target


def make_lasting(policies: Path) -> None:
    """Move the configuration's `expires` in `policies` to 2099."""
    config = policies / "compliance.yaml"
    text, count = re.subn(r"(?m)^expires: .*$", f'expires: "{LASTING}"', config.read_text("utf-8"))
    assert count == 1, "compliance.yaml has no `expires:` line"
    config.write_text(text, "utf-8")


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    """A policy directory holding only a copy of compliance.yaml: tests add rule files."""
    return copy_policies(tmp_path / "policies", rules=False)


@pytest.fixture(scope="session")
def default_policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the whole default policy set; tests must not change it."""
    return copy_policies(tmp_path_factory.mktemp("default") / "policies")


@pytest.fixture(scope="session")
def loaded(default_policies_dir: Path) -> LoadedPolicies:
    return load_policies(default_policies_dir)


@pytest.fixture
def evaluator(loaded: LoadedPolicies) -> Evaluator:
    """An evaluator of the default policy set whose clock reads NOW."""
    return Evaluator(loaded, clock=lambda: NOW)


@pytest.fixture(scope="session")
def approved_order() -> OrderBuilder:
    """`approved_order(**changes)`: the order of SPEC section 6, quoted one second
    before NOW, with correct digests; approved by the default policies at NOW."""

    def make(**changes: Any) -> dict[str, Any]:
        changes.setdefault("client_order_id", "strat7-000042")
        return build_order(now=NOW - timedelta(seconds=1), **changes)

    return make
