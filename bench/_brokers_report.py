"""The broker bench's figures as a readable report; the input is the dict `--json` prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench._http_report import table

__all__ = ["text_report"]

CALLS = (
    ("submit_resting", "submit (rests)"),
    ("cancel", "cancel"),
    ("submit_market", "submit (fills)"),
)


def _ms(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def text_report(result: dict[str, Any]) -> str:
    machine, settings = result["machine"], result["settings"]
    probe = machine["cpu_probe_ms"]
    out = [
        f"apex-oms broker bench ({result['command'].strip()}): adapters on their fakes on "
        "127.0.0.1, in this process, one caller thread",
        f"machine: {machine['cpus']} CPUs, Python {machine['python']}, load average "
        f"{machine['load_before']} before, {machine['load_after']} after; steal "
        f"{machine['steal_pct']:.1f} % over the run; CPU probe {probe['before']:.0f} ms before, "
        f"{probe['after']:.0f} ms after (quiet: {probe['quiet']:.0f} ms; higher is slower)",
        "NOTE: the fakes share this process and its GIL: their work is in every figure.",
        "",
        f"1. Round trips through the adapter ({settings['n']} calls each, after a warm-up; "
        "ms per call; calls/s over the phase)",
        _round_trips(result["round_trips"]),
    ]
    if result["log_cost"]:
        out += [
            "",
            "   oms_fix: what the durable session log adds (vs the memory log)",
            _log_cost(result["log_cost"]),
        ]
    if result["session_log_writes"]:
        out += [
            "",
            f"2. The FIX session log alone: {settings['log_n']} writes of each kind, "
            "each its own committed transaction (ms per write)",
            _raw(result["session_log_writes"]),
        ]
    if result["fill_to_listener"]:
        out += [
            "",
            "3. Fill to listener: the fake fills a resting order -> the adapter's "
            "subscribe listener has the filled ack (ms)",
            _fills(result["fill_to_listener"]),
        ]
    if result.get("gateway"):
        out += [
            "",
            f"4. Gateway.submit in process, paper mode, SQLite store "
            f"({settings['gateway_n']} market orders each; ms per call)",
            _gateway(result["gateway"]),
        ]
    wrong = [f"{r['name']}: {k} x{v}" for r in result["round_trips"] for k, v in r["wrong"].items()]
    wrong += [
        f"{f['name']} {f['path']}: {f['missing']} fills never reached the listener"
        for f in result["fill_to_listener"]
        if f.get("missing")
    ]
    wrong += [
        f"gateway {g['name']}: {g['outcomes']}"
        for g in result.get("gateway", [])
        if g["unexpected"]
    ]
    out += ["", "UNEXPECTED ANSWERS: " + "; ".join(wrong) if wrong else "every answer as expected"]
    out.append(f"elapsed: {result['elapsed_s']:.1f} s")
    return "\n".join(out)


def _round_trips(rows: Sequence[dict[str, Any]]) -> str:
    headers = ["adapter", "call", "p50 ms", "p90 ms", "p99 ms", "mean ms", "calls/s", "FIX out+in"]
    lines = []
    for row in rows:
        for key, label in CALLS:
            f = row[key]
            messages = (
                f"{f['messages_out']:.1f}+{f['messages_in']:.1f}" if "messages_out" in f else "-"
            )
            lines.append(
                [
                    row["name"],
                    label,
                    _ms(f, "p50_ms"),
                    _ms(f, "p90_ms"),
                    _ms(f, "p99_ms"),
                    _ms(f, "mean_ms"),
                    f"{f.get('calls_per_s', 0):,.0f}",
                    messages,
                ]
            )
    return table(headers, lines)


def _log_cost(rows: Sequence[dict[str, Any]]) -> str:
    headers = [
        "log",
        "call",
        "messages",
        "+p50 ms/call",
        "+mean ms/call",
        "ms/message (p50)",
        "ms/message (mean)",
    ]
    lines = [
        [
            r["log"],
            dict(CALLS)[r["call"]],
            f"{r['messages_per_call']:.1f}",
            f"{r['extra_p50_ms_per_call']:.3f}",
            f"{r['extra_mean_ms_per_call']:.3f}",
            f"{r['p50_ms_per_message']:.3f}",
            f"{r['mean_ms_per_message']:.3f}",
        ]
        for r in rows
    ]
    return table(headers, lines)


def _raw(raw: dict[str, Any]) -> str:
    headers = ["store", "write", "bytes", "p50 ms", "p90 ms", "p99 ms", "mean ms", "max ms"]
    lines = []
    for store, kinds in raw.items():
        for kind, f in kinds.items():
            lines.append(
                [
                    store,
                    kind,
                    str(f["bytes"]),
                    _ms(f, "p50_ms"),
                    _ms(f, "p90_ms"),
                    _ms(f, "p99_ms"),
                    _ms(f, "mean_ms"),
                    _ms(f, "max_ms"),
                ]
            )
    return table(headers, lines)


def _fills(rows: Sequence[dict[str, Any]]) -> str:
    headers = ["adapter", "path", "fills", "p50 ms", "p90 ms", "p99 ms", "mean ms", "max ms"]
    lines = [
        [
            r["name"],
            r["path"],
            str(r["n"]),
            _ms(r, "p50_ms"),
            _ms(r, "p90_ms"),
            _ms(r, "p99_ms"),
            _ms(r, "mean_ms"),
            _ms(r, "max_ms"),
        ]
        for r in rows
    ]
    text = table(headers, lines)
    hops = [r["fake_call_round_trip_ms"] for r in rows if "fake_call_round_trip_ms" in r]
    if hops:
        text += (
            f"\n   (the FIX fake fills on its own loop thread: a call there and back "
            f"takes {min(hops):.3f}-{max(hops):.3f} ms p50; one way is in the figures)"
        )
    return text


def _gateway(rows: Sequence[dict[str, Any]]) -> str:
    headers = [
        "broker",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "calls/s",
        "CPU ms/call",
        "caller",
        "adapter thr.",
        "fake thr.",
        "other",
    ]
    lines = []
    for r in rows:
        cpu = r["cpu_ms_per_call"]
        lines.append(
            [
                r["name"],
                _ms(r, "p50_ms"),
                _ms(r, "p99_ms"),
                _ms(r, "mean_ms"),
                f"{r['calls_per_s']:,.0f}",
                f"{cpu['process']:.2f}",
                f"{cpu['caller']:.2f}",
                f"{cpu['adapter threads']:.2f}",
                f"{cpu['fake threads']:.2f}",
                f"{cpu['other']:.2f}",
            ]
        )
    return table(headers, lines, left=1)
