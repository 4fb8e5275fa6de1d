"""Evaluate a condition in plain Python, to explain a denial and to check the engine.

The rules engine decides; this walks the same tree over the same fact to say
which comparisons held (`spread_bps=42.0 > risk.max_spread_bps=25`) and to
catch any disagreement with the engine, which then blocks the order.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from .compiler import resolve
from .config import ComplianceConfig
from .facts import Fact
from .policy import AllOf, AnyOf, Compare, Condition, Not, Param
from .reference import engine_text

__all__ = ["explain", "format_value", "holds"]

_SYMBOL = {
    "eq": "==", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<=",
    "in": "in", "not_in": "not in", "matches": "matches",
}  # fmt: skip


def holds(condition: Condition, fact: Fact, config: ComplianceConfig) -> bool:
    if isinstance(condition, Not):
        return not holds(condition.item, fact, config)
    if isinstance(condition, AllOf):
        return all(holds(c, fact, config) for c in condition.items)
    if isinstance(condition, AnyOf):
        return any(holds(c, fact, config) for c in condition.items)
    return _compare(condition, fact, config)


def _compare(leaf: Compare, fact: Fact, config: ComplianceConfig) -> bool:
    value = resolve(leaf.value, config)
    if leaf.op == "missing":
        return (leaf.field not in fact) == bool(value)
    if leaf.field not in fact:
        return False
    got: Any = fact[leaf.field]
    op = leaf.op
    if op == "eq":
        return bool(got == value)
    if op == "ne":
        return bool(got != value)
    if op == "in":
        return got in value
    if op == "not_in":
        return got not in value
    if op == "matches":
        return _pattern(value).fullmatch(engine_text(got)) is not None
    if op == "gt":
        return bool(got > value)
    if op == "ge":
        return bool(got >= value)
    if op == "lt":
        return bool(got < value)
    return bool(got <= value)


def explain(condition: Condition, fact: Fact, config: ComplianceConfig) -> str:
    """The comparisons that make `condition` hold, with observed values and thresholds."""
    if isinstance(condition, Not):
        return f"not ({_describe(condition.item, fact, config)})"
    if isinstance(condition, AllOf):
        return " and ".join(explain(c, fact, config) for c in condition.items)
    if isinstance(condition, AnyOf):
        true = [explain(c, fact, config) for c in condition.items if holds(c, fact, config)]
        return " or ".join(true) if true else _describe(condition, fact, config)
    return _describe(condition, fact, config)


def _describe(condition: Condition, fact: Fact, config: ComplianceConfig) -> str:
    if isinstance(condition, Compare):
        return _leaf_text(condition, fact, config)
    if isinstance(condition, Not):
        return f"not ({_describe(condition.item, fact, config)})"
    joiner = " and " if isinstance(condition, AllOf) else " or "
    return "(" + joiner.join(_describe(c, fact, config) for c in condition.items) + ")"


def _leaf_text(leaf: Compare, fact: Fact, config: ComplianceConfig) -> str:
    observed = format_value(fact[leaf.field]) if leaf.field in fact else "<missing>"
    if leaf.op == "missing":
        state = "is missing" if leaf.field not in fact else "is present"
        return f"{leaf.field} {state}"
    value = resolve(leaf.value, config)
    if leaf.op == "eq" and isinstance(value, bool):
        return f"{leaf.field} is {observed}"
    threshold = format_value(value)
    name = f"{leaf.value.name}=" if isinstance(leaf.value, Param) else ""
    return f"{leaf.field}={observed} {_SYMBOL[leaf.op]} {name}{threshold}"


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 4))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)
