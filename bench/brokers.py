"""Benchmark the broker adapters against the project's own fakes on 127.0.0.1.

    .venv/bin/python bench/brokers.py [--n N] [--fills M] [--cursor-fills K]
        [--log-n L] [--gateway-n G] [--no-gateway] [--pg] [--only NAME ...] [--json]

Every adapter is built as the broker contract suite builds it
(tests/contract/*_factory.py and test_broker_contract.py: the same fakes, quotes,
journals and orders), in this process, one caller thread. The fakes run in this
process too, on threads of their own: their CPU and their share of the GIL are in
every figure here, so a real counterparty in another process would answer a
little faster. A full garbage collection runs before each subject, so that the
last one's garbage is not collected (a 120 ms pause) inside the next one's
figures. What is measured:

1. Round trips through the adapter, the broker port called directly: N (200)
   submits of a resting limit buy (`BrokerOrder` -> `BrokerAck` accepted), N
   cancels of those (-> cancelled), N market buys that fill at once (-> filled),
   after a warm-up. Per call p50/p90/p99/mean in ms, and calls/s over the whole
   phase (the IB client paces itself to 45 requests/s, as TWS allows about 50
   messages/s: its calls/s and p99 show that wait). Adapters: simulated (in
   memory), alpaca (fake Alpaca over alpaca-py), ib (fake TWS over ib_async),
   oms_rest (fake OMS over httpx) and oms_fix three times over: with the FIX
   session log in memory, in SQLite (adapters/sql/session_log.py on a fresh file:
   WAL, synchronous=NORMAL) and, with `--pg`, in PostgreSQL (a fresh database on
   127.0.0.1:5432, dropped afterwards). For oms_fix, the FIX messages logged per
   call (out and in: a resting submit is D out, ER in, then an OrderStatusRequest
   H out and its ER in; a cancel F out, ER in; a market order D out, ER new and
   ER fill in, and the H only when the fill came after the answer) and the
   durable log's cost: (p50 with the store's log - p50 with the memory log) /
   messages per call, and the same with the means.
2. The session log alone: L (1000) `sent` writes of a NewOrderSingle and L
   `received` writes of an ExecutionReport (the bytes the adapter logged in 1.)
   on a session of their own, each its own committed transaction, as the adapter
   makes them: p50/p90/p99/mean in ms.
3. Fill to listener: a resting order is submitted, then the fake fills it
   (`fill(client order id)`, its by-hand fill) and the time runs from just before
   that call to the moment the adapter's `subscribe` listener gets the filled ack
   (M fills, default 50). oms_fix with each session log (the ExecutionReport is
   logged before it is booked; the fake's fill is handed to its own loop thread,
   the hop is in the figure and shown apart); oms_rest with its WebSocket up;
   and oms_rest with the socket down (the fake refuses it), where the adapter
   reads the REST cursor every poll_s (0.5 s): K fills (16), spread evenly over
   the poll cycle (each loop starts as a poll delivers the last fill, and pauses
   (i + 0.5) / K of poll_s, in a shuffled order, before the next), as real fills
   come at any moment: the figure is the cursor's delay over its whole cycle
   (about poll_s / 2 on average, poll_s at worst), not one phase of it.
4. The gateway in process (skip with `--no-gateway`): `Gateway.submit` of G (100)
   market orders (bench/_http_probe.py's, on AAPL; every fake quotes AAPL as they
   do, since Alpaca's and IB's quote is checked against the client's) with each
   broker in paper mode on a fresh SQLite store (the default policies with the
   session always open, as bench/http.py opens them; oms_fix logs its session in
   that store, the journals are in memory as in the contract suite; a broker
   with `subscribe` reports to `Gateway.report`, as the service wires it): wall
   ms per call, and CPU ms per call split by thread: the caller (engine,
   gateway, store, and the adapter's work on the caller's thread), the adapter's
   threads (event loop, stream, listener), the fake's threads, and other (threads
   that ended meanwhile).

The machine: CPUs, load average before and after, the hypervisor's steal over the
run, and a CPU speed probe before and after (bench/http.py's, against its quiet
time): this VM's speed drifts from minute to minute. A default run takes about
30 s on 2 cores (40 s with `--pg`). The exit code is 1 if any call got an
unexpected answer or a fill never reached the listener; the figures are
reported either way.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Python puts bench/ first on the path, where bench/http.py would shadow the
# standard library's `http` (httpx's imports): the project instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import AbstractContextManager, ExitStack, contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any, cast  # noqa: E402

import psutil  # noqa: E402

from adapters.oms_fix import OmsFixAdapter  # noqa: E402
from adapters.oms_rest import OmsRestAdapter  # noqa: E402
from adapters.sql import SqlStore  # noqa: E402
from bench._brokers_gateway import gateway_submits  # noqa: E402
from bench._brokers_report import text_report  # noqa: E402
from bench.http import QUIET_PROBE_MS, cpu_probe_ms, database, percentile  # noqa: E402
from engine.broker import BrokerAck, BrokerAdapter, BrokerOrder, SessionLog  # noqa: E402
from engine.lifecycle import OrderStatus  # noqa: E402
from tests.contract import oms_fix_factory, oms_rest_factory  # noqa: E402
from tests.contract.alpaca_factory import alpaca  # noqa: E402
from tests.contract.ib_factory import ib  # noqa: E402
from tests.contract.test_broker_contract import (  # noqa: E402
    market_buy,
    resting_buy_limit,
    simulated,
)

ADAPTERS = ("simulated", "alpaca", "ib", "oms_rest", "oms_fix")
FILL_WAIT_S = 10.0  # a fill not at the listener by then is counted missing
FIX_SESSION = "oms_fix-bench"
RAW_SESSION = "oms_fix-bench-raw"


@dataclass
class Rig:
    """One adapter on its fake; `fake` to drive fills, `store` holding its session log."""

    name: str
    adapter: BrokerAdapter
    log: str = ""  # oms_fix: where its session log is (memory, SQLite, PostgreSQL)
    fake: Any = None
    session_log: SessionLog | None = None
    store: SqlStore | None = None


Opener = Callable[[], AbstractContextManager[Rig]]


# --- the rigs ------------------------------------------------------------------------


def contract_rig(name: str, factory: Callable[[], AbstractContextManager[Any]]) -> Opener:
    @contextmanager
    def rig() -> Iterator[Rig]:
        with factory() as connect:
            yield Rig(name, connect())

    return rig


def fix_rig(log: str, store_url: str | None) -> Opener:
    """oms_fix with its session log in memory (`store_url` None) or in a store."""

    @contextmanager
    def rig() -> Iterator[Rig]:
        store = None
        if store_url is not None:
            store = SqlStore(store_url)
            store.migrate()
        try:
            session_log = store.session_log(FIX_SESSION) if store is not None else None
            with oms_fix_factory.fake_and_connect(session_log) as (fake, connect):
                adapter = connect()
                name = f"oms_fix ({log} log)"
                yield Rig(name, adapter, log, fake, adapter.session_log, store)
        finally:
            if store is not None:
                store.close()

    return rig


@contextmanager
def rest_rig() -> Iterator[Rig]:
    with oms_rest_factory.fake_and_connect() as (fake, connect):
        yield Rig("oms_rest", connect(), fake=fake)


# --- figures -------------------------------------------------------------------------


def figures(seconds: Sequence[float], wall_s: float | None = None) -> dict[str, float]:
    """Per-call figures in ms; calls/s over the phase's wall time when given."""
    ordered = sorted(seconds)
    if not ordered:
        return {"n": 0}
    out = {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1e3,
        "p90_ms": percentile(ordered, 0.90) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "mean_ms": sum(ordered) / len(ordered) * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }
    if wall_s:
        out["calls_per_s"] = len(ordered) / wall_s
    return out


def timed(
    calls: Sequence[Callable[[], BrokerAck]], want: OrderStatus, wrong: Counter[str], what: str
) -> tuple[dict[str, float], list[BrokerAck]]:
    """Run the calls one after another, each timed; an answer other than `want` is
    counted in `wrong`, with what it was."""
    seconds, acks = [], []
    started = time.perf_counter()
    for call in calls:
        t0 = time.perf_counter()
        ack = call()
        seconds.append(time.perf_counter() - t0)
        acks.append(ack)
        if ack.status != want:
            wrong[f"{what}: {ack.status} {ack.detail}".strip()] += 1
    return figures(seconds, time.perf_counter() - started), acks


def per_call(log: SessionLog | None, before: tuple[int, int] | None, n: int) -> dict[str, float]:
    """FIX messages logged per call since `before` (out, in)."""
    if log is None or before is None:
        return {}
    after = log.sequences()
    return {"messages_out": (after[0] - before[0]) / n, "messages_in": (after[1] - before[1]) / n}


# --- 1. round trips ------------------------------------------------------------------


def round_trips(rig: Rig, n: int, run: str) -> dict[str, Any]:
    adapter, log = rig.adapter, rig.session_log
    wrong: Counter[str] = Counter()
    for i in range(max(5, n // 10)):  # warm-up: connections, caches, the contract's lookup
        ack = adapter.submit(resting_buy_limit(f"{run}-warm-{i}"))
        adapter.cancel(ack.order_id, ack.broker_order_id)
    out: dict[str, Any] = {"name": rig.name, "calls": n}
    before = log.sequences() if log is not None else None
    submit = [resting(adapter, f"{run}-rest-{i}") for i in range(n)]
    out["submit_resting"], acks = timed(submit, OrderStatus.ACCEPTED, wrong, "submit")
    out["submit_resting"] |= per_call(log, before, n)
    before = log.sequences() if log is not None else None
    cancels = [cancel(adapter, ack) for ack in acks]
    out["cancel"], _ = timed(cancels, OrderStatus.CANCELLED, wrong, "cancel")
    out["cancel"] |= per_call(log, before, n)
    before = log.sequences() if log is not None else None
    market = [submitting(adapter, market_buy(f"{run}-mkt-{i}")) for i in range(n)]
    out["submit_market"], _ = timed(market, OrderStatus.FILLED, wrong, "market submit")
    out["submit_market"] |= per_call(log, before, n)
    out["wrong"] = dict(wrong)
    return out


def resting(adapter: BrokerAdapter, order_id: str) -> Callable[[], BrokerAck]:
    return submitting(adapter, resting_buy_limit(order_id))


def submitting(adapter: BrokerAdapter, order: BrokerOrder) -> Callable[[], BrokerAck]:
    return lambda: adapter.submit(order)


def cancel(adapter: BrokerAdapter, ack: BrokerAck) -> Callable[[], BrokerAck]:
    return lambda: adapter.cancel(ack.order_id, ack.broker_order_id)


def log_costs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the durable FIX session log adds per call and per message, against the
    memory log: p50 and mean differences over the messages each call logs."""
    memory = next((r for r in rows if r["name"] == "oms_fix (memory log)"), None)
    out: list[dict[str, Any]] = []
    if memory is None:
        return out
    for row in rows:
        if not row["name"].startswith("oms_fix (") or row is memory:
            continue
        for call in ("submit_resting", "cancel", "submit_market"):
            here, base = row[call], memory[call]
            messages = here.get("messages_out", 0) + here.get("messages_in", 0)
            if not messages or not here.get("n") or not base.get("n"):
                continue
            extra_p50 = here["p50_ms"] - base["p50_ms"]
            extra_mean = here["mean_ms"] - base["mean_ms"]
            out.append({
                "log": row["name"], "call": call, "messages_per_call": messages,
                "extra_p50_ms_per_call": extra_p50, "extra_mean_ms_per_call": extra_mean,
                "p50_ms_per_message": extra_p50 / messages,
                "mean_ms_per_message": extra_mean / messages,
            })  # fmt: skip
    return out


# --- 2. the session log alone --------------------------------------------------------


def raw_log_writes(store: SqlStore, sample: SessionLog, n: int) -> dict[str, Any]:
    """`sent` and `received`, each n times, on a session of their own, with the bytes
    of a NewOrderSingle and an ExecutionReport the adapter logged."""
    logged = sample.tail(200)
    order = next(m.message for m in logged if m.direction == "out" and m.msg_type == "D")
    report = next(m.message for m in logged if m.direction == "in" and m.msg_type == "8")
    log = store.session_log(RAW_SESSION)
    next_out, next_in = log.sequences()
    at = datetime.now(UTC)
    sent, received = [], []
    for i in range(n):
        t0 = time.perf_counter()
        log.sent(next_out + i, "D", order, at, f"raw-{i}")
        sent.append(time.perf_counter() - t0)
    for i in range(n):
        t0 = time.perf_counter()
        log.received(next_in + i, "8", report, at, next_in + i + 1)
        received.append(time.perf_counter() - t0)
    return {
        "sent": figures(sent) | {"bytes": len(order)},
        "received": figures(received) | {"bytes": len(report)},
    }


# --- 3. fill to listener -------------------------------------------------------------


class Arrivals:
    """A `subscribe` listener noting when each awaited order's filled ack arrives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._awaited: dict[str, tuple[threading.Event, list[float]]] = {}

    def expect(self, order_id: str) -> tuple[threading.Event, list[float]]:
        entry: tuple[threading.Event, list[float]] = (threading.Event(), [])
        with self._lock:
            self._awaited[order_id] = entry
        return entry

    def __call__(self, ack: BrokerAck) -> None:
        if ack.status != OrderStatus.FILLED:
            return
        now = time.perf_counter()
        with self._lock:
            entry = self._awaited.pop(ack.order_id, None)
        if entry is not None:
            entry[1].append(now)
            entry[0].set()


def fills_to_listener(
    rig: Rig,
    m: int,
    run: str,
    fill: Callable[[str], None],
    arrivals: Arrivals,
    pause: Callable[[], float] = lambda: 0.0,
) -> dict[str, Any]:
    seconds: list[float] = []
    missing = 0
    for i in range(m):
        order_id = f"{run}-fill-{i}"
        ack = rig.adapter.submit(resting_buy_limit(order_id))
        if ack.status != OrderStatus.ACCEPTED:
            missing += 1
            continue
        time.sleep(pause())
        arrived, stamp = arrivals.expect(order_id)
        t0 = time.perf_counter()
        fill(order_id)
        if arrived.wait(FILL_WAIT_S):
            seconds.append(stamp[0] - t0)
        else:
            missing += 1
    return figures(seconds) | {"missing": missing}


def fix_fills(rig: Rig, m: int, run: str) -> dict[str, Any]:
    arrivals = Arrivals()
    adapter = cast(OmsFixAdapter, rig.adapter)
    adapter.subscribe(arrivals)
    fake = rig.fake
    hops = []
    for _ in range(50):
        t0 = time.perf_counter()
        fake.call(lambda: None)
        hops.append(time.perf_counter() - t0)
    out = fills_to_listener(rig, m, run, lambda cl: fake.fill(cl, price=50.0), arrivals)
    out["fake_call_round_trip_ms"] = percentile(sorted(hops), 0.5) * 1e3
    return {"name": rig.name, "path": "FIX session"} | out


def rest_fills(rig: Rig, m: int, k: int, run: str, seed: int) -> list[dict[str, Any]]:
    arrivals = Arrivals()
    adapter, fake = cast(OmsRestAdapter, rig.adapter), rig.fake
    adapter.subscribe(arrivals)
    # the socket first replays every event since sequence 0 (the round trips'): a
    # fill timed before it caught up would wait behind the replay
    wait_for(
        lambda: adapter.stream_state == "streaming" and adapter.booked >= fake.last_sequence,
        "the socket's replay",
    )

    def fill(cl: str) -> None:
        fake.fill(cl, price=50.0)

    socket = fills_to_listener(rig, m, f"{run}-ws", fill, arrivals)
    fake.socket_down(True)
    wait_for(lambda: adapter.stream_state == "polling", "the cursor")
    # each loop starts as a poll delivers the last fill: pauses spread evenly over
    # the poll cycle put the fills at every moment of it, as fills really come
    pauses = [adapter.poll_s * (i + 0.5) / k for i in range(k)]
    random.Random(seed).shuffle(pauses)
    cursor = fills_to_listener(rig, k, f"{run}-cur", fill, arrivals, iter(pauses).__next__)
    fake.socket_down(False)
    return [
        {"name": "oms_rest", "path": "WebSocket up"} | socket,
        {"name": "oms_rest", "path": f"socket down: REST cursor every {adapter.poll_s:g} s"}
        | cursor,
    ]


def wait_for(check: Callable[[], bool], what: str, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up within {within_s:g} s")
        time.sleep(0.01)


# --- the run -------------------------------------------------------------------------


def machine_now() -> dict[str, Any]:
    return {"load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "cpu_times": psutil.cpu_times()}


def steal_pct(before: Any, after: Any) -> float:
    total = sum(after) - sum(before)
    stolen = getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)
    return 100.0 * stolen / total if total > 0 else 0.0


def bench(args: argparse.Namespace, stores: dict[str, str]) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    wanted = set(args.only or ADAPTERS)
    openers: list[Opener] = []
    if "simulated" in wanted:
        openers.append(contract_rig("simulated", simulated))
    if "alpaca" in wanted:
        openers.append(contract_rig("alpaca", alpaca))
    if "ib" in wanted:
        openers.append(contract_rig("ib", ib))
    if "oms_rest" in wanted:
        openers.append(rest_rig)
    if "oms_fix" in wanted:
        openers.append(fix_rig("memory", None))
        openers += [fix_rig(backend, url) for backend, url in stores.items()]
    rows: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    for i, opener in enumerate(openers):
        gc.collect()  # the last subject's garbage is not collected inside this one's figures
        with opener() as rig:
            rows.append(round_trips(rig, args.n, f"{run}-{i}"))
            if rig.name.startswith("oms_fix"):
                fills.append(fix_fills(rig, args.fills, f"{run}-{i}"))
                if rig.store is not None and rig.session_log is not None:
                    raw[rig.log] = raw_log_writes(rig.store, rig.session_log, args.log_n)
            elif rig.name == "oms_rest":
                fills += rest_fills(rig, args.fills, args.cursor_fills, f"{run}-{i}", args.seed)
    out: dict[str, Any] = {
        "round_trips": rows,
        "log_cost": log_costs(rows),
        "session_log_writes": raw,
        "fill_to_listener": fills,
    }
    if not args.no_gateway:
        out["gateway"] = gateway_submits(wanted, args.gateway_n, run)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the broker adapters on their fakes.")
    parser.add_argument("--n", type=int, default=200, help="calls per round-trip phase")
    parser.add_argument("--fills", type=int, default=50, help="fills to the listener per path")
    parser.add_argument("--cursor-fills", type=int, default=16, help="fills with the socket down")
    parser.add_argument("--log-n", type=int, default=1000, help="session-log writes of each kind")
    parser.add_argument("--gateway-n", type=int, default=100, help="gateway submits per broker")
    parser.add_argument("--no-gateway", action="store_true", help="skip the gateway phase")
    parser.add_argument("--pg", action="store_true", help="also oms_fix's log on PostgreSQL")
    parser.add_argument("--only", nargs="+", choices=ADAPTERS, help="these adapters only")
    parser.add_argument("--seed", type=int, default=7, help="shuffles the cursor fills' pauses")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--verbose", action="store_true", help="keep the adapters' log output")
    args = parser.parse_args(argv)
    counts = (args.n, args.fills, args.cursor_fills, args.log_n, args.gateway_n)
    if min(counts) < 1:
        parser.error("every count must be positive")
    if not args.verbose:  # refusals and logouts the run causes on purpose (IB's 202s)
        logging.disable(logging.ERROR)
    started = time.perf_counter()
    before = machine_now()
    probe_before = cpu_probe_ms()
    with tempfile.TemporaryDirectory(prefix="apex-bench-brokers-") as tmp, ExitStack() as stack:
        stores = {"SQLite": stack.enter_context(database("sqlite", Path(tmp) / "sqlite"))}
        if args.pg:
            stores["PostgreSQL"] = stack.enter_context(database("postgresql", Path(tmp)))
        measured = bench(args, stores)
    probe_after = cpu_probe_ms()
    after = machine_now()
    result = {
        "command": "bench/brokers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "verbose")},
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_before": before["load"],
            "load_after": after["load"],
            "steal_pct": steal_pct(before["cpu_times"], after["cpu_times"]),
            "cpu_probe_ms": {"before": probe_before, "after": probe_after, "quiet": QUIET_PROBE_MS},
        },
        **measured,
        "elapsed_s": time.perf_counter() - started,
    }
    print(json.dumps(result, indent=2) if args.json else text_report(result))
    faulty = any(r["wrong"] for r in measured["round_trips"])
    faulty |= any(f.get("missing") for f in measured["fill_to_listener"])
    faulty |= any(g.get("unexpected") for g in measured.get("gateway", []))
    return 1 if faulty else 0


if __name__ == "__main__":
    sys.exit(main())
