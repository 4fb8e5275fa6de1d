"""The HTTP bench's figures as a readable report; the input is the dict `--json` prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["targets", "text_report"]

TARGET_EVALUATE_RPS = 1_000
TARGET_EVALUATE_P99_MS = 20.0
TARGET_SUBMIT_RPS = 400
CLIENT_SHAPES = {  # how bench/http.py's --client drives its connections; the others: threads
    "raw": "one asyncio event loop for all, one keep-alive connection each, requests "
    "pre-built as bytes",
}


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for result in results:
        evaluate, submit = result["phases"]["evaluate"], result["phases"]["submit"]
        checks = (
            (
                f"evaluate >= {TARGET_EVALUATE_RPS:,} req/s",
                f"{evaluate['requests_per_s']:,.0f} req/s",
                evaluate["requests_per_s"] >= TARGET_EVALUATE_RPS,
            ),
            (
                f"evaluate p99 < {TARGET_EVALUATE_P99_MS:g} ms",
                f"{evaluate['p99_ms']:.1f} ms",
                evaluate["p99_ms"] < TARGET_EVALUATE_P99_MS,
            ),
            (
                f"submit >= {TARGET_SUBMIT_RPS:,} req/s",
                f"{submit['requests_per_s']:,.0f} req/s",
                submit["requests_per_s"] >= TARGET_SUBMIT_RPS,
            ),
        )
        for target, value, passed in checks:
            out.append(
                {"backend": result["backend"], "target": target, "value": value, "pass": passed}
            )
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def text_report(result: dict[str, Any]) -> str:
    machine, settings = result["machine"], result["settings"]
    client = settings["client"]
    shape = CLIENT_SHAPES.get(client, "one thread and one keep-alive connection each")
    out = [
        f"apex-oms HTTP bench: {settings['requests']:,} requests per phase after a warm-up, "
        f"{settings['concurrency']} concurrent clients ({client}: {shape}), loopback, "
        f"at most {settings['max_seconds']:g} s a phase",
        f"machine: {machine['cpus']} CPUs, Python {machine['python']}, load average "
        f"{machine['load_before']} before the run; the server is one process (uvicorn: one "
        "event loop; gateway calls on the server's own worker threads, GatewayThreads: a job "
        "queue, each answer posted back onto the event loop)",
        f"NOTE: the load generator runs on the same {machine['cpus']} cores as the server (and "
        "PostgreSQL); their figures are a floor for the server alone. 'server CPU' is the "
        "server process's own CPU time per request, 'client CPU' the load generator's in the "
        "timed window; 'busy' is the whole machine's, and 'steal' the share of the machine's "
        "CPU time the hypervisor gave to other guests in that window.",
        "NOTE: this VM's CPU speed drifts from minute to minute (steal); the same code can "
        "measure half or twice the req/s in another run. Read the figures with the steal "
        "column and each backend's cpu probe below (a fixed Python loop, timed before and "
        "after its phases: higher than on a quiet machine means a slower CPU).",
        "",
        _results_table(result["backends"]),
    ]
    for backend in result["backends"]:
        for phase in backend["phases"].values():
            other = {k: v for k, v in phase["outcomes"].items() if k != "ok"}
            if other or phase["stopped_early"]:
                stopped = " (stopped at --max-seconds)" if phase["stopped_early"] else ""
                out.append(f"  {backend['backend']} {phase['phase']}: not ok{stopped}: {other}")
        out += _bodies_lines(backend)
        out += _probe_lines(backend)
        audit = backend["audit"]
        out.append(
            f"  {backend['backend']}: audit chain {'OK' if audit.get('ok') else 'BROKEN'}, "
            f"{audit.get('records', 0):,} records"
        )
    out += ["", *_engine_lines(result), "", *_breakdown_lines(result), "", "targets:"]
    for target in result["targets"]:
        verdict = "PASS" if target["pass"] else "MISS"
        out.append(
            f"  {verdict}  {target['backend']:<10}  {target['target']:<24}  {target['value']}"
        )
    for backend in result["backends"]:
        for phase, profile in backend.get("profile", {}).items():
            out += ["", *_profile_lines(backend["backend"], phase, profile)]
    out += ["", f"elapsed: {result['elapsed_s']:.1f} s"]
    return "\n".join(out)


def _results_table(backends: list[dict[str, Any]]) -> str:
    headers = ["backend", "route", "done", "ok", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    headers += ["server CPU µs/req", "client CPU µs/req", "busy", "steal"]
    rows = []
    for backend in backends:
        for phase in backend["phases"].values():
            rows.append(
                [
                    backend["backend"],
                    phase["route"],
                    f"{phase['completed']:,}",
                    f"{phase['ok']:,}",
                    f"{phase['requests_per_s']:,.0f}",
                    f"{phase['p50_ms']:.1f}",
                    f"{phase['p90_ms']:.1f}",
                    f"{phase['p99_ms']:.1f}",
                    f"{phase['max_ms']:.1f}",
                    f"{phase['server_cpu_us_per_request']:,.0f}",
                    f"{phase['client_cpu_us_per_request']:,.0f}",
                    f"{phase['machine_cpu_busy_pct']:.0f}%",
                    f"{phase.get('machine_cpu_steal_pct', 0.0):.0f}%",
                ]
            )
    return table(headers, rows)


def _bodies_lines(backend: dict[str, Any]) -> list[str]:
    """--client raw: the order bodies serialized before each timed window, and those
    built inside it because the window outlived the pre-built quotes' freshness."""
    phases = [
        p
        for p in backend["phases"].values()
        if p.get("bodies_prebuilt") or p.get("bodies_built_in_window")
    ]
    if not phases:
        return []
    before = ", ".join(
        f"{p['phase']} {p['bodies_prebuilt']:,} in {p['prebuild_s']:.2f} s" for p in phases
    )
    out = [f"  {backend['backend']}: order bodies built before the timed window: {before}"]
    for p in phases:
        if p.get("bodies_built_in_window"):
            out.append(
                f"  {backend['backend']} {p['phase']}: {p['bodies_built_in_window']:,} orders "
                "built inside the timed window instead (it outlived the pre-built quotes' "
                "freshness, or --requests exceeds the pre-built maximum), in its client CPU"
            )
    return out


def _probe_lines(backend: dict[str, Any]) -> list[str]:
    probe = backend.get("cpu_probe")
    if not probe:
        return []
    return [
        f"  {backend['backend']}: cpu probe: {probe['before_ms']:.0f} ms before, "
        f"{probe['after_ms']:.0f} ms after (a quiet machine here: about "
        f"{probe['quiet_ms']:.0f} ms; {probe['workload']})"
    ]


def _engine_lines(result: dict[str, Any]) -> list[str]:
    engine = result["engine"]
    if not engine.get("available"):
        return [f"engine only: not measured ({engine.get('note', 'skipped')})"]
    rate = engine["decisions_per_s"]
    out = [
        f"engine only ({engine['command']}: {engine['does']}; one thread, fixed clock): "
        f"{rate:,.0f} decisions/s, p50 {engine['p50_us']:,.0f} µs, p99 {engine['p99_us']:,.0f} µs",
        "engine ÷ HTTP, decisions/s of the bare engine over requests/s of the service:",
    ]
    for backend in result["backends"]:
        for name in ("evaluate", "submit"):
            rps = backend["phases"][name]["requests_per_s"]
            ratio = f"{rate / rps:,.1f}x" if rps else "n/a"
            out.append(f"  {backend['backend']:<10} {name:<8}  {ratio:>8}")
    return out


def _breakdown_lines(result: dict[str, Any]) -> list[str]:
    headers = ["backend", "call", "server CPU/HTTP req", "in-process CPU/call", "engine"]
    headers += ["gateway+storage", "HTTP+threads (rest)", "SQL stmts", "transactions"]
    headers += ["chain lock held"]
    rows = []
    for backend in result["backends"]:
        inside = backend["in_process"]
        engine_us = inside["evaluator"]["cpu_us_per_call"]
        for name in ("evaluate", "submit"):
            call = inside[name]
            served = backend["phases"][name]["server_cpu_us_per_request"]
            rows.append(
                [
                    backend["backend"],
                    name,
                    f"{served:,.0f} µs",
                    f"{call['cpu_us_per_call']:,.0f} µs",
                    f"{engine_us:,.0f} µs",
                    f"{call['cpu_us_per_call'] - engine_us:,.0f} µs",
                    f"{served - call['cpu_us_per_call']:,.0f} µs",
                    f"{call['sql_statements_per_call']:.1f}",
                    f"{call['transactions_per_call']:.1f}",
                    f"{call['chain_lock_ms_per_call']:.1f} ms in "
                    f"{call['chain_lock_holds_per_call']:g}",
                ]
            )
    out = [
        "where the server's time per request goes: the same gateway calls in process (one "
        "thread, no HTTP, a fresh database), the evaluator alone on the same orders, and the "
        "rest of the HTTP figure (two measurements at different moments: a small or negative "
        "rest is within noise)",
        table(headers, rows),
        "chain lock: every audit append, on every thread and every replica, holds it in turn; "
        "1 / (time held per call) caps the calls per second of all replicas together:",
    ]
    for backend in result["backends"]:
        caps = []
        for name in ("evaluate", "submit"):
            held = backend["in_process"][name]["chain_lock_ms_per_call"]
            caps.append(f"{name} <= {1e3 / held:,.0f}/s" if held else f"{name} n/a")
        out.append(f"  {backend['backend']:<10} " + ", ".join(caps))
    out.append("state read per evaluation (mode, kill switch, position, flow counts in SQL):")
    for backend in result["backends"]:
        read = backend["in_process"]["flow_read"]
        out.append(
            f"  {backend['backend']:<10} {read['orders_in_window']:,} orders in the "
            f"{read['window_s']:g} s window: {read['cpu_ms']:.2f} ms CPU "
            f"(empty window: {read['empty_cpu_ms']:.2f} ms)"
        )
    out.append("SQL statements per call, in process:")
    for backend in result["backends"]:
        for name in ("evaluate", "submit"):
            stmts = backend["in_process"][name]["statements"]
            listed = ", ".join(f"{k} x{v:g}" for k, v in stmts.items())
            out.append(f"  {backend['backend']:<10} {name:<8}  {listed}")
    return out


def _profile_lines(backend: str, phase: str, profile: dict[str, Any]) -> list[str]:
    title = f"profile: {backend} {phase} (py-spy --gil: {profile['samples']:,} samples)"
    if not profile.get("samples"):
        return [title, f"  {profile.get('note', 'no samples')}"]
    out = [title, "  by layer (innermost frame that belongs to one):"]
    out += [f"    {pct:5.1f}%  {name}" for name, pct in profile["layers"].items()]
    out.append("  top inclusive (function anywhere on the stack; entry frames left out):")
    out += [f"    {row['pct']:5.1f}%  {row['function']}" for row in profile["inclusive"]]
    out.append("  top lines of engine/ and api/ (inclusive):")
    out += [f"    {row['pct']:5.1f}%  {row['function']}" for row in profile["our_lines"][:12]]
    out.append("  top self (innermost frame):")
    out += [f"    {row['pct']:5.1f}%  {row['function']}" for row in profile["self"][:10]]
    return out
