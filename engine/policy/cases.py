"""Policy test cases in YAML (`policies/tests/*.yaml`) and their runner.

A case file holds `defaults` (merged under every case of the file) and
`cases`. Each case gives an order, optionally a state and an evaluation time,
and what to expect: the status, the exact set of checks that did not pass, and
the triggers. `data_hash: auto` and `protocol_hash: auto` stand for the correct
digests, so a case that changes the quote need not recompute them by hand.

Shared defaults. `defaults.yaml` in the same folder (the keys of a `defaults`
block: `at`, `order`, `state`) lies under every file's own `defaults`, which
lies under each case's fields: nested mappings merge key by key, a list or a
scalar replaces, and `null` removes a key. So the approved order is written
once, and a file or a case says only what it changes.

Every problem names its file and line: a case's own line, or the line of the
key at fault, wherever in the three layers that key was written.
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
from ._yaml import Lines, load_yaml
from .decision import Decision
from .evaluator import Evaluator
from .loader import pydantic_issues

__all__ = [
    "DEFAULTS_FILE",
    "CaseResult",
    "PolicyCase",
    "load_cases",
    "run_cases",
    "select_cases",
]

DEFAULTS_FILE = "defaults.yaml"

_Frozen = ConfigDict(frozen=True, extra="forbid")
_Loc = tuple[str | int, ...]
_CODES = {"extra_forbidden": "unknown_key", "missing": "missing_key"}


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
class _Layer:
    """One layer of defaults and where its keys are written (`base` is the path
    of the block in its file: `()` for the shared file, `("defaults",)` in a case file)."""

    values: _Defaults
    file: str
    lines: Lines
    base: _Loc


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    passed: bool
    problems: list[str] = field(default_factory=list)
    decision: Decision | None = None


def load_cases(target: Path) -> list[PolicyCase]:
    """The cases of one case file, or of every case file in a folder, with the
    folder's shared defaults under them; `PolicyError` lists every bad file,
    key and case at once."""
    if not target.exists():
        raise PolicyError([PolicyIssue("not_found", "no such file or folder", str(target))])
    if target.is_dir():
        folder, files = target, [p for p in sorted(target.glob("*.y*ml")) if not _is_defaults(p)]
    elif _is_defaults(target):
        detail = (
            f"{DEFAULTS_FILE} holds the shared defaults, not cases: give a case file or its folder"
        )
        raise PolicyError([PolicyIssue("not_a_case_file", detail, str(target))])
    else:
        folder, files = target.parent, [target]
    issues: list[PolicyIssue] = []
    shared = _shared_defaults(folder, issues)
    cases: list[PolicyCase] = []
    if not issues:
        for path in files:
            cases.extend(_load_file(path, [] if shared is None else [shared], issues))
    if issues:
        raise PolicyError(_unique(issues))
    return cases


def select_cases(cases: list[PolicyCase], keyword: str | None) -> list[PolicyCase]:
    """The cases whose name contains `keyword`, ignoring case (all when None)."""
    if keyword is None:
        return list(cases)
    wanted = keyword.casefold()
    return [c for c in cases if wanted in c.name.casefold()]


def run_cases(evaluator: Evaluator, cases: list[PolicyCase]) -> list[CaseResult]:
    return [_run(evaluator, case) for case in cases]


# --- loading ---------------------------------------------------------------------


def _is_defaults(path: Path) -> bool:
    return path.name == DEFAULTS_FILE


def _parse(path: Path, issues: list[PolicyIssue]) -> tuple[Any, Lines] | None:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        issues.append(PolicyIssue("yaml_syntax", f"not UTF-8: {exc}", str(path)))
        return None
    except OSError as exc:
        issues.append(PolicyIssue("not_found", f"cannot be read: {exc.strerror}", str(path)))
        return None
    data, lines, file_issues = load_yaml(text, str(path))
    issues.extend(file_issues)
    return None if file_issues else (data, lines)


def _shared_defaults(folder: Path, issues: list[PolicyIssue]) -> _Layer | None:
    path = folder / DEFAULTS_FILE
    if not path.is_file():
        return None
    parsed = _parse(path, issues)
    if parsed is None:
        return None
    data, lines = parsed
    if data is None:  # an empty file shares nothing
        data = {}
    try:
        values = _Defaults.model_validate(data)
    except ValidationError as exc:
        issues.extend(_with_hint(pydantic_issues(exc, str(path), lines)))
        return None
    layer = _Layer(values, str(path), lines, ())
    issues.extend(_layer_issues(layer))
    return None if issues else layer


def _with_hint(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    hint = f" ({DEFAULTS_FILE} holds only at, order and state, without a `defaults:` key)"
    return [
        PolicyIssue(i.code, i.message + hint, i.file, i.line, i.rule_id)
        if i.code == "unknown_key"
        else i
        for i in issues
    ]


def _load_file(path: Path, shared: list[_Layer], issues: list[PolicyIssue]) -> list[PolicyCase]:
    parsed = _parse(path, issues)
    if parsed is None:
        return []
    data, lines = parsed
    try:
        content = _CaseFile.model_validate(data)
    except ValidationError as exc:
        issues.extend(pydantic_issues(exc, str(path), lines))
        return []
    own = _Layer(content.defaults, str(path), lines, ("defaults",))
    own_issues = _layer_issues(own)
    if own_issues:
        issues.extend(own_issues)
        return []
    layers = [*shared, own]
    cases = []
    for index, raw in enumerate(content.cases):
        case, case_issues = _load_case(raw, index, path, lines, layers)
        issues.extend(case_issues)
        if case is not None:
            cases.append(case)
    return cases


def _load_case(
    raw: dict[str, Any], index: int, path: Path, lines: Lines, layers: list[_Layer]
) -> tuple[PolicyCase | None, list[PolicyIssue]]:
    here: _Loc = ("cases", index)
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    merged = {
        **{k: v for k, v in raw.items() if k not in ("order", "state", "at")},
        "order": _layered(layers, "order", raw),
        "state": _layered(layers, "state", raw),
        "at": raw["at"] if "at" in raw else _layered_at(layers),
        "file": str(path),
        "line": lines.get(here),
    }
    try:
        case = PolicyCase.model_validate(merged)
    except ValidationError as exc:
        problems = [
            (tuple(e["loc"]), _CODES.get(e["type"], "wrong_type"), e["msg"]) for e in exc.errors()
        ]
        return None, [_locate(p, str(path), lines, here, layers, name) for p in problems]
    problems = _case_problems(case.at, case.state)
    return (None if problems else case), [
        _locate(p, str(path), lines, here, layers, name) for p in problems
    ]


def _layered(layers: list[_Layer], key: Literal["order", "state"], raw: dict[str, Any]) -> Any:
    out: dict[str, Any] = {}
    for layer in layers:
        out = _merge(out, getattr(layer.values, key))
    own = raw.get(key, {})
    # not a mapping: kept as written, so that validation names it
    return _merge(out, own) if isinstance(own, dict) else own


def _layered_at(layers: list[_Layer]) -> str | None:
    at = None
    for layer in layers:
        if "at" in layer.values.model_fields_set:
            at = layer.values.at
    return at


def _layer_issues(layer: _Layer) -> list[PolicyIssue]:
    """A layer's own `at` and `state`, judged alone, so that a bad default is
    reported once, at its line, and not once per case."""
    problems = _case_problems(layer.values.at, layer.values.state)
    return [_issue(p, layer.file, layer.lines, layer.base, None) for p in problems]


def _case_problems(at: str | None, state: dict[str, Any]) -> list[tuple[_Loc, str, str]]:
    problems: list[tuple[_Loc, str, str]] = []
    if at is not None:
        try:
            parse_utc(at)
        except ValueError as exc:
            problems.append((("at",), "bad_time", f"not an ISO-8601 time with a zone: {exc}"))
    try:
        EngineState.model_validate(state)
    except ValidationError as exc:
        for err in exc.errors():
            code = _CODES.get(err["type"], "wrong_type")
            problems.append((("state", *err["loc"]), code, err["msg"]))
    return problems


def _locate(
    problem: tuple[_Loc, str, str],
    file: str,
    lines: Lines,
    here: _Loc,
    layers: list[_Layer],
    name: str | None,
) -> PolicyIssue:
    """The issue at the line where the key at fault was written: in the case, in
    its file's defaults or in the shared defaults, whichever holds it deepest;
    the case's own line when none holds it (a missing key)."""
    loc = problem[0]
    best = (_depth(lines, here, loc), file, lines, here)
    for layer in reversed(layers):
        depth = _depth(layer.lines, layer.base, loc)
        if depth > best[0]:
            best = (depth, layer.file, layer.lines, layer.base)
    if best[0] == 0:
        best = (0, file, lines, here)
    _, where, where_lines, base = best
    return _issue(problem, where, where_lines, base, name)


def _depth(lines: Lines, base: _Loc, loc: _Loc) -> int:
    depth = 0
    while depth < len(loc) and (*base, *loc[: depth + 1]) in lines:
        depth += 1
    return depth


def _issue(
    problem: tuple[_Loc, str, str], file: str, lines: Lines, base: _Loc, name: str | None
) -> PolicyIssue:
    loc, code, message = problem
    depth = _depth(lines, base, loc)
    line = lines.get((*base, *loc[:depth])) or lines.get(base) or lines.get(())
    where = ".".join(str(p) for p in loc) or "(document)"
    return PolicyIssue(code, f"{where}: {message}", file, line, name)


def _unique(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    return list(dict.fromkeys(issues))


# --- running ---------------------------------------------------------------------


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
    if problems and decision.reasons:
        problems.append(
            "reasons: " + "; ".join(f"{r.check}: {r.code}: {r.detail}" for r in decision.reasons)
        )
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
