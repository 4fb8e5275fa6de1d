"""Load and validate a policy directory; report every problem at once.

Layout: `policies/*.yaml` hold rules, `policies/compliance.yaml` the
parameters. `policies/tests/` holds policy test cases and is not part of the
policy set. Every issue carries a stable code, the file, the line and the rule.
A policy set must hold every required check (`required.py`) as it is pinned there.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..canonical import sha256_hex
from ..errors import PolicyError, PolicyIssue
from . import analysis
from ._durable import DurableRuleset
from ._yaml import Lines, line_of, load_yaml
from .compiler import MAX_ALTERNATIVES, MISSING_SUFFIX, compile_policy
from .config import ComplianceConfig, ParamValue
from .facts import FIELDS, FieldType
from .required import REQUIRED_CHECKS, RequiredCheck, differences
from .rules import (
    OPERATORS,
    TRIGGERS,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Constant,
    FieldRef,
    Lookup,
    Not,
    Operand,
    Param,
    PolicySet,
    Rule,
)

__all__ = [
    "COMPLIANCE_FILE",
    "LoadedPolicies",
    "PolicyReport",
    "check_policies",
    "did_you_mean",
    "load_policies",
    "pydantic_issues",
    "rules_digest",
    "validate_policies",
]

COMPLIANCE_FILE = "compliance.yaml"
# The rules engine misreads numbers beyond 1e15, so facts are clamped just below
# it; constants stay well inside, so a clamped fact still compares correctly.
MAX_NUMBER = 1e14
_RULE_KEYS = {"id", "description", "trigger", "code", "reason", "deny_when", "applies_when"}
_RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
# durable-rules matches a whole value against a small regex dialect: no anchors,
# no escapes like \d or \w, no lookaround.
_PATTERN_FORBIDDEN = re.compile(r"[\^$\\]|\(\?")
# the ids in a file that is not readable YAML, so that a typo there is not also
# reported as every required check it holds being missing
_ID_LINE = re.compile(r"^[\s-]*id:\s*[\"']?([a-z][a-z0-9_]*)", re.MULTILINE)


@dataclass(frozen=True)
class LoadedPolicies:
    policies: PolicySet
    config: ComplianceConfig
    # compliance.yaml exactly as read: what its signatures are verified over
    config_bytes: bytes = b""


@dataclass(frozen=True)
class PolicyReport:
    """What `policy validate` shows: the errors (any one makes the set invalid) and
    the warnings of the analysis (`analysis.py`), which do not."""

    issues: list[PolicyIssue]
    warnings: list[PolicyIssue]


@dataclass
class _Context:
    file: str
    lines: Lines
    config: ComplianceConfig | None
    required: dict[str, RequiredCheck]
    seen: set[str]  # every rule id met, across files, even in a rule with errors
    warnings: list[PolicyIssue]  # shared by every file
    issues: list[PolicyIssue] = field(default_factory=list)
    rule_id: str | None = None

    def add(self, code: str, message: str, path: tuple[str | int, ...]) -> None:
        self.issues.append(
            PolicyIssue(code, message, self.file, line_of(self.lines, path), self.rule_id)
        )

    def warn(self, code: str, message: str, path: tuple[str | int, ...]) -> None:
        self.warnings.append(
            PolicyIssue(code, message, self.file, line_of(self.lines, path), self.rule_id)
        )


def load_policies(
    directory: Path, require: Iterable[RequiredCheck] = REQUIRED_CHECKS
) -> LoadedPolicies:
    """The validated policy set and config, or `PolicyError` with every issue.

    `require`: the checks the set must hold as pinned. Everything that judges real
    orders keeps the default, every required check; only tests and tools that
    load a deliberately partial set pass fewer (`require=()`).
    """
    loaded, issues, _ = _load(directory, require)
    if issues or loaded is None:
        raise PolicyError(issues)
    return loaded


def validate_policies(
    directory: Path, require: Iterable[RequiredCheck] = REQUIRED_CHECKS
) -> list[PolicyIssue]:
    """Every issue of the policy set in `directory`; `require` as for `load_policies`."""
    return _load(directory, require)[1]


def check_policies(
    directory: Path, require: Iterable[RequiredCheck] = REQUIRED_CHECKS
) -> PolicyReport:
    """Every issue and every warning of the policy set in `directory`."""
    _, issues, warnings = _load(directory, require)
    return PolicyReport(issues, warnings)


def rule_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir()
        if p.suffix in (".yaml", ".yml") and p.name != COMPLIANCE_FILE and p.is_file()
    )  # fmt: skip


def rules_digest(directory: Path) -> str:
    """The policy digest of the rule files in `directory`, as `load_policies` computes
    it, whether or not they are valid: what `compliance pin` writes and verification
    compares against."""
    digest = hashlib.sha256()
    for path in rule_files(directory):
        digest.update(_digest_entry(path.name, path.read_bytes()))
    return "sha256:" + digest.hexdigest()


def _digest_entry(name: str, raw: bytes) -> bytes:
    return f"{name}\n{sha256_hex(raw)}\n".encode()


def _load(
    directory: Path, require: Iterable[RequiredCheck]
) -> tuple[LoadedPolicies | None, list[PolicyIssue], list[PolicyIssue]]:
    required = {check.id: check for check in require}
    if not directory.is_dir():
        missing = PolicyIssue("not_found", "policy directory does not exist", str(directory))
        return None, [missing], []
    issues: list[PolicyIssue] = []
    warnings: list[PolicyIssue] = []
    config_path = directory / COMPLIANCE_FILE
    config: ComplianceConfig | None = None
    config_lines: Lines = {}
    config_bytes = b""
    if not config_path.is_file():
        issues.append(
            PolicyIssue("not_found", "compliance configuration missing", str(config_path))
        )
    else:
        config_bytes = config_path.read_bytes()
        config, config_issues, config_lines = _load_config(config_bytes, str(config_path))
        issues.extend(config_issues)

    files = rule_files(directory)
    if not files:
        issues.append(PolicyIssue("not_found", "no policy files (*.yaml)", str(directory)))
    rules: list[Rule] = []
    seen: set[str] = set()
    digest = hashlib.sha256()
    for path in files:
        raw = path.read_bytes()
        digest.update(_digest_entry(path.name, raw))
        file_rules, file_issues = _load_rule_file(raw, str(path), config, required, seen, warnings)
        rules.extend(file_rules)
        issues.extend(file_issues)
    issues.extend(_duplicate_ids(rules))
    if files:
        issues.extend(_missing_required(required, seen, str(directory)))
    if config is not None:
        warnings.extend(_set_warnings(rules, config, str(config_path), config_lines))
    if issues or config is None:
        return None, issues, warnings
    policy_set = PolicySet(
        rules=tuple(rules),
        files=tuple(p.name for p in files),
        policy_digest="sha256:" + digest.hexdigest(),
        compliance_digest="sha256:" + sha256_hex(config_bytes),
    )
    too_complex = _too_complex(compile_policy(policy_set, config).rule_alternatives(), rules)
    if too_complex:
        return None, too_complex, warnings
    return LoadedPolicies(policy_set, config, config_bytes), [], warnings


def _too_complex(alternatives: dict[str, int], rules: list[Rule]) -> list[PolicyIssue]:
    """A rule the engine cannot take: the set is split into as many rulesets as it
    needs, but one engine rule is never split, and a ruleset of 512 alternatives or
    more never returns."""
    by_id = {rule.id: rule for rule in rules}
    issues = []
    for name, count in alternatives.items():
        if count <= MAX_ALTERNATIVES:
            continue
        rule = by_id[name.removesuffix(MISSING_SUFFIX)]
        issues.append(
            PolicyIssue(
                "too_complex",
                f"the rule expands into {count} alternatives in the rules engine "
                f"(at most {MAX_ALTERNATIVES} for one rule); simplify `any` conditions or "
                "move long lists into compliance.yaml parameters",
                rule.source,
                rule.line,
                rule.id,
            )
        )
    return issues


def _set_warnings(
    rules: list[Rule], config: ComplianceConfig, config_file: str, config_lines: Lines
) -> list[PolicyIssue]:
    """The analysis across rules and parameters (see analysis.py)."""
    out = [
        PolicyIssue(
            "duplicate_condition",
            f"same applies_when and deny_when as rule {first.id!r} at {first.source}:{first.line}",
            rule.source,
            rule.line,
            rule.id,
        )
        for rule, first in analysis.duplicate_conditions(rules)
    ]
    for name in analysis.unused_params(rules, config):
        group, _, key = name.partition(".")
        out.append(
            PolicyIssue(
                "unused_param",
                f"parameter {name} is not used by any rule",
                config_file,
                line_of(config_lines, (group, key)),
            )
        )
    return out


def _load_config(raw: bytes, file: str) -> tuple[ComplianceConfig | None, list[PolicyIssue], Lines]:
    data, lines, issues = _parse(raw, file)
    if issues:
        return None, issues, lines
    data, map_issues = _check_maps(data, file, lines)
    try:
        config = ComplianceConfig.model_validate(data)
    except ValidationError as exc:
        issues = pydantic_issues(exc, file, lines)
        return None, map_issues + [_suggest_config_key(issue, exc) for issue in issues], lines
    return (None, map_issues, lines) if map_issues else (config, [], lines)


_PARAM_GROUPS = ("risk", "compliance", "market_data")


def _check_maps(data: Any, file: str, lines: Lines) -> tuple[Any, list[PolicyIssue]]:
    """Map parameters, checked before pydantic: its union would report a bad map once
    per member of the union, none of them saying what is wrong. A bad map is replaced
    by an empty one in what pydantic sees, so it is reported once, here."""
    if not isinstance(data, dict):
        return data, []
    issues: list[PolicyIssue] = []
    out = dict(data)
    for group in _PARAM_GROUPS:
        params = data.get(group)
        if not isinstance(params, dict):
            continue
        for name, value in params.items():
            if not isinstance(value, dict):
                continue
            found = _map_problems(f"{group}.{name}", value, (group, str(name)), file, lines)
            if found:
                issues.extend(found)
                out[group] = {**out[group], name: {}}
    return out, issues


def _map_problems(
    dotted: str, value: dict[Any, Any], path: tuple[str, ...], file: str, lines: Lines
) -> list[PolicyIssue]:
    issues = []

    def add(code: str, message: str, at: tuple[str, ...]) -> None:
        issues.append(PolicyIssue(code, message, file, line_of(lines, at)))

    types: dict[str, str] = {}  # a value type -> the first key holding it
    for key, item in value.items():
        at = (*path, str(key))
        if not isinstance(key, str):
            add("wrong_type", f"{dotted}: map keys are text; write {key!r} in quotes", at)
        kind = _type_of(item)
        if kind is None:
            add(
                "wrong_type",
                f"{dotted}[{key}]: a map value is one number, text, or true/false; "
                f"got {type(item).__name__}",
                at,
            )
            continue
        types.setdefault(kind, str(key))
        if kind == "number" and (math.isnan(item) or abs(item) >= MAX_NUMBER):
            add("invalid_value", f"{dotted}[{key}]: {item!r} is out of range (|x| < 1e14)", at)
    if len(types) > 1:
        mixed = ", ".join(f"{kind} ({key})" for kind, key in types.items())
        add(
            "wrong_type",
            f"map {dotted} mixes value types: {mixed}; every value needs one type",
            path,
        )
    return issues


def _suggest_config_key(issue: PolicyIssue, exc: ValidationError) -> PolicyIssue:
    """An unknown key in compliance.yaml: name the closest key its section allows."""
    if issue.code != "unknown_key":
        return issue
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        if err["type"] != "extra_forbidden" or not issue.message.startswith(".".join(loc) + ":"):
            continue
        model: Any = ComplianceConfig
        for part in loc[:-1]:
            annotation = model.model_fields[part].annotation if part in model.model_fields else None
            model = annotation if isinstance(annotation, type) else None
            if model is None or not hasattr(model, "model_fields"):
                return issue
        hint = did_you_mean(loc[-1], model.model_fields)
        if hint:
            return PolicyIssue(
                issue.code, issue.message + hint, issue.file, issue.line, issue.rule_id
            )
    return issue


def pydantic_issues(
    exc: ValidationError, file: str, lines: Lines, rule_id: str | None = None
) -> list[PolicyIssue]:
    codes = {"extra_forbidden": "unknown_key", "missing": "missing_key"}
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(document)"
        out.append(
            PolicyIssue(
                codes.get(err["type"], "wrong_type"),
                f"{where}: {err['msg']}",
                file,
                line_of(lines, loc),
                rule_id,
            )
        )
    return out


def _parse(raw: bytes, file: str) -> tuple[Any, Lines, list[PolicyIssue]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, {}, [PolicyIssue("yaml_syntax", f"not UTF-8: {exc}", file)]
    return load_yaml(text, file)


def _load_rule_file(
    raw: bytes,
    file: str,
    config: ComplianceConfig | None,
    required: dict[str, RequiredCheck],
    seen: set[str],
    warnings: list[PolicyIssue],
) -> tuple[list[Rule], list[PolicyIssue]]:
    data, lines, issues = _parse(raw, file)
    if issues:
        seen.update(_ID_LINE.findall(raw.decode("utf-8", "replace")))
        return [], issues
    ctx = _Context(file, lines, config, required, seen, warnings)
    if not isinstance(data, dict):
        ctx.add("wrong_type", "a policy file is a mapping with a `rules` list", ())
        return [], ctx.issues
    for key in data:
        if key not in ("rules", "description"):
            ctx.add(
                "unknown_key",
                f"unknown key {key!r} (allowed: rules, description)"
                + did_you_mean(key, ("rules", "description")),
                (key,),
            )
    items = data.get("rules")
    if not isinstance(items, list) or not items:
        ctx.add(
            "empty_condition" if items == [] else "missing_key",
            "`rules` must be a non-empty list",
            ("rules",),
        )
        return [], ctx.issues
    rules = []
    for index, item in enumerate(items):
        rule = _parse_rule(item, ("rules", index), ctx)
        if rule is not None:
            rules.append(rule)
    return rules, ctx.issues


def _parse_rule(item: Any, path: tuple[str | int, ...], ctx: _Context) -> Rule | None:
    ctx.rule_id = None
    if not isinstance(item, dict):
        ctx.add("wrong_type", "a rule is a mapping", path)
        return None
    rule_id = item.get("id")
    if isinstance(rule_id, str):
        ctx.rule_id = rule_id
        ctx.seen.add(rule_id)
    before = len(ctx.issues)
    for key in item:
        if key not in _RULE_KEYS:
            ctx.add(
                "unknown_key",
                f"unknown key {key!r} in rule" + did_you_mean(key, _RULE_KEYS),
                (*path, key),
            )
    for key in ("id", "description", "trigger", "code", "reason", "deny_when"):
        if key not in item:
            ctx.add("missing_key", f"rule needs {key!r}", path)
    for key in ("id", "description", "trigger", "code", "reason"):
        if key in item and (not isinstance(item[key], str) or not item[key].strip()):
            ctx.add("wrong_type", f"{key!r} must be a non-empty string", (*path, key))
    if isinstance(rule_id, str) and not _RULE_ID.match(rule_id):
        ctx.add("invalid_value", f"id {rule_id!r} must match {_RULE_ID.pattern}", (*path, "id"))
    code = item.get("code")
    if isinstance(code, str) and not _CODE.match(code):
        ctx.add("invalid_value", f"code {code!r} must match {_CODE.pattern}", (*path, "code"))
    trigger = item.get("trigger")
    if isinstance(trigger, str) and trigger not in TRIGGERS:
        ctx.add(
            "invalid_value",
            f"trigger {trigger!r} is not one of {', '.join(TRIGGERS)}"
            + did_you_mean(trigger, TRIGGERS),
            (*path, "trigger"),
        )
    deny = (
        _condition(item.get("deny_when"), (*path, "deny_when"), ctx)
        if "deny_when" in item
        else None
    )
    applies = None
    if "applies_when" in item:
        applies = _condition(item["applies_when"], (*path, "applies_when"), ctx)
    if len(ctx.issues) > before or deny is None:
        return None
    rule = Rule(
        id=item["id"],
        description=item["description"].strip(),
        trigger=item["trigger"],
        code=item["code"],
        reason=item["reason"].strip(),
        deny_when=deny,
        applies_when=applies,
        source=ctx.file,
        line=line_of(ctx.lines, path),
    )
    if ctx.config is not None:
        _analyse_rule(rule, path, ctx, ctx.config)
    pinned = ctx.required.get(rule.id)
    if pinned is not None:
        for key, want, got in differences(rule, pinned):
            ctx.add(
                "required_check_altered",
                f"{key} of a required check cannot change (want: {want}, got: {got})",
                (*path, key),
            )
    return rule


def _analyse_rule(
    rule: Rule, path: tuple[str | int, ...], ctx: _Context, config: ComplianceConfig
) -> None:
    """A rule that can never deny is refused; a branch that never holds is a warning."""
    never = analysis.never_denies(rule, config)
    if never is not None:
        key, why = never
        what = "never applies" if key == "applies_when" else "can never deny"
        ctx.add(
            "never_denies",
            f"the rule {what}: {why.text()}; "
            "a check that cannot deny would let through what it was written to block",
            (*path, key),
        )
        return
    for key, condition in (("applies_when", rule.applies_when), ("deny_when", rule.deny_when)):
        if condition is None:
            continue
        for where, why in analysis.never_holding_branches(condition, config, (*path, key)):
            ctx.warn(
                "never_holds",
                f"this branch of `any` can never hold: {why.text()}",
                where,
            )


def _condition(
    node: Any, path: tuple[str | int, ...], ctx: _Context, negated: bool = False
) -> Condition | None:
    if not isinstance(node, dict) or not node:
        code = "empty_condition" if node in (None, {}, []) else "wrong_type"
        ctx.add(code, "a condition is a mapping: all, any, not, or field with an operator", path)
        return None
    for combinator in ("all", "any"):
        if combinator in node:
            return _combination(combinator, node, path, ctx, negated)
    if "not" in node:
        if len(node) != 1:
            ctx.add("unknown_key", "`not` stands alone in its mapping", path)
        inner = _condition(node["not"], (*path, "not"), ctx, not negated)
        return Not(item=inner) if inner is not None else None
    return _comparison(node, path, ctx, negated)


def _combination(
    name: str, node: dict[str, Any], path: tuple[str | int, ...], ctx: _Context, negated: bool
) -> Condition | None:
    if len(node) != 1:
        ctx.add("unknown_key", f"`{name}` stands alone in its mapping", path)
    items = node[name]
    if not isinstance(items, list) or not items:
        ctx.add("empty_condition", f"`{name}` needs a non-empty list of conditions", (*path, name))
        return None
    parsed = [_condition(c, (*path, name, i), ctx, negated) for i, c in enumerate(items)]
    if any(p is None for p in parsed):
        return None
    kept = tuple(p for p in parsed if p is not None)
    return AllOf(items=kept) if name == "all" else AnyOf(items=kept)


def _comparison(
    node: dict[str, Any], path: tuple[str | int, ...], ctx: _Context, negated: bool
) -> Condition | None:
    ops = [k for k in node if k in OPERATORS]
    for key in node:
        if key != "field" and key not in OPERATORS:
            ctx.add(
                "unknown_key",
                f"unknown key {key!r} (operators: {', '.join(OPERATORS)})"
                + did_you_mean(key, ("field", *OPERATORS)),
                (*path, key),
            )
    if "field" not in node:
        ctx.add("missing_key", "a comparison needs `field`", path)
        return None
    if len(ops) != 1:
        ctx.add(
            "missing_key" if not ops else "unknown_key",
            "a comparison has exactly one operator",
            path,
        )
        return None
    name, op = node["field"], ops[0]
    spec = FIELDS.get(name) if isinstance(name, str) else None
    if spec is None:
        ctx.add(
            "unknown_field",
            f"unknown fact field {name!r}" + did_you_mean(name, FIELDS),
            (*path, "field"),
        )
        return None
    if op == "matches" and negated:
        # durable-rules 2.0.28's $nmt never matches: a negated pattern would never deny
        ctx.add(
            "unsupported_negation",
            "`matches` cannot be negated (the rules engine cannot say 'does not match'); "
            "list the values with `in`/`not_in` instead",
            (*path, op),
        )
        return None
    operand = _operand(node[op], (*path, op), ctx)
    if operand is None:
        return None
    if not _check_types(name, spec.type, op, operand, (*path, op), ctx):
        return None
    return Compare.model_validate({"field": name, "op": op, "value": operand})


_OPERAND_FORMS = (
    "an operand is a value, a list, {param: group.name}, "
    "{param: group.map, key: field, default: ...} or {field: name}"
)
# operators whose value must be written into the rule: a list, a pattern, true/false
_LITERAL_ONLY = ("in", "not_in", "matches", "missing")


def _operand(value: Any, path: tuple[str | int, ...], ctx: _Context) -> Operand | None:
    if isinstance(value, dict):
        if set(value) == {"field"} and isinstance(value["field"], str):
            return FieldRef(field=value["field"])
        if "key" in value or "default" in value or ("param" in value and len(value) > 1):
            return _lookup(value, path, ctx)
        if set(value) != {"param"} or not isinstance(value["param"], str):
            ctx.add("wrong_type", _OPERAND_FORMS, path)
            return None
        return _param(value["param"], path, ctx)
    if isinstance(value, list):
        return tuple(value)
    if value is None:
        ctx.add("wrong_type", "a comparison needs a value", path)
        return None
    return value  # type: ignore[no-any-return]


def _param(name: str, path: tuple[str | int, ...], ctx: _Context) -> Param | None:
    if ctx.config is not None and ctx.config.param(name) is None:
        known = [f"risk.{k}" for k in ctx.config.risk] + [
            f"compliance.{k}" for k in ctx.config.compliance
        ]
        ctx.add(
            "unknown_param",
            f"unknown parameter {name!r} in compliance.yaml" + did_you_mean(name, known),
            path,
        )
        return None
    return Param(name=name)


def _lookup(value: dict[str, Any], path: tuple[str | int, ...], ctx: _Context) -> Lookup | None:
    extra = sorted(set(value) - {"param", "key", "default"})
    if extra or not isinstance(value.get("param"), str) or not isinstance(value.get("key"), str):
        ctx.add(
            "wrong_type",
            "a map lookup is {param: group.map, key: field} with an optional default"
            + (f"; unknown {', '.join(map(repr, extra))}" if extra else "")
            + (did_you_mean(extra[0], ("param", "key", "default")) if extra else ""),
            path,
        )
        return None
    table = _param(value["param"], (*path, "param"), ctx)
    default: Param | bool | int | float | str | None = None
    if "default" in value:
        raw = value["default"]
        if isinstance(raw, dict) and set(raw) == {"param"} and isinstance(raw["param"], str):
            default = _param(raw["param"], (*path, "default"), ctx)
            if default is None:
                return None
        elif _type_of(raw) is None:
            ctx.add(
                "wrong_type",
                "a lookup's default is one value or {param: group.name}",
                (*path, "default"),
            )
            return None
        else:
            default = raw
    if table is None:
        return None
    return Lookup(name=table.name, key=value["key"], default=default)


def _resolved(operand: Operand, ctx: _Context) -> ParamValue | Constant | None:
    if isinstance(operand, Param):
        return ctx.config.param(operand.name) if ctx.config is not None else None
    if isinstance(operand, FieldRef | Lookup):
        raise TypeError("a reference has no value of its own")
    return operand


def _check_types(
    name: str,
    ftype: FieldType,
    op: str,
    operand: Operand,
    path: tuple[str | int, ...],
    ctx: _Context,
) -> bool:
    if isinstance(operand, FieldRef | Lookup):
        return _check_reference(name, ftype, op, operand, path, ctx)
    value = _resolved(operand, ctx)
    if value is None:
        return True  # the config did not load; its own issues are reported
    shown = operand.name if isinstance(operand, Param) else repr(value)
    if isinstance(value, dict):
        ctx.add(
            "wrong_type",
            f"{shown} is a map: look it up by a field, {{param: {shown}, key: account}}",
            path,
        )
        return False
    if op == "missing":
        if isinstance(operand, Param) or not isinstance(value, bool):
            ctx.add("wrong_type", "`missing` takes true or false", path)
            return False
        return True
    if op in ("in", "not_in"):
        if not isinstance(value, list | tuple) or not value:
            ctx.add("wrong_type", f"`{op}` needs a non-empty list, got {shown}", path)
            return False
        items = list(value)
    else:
        if isinstance(value, list | tuple):
            ctx.add("wrong_type", f"`{op}` needs a single value, got a list {shown}", path)
            return False
        items = [value]
    if op in ("gt", "ge", "lt", "le") and ftype != "number":
        ctx.add("wrong_type", f"`{op}` compares numbers; {name} is a {ftype}", path)
        return False
    if op == "matches":
        return _check_pattern(name, ftype, value, path, ctx)
    return all(_check_scalar(name, ftype, item, shown, path, ctx) for item in items)


def _check_scalar(
    name: str, ftype: FieldType, item: Any, shown: str, path: tuple[str | int, ...], ctx: _Context
) -> bool:
    if _type_of(item) != ftype:
        ctx.add("wrong_type", f"{name} is a {ftype}; {shown} is not", path)
        return False
    if (
        isinstance(item, float | int)
        and not isinstance(item, bool)
        and (math.isnan(item) or abs(item) >= MAX_NUMBER)
    ):
        ctx.add("invalid_value", f"{item!r} is out of range (|x| < 1e14)", path)
        return False
    return True


def _check_reference(
    name: str,
    ftype: FieldType,
    op: str,
    operand: FieldRef | Lookup,
    path: tuple[str | int, ...],
    ctx: _Context,
) -> bool:
    """Another field, or a map looked up by one: both sides must have one type."""
    what = "another field" if isinstance(operand, FieldRef) else "a map lookup"
    if op in _LITERAL_ONLY:
        ctx.add("wrong_type", f"`{op}` takes a value written in the rule, not {what}", path)
        return False
    if op in ("gt", "ge", "lt", "le") and ftype != "number":
        ctx.add("wrong_type", f"`{op}` compares numbers; {name} is a {ftype}", path)
        return False
    if isinstance(operand, FieldRef):
        return _check_field_ref(name, ftype, operand.field, path, ctx)
    return _check_lookup(name, ftype, operand, path, ctx)


def _check_field_ref(
    name: str, ftype: FieldType, other: str, path: tuple[str | int, ...], ctx: _Context
) -> bool:
    spec = FIELDS.get(other)
    if spec is None:
        ctx.add(
            "unknown_field",
            f"unknown fact field {other!r}" + did_you_mean(other, FIELDS),
            (*path, "field"),
        )
        return False
    if other == name:
        ctx.add("invalid_value", f"{name} is compared with itself", (*path, "field"))
        return False
    if spec.type != ftype:
        ctx.add(
            "wrong_type",
            f"{name} is a {ftype} and {other} is a {spec.type}: "
            "a comparison of two fields needs one type on both sides",
            path,
        )
        return False
    return True


def _check_lookup(
    name: str, ftype: FieldType, lookup: Lookup, path: tuple[str | int, ...], ctx: _Context
) -> bool:
    key = FIELDS.get(lookup.key)
    if key is None:
        ctx.add(
            "unknown_field",
            f"unknown fact field {lookup.key!r} as the lookup key"
            + did_you_mean(lookup.key, FIELDS),
            (*path, "key"),
        )
        return False
    if key.type != "string":
        ctx.add(
            "wrong_type",
            f"a map is looked up by a string field (its keys are text); "
            f"{lookup.key} is a {key.type}",
            (*path, "key"),
        )
        return False
    if ctx.config is None:
        return True  # its own issues are reported
    table = ctx.config.param(lookup.name)
    if not isinstance(table, dict):
        ctx.add(
            "wrong_type",
            f"{lookup.name} is not a map; `key` looks up a map parameter",
            (*path, "param"),
        )
        return False
    kinds = {_type_of(v) for v in table.values()}
    if len(kinds) == 1 and kinds != {ftype}:
        [kind] = kinds
        ctx.add("wrong_type", f"{name} is a {ftype}; the values of {lookup.name} are {kind}s", path)
        return False
    default = lookup.default
    if default is None:
        ctx.warn(
            "lookup_without_default",
            f"{lookup.name} has no default: an order whose {lookup.key} it does not list "
            "gets error, which blocks it",
            path,
        )
        return True
    value = _resolved(default, ctx)
    shown = default.name if isinstance(default, Param) else repr(value)
    if isinstance(value, list | tuple | dict):
        ctx.add(
            "wrong_type", f"a lookup's default is one value; {shown} is not", (*path, "default")
        )
        return False
    return _check_scalar(name, ftype, value, shown, (*path, "default"), ctx)


def _check_pattern(
    name: str, ftype: FieldType, value: Any, path: tuple[str | int, ...], ctx: _Context
) -> bool:
    if ftype != "string" or not isinstance(value, str):
        ctx.add(
            "wrong_type",
            f"`matches` takes a string pattern on a string field; {name} is a {ftype}",
            path,
        )
        return False
    if _PATTERN_FORBIDDEN.search(value):
        ctx.add(
            "invalid_pattern",
            "patterns match the whole value; ^, $, \\ and (? are not supported",
            path,
        )
        return False
    try:
        re.compile(value)
    except re.error as exc:
        ctx.add("invalid_pattern", f"bad pattern {value!r}: {exc}", path)
        return False
    problem = _dialect_problem(value) or _engine_refuses(value)
    if problem:
        ctx.add("invalid_pattern", f"pattern {value!r}: {problem}", path)
        return False
    return True


def _dialect_problem(pattern: str) -> str | None:
    """Constructs Python's `re` accepts but durable-rules reads differently."""
    if "()" in pattern:
        return "empty group"
    index = 0
    while index < len(pattern):
        if pattern[index] != "[":
            index += 1
            continue
        end = pattern.find("]", index + 1)
        body = pattern[index + 1 : end] if end != -1 else ""
        if body.startswith("^"):
            body = body[1:]
        if not body:
            return "a character class must list characters; ']' cannot be its first member"
        members = re.fullmatch(r"(?:[^-\]]-[^-\]]|[^-\]])+", body)
        if members is None:
            return "in a character class, '-' only joins two characters, as in a-z"
        index = end + 1
    return None


def _engine_refuses(pattern: str) -> str | None:
    probe = {"probe": {"all": [{"m": {"$and": [{"kind": "order"}, {"$mt": {"f": pattern}}]}}]}}
    try:
        DurableRuleset("pattern_probe", probe).close()
    except Exception as exc:
        return f"the rules engine refuses it ({exc})"
    return None


def _type_of(value: Any) -> FieldType | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or nothing when none is close."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _missing_required(
    required: dict[str, RequiredCheck], seen: set[str], directory: str
) -> list[PolicyIssue]:
    # a rule whose id is a near miss of a required one was most likely renamed by a typo
    others = seen - set(required)
    return [
        PolicyIssue(
            "missing_required_check",
            f"required check {check_id!r} is not in the policy set; it cannot be removed: "
            "restore it from the shipped policies/controls.yaml" + _renamed(check_id, others),
            directory,
            None,
            check_id,
        )
        for check_id in required
        if check_id not in seen
    ]


def _renamed(check_id: str, others: Iterable[str]) -> str:
    # ids share their `_check` ending: only a very near miss is a likely typo
    close = difflib.get_close_matches(check_id, sorted(others), n=1, cutoff=0.9)
    return f"; rule {close[0]!r} is close: did you mean {check_id!r}?" if close else ""


def _duplicate_ids(rules: list[Rule]) -> list[PolicyIssue]:
    seen: dict[str, Rule] = {}
    issues = []
    for rule in rules:
        if rule.id in seen:
            first = seen[rule.id]
            issues.append(
                PolicyIssue(
                    "duplicate_rule_id",
                    f"rule id already used at {first.source}:{first.line}",
                    rule.source,
                    rule.line,
                    rule.id,
                )
            )
        else:
            seen[rule.id] = rule
    return issues
