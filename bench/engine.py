"""Benchmark the policy engine beside plain Python and Cedar, in one process and one thread.

    .venv/bin/python bench/engine.py [--n N] [--latency-n M] [--json] [--profile]
    .venv/bin/python bench/engine.py --rules N [--rules M ...] [--json]

For the default policy set, on a fixed clock and a mix of mostly approved orders:
- the real engine (`engine.Evaluator`), from a raw dict and from a validated
  `OrderRequest`, and its durable-rules call alone on a prebuilt fact;
- the same rules as hand-written Python functions (`_plain.py`), the floor;
- the same rules as Cedar policies evaluated by cedarpy (`_cedar.py`);
- resident memory and the durable-rules state before and after N evaluations.
Python and Cedar must agree with the engine on every case of the mix, check by
check; the exit code is 1 if they do not, or if the mix is not decided as
intended. A missed target is reported, not an error.

With `--rules N`, only the sizes: load time and decisions/s of the shipped set and
of the shipped set beside N synthetic checks (`_sizes.py`); exit code 1 if a
synthetic check fails to deny its probe order or a size decides the mix otherwise
than the shipped set.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This file is bench/engine.py and Python puts bench/ first on the path:
# put the project before it so `import engine` finds the package, not this file.
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from _cedar import CedarGate, Verdict  # noqa: E402
from _mix import NOW, Case, cases, mix  # noqa: E402
from _plain import RULES, Limits, decide  # noqa: E402
from _report import text_report  # noqa: E402
from _sizes import size_report, size_rows  # noqa: E402

import engine  # noqa: E402
from engine.clock import format_utc  # noqa: E402
from engine.policy._durable import DurableRulesets  # noqa: E402
from engine.policy.compiler import CompiledPolicy, presence_flag  # noqa: E402
from engine.policy.evaluator import compiled  # noqa: E402
from engine.policy.facts import Fact, build_fact  # noqa: E402

TARGET_DECISIONS_PER_S = 5_000
TARGET_GROWTH_MB = 10.0
TARGET_N = 200_000
MB = 1024 * 1024

DESCRIPTION = "Benchmark the policy engine beside plain Python and Cedar."
RAW, VALIDATED, PREBUILT = "raw dict", "OrderRequest", "prebuilt fact"


@dataclass(frozen=True)
class Inputs:
    """The mix, prepared once in every form the measured paths start from."""

    cases: list[Case]
    orders: list[dict[str, Any]]
    states: list[engine.EngineState]
    requests: list[engine.OrderRequest]
    facts: list[Fact]
    engine_facts: list[dict[str, Any]]
    cedar_requests: list[dict[str, Any]]


@dataclass(frozen=True)
class Subjects:
    """What is measured: the engine and the two references, built from one policy load."""

    loaded: engine.LoadedPolicies
    evaluator: engine.Evaluator
    policy: CompiledPolicy
    ruleset: DurableRulesets
    limits: Limits
    cedar: CedarGate


@dataclass(frozen=True)
class Row:
    impl: str
    start: str  # what the timed call starts from: RAW, VALIDATED or PREBUILT
    does: str
    calls: int
    decisions_per_s: float
    p50_us: float
    p99_us: float
    engine_over_this: float = 1.0  # engine time per decision / this row's, same start
    engine_over_this_p50: float = 1.0
    amortised: bool = False  # a batch call: per-decision figures are batch figures / size


# --- setup ---------------------------------------------------------------------------


def load_subjects(directory: Path) -> Subjects:
    loaded = engine.load_policies(directory)
    evaluator = engine.Evaluator(loaded)
    policy, ruleset = compiled(loaded)
    limits = Limits.from_config(loaded.config)
    cedar = CedarGate(limits)
    checks = set(evaluator.check_ids)
    for name, ids in (("_plain.RULES", set(RULES)), ("Cedar", set(cedar.rule_ids))):
        if ids != checks:
            raise SystemExit(f"{name} is out of step with the policy set: {sorted(ids ^ checks)}")
    return Subjects(loaded, evaluator, policy, ruleset, limits, cedar)


def engine_fact(fact: Fact, policy: CompiledPolicy) -> dict[str, Any]:
    """What `Evaluator._judge` hands to the rules engine: the fact and its presence flags."""
    flags = {presence_flag(f): f in fact for f in policy.flagged_fields}
    return {"kind": "order", **fact, **flags}


def prepare(subjects: Subjects, evaluated: Sequence[Case]) -> Inputs:
    config = subjects.loaded.config
    requests = [engine.OrderRequest.model_validate(c.order) for c in evaluated]
    facts = [build_fact(r, c.state, config, NOW) for r, c in zip(requests, evaluated, strict=True)]
    return Inputs(
        cases=list(evaluated),
        orders=[c.order for c in evaluated],
        states=[c.state for c in evaluated],
        requests=requests,
        facts=facts,
        engine_facts=[engine_fact(f, subjects.policy) for f in facts],
        cedar_requests=[subjects.cedar.request(f) for f in facts],
    )


# --- agreement -----------------------------------------------------------------------


def agreement(subjects: Subjects, distinct: Sequence[Case]) -> dict[str, Any]:
    """Every case once: engine vs intent, vs Python check by check, vs Cedar's denying checks."""
    inputs = prepare(subjects, distinct)
    counts = Counter[str]()
    problems: list[str] = []
    for i, case in enumerate(distinct):
        decision = subjects.evaluator.evaluate(case.order, case.state, NOW)
        _, python = decide(inputs.facts[i], subjects.limits)
        cedar = subjects.cedar.decide(inputs.cedar_requests[i])
        for name, (ok, detail) in verdicts(case, decision, python, cedar).items():
            counts[name] += ok
            if not ok:
                problems.append(f"{name} disagrees on {case.label!r}: {detail}")
        counts["approved"] += decision.approved
    return {"cases": len(distinct), **counts, "problems": problems}


def verdicts(
    case: Case, decision: engine.Decision, python: Mapping[str, str], cedar: Verdict
) -> dict[str, tuple[bool, str]]:
    """Does each party agree with the engine, and if not, on what."""
    not_passed = {check for check, result in decision.results.items() if result != "pass"}
    python_off = sorted(c for c, r in python.items() if decision.results.get(c) != r)
    cedar_off = sorted(cedar.denying ^ not_passed)
    cedar_ok = cedar.allowed == decision.approved and not cedar_off
    return {
        "intended": (decision.approved == case.approved, f"approved={decision.approved}"),
        "python": (not python_off, f"checks {python_off}"),
        "cedar": (cedar_ok, f"allowed={cedar.allowed}, checks {cedar_off}, {cedar.errors}"),
    }


# --- timing --------------------------------------------------------------------------


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def timed(call: Callable[[int], object], size: int, calls: int) -> tuple[float, list[int]]:
    """Call `call(i % size)` `calls` times; wall seconds and each call's nanoseconds."""
    clock = time.perf_counter_ns
    latencies = [0] * calls
    started = clock()
    for i in range(calls):
        t0 = clock()
        call(i % size)
        latencies[i] = clock() - t0
    return (clock() - started) / 1e9, latencies


def measure(
    impl: str, start: str, does: str, call: Callable[[int], object], size: int, calls: int
) -> Row:
    timed(call, size, max(size, calls // 10))  # warm-up
    wall, latencies = timed(call, size, calls)
    latencies.sort()
    return Row(
        impl,
        start,
        does,
        calls,
        calls / wall,
        percentile(latencies, 0.50) / 1e3,
        percentile(latencies, 0.99) / 1e3,
    )


def measure_batch(gate: CedarGate, requests: list[dict[str, Any]], calls: int) -> Row:
    """Cedar's batch call over the whole mix; per-decision figures are amortised."""
    per = len(requests)
    batches = max(1, calls // per)
    row = measure("cedar", PREBUILT, "", lambda _: gate.decide_batch(requests), 1, batches)
    return Row(
        impl=row.impl,
        start=row.start,
        does=f"is_authorized_batch of {per}, amortised per decision",
        calls=batches * per,
        decisions_per_s=row.decisions_per_s * per,
        p50_us=row.p50_us / per,
        p99_us=row.p99_us / per,
        amortised=True,
    )


def latency_rows(subjects: Subjects, inputs: Inputs, calls: int) -> list[Row]:
    evaluate, fired = subjects.evaluator.evaluate, subjects.ruleset.fired
    limits, gate, config = subjects.limits, subjects.cedar, subjects.loaded.config
    orders, states, reqs = inputs.orders, inputs.states, inputs.requests
    facts, efacts, creqs = inputs.facts, inputs.engine_facts, inputs.cedar_requests
    functions = f"{len(RULES)} functions"

    def fact(i: int) -> Fact:
        return build_fact(reqs[i], states[i], config, NOW)

    plan: list[tuple[str, str, str, Callable[[int], object]]] = [
        (
            "engine",
            RAW,
            "Evaluator.evaluate: validate + facts + rules + decision",
            lambda i: evaluate(orders[i], states[i], NOW),
        ),
        (
            "engine",
            VALIDATED,
            "Evaluator.evaluate: facts + rules + decision",
            lambda i: evaluate(reqs[i], states[i], NOW),
        ),
        ("python", VALIDATED, f"build_fact + {functions}", lambda i: decide(fact(i), limits)),
        (
            "cedar",
            VALIDATED,
            "build_fact + context + is_authorized",
            lambda i: gate.decide(gate.request(fact(i))),
        ),
        (
            "engine",
            PREBUILT,
            "DurableRulesets.fired: encode + assert + retract",
            lambda i: fired(efacts[i]),
        ),
        ("python", PREBUILT, functions, lambda i: decide(facts[i], limits)),
        ("cedar", PREBUILT, "is_authorized", lambda i: gate.decide(creqs[i])),
    ]
    size = len(orders)
    rows = [measure(impl, start, does, call, size, calls) for impl, start, does, call in plan]
    rows.append(measure_batch(gate, creqs, calls))
    return with_ratios(rows)


def with_ratios(rows: list[Row]) -> list[Row]:
    engine_rows = {r.start: r for r in rows if r.impl == "engine"}
    return [
        replace(
            row,
            engine_over_this=row.decisions_per_s / engine_rows[row.start].decisions_per_s,
            engine_over_this_p50=engine_rows[row.start].p50_us / row.p50_us,
        )
        for row in rows
    ]


# --- memory --------------------------------------------------------------------------


def durable_size(ruleset: DurableRulesets) -> dict[str, Any]:
    state, facts = ruleset.state(), ruleset.facts()
    return {"state": state, "state_bytes": len(json.dumps(state)), "facts": len(facts)}


def memory_run(subjects: Subjects, inputs: Inputs, n: int) -> dict[str, Any]:
    """N full-path evaluations; RSS at the start, at each quarter, and at the end."""
    process, evaluate = psutil.Process(), subjects.evaluator.evaluate
    orders, states, size = inputs.orders, inputs.states, len(inputs.orders)
    statuses = Counter[str]()
    gc.collect()
    durable_before = durable_size(subjects.ruleset)
    rss_before = process.memory_info().rss
    checkpoints: list[float] = []
    started = time.perf_counter()
    for quarter in range(4):
        for i in range(n * quarter // 4, n * (quarter + 1) // 4):
            decision = evaluate(orders[i % size], states[i % size], NOW)
            faulty = "engine_error" in decision.triggers
            statuses["engine_error" if faulty else decision.status] += 1
        checkpoints.append(process.memory_info().rss / MB)
    elapsed = time.perf_counter() - started
    gc.collect()
    rss_after = process.memory_info().rss
    return {
        "evaluations": n,
        "path": RAW,
        "seconds": elapsed,
        "decisions_per_s": n / elapsed,
        "statuses": dict(statuses),
        "rss_before_mb": rss_before / MB,
        "rss_quarters_mb": checkpoints,
        "rss_after_mb": rss_after / MB,
        "growth_mb": (rss_after - rss_before) / MB,
        "durable_before": durable_before,
        "durable_after": durable_size(subjects.ruleset),
    }


# --- profile -------------------------------------------------------------------------


def profile(subjects: Subjects, inputs: Inputs, calls: int, top: int = 10) -> list[dict[str, Any]]:
    """The engine's raw-dict path under cProfile: the top functions by cumulative time."""
    evaluate, orders, states = subjects.evaluator.evaluate, inputs.orders, inputs.states
    size = len(orders)

    def run() -> None:
        for i in range(calls):
            evaluate(orders[i % size], states[i % size], NOW)

    profiler = cProfile.Profile()
    profiler.runcall(run)
    stats = pstats.Stats(profiler).get_stats_profile()
    ranked = sorted(stats.func_profiles.items(), key=lambda kv: -kv[1].cumtime)
    out = []
    for name, fp in ranked:
        if fp.file_name == __file__ or "disable" in name:
            continue
        where = f"{_short(fp.file_name)}:{fp.line_number}" if fp.line_number else "~"
        entry = {
            "function": f"{where}({name})",
            "ncalls": fp.ncalls,
            "tottime_s": fp.tottime,
            "cumtime_s": fp.cumtime,
            "cum_us_per_eval": fp.cumtime / calls * 1e6,
        }
        out.append(entry)
        if len(out) == top:
            break
    return out


def _short(path: str) -> str:
    for prefix in (str(ROOT) + "/", "site-packages/"):
        if prefix in path:
            return path.split(prefix, 1)[1]
    return path


# --- summary -------------------------------------------------------------------------


def ratios(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Engine time per decision over python's and cedar's, by starting point."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.impl != "engine" and not row.amortised:
            out.setdefault(f"engine/{row.impl}", {})[row.start] = row.engine_over_this
    return out


def targets(rows: list[Row], memory: dict[str, Any]) -> list[dict[str, Any]]:
    raw = next(r for r in rows if r.impl == "engine" and r.start == RAW)
    n, growth = memory["evaluations"], memory["growth_mb"]
    over = "" if n == TARGET_N else f" (the target is over {TARGET_N:,})"
    return [
        {
            "target": f"engine >= {TARGET_DECISIONS_PER_S:,} decisions/s from a raw dict",
            "value": round(raw.decisions_per_s),
            "pass": raw.decisions_per_s >= TARGET_DECISIONS_PER_S,
        },
        {
            "target": f"RSS growth < {TARGET_GROWTH_MB:g} MB over {n:,} evaluations{over}",
            "value": round(growth, 2),
            "pass": growth < TARGET_GROWTH_MB,
        },
    ]


def cpu_busy_s() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def machine(started: float, busy_before: float, ours_before: float) -> dict[str, Any]:
    """How much of the machine other processes took while we ran: it shows in the tails."""
    wall, cpus = time.perf_counter() - started, psutil.cpu_count() or 1
    ours = sum(psutil.Process().cpu_times()[:2]) - ours_before
    others = max(0.0, cpu_busy_s() - busy_before - ours)
    return {"cpus": cpus, "others_cpu_share": others / (wall * cpus), "load_avg": os.getloadavg()}


# --- main ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    started, busy_before = time.perf_counter(), cpu_busy_s()
    ours_before = sum(psutil.Process().cpu_times()[:2])
    subjects = load_subjects(args.policies)
    distinct = cases()
    inputs = prepare(subjects, mix(distinct))
    agree = agreement(subjects, distinct)
    rows = latency_rows(subjects, inputs, args.latency_n)
    memory = memory_run(subjects, inputs, args.n)
    approved = sum(c.approved for c in inputs.cases)
    result: dict[str, Any] = {
        "policies": _short(str(args.policies.resolve())),
        "checks": len(subjects.evaluator.check_ids),
        "now": format_utc(NOW),
        "mix": {"orders": len(inputs.cases), "approved": approved},
        "latency_calls": args.latency_n,
        "rows": [asdict(r) for r in rows],
        "ratios": ratios(rows),
        "memory": memory,
        "agreement": agree,
        "targets": targets(rows, memory),
    }
    if args.profile:
        result["profile_calls"] = args.profile_n
        result["profile"] = profile(subjects, inputs, args.profile_n)
    result["machine"] = machine(started, busy_before, ours_before)
    result["elapsed_s"] = time.perf_counter() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--n", type=int, default=TARGET_N, help="evaluations for the memory part")
    parser.add_argument("--latency-n", type=int, default=5_000, help="timed calls per row")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", action="store_true", help="cProfile the engine path too")
    parser.add_argument("--profile-n", type=int, default=3_000, help="evaluations to profile")
    parser.add_argument("--policies", type=Path, default=ROOT / "policies")
    parser.add_argument(
        "--rules",
        type=int,
        action="append",
        metavar="N",
        help="only the sizes: the policies beside N synthetic checks (repeatable)",
    )
    parser.add_argument("--rules-calls", type=int, default=3_000, help="decisions per size")
    args = parser.parse_args(argv)
    if args.rules:
        sizes = size_rows(args.policies, args.rules, mix(cases()), args.rules_calls)
        print(json.dumps(sizes, indent=2) if args.json else size_report(sizes))
        ok = all(row["probe_denies"] and row["same_decisions"] for row in sizes["rules"])
        return 0 if ok else 1
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else text_report(result))
    return 1 if result["agreement"]["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
