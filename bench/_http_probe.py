"""Where the HTTP bench's server spends its time: the same gateway calls in process
(CPU per call, SQL statements and transactions per call, the evaluator's share),
and py-spy samples of the running server, grouped by layer."""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.canonical import sha256_digest
from engine.clock import format_utc
from engine.gateway import Actor
from engine.models import EngineState, OrderRequest

__all__ = ["in_process", "market_order", "read_profile", "sampled"]

ROOT = Path(__file__).resolve().parent.parent
QUOTE_AGE = timedelta(milliseconds=5)
SYMBOLS = ("AAPL", "MSFT", "NVDA", "SPY", "QQQ", "JPM", "XOM", "TSLA")
QUOTE = {"bid": 150.20, "ask": 150.30, "last": 150.25}


def market_order(n: int, run: str) -> dict[str, Any]:
    """Order n of a run: a fresh quote, a unique client id, and a (symbol, side,
    quantity) that repeats only every 16,000 orders. Buys and sells alternate
    with the same quantity, so positions stay near zero."""
    pair = n // 2
    # quoted QUOTE_AGE before now, as a client's quote is by the time it is judged: a
    # quote microseconds old gives ages below 0.0001 s, which no real flow has
    quote = {**QUOTE, "timestamp": format_utc(datetime.now(UTC) - QUOTE_AGE)}
    protocols = ["T01", "T07"]
    side = "buy" if n % 2 == 0 else "sell"
    # a sell may reach the gate before its buy has filled (or be a dry run from
    # flat): marked short with a locate, it passes short_sale_check either way
    short = {"short_sale": True, "locate_id": f"LOC-{run}"} if side == "sell" else {}
    return {
        "client_order_id": f"bench-{run}-{n}",
        "account": "default",
        "symbol": SYMBOLS[(pair // 1000) % len(SYMBOLS)],
        "side": side,
        "quantity": 1 + pair % 1000,
        "order_type": "market",
        "time_in_force": "day",
        "decision_reason": "bench",
        **short,
        "context": {
            "quote": quote,
            "volatility": 0.23,
            "regime": "trending",
            "entropy": 0.41,
            "drift": 0.12,
            "data_hash": sha256_digest(quote),
            "protocols_fired": protocols,
            "protocol_hash": sha256_digest(sorted(protocols)),
        },
    }


# --- in process: where the server's time per request goes -------------------------------


def in_process(database_url: str, policies: Path, home: Path, calls: int) -> dict[str, Any]:
    """The gateway's evaluate and submit called directly, one thread, no HTTP: CPU per
    call, the SQL statements and transactions per call, how long each call holds the
    chain lock, what reading the recent-order window costs, and the evaluator alone."""
    from api.runtime import Runtime
    from api.settings import Settings

    runtime = Runtime.start(Settings(home=home, database_url=database_url, policies=policies))
    try:
        gateway, store, run = runtime.gateway, runtime.store, uuid.uuid4().hex[:8]
        gateway.set_mode("simulation", Actor("bench", "compliance"))
        statements: Counter[str] = Counter()
        transactions = [0]
        held: list[float] = []
        tx, pool = store._transactions, store._pool
        begin, commit, rollback, run_read = tx.begin, tx.commit, tx.rollback, pool.run
        started: list[float] = []

        def counted_begin() -> Any:
            # one thread, so no waiting: begin to commit is the time the lock is held
            started.append(time.perf_counter())
            transactions[0] += 1
            statements["SELECT chain_head (lock)"] += 1
            if tx.journal_waiting:  # the simulator's entries ride along (adapters/sql/journal.py)
                statements["INSERT broker_journal"] += 1
            writer = begin()
            writer.cursor._cursor = _CountingCursor(writer.cursor._cursor, statements)
            return writer

        def counted_end(end: Callable[[Any], None]) -> Callable[[Any], None]:
            def ended(writer: Any) -> None:
                end(writer)
                held.append(time.perf_counter() - started.pop())

            return ended

        def counted_read(sql: str, params: Any, result: Callable[[Any], Any]) -> Any:
            statements[_statement(sql)] += 1
            return run_read(sql, params, result)

        tx.begin = counted_begin  # type: ignore[method-assign]
        tx.commit = counted_end(commit)  # type: ignore[method-assign]
        tx.rollback = counted_end(rollback)  # type: ignore[method-assign]
        pool.run = counted_read  # type: ignore[method-assign]
        actor = Actor("bench", "trader")
        out: dict[str, Any] = {}
        number = itertools.count()
        for name, call in (("evaluate", gateway.evaluate), ("submit", gateway.submit)):
            for _ in range(max(20, calls // 5)):
                call(market_order(next(number), run), actor)
            statements.clear()
            held.clear()
            transactions[0] = 0
            kinds: Counter[str] = Counter()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls):
                kinds[call(market_order(next(number), run), actor).kind] += 1
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            out[name] = {
                "calls": calls,
                "outcomes": dict(kinds),
                "cpu_us_per_call": cpu / calls * 1e6,
                "wall_us_per_call": wall / calls * 1e6,
                "sql_statements_per_call": sum(statements.values()) / calls,
                "transactions_per_call": transactions[0] / calls,
                "chain_lock_ms_per_call": sum(held) / calls * 1e3,
                "chain_lock_holds_per_call": len(held) / calls,
                "statements": {k: v / calls for k, v in statements.most_common()},
            }
        out["flow_read"] = _flow_read(gateway, store, run)
        out["evaluator"] = _evaluator_only(gateway.evaluator, run, calls)
        return out
    finally:
        runtime.close()


class _CountingCursor:
    """A driver cursor that counts its statements by verb and table (an
    executemany counts once, whatever its rows)."""

    def __init__(self, cursor: Any, seen: Counter[str]) -> None:
        self._cursor, self._seen = cursor, seen

    def execute(self, sql: str, params: Any = None) -> Any:
        self._seen[_statement(sql)] += 1
        return self._cursor.execute(sql) if params is None else self._cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        self._seen[_statement(sql) + " (many)"] += 1
        return self._cursor.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _statement(sql: str) -> str:
    words = sql.split()
    if words[0] == "SELECT" and words[1].startswith("("):
        return "SELECT snapshot"
    table = next(
        (w for prev, w in itertools.pairwise(words) if prev in ("FROM", "INTO", "UPDATE")), ""
    )
    return f"{words[0]} {table}".strip()


def _flow_read(gateway: Any, store: Any, run: str) -> dict[str, Any]:
    """What the per-evaluation read of the store (mode, trading states, position, flow
    counts: `Writer.snapshot`, under the chain lock) costs right after the submits,
    and on an empty window. The counts come from SQL, so the cost should not grow
    with the orders in the window."""
    flow = gateway.evaluator.policy.config.flow
    window = max(flow.rate_window_s, flow.duplicate_window_s)
    order = OrderRequest.model_validate(market_order(0, run))

    def cost(now: datetime, repeats: int = 50) -> float:
        with store.writing() as w:
            started = time.process_time()
            for _ in range(repeats):
                w.snapshot(order, now, flow.rate_window_s, flow.duplicate_window_s)
            return (time.process_time() - started) / repeats

    now = datetime.now(UTC)
    with store.writing() as w:
        counted = w.snapshot(order, now, window, flow.duplicate_window_s).flow.orders_in_window
    return {
        "window_s": window,
        "orders_in_window": counted,
        "cpu_ms": cost(now) * 1e3,
        "empty_cpu_ms": cost(now + timedelta(hours=1)) * 1e3,
    }


def _evaluator_only(evaluator: Any, run: str, calls: int) -> dict[str, Any]:
    """The engine alone on the same orders: validate, facts, rules, decision."""
    state, orders = EngineState(), [market_order(i, run) for i in range(calls)]
    for order in orders[:20]:
        evaluator.evaluate(order, state, datetime.now(UTC))
    cpu = time.process_time()
    for order in orders:
        evaluator.evaluate(order, state, datetime.now(UTC))
    return {"calls": calls, "cpu_us_per_call": (time.process_time() - cpu) / calls * 1e6}


# --- profiling -------------------------------------------------------------------------


@contextmanager
def sampled(pid: int, output: Path, enabled: bool) -> Iterator[None]:
    """py-spy samples the thread holding the server's GIL while the block runs."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not enabled or not Path(spy).exists():
        yield
        return
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--gil", "--nonblocking"]
    command += ["--full-filenames"]
    command += ["--format", "raw", "--output", str(output)]
    spy_process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    time.sleep(1.0)  # attached before the load starts
    try:
        yield
    finally:
        spy_process.send_signal(signal.SIGINT)
        try:
            spy_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy_process.kill()
            spy_process.wait()


_ENGINE = f"{ROOT}/engine/"
_OURS = (f"{ROOT}/engine/", f"{ROOT}/api/", f"{ROOT}/adapters/")
# (layer, test on a "function (file:line)" frame). A sample goes to the first layer
# that matches any of its frames, innermost first, in the order of this list.
_LAYERS: list[tuple[str, Callable[[str], bool]]] = [
    ("durable-rules (rules engine)", lambda f: f"{_ENGINE}policy/_durable.py" in f),
    ("SQLAlchemy Core: build/compile/cache-key statements", lambda f: "/sqlalchemy/sql/" in f),
    ("SQLAlchemy engine: execute, pool, results", lambda f: "/sqlalchemy/" in f),
    ("psycopg driver", lambda f: "/psycopg/" in f),
    ("pydantic validation", lambda f: "/pydantic" in f),
    ("json / hashlib (canonical JSON, digests)", lambda f: "/json/" in f or "hashlib" in f),
    ("engine: evaluator, facts, decision", lambda f: _ENGINE in f),
    ("adapters.sql (the store)", lambda f: f"{ROOT}/adapters/sql/" in f),
    ("prometheus_client", lambda f: "prometheus_client" in f),
    ("litestar", lambda f: "/litestar/" in f),
    ("uvicorn + h11 (HTTP parsing)", lambda f: "/uvicorn/" in f or "/h11/" in f),
    ("anyio (thread hand-off)", lambda f: "/anyio/" in f),
    ("asyncio event loop", lambda f: "/asyncio/" in f or "selectors.py" in f),
    ("threading", lambda f: "threading.py" in f),
    ("logging", lambda f: "/logging/" in f),
]


def read_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive samples per function, inclusive samples per line of our own
    code (engine/, api/), and samples per layer, from py-spy's raw output: one
    `thread;outer frame;...;inner frame count` line per distinct stack."""
    if not path.exists():
        return {"samples": 0, "note": "no profile (py-spy missing or not permitted)"}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            f for f in stack.split(";") if "(" in f and not f.startswith(("process", "thread"))
        ]
        total += count
        if frames:
            own[_short(frames[-1])] += count
        for function in {_function(f) for f in frames if not _entry(f)}:
            inclusive[function] += count
        for frame in {_short(f) for f in frames if _ours(f) and not _entry(f)}:
            ours[frame] += count
        layers[_layer(frames)] += count

    def ranked(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "pct": 100.0 * n / total}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "layers": {k: 100.0 * v / total for k, v in layers.most_common()} if total else {},
        "self": ranked(own),
        "inclusive": ranked(inclusive),
        "our_lines": ranked(ours),
    }


def _layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, test in _LAYERS:
            if test(frame):
                return name
    return "other"


# frames on nearly every stack, which say nothing about the cost: thread and event
# loop entry points, the CLI, uvicorn's server loop
_ENTRY = re.compile(
    r"threading\.py|asyncio/(runners|base_events|events)\.py|uvicorn/(main|server|_compat)\.py"
    r"|bin/apex-oms|api/cli(_service)?\.py|WorkerThread\.run"
)


def _ours(frame: str) -> bool:
    return frame.partition(" (")[2].startswith(_OURS)


def _entry(frame: str) -> bool:
    return _ENTRY.search(frame) is not None


def _function(frame: str) -> str:
    """The frame without its line number: inclusive time per function."""
    return re.sub(r":\d+\)$", ")", _short(frame))


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for prefix in (str(ROOT) + "/", "site-packages/", "lib/python3.11/", "lib/python3.12/"):
        if prefix in where:
            where = where.split(prefix, 1)[1]
            break
    return f"{name} ({where})"
