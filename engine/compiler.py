"""Compile a validated policy set into one durable-rules ruleset, built from data.

Each rule becomes up to two engine rules over the order fact:
- `<id>`: applies_when AND deny_when; firing means the check failed;
- `<id>__missing`: an input of the rule is absent; firing means `error`.
Absence is tested on a presence flag (`<field>?`) written into every fact,
because the engine's `$nex` on its own never returns. `not` is pushed down to
the comparisons (De Morgan), since the engine has no negation operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .config import ComplianceConfig
from .policy import AllOf, AnyOf, Compare, Condition, Not, Param, PolicySet, Rule

__all__ = [
    "MISSING_SUFFIX",
    "CompiledPolicy",
    "RuleInputs",
    "compile_policy",
    "presence_flag",
    "referenced_fields",
    "resolve",
]

MISSING_SUFFIX = "__missing"
_ANCHOR = {"kind": "order"}
_NEGATE = {
    "eq": "ne", "ne": "eq", "gt": "le", "le": "gt", "ge": "lt", "lt": "ge",
    "in": "not_in", "not_in": "in",
}  # fmt: skip
_RANGE = {"gt": "$gt", "ge": "$gte", "lt": "$lt", "le": "$lte"}


@dataclass(frozen=True)
class RuleInputs:
    """Fields a rule cannot be judged without: those of applies_when, then of deny_when."""

    when: tuple[str, ...]
    deny: tuple[str, ...]
    missing_name: str


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy version ready to evaluate: the engine definition and what it needs."""

    policies: PolicySet
    config: ComplianceConfig
    definition: dict[str, Any]
    flagged_fields: tuple[str, ...]
    inputs: dict[str, RuleInputs]

    @property
    def key(self) -> tuple[str, str]:
        return (self.policies.policy_digest, self.policies.compliance_digest)


def presence_flag(field: str) -> str:
    return f"{field}?"


def compile_policy(policies: PolicySet, config: ComplianceConfig) -> CompiledPolicy:
    definition: dict[str, Any] = {}
    flagged: set[str] = set()
    inputs: dict[str, RuleInputs] = {}
    for rule in policies.rules:
        deny_fields = referenced_fields(rule.deny_when)
        when_fields = referenced_fields(rule.applies_when)
        inputs[rule.id] = RuleInputs(when_fields, deny_fields, rule.id + MISSING_SUFFIX)
        flagged.update(_all_fields(rule))
        applies = _compile(rule.applies_when, config, False) if rule.applies_when else None
        deny = _compile(rule.deny_when, config, False)
        definition[rule.id] = _rule([applies, deny] if applies else [deny])
        missing = _missing(applies, when_fields, deny_fields)
        if missing is not None:
            definition[rule.id + MISSING_SUFFIX] = _rule([missing])
    return CompiledPolicy(policies, config, definition, tuple(sorted(flagged)), inputs)


def _rule(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"all": [{"m": {"$and": [_ANCHOR, *conditions]}}]}


def _missing(
    applies: dict[str, Any] | None, when_fields: tuple[str, ...], deny_fields: tuple[str, ...]
) -> dict[str, Any] | None:
    def absent(fields: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{presence_flag(f): False} for f in fields]

    branches: list[dict[str, Any]] = []
    if when_fields:
        branches.append({"$or": absent(when_fields)})
    if deny_fields:
        deny_absent = {"$or": absent(deny_fields)}
        branches.append({"$and": [applies, deny_absent]} if applies else deny_absent)
    if not branches:
        return None
    return branches[0] if len(branches) == 1 else {"$or": branches}


def referenced_fields(condition: Condition | None) -> tuple[str, ...]:
    """Fields a condition needs: every compared field except those only tested for absence."""
    return tuple(sorted({c.field for c in _leaves(condition) if c.op != "missing"}))


def _all_fields(rule: Rule) -> set[str]:
    return {c.field for c in (*_leaves(rule.deny_when), *_leaves(rule.applies_when))}


def _leaves(condition: Condition | None) -> Iterator[Compare]:
    if condition is None:
        return
    if isinstance(condition, Compare):
        yield condition
    elif isinstance(condition, Not):
        yield from _leaves(condition.item)
    else:
        for item in condition.items:
            yield from _leaves(item)


def resolve(value: Any, config: ComplianceConfig) -> Any:
    """The constant a comparison uses: a parameter's value, or the literal."""
    if isinstance(value, Param):
        return config.param(value.name)
    return value


def _compile(condition: Condition, config: ComplianceConfig, negated: bool) -> dict[str, Any]:
    if isinstance(condition, Not):
        return _compile(condition.item, config, not negated)
    if isinstance(condition, AllOf | AnyOf):
        conjunction = isinstance(condition, AllOf) != negated
        parts = [_compile(item, config, negated) for item in condition.items]
        return {"$and" if conjunction else "$or": parts}
    return _compare(condition, config, negated)


def _compare(leaf: Compare, config: ComplianceConfig, negated: bool) -> dict[str, Any]:
    field, op = leaf.field, str(leaf.op)
    value = resolve(leaf.value, config)
    if op == "missing":
        present = not value if not negated else bool(value)
        return {presence_flag(field): present}
    if op == "matches":
        if negated:  # the loader refuses this; guard the invariant all the same
            raise ValueError("a negated `matches` cannot be compiled")
        return {"$mt": {field: value}}
    if negated:
        op = _NEGATE[op]
    if op == "eq":
        return {field: value}
    if op == "ne":
        return {"$neq": {field: value}}
    if op == "in":
        return {"$or": [{field: v} for v in value]}
    if op == "not_in":
        return {"$and": [{"$neq": {field: v}} for v in value]}
    return {_RANGE[op]: {field: value}}
