"""Benchmark the HTTP service end to end: a real `apex-oms serve` and a load generator.

    .venv/bin/python bench/http.py [--requests N] [--concurrency C]
        [--backend sqlite|postgresql|both] [--client stdlib|httpx] [--json] [--profile]

For each backend the server runs as a subprocess on a free loopback port, with a
fresh data directory (and for PostgreSQL a fresh database on 127.0.0.1:5432,
dropped afterwards), and a copy of the default policies that is open around the
clock (`session.calendar: always`) and has no practical order-rate throttle, so
the orders are approved. The mode is set to simulation, then C client threads
(one keep-alive connection each) send N requests per phase, after a warm-up:
  (0) GET /healthz              the HTTP floor: uvicorn and Litestar, no storage;
  (a) POST /v1/orders/evaluate  dry run (it still appends one audit record);
  (b) POST /v1/orders           market orders that fill in simulation mode.
Every order carries a fresh quote, a distinct client_order_id, and a symbol,
side and quantity pattern that keeps the duplicate check and the position limit
quiet.

Beside it: `bench/engine.py --json` for the engine-only figure, and an
in-process run of the same gateway calls (no HTTP, one thread, its own fresh
database) that splits the server's CPU time per request into engine, gateway +
storage, and HTTP; counts SQL statements and transactions per call; times how
long each call holds the audit chain lock (a ceiling for all replicas together);
and costs the state read every evaluation makes (flow counts in SQL). With
--profile, py-spy (not a project dependency: `.venv/bin/pip install py-spy`)
samples the thread holding the server's GIL during each measured phase.

A missed target is reported, not an error; the exit code is 1 only if a request
got an unexpected answer or the audit chain does not verify.

The client is the standard library's `http.client` by default: on a small
machine httpx costs about five times as much CPU per request, CPU the server
then does not get (`--client httpx` uses it anyway; the table shows the
client's CPU per request either way). Client and server share the machine's
cores: the figures are a floor for the server alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is bench/http.py and Python puts bench/ first on the path, where it
# would shadow the standard library's `http` package (ours and httpx's imports).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import http.client  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager, suppress  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any, Protocol  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import httpx  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402

from bench._http_probe import in_process, market_order, read_profile, sampled  # noqa: E402
from bench._http_report import targets, text_report  # noqa: E402

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TOKEN_LINE = re.compile(r"admin token \(shown once\): (\S+)")
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Phase:
    name: str
    method: str
    path: str
    status: int  # the answer every request should get
    order_status: str | None  # and the record's order_status, for orders

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


PHASES = (
    Phase("healthz", "GET", "/healthz", 200, None),
    Phase("evaluate", "POST", "/v1/orders/evaluate", 200, "evaluated"),
    Phase("submit", "POST", "/v1/orders", 201, "filled"),
)


# --- the server --------------------------------------------------------------------


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    home: Path

    def log_tail(self) -> str:
        return (self.home / "stderr.log").read_text(errors="replace")[-3000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def open_policies(target: Path) -> Path:
    """The default policy set with the session always open and no practical throttle."""
    target.mkdir()
    for source in (ROOT / "policies").glob("*.yaml"):
        (target / source.name).write_bytes(source.read_bytes())
    config = target / "compliance.yaml"
    text = config.read_text(encoding="utf-8")
    for pattern, replacement in (
        (r"(?m)^(\s*calendar:\s*)\S+", r"\g<1>always"),
        (r"(?m)^(\s*max_orders_per_window:\s*)\d+", r"\g<1>100000000"),
    ):
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise SystemExit(f"policies/compliance.yaml no longer has {pattern!r}")
    config.write_text(text, encoding="utf-8")
    return target


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file under `workdir`, or a PostgreSQL database
    created for the run and dropped afterwards."""
    if backend == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{workdir / 'apex.db'}"
        return
    name = f"apex_bench_{uuid.uuid4().hex}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL is not answering on 127.0.0.1:5432: {exc}") from exc
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("apex-oms")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


@contextmanager
def running_server(home: Path, database_url: str, policies: Path) -> Iterator[Server]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "APEX_HOME": str(home),
        "APEX_POLICIES": str(policies),
        "APEX_DATABASE_URL": database_url,
    }
    port = free_port()
    command = [*server_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    stdout_path = home / "stdout.log"
    with stdout_path.open("wb") as out, (home / "stderr.log").open("wb") as err:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
    server = Server(f"http://127.0.0.1:{port}", "", process, home)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise SystemExit(
                    f"the server exited with {process.returncode}\n{server.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not come up in {START_TIMEOUT_S:g} s")
            with suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/healthz", timeout=1.0).status_code == 200:
                    break
            time.sleep(0.1)
        match = TOKEN_LINE.search(stdout_path.read_text())
        if match is None:
            raise SystemExit("the server printed no admin token on a fresh data directory")
        server.token = match.group(1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# --- clients -------------------------------------------------------------------------


class Client(Protocol):
    def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


class StdlibClient:
    """One keep-alive connection with the standard library: little CPU per request."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        try:
            self._conn.request(method, path, body=body, headers=self._headers)
            answer = self._conn.getresponse()
            return answer.status, answer.read()
        except (http.client.HTTPException, OSError):
            self._conn.close()  # the next request reconnects
            raise

    def close(self) -> None:
        self._conn.close()


class HttpxClient:
    def __init__(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._client = httpx.Client(base_url=url, headers=headers, timeout=30.0)

    def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        answer = self._client.request(method, path, content=body)
        return answer.status_code, answer.content

    def close(self) -> None:
        self._client.close()


CLIENTS: dict[str, Callable[[str, str], Client]] = {"stdlib": StdlibClient, "httpx": HttpxClient}


# --- the load ------------------------------------------------------------------------


@dataclass
class PhaseResult:
    phase: str
    route: str
    requests: int
    concurrency: int
    completed: int = 0
    ok: int = 0
    seconds: float = 0.0
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    server_cpu_us_per_request: float = 0.0
    client_cpu_us_per_request: float = 0.0
    machine_cpu_busy_pct: float = 0.0
    stopped_early: bool = False


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class Load:
    server: Server
    client: str
    concurrency: int
    max_seconds: float
    run: str


def load(setup: Load, phase: Phase, requests: int, start: int) -> PhaseResult:
    """`requests` requests of one phase from `concurrency` threads, orders numbered
    from `start`; every thread stops when the phase's time bound is reached."""
    counter = itertools.count(start)
    end, threads_n = start + requests, setup.concurrency
    latencies: list[list[float]] = [[] for _ in range(threads_n)]
    outcomes: list[Counter[str]] = [Counter() for _ in range(threads_n)]
    barrier = threading.Barrier(threads_n + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        mine, seen, clock = latencies[index], outcomes[index], time.perf_counter
        client = CLIENTS[setup.client](setup.server.url, setup.server.token)
        try:
            client.request("GET", "/healthz", None)  # connected before the clock starts
            barrier.wait()
            while True:
                n = next(counter)
                if n >= end or clock() > stop_at[0]:
                    return
                body = None
                if phase.method == "POST":
                    body = json.dumps(market_order(n, setup.run)).encode()
                t0 = clock()
                try:
                    status, content = client.request(phase.method, phase.path, body)
                except Exception as exc:
                    seen[f"error {type(exc).__name__}"] += 1
                    continue
                mine.append(clock() - t0)
                seen[_outcome(phase, status, content)] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    server_process, me = psutil.Process(setup.server.process.pid), psutil.Process()
    server_cpu, my_cpu, machine = _cpu(server_process), _cpu(me), psutil.cpu_times()
    stop_at[0] = time.perf_counter() + setup.max_seconds
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    server_used, my_used = _cpu(server_process) - server_cpu, _cpu(me) - my_cpu
    busy = _busy(machine, psutil.cpu_times())
    done = sorted(x for per_thread in latencies for x in per_thread)
    seen_all = sum(outcomes, Counter[str]())
    completed = len(done)
    per_request = 1e6 / completed if completed else 0.0
    return PhaseResult(
        phase=phase.name,
        route=phase.route,
        requests=requests,
        concurrency=threads_n,
        completed=completed,
        ok=seen_all["ok"],
        seconds=seconds,
        requests_per_s=completed / seconds if seconds else 0.0,
        p50_ms=percentile(done, 0.50) * 1e3,
        p90_ms=percentile(done, 0.90) * 1e3,
        p99_ms=percentile(done, 0.99) * 1e3,
        max_ms=(done[-1] if done else 0.0) * 1e3,
        outcomes=dict(seen_all),
        server_cpu_us_per_request=server_used * per_request,
        client_cpu_us_per_request=my_used * per_request,
        machine_cpu_busy_pct=busy,
        stopped_early=completed < requests,
    )


def _outcome(phase: Phase, status: int, content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return f"{status} (not JSON)"
    if not isinstance(body, dict):
        return f"{status} (not an object)"
    order_status = body.get("order_status")
    if status == phase.status and order_status == phase.order_status:
        return "ok"
    triggers = ",".join(body.get("fail_closed_triggers") or [])
    return f"{status} {order_status or body.get('code')} {triggers}".strip()


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _busy(before: Any, after: Any) -> float:
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (
        before.idle + getattr(before, "iowait", 0.0)
    )
    return 100.0 * (1 - idle / total) if total > 0 else 0.0


# --- the engine, for comparison ----------------------------------------------------------


def engine_figures(n: int, latency_n: int, timeout: float) -> dict[str, Any]:
    """bench/engine.py's engine-only throughput from a raw dict, one thread."""
    script = HERE / "engine.py"
    if not script.exists():
        return {"available": False, "note": "bench/engine.py not present"}
    command = [sys.executable, str(script), "--json", "--n", str(n), "--latency-n", str(latency_n)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"available": False, "note": f"bench/engine.py took over {timeout:g} s"}
    try:
        result = json.loads(done.stdout)
        row = next(r for r in result["rows"] if r["impl"] == "engine" and r["start"] == "raw dict")
    except (ValueError, KeyError, StopIteration):
        tail = (done.stderr or done.stdout)[-300:].strip()
        return {"available": False, "note": f"could not read bench/engine.py's output: {tail}"}
    return {
        "available": True,
        "command": " ".join(["bench/engine.py", *command[2:]]),
        "decisions_per_s": row["decisions_per_s"],
        "p50_us": row["p50_us"],
        "p99_us": row["p99_us"],
        "does": row["does"],
    }


# --- one backend -----------------------------------------------------------------------


def bench_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    policies = open_policies(workdir / "policies")
    with (
        database(backend, workdir / "server") as url,
        running_server(workdir / "server", url, policies) as server,
    ):
        answer = httpx.post(
            f"{server.url}/v1/mode",
            json={"mode": "simulation"},
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=30,
        )
        if answer.status_code != 200:
            raise SystemExit(f"could not set simulation mode: {answer.status_code} {answer.text}")
        setup = Load(server, args.client, args.concurrency, args.max_seconds, uuid.uuid4().hex[:8])
        phases: dict[str, Any] = {}
        profiles: dict[str, Any] = {}
        start = 0
        for phase in PHASES:
            warm = max(args.concurrency * 5, args.requests // 20)
            load(setup, phase, warm, start)
            start += warm
            profile_path = workdir / f"profile-{phase.name}.txt"
            with sampled(server.process.pid, profile_path, args.profile):
                phases[phase.name] = asdict(load(setup, phase, args.requests, start))
            start += args.requests
            if args.profile:
                profiles[phase.name] = read_profile(profile_path)
        verify = httpx.get(
            f"{server.url}/v1/audit/verify",
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=300,
        ).json()
    with database(backend, workdir / "in-process") as url:
        inside = in_process(url, policies, workdir / "in-process", args.in_process_calls)
    out: dict[str, Any] = {"backend": backend, "phases": phases, "audit": verify}
    out["in_process"] = inside
    if profiles:
        out["profile"] = profiles
    return out


# --- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the HTTP service end to end.")
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per phase")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="stdlib")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per phase")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy")
    parser.add_argument("--in-process-calls", type=int, default=200, help="calls per kind")
    parser.add_argument("--engine-n", type=int, default=20_000, help="bench/engine.py --n")
    parser.add_argument("--no-engine", action="store_true", help="skip bench/engine.py")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.in_process_calls < 1:
        parser.error("--requests, --concurrency and --in-process-calls must be positive")
    started = time.perf_counter()
    machine = {
        "cpus": os.cpu_count(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": sys.version.split()[0],
    }
    engine: dict[str, Any] = {"available": False, "note": "--no-engine"}
    if not args.no_engine:
        engine = engine_figures(args.engine_n, 5_000, timeout=600)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"apex-bench-{backend}-") as tmp:
            results.append(bench_backend(backend, args, Path(tmp)))
    result = {
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "client": args.client,
            "max_seconds": args.max_seconds,
        },
        "machine": machine,
        "engine": engine,
        "backends": results,
        "targets": targets(results),
        "elapsed_s": time.perf_counter() - started,
    }
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else text_report(result))
    faulty = any(
        phase["ok"] != phase["completed"] or not backend["audit"].get("ok")
        for backend in results
        for phase in backend["phases"].values()
    )
    return 1 if faulty else 0


if __name__ == "__main__":
    sys.exit(main())
