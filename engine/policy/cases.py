"""Policy test cases in YAML (`policies/tests/*.yaml`) and their runner.

A file holds `defaults` (merged under every case) and `cases`. Each case gives
an order, optionally a state and an evaluation time, and what to expect:
the status, the exact set of checks that did not pass, and the triggers.
`data_hash: auto` and `protocol_hash: auto` stand for the correct digests, so
a case that changes the quote need not recompute them by hand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..canonical import sha256_digest
from ..clock import parse_utc
from ..errors import PolicyError, PolicyIssue
from ..models import EngineState
from ._yaml import load_yaml
from .decision import Decision
from .evaluator import Evaluator
from .loader import pydantic_issues

__all__ = ["CaseResult", "PolicyCase", "load_cases", "run_cases"]

_Frozen = ConfigDict(frozen=True, extra="forbid")


class Expectation(BaseModel):
    model_config = _Frozen

    status: Literal["evaluated", "blocked", "rejected"]
    failed: list[str] = Field(default_factory=list)
    triggers: list[str] = Field(default_factory=list)
    results: dict[str, Literal["pass", "fail", "error"]] = Field(default_factory=dict)


class PolicyCase(BaseModel):
    model_config = _Frozen

    name: str
    order: dict[str, Any]
    expect: Expectation
    state: dict[str, Any] = Field(default_factory=dict)
    at: str | None = None
    file: str = ""
    line: int | None = None


class _Defaults(BaseModel):
    model_config = _Frozen

    order: dict[str, Any] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)
    at: str | None = None


class _CaseFile(BaseModel):
    model_config = _Frozen

    defaults: _Defaults = Field(default_factory=_Defaults)
    cases: list[dict[str, Any]]


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    passed: bool
    problems: list[str] = field(default_factory=list)
    decision: Decision | None = None


def load_cases(directory: Path) -> list[PolicyCase]:
    """Every case under `directory`, or `PolicyError` listing every bad file and case."""
    issues: list[PolicyIssue] = []
    cases: list[PolicyCase] = []
    for path in sorted(directory.glob("*.y*ml")):
        data, lines, file_issues = load_yaml(path.read_text("utf-8"), str(path))
        issues.extend(file_issues)
        if file_issues:
            continue
        try:
            parsed = _CaseFile.model_validate(data)
        except ValidationError as exc:
            issues.extend(pydantic_issues(exc, str(path), lines))
            continue
        for index, raw in enumerate(parsed.cases):
            merged = {
                "order": _merge(parsed.defaults.order, raw.get("order", {})),
                "state": _merge(parsed.defaults.state, raw.get("state", {})),
                "at": raw.get("at", parsed.defaults.at),
                **{k: v for k, v in raw.items() if k not in ("order", "state", "at")},
                "file": str(path),
                "line": lines.get(("cases", index)),
            }
            try:
                cases.append(PolicyCase.model_validate(merged))
            except ValidationError as exc:
                issues.extend(pydantic_issues(exc, str(path), lines, raw.get("name")))
    if issues:
        raise PolicyError(issues)
    return cases


def run_cases(evaluator: Evaluator, cases: list[PolicyCase]) -> list[CaseResult]:
    return [_run(evaluator, case) for case in cases]


def _run(evaluator: Evaluator, case: PolicyCase) -> CaseResult:
    try:
        now = parse_utc(case.at) if case.at else None
        state = EngineState.model_validate(case.state)
    except (ValueError, ValidationError) as exc:
        return CaseResult(case, False, [f"bad case: {exc}"])
    decision = evaluator.evaluate(_with_digests(case.order), state, now)
    return CaseResult(case, not (problems := _compare(case, decision)), problems, decision)


def _compare(case: PolicyCase, decision: Decision) -> list[str]:
    want = case.expect
    problems = []
    if decision.status != want.status:
        problems.append(f"status: want {want.status}, got {decision.status}")
    got_failed = sorted(k for k, v in decision.results.items() if v != "pass")
    if sorted(want.failed) != got_failed:
        problems.append(f"failed checks: want {sorted(want.failed)}, got {got_failed}")
    if sorted(want.triggers) != sorted(decision.triggers):
        problems.append(f"triggers: want {sorted(want.triggers)}, got {sorted(decision.triggers)}")
    for check, result in want.results.items():
        got = decision.results.get(check, "not run")
        if got != result:
            problems.append(f"{check}: want {result}, got {got}")
    if problems and decision.errors:
        problems.append(
            "input errors: " + "; ".join(f"{e.field}: {e.message}" for e in decision.errors)
        )
    return problems


def _with_digests(order: dict[str, Any]) -> dict[str, Any]:
    order = copy.deepcopy(order)
    context = order.get("context")
    if isinstance(context, dict):
        if context.get("data_hash") == "auto":
            context["data_hash"] = sha256_digest(context.get("quote"))
        if context.get("protocol_hash") == "auto":
            context["protocol_hash"] = sha256_digest(sorted(context.get("protocols_fired", [])))
    return order


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a key set to null in the override is removed."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
