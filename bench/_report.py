"""The bench's figures as a readable report; the input is the same dict `--json` prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["text_report"]

_ROW_HEADERS = (
    "impl",
    "starts from",
    "decisions/s",
    "p50 µs",
    "p99 µs",
    "engine÷this",
    "(p50)",
    "timed call",
)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def text_report(result: dict[str, Any]) -> str:
    out = [*_heading(result), "", *_timing(result), "", *_memory(result["memory"]), ""]
    out += [*_agreement(result["agreement"]), "", *_targets(result["targets"])]
    if "profile" in result:
        out += ["", *_profile(result["profile"], result["profile_calls"])]
    out += ["", _machine(result["machine"], result["elapsed_s"])]
    return "\n".join(out)


def _heading(result: dict[str, Any]) -> list[str]:
    mix, distinct = result["mix"], result["agreement"]["cases"]
    return [
        f"apex-oms engine bench: {result['policies']} ({result['checks']} checks), "
        f"now={result['now']}, one process, one thread",
        f"mix: {mix['orders']} orders per cycle ({mix['approved']} approved, "
        f"{mix['orders'] - mix['approved']} blocked) from {distinct} distinct cases; "
        f"{result['latency_calls']:,} timed calls per row, after a warm-up",
    ]


def _row_cells(row: dict[str, Any]) -> list[str]:
    return [
        row["impl"],
        row["start"],
        f"{row['decisions_per_s']:,.0f}",
        f"{row['p50_us']:,.1f}",
        f"{row['p99_us']:,.1f}",
        f"{row['engine_over_this']:,.1f}x",
        f"{row['engine_over_this_p50']:,.1f}x",
        row["does"],
    ]


def _timing(result: dict[str, Any]) -> list[str]:
    rows = [_row_cells(r) for r in result["rows"]]
    lines = [
        table(_ROW_HEADERS, rows, right={2, 3, 4, 5, 6}),
        "engine÷this: the engine's time per decision over this row's, from the same start",
        "",
    ]
    for name, ratios in result["ratios"].items():
        parts = ", ".join(f"{value:,.1f}x from {start}" for start, value in ratios.items())
        lines.append(f"{name} (time per decision): {parts}")
    return lines


def _memory(mem: dict[str, Any]) -> list[str]:
    before, after = mem["durable_before"], mem["durable_after"]
    quarters = ", ".join(f"{q:.1f}" for q in mem["rss_quarters_mb"])
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(mem["statuses"].items()))
    return [
        f"memory: {mem['evaluations']:,} evaluations from a {mem['path']} in "
        f"{mem['seconds']:.1f} s ({mem['decisions_per_s']:,.0f} decisions/s sustained; {statuses})",
        f"  RSS before {mem['rss_before_mb']:.1f} MB; after each quarter {quarters} MB; "
        f"after {mem['rss_after_mb']:.1f} MB; growth {mem['growth_mb']:+.2f} MB",
        f"  durable-rules state before: {before['state_bytes']} bytes, {before['facts']} facts",
        f"  durable-rules state after:  {after['state_bytes']} bytes, {after['facts']} facts "
        f"{json.dumps(after['state'])}",
    ]


def _agreement(agree: dict[str, Any]) -> list[str]:
    n = agree["cases"]
    lines = [
        f"agreement on {n} distinct cases ({agree['approved']} approved):",
        f"  engine decides as intended         {agree['intended']}/{n}",
        f"  python = engine, every check       {agree['python']}/{n}",
        f"  cedar = engine, decision + denials {agree['cedar']}/{n}",
    ]
    return lines + [f"  DISAGREEMENT {p}" for p in agree["problems"]]


def _targets(targets: list[dict[str, Any]]) -> list[str]:
    return [f"{'PASS' if t['pass'] else 'MISS'}  {t['target']}: {t['value']:,}" for t in targets]


def _profile(entries: list[dict[str, Any]], calls: int) -> list[str]:
    rows = [
        [
            e["function"],
            str(e["ncalls"]),
            f"{e['tottime_s']:.3f}",
            f"{e['cumtime_s']:.3f}",
            f"{e['cum_us_per_eval']:.1f}",
        ]
        for e in entries
    ]
    headers = ["function", "ncalls", "tottime s", "cumtime s", "cum µs/eval"]
    return [
        f"cProfile of the engine from a raw dict, {calls:,} evaluations, by cumulative time:",
        table(headers, rows, right={1, 2, 3, 4}),
    ]


def _machine(machine: dict[str, Any], elapsed_s: float) -> str:
    load = ", ".join(f"{x:.2f}" for x in machine["load_avg"])
    share = machine["others_cpu_share"]
    text = (
        f"wall time {elapsed_s:.1f} s; other processes used {share:.0%} of the "
        f"{machine['cpus']} CPUs meanwhile (load average {load})"
    )
    return text + ("; their preemptions show in the p99 column" if share > 0.1 else "")
