"""The policy conditions as plain Python predicates, built once per policy version.

They are the engine's second opinion: the evaluator compares their verdict
with the rules engine's on every check, and blocks the order on any
disagreement. Parameters are resolved when the predicate is built.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from typing import Any

from .compiler import other_field, resolve
from .config import ComplianceConfig
from .facts import Fact
from .rules import AllOf, AnyOf, Compare, Condition, Not

__all__ = ["Predicate", "engine_text", "predicate"]

Predicate = Callable[[Fact], bool]
# C comparisons, not lambdas: every check's predicates run on every order
_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "ne": operator.ne,
}
_ABSENT = object()  # equal to nothing a rule compares with


def predicate(condition: Condition, config: ComplianceConfig) -> Predicate:
    if isinstance(condition, Not):
        inner = predicate(condition.item, config)
        return lambda fact: not inner(fact)
    if isinstance(condition, AllOf | AnyOf):
        parts = tuple(predicate(c, config) for c in condition.items)
        if len(parts) == 2:  # the common case, without a generator per call
            first, second = parts
            if isinstance(condition, AllOf):
                return lambda fact: first(fact) and second(fact)
            return lambda fact: first(fact) or second(fact)
        if isinstance(condition, AllOf):
            return lambda fact: all(p(fact) for p in parts)
        return lambda fact: any(p(fact) for p in parts)
    return _leaf(condition, config)


def engine_text(value: Any) -> str:
    """The text durable-rules matches a pattern against: the value as it appears inside
    its JSON string, so a quote, backslash or control character appears escaped."""
    return json.dumps(str(value), ensure_ascii=False)[1:-1]


def _leaf(leaf: Compare, config: ComplianceConfig) -> Predicate:
    field = leaf.field
    other = other_field(leaf.value)
    if other is not None:
        # another field of the fact (a map lookup is resolved into one before judging)
        compare_fields = _ORDERED.get(leaf.op) or operator.eq
        return lambda fact: (
            field in fact and other in fact and compare_fields(fact[field], fact[other])
        )
    value = resolve(leaf.value, config)
    if leaf.op == "missing":
        want_absent = bool(value)
        return lambda fact: (field not in fact) == want_absent
    if leaf.op == "matches":
        pattern = re.compile(value)
        return lambda fact: (
            field in fact and pattern.fullmatch(engine_text(fact[field])) is not None
        )
    if isinstance(value, list):
        value = tuple(value)
    if leaf.op == "eq":
        return lambda fact: bool(fact.get(field, _ABSENT) == value)
    if leaf.op == "in":
        return lambda fact: fact.get(field, _ABSENT) in value
    if leaf.op == "not_in":
        return lambda fact: field in fact and fact[field] not in value
    compare = _ORDERED[leaf.op]
    return lambda fact: field in fact and compare(fact[field], value)
