"""The broker bench's gateway phase: `Gateway.submit` in process with each broker in
paper mode on a fresh SQLite store, wall time per call and CPU per call by thread.

The adapters are the contract suite's (tests/contract/*_factory.py), their
journals in memory; oms_fix logs its FIX session in the gateway's store, as the
service has it. The orders are bench/_http_probe.py's market orders on AAPL, and
every fake quotes AAPL as they do (Alpaca's and IB's quote is the reference the
client's is checked against), so each one is approved and fills at once."""

from __future__ import annotations

import gc
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.sql import SqlStore
from bench._http_probe import market_order
from bench.http import database, open_policies, percentile
from engine import Evaluator, load_policies
from engine.broker import BrokerAdapter
from engine.canonical import sha256_digest
from engine.clock import format_utc, system_clock
from engine.gateway import Actor, Gateway
from engine.ports import Controls, Writer
from tests.contract import alpaca_factory, ib_factory, oms_fix_factory, oms_rest_factory
from tests.contract.test_broker_contract import simulated

__all__ = ["gateway_submits"]

QUOTE = {"bid": 150.20, "ask": 150.30, "last": 150.25}  # bench/_http_probe.py's, on every fake
WARM = 20
TRADER = Actor("bench", "trader")
Build = Callable[[SqlStore], AbstractContextManager[BrokerAdapter]]


def _contract(factory: Callable[[], AbstractContextManager[Any]]) -> Build:
    @contextmanager
    def build(_: SqlStore) -> Iterator[BrokerAdapter]:
        with factory() as connect:
            yield connect()

    return build


def _quoted(fake_and_connect: Callable[[], AbstractContextManager[tuple[Any, Any]]]) -> Build:
    """The factory's adapter, its fake quoting the orders' AAPL quote."""

    @contextmanager
    def build(_: SqlStore) -> Iterator[BrokerAdapter]:
        with fake_and_connect() as (fake, connect):
            fake.set_quote("AAPL", bid=QUOTE["bid"], ask=QUOTE["ask"], last=QUOTE["last"])
            yield connect()

    return build


@contextmanager
def _rest(_: SqlStore) -> Iterator[BrokerAdapter]:
    with oms_rest_factory.fake_and_connect() as (fake, connect):
        fake.set_quote("AAPL", bid=QUOTE["bid"], ask=QUOTE["ask"])
        yield connect()


@contextmanager
def _fix(store: SqlStore) -> Iterator[BrokerAdapter]:
    """oms_fix logging its session in the gateway's store, as the service has it."""
    with oms_fix_factory.fake_and_connect(store.session_log("oms_fix-paper")) as (fake, connect):
        fake.set_quote("AAPL", bid=QUOTE["bid"], ask=QUOTE["ask"], last=QUOTE["last"])
        yield connect()


BROKERS: dict[str, Build] = {
    "simulated": _contract(simulated),  # fills at the order's own quote
    "alpaca": _quoted(alpaca_factory.fake_and_connect),
    "ib": _quoted(ib_factory.fake_and_connect),
    "oms_rest": _rest,
    "oms_fix": _fix,
}


def order(n: int, run: str) -> dict[str, Any]:
    """bench/_http_probe.py's order n, on AAPL at the fakes' quote."""
    body = market_order(n, run)
    quote = {**QUOTE, "timestamp": format_utc(datetime.now(UTC))}
    body["symbol"] = "AAPL"
    body["context"] |= {"quote": quote, "data_hash": sha256_digest(quote)}
    return body


def gateway_submits(wanted: set[str], n: int, run: str) -> list[dict[str, Any]]:
    out = []
    policies_dir = tempfile.TemporaryDirectory(prefix="apex-bench-gateway-")
    with policies_dir as tmp:
        loaded = load_policies(open_policies(Path(tmp) / "policies"))
        for name, build in BROKERS.items():
            if name not in wanted:
                continue
            gc.collect()  # the last broker's garbage is not collected in this one's figures
            with database("sqlite", Path(tmp) / name) as url:
                out.append(_one(name, build, url, loaded, n, f"{run}-{name}"))
    return out


def _one(name: str, build: Build, url: str, loaded: Any, n: int, run: str) -> dict[str, Any]:
    store = SqlStore(url)
    store.migrate()
    try:
        with build(store) as adapter:
            gateway = Gateway(store, Evaluator(loaded, system_clock), {"paper": adapter})
            subscribe = getattr(adapter, "subscribe", None)
            if callable(subscribe):  # as the service wires it (api/runtime.py)
                subscribe(gateway.report)
            gateway.recover()

            def to_paper(w: Writer) -> None:
                w.set_controls(Controls("paper", {}), system_clock())

            store.transact(to_paper)
            outcomes: Counter[str] = Counter()
            for i in range(WARM):
                gateway.submit(order(i, run), TRADER)
            seconds = []
            cpu_before, process_before = _thread_cpu(), time.process_time()
            started = time.perf_counter()
            for i in range(WARM, WARM + n):
                body = order(i, run)
                t0 = time.perf_counter()
                outcome = gateway.submit(body, TRADER)
                seconds.append(time.perf_counter() - t0)
                outcomes[f"{outcome.kind} {outcome.record.get('order_status')}"] += 1
            wall = time.perf_counter() - started
            process = time.process_time() - process_before
            split = _split(cpu_before, _thread_cpu(), process)
    finally:
        store.close()
    ordered = sorted(seconds)
    cpu = {k: v / n * 1e3 for k, v in split.items()}
    cpu["process"] = process / n * 1e3
    return {
        "name": name,
        "calls": n,
        "outcomes": dict(outcomes),
        "unexpected": n - outcomes["routed filled"],
        "p50_ms": percentile(ordered, 0.5) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "mean_ms": sum(ordered) / n * 1e3,
        "calls_per_s": n / wall,
        "cpu_ms_per_call": cpu,
    }


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every running Python thread, by ident, with its name."""
    out = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            out[thread.ident] = (thread.name, time.clock_gettime(clock))
        except (OSError, ProcessLookupError):  # it ended meanwhile
            continue
    return out


def _split(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], process: float
) -> dict[str, float]:
    """CPU seconds by thread kind: the caller (this thread), the fakes' threads (named
    `fake-...`, and the HTTP fakes' connection threads), the adapters' (the other
    Python threads), and `other`: the rest of the process's (threads that ended)."""
    caller = threading.get_ident()
    out = {"caller": 0.0, "adapter threads": 0.0, "fake threads": 0.0}
    for ident, (name, seconds) in after.items():
        used = seconds - before.get(ident, (name, 0.0))[1]
        if ident == caller:
            out["caller"] += used
        elif name.startswith("fake") or "process_request_thread" in name:
            out["fake threads"] += used
        else:
            out["adapter threads"] += used
    out["other"] = max(0.0, process - sum(out.values()))
    return out
