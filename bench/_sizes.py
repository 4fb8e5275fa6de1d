"""Policy sets of real size: the shipped set, then the shipped set beside N synthetic
checks, each loaded and judged the way the gateway does it.

A synthetic check is a per-symbol or per-account limit, the kind a firm's set
grows by: half deny `quantity` above a limit for one symbol, half deny
`notional` above a limit for one account (a field that can be missing, so it has
a missing-input rule in the engine as well). Each is the `all` of two
comparisons. The mix's orders are none of these symbols and accounts, so each
synthetic check passes, which is the common case; a probe order per set checks
that a synthetic check does deny.

Measured per size: `load_s`, loading, validating and compiling the directory and
creating its rulesets (`load_policies` + `Evaluator`); `decisions_per_s`,
`Evaluator.evaluate` from a raw dict over the mix on this thread, by the wall
clock, and `cpu_decisions_per_s` by this process's CPU time: on a machine other
processes share, the second is what one core does, and the targets are judged on
it. Every size must decide the mix exactly as the shipped set does (the synthetic
checks never apply to it), with no `engine_error`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _mix import NOW, Case

import engine
from engine.policy.evaluator import compiled

__all__ = ["TARGET_CHECKS", "size_rows", "synthetic_rules"]

TARGET_CHECKS = 1_000  # the target: load in < 10 s, >= 1,000 decisions/s
TARGET_LOAD_S = 10.0
TARGET_SIZE_DECISIONS_PER_S = 1_000


def synthetic_rules(n: int) -> str:
    """A rule file of `n` synthetic checks (YAML)."""
    out = ["description: Synthetic per-symbol and per-account limits (bench).", "rules:"]
    for i in range(n):
        if i % 2 == 0:
            condition = f"[{{field: symbol, eq: SYN{i}}}, {{field: quantity, gt: {1000 + i}}}]"
        else:
            condition = f"[{{field: account, eq: acct-{i}}}, {{field: notional, gt: {100000 + i}}}]"
        out += [
            f"  - id: synthetic_{i:05d}_check",
            f"    description: Synthetic limit {i}.",
            "    trigger: risk_denied",
            "    code: SYNTHETIC_LIMIT",
            "    reason: Above a synthetic limit.",
            f"    deny_when: {{all: {condition}}}",
        ]
    return "\n".join(out) + "\n"


def _directory(source: Path, n: int, into: Path) -> Path:
    target = into / f"policies_{n}"
    target.mkdir()
    for path in source.glob("*.yaml"):
        shutil.copy(path, target / path.name)
    if n:
        (target / "zz_synthetic.yaml").write_text(synthetic_rules(n), encoding="utf-8")
    return target


def _probe(evaluator: engine.Evaluator, case: Case, n: int) -> bool:
    """A synthetic check denies the order it is about (when there is one)."""
    if n == 0:
        return True
    order = {**case.order, "symbol": "SYN0", "quantity": 1001}
    decision = evaluator.evaluate(order, case.state, NOW)
    return decision.results.get("synthetic_00000_check") == "fail"


def _statuses(evaluator: engine.Evaluator, mix: Sequence[Case]) -> list[str]:
    out = []
    for case in mix:
        decision = evaluator.evaluate(case.order, case.state, NOW)
        out.append("engine_error" if "engine_error" in decision.triggers else decision.status)
    return out


def _one(source: Path, n: int, workdir: Path, mix: Sequence[Case], calls: int) -> dict[str, Any]:
    directory = _directory(source, n, workdir)
    started = time.perf_counter()
    loaded = engine.load_policies(directory)
    evaluator = engine.Evaluator(loaded)
    load_s = time.perf_counter() - started
    _, rulesets = compiled(loaded)
    evaluate, size = evaluator.evaluate, len(mix)
    for i in range(min(calls, 200)):  # warm-up
        evaluate(mix[i % size].order, mix[i % size].state, NOW)
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(calls):
        evaluate(mix[i % size].order, mix[i % size].state, NOW)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    checks = len(evaluator.check_ids)
    return {
        "checks": checks,
        "synthetic": n,
        "rulesets": rulesets.size,
        "alternatives": evaluator.policy.alternatives,
        "load_s": load_s,
        "decisions_per_s": calls / elapsed,
        "cpu_decisions_per_s": calls / cpu,
        "us_per_decision": elapsed / calls * 1e6,
        "probe_denies": _probe(evaluator, mix[0], n),
        "statuses": _statuses(evaluator, mix),
    }


def size_rows(
    source: Path, sizes: Sequence[int], mix: Sequence[Case], calls: int
) -> dict[str, Any]:
    """The shipped set, then the shipped set plus each of `sizes` synthetic checks."""
    with tempfile.TemporaryDirectory(prefix="apex-bench-") as workdir:
        rows = [_one(source, n, Path(workdir), mix, calls) for n in (0, *sizes)]
    shipped = rows[0]["statuses"]
    for row in rows:
        statuses = row.pop("statuses")
        row["same_decisions"] = statuses == shipped and "engine_error" not in statuses
    targets = [
        {
            "target": f"{row['checks']:,} checks load in < {TARGET_LOAD_S:g} s and judge "
            f">= {TARGET_SIZE_DECISIONS_PER_S:,} decisions/s from a raw dict",
            "value": {
                "load_s": round(row["load_s"], 2),
                "cpu_decisions_per_s": round(row["cpu_decisions_per_s"]),
            },
            "pass": row["load_s"] < TARGET_LOAD_S
            and row["cpu_decisions_per_s"] >= TARGET_SIZE_DECISIONS_PER_S,
        }
        for row in rows
        if row["checks"] >= TARGET_CHECKS
    ]
    return {"rules": rows, "targets": targets}


def size_report(result: dict[str, Any]) -> str:
    lines = [
        f"{'checks':>7}  {'rulesets':>8}  {'alternatives':>12}  {'load s':>7}  "
        f"{'decisions/s':>11}  {'(cpu)':>8}  {'µs/decision':>11}  probe   mix",
    ]
    for row in result["rules"]:
        lines.append(
            f"{row['checks']:>7,}  {row['rulesets']:>8}  {row['alternatives']:>12,}  "
            f"{row['load_s']:>7.2f}  {row['decisions_per_s']:>11,.0f}  "
            f"{row['cpu_decisions_per_s']:>8,.0f}  {row['us_per_decision']:>11.1f}  "
            f"{'denies' if row['probe_denies'] else 'MISSED'}  "
            f"{'same' if row['same_decisions'] else 'DIFFERS'}"
        )
    for target in result["targets"]:
        lines.append(
            f"{'PASS' if target['pass'] else 'MISS'}  {target['target']}: {target['value']}"
        )
    return "\n".join(lines)
