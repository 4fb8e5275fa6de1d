"""Explain a denial: which comparisons held, with observed values and thresholds
(`spread_bps=42.0 > risk.max_spread_bps=25`). The rules engine decides; this only
writes the reason, walking the same tree with the reference predicates.
"""

from __future__ import annotations

from typing import Any

from .compiler import other_field, resolve
from .config import ComplianceConfig
from .facts import NOTES, Fact
from .reference import predicate
from .rules import AllOf, AnyOf, Compare, Condition, FieldRef, Lookup, Not, Param

__all__ = ["explain", "format_value", "holds"]

_SYMBOL = {
    "eq": "==", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<=",
    "in": "in", "not_in": "not in", "matches": "matches",
}  # fmt: skip


def holds(condition: Condition, fact: Fact, config: ComplianceConfig) -> bool:
    """Whether `condition` holds for `fact`, by the same predicates as the engine's
    second opinion (explanations only run on failures, so building them here is cheap)."""
    return predicate(condition, config)(fact)


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
    if isinstance(leaf.value, FieldRef | Lookup):
        return f"{leaf.field}={observed} {_SYMBOL[leaf.op]} {_other_text(leaf.value, fact, config)}"
    value = resolve(leaf.value, config)
    note = fact.get(NOTES[leaf.field], "") if leaf.field in NOTES else ""
    suffix = f" ({note})" if note else ""
    if leaf.op == "eq" and isinstance(value, bool):
        return f"{leaf.field} is {observed}{suffix}"
    threshold = format_value(value)
    name = f"{leaf.value.name}=" if isinstance(leaf.value, Param) else ""
    return f"{leaf.field}={observed} {_SYMBOL[leaf.op]} {name}{threshold}{suffix}"


def _other_text(value: FieldRef | Lookup, fact: Fact, config: ComplianceConfig) -> str:
    """The right-hand side as read for this order: `ask=150.3`,
    `risk.limits[ACC-1]=250000`, or the default when the key is not in the map."""
    name = other_field(value)
    observed = format_value(fact[name]) if name in fact else "<missing>"
    if isinstance(value, FieldRef):
        return f"{value.field}={observed}"
    key = fact.get(value.key)
    table = config.param(value.name)
    if isinstance(table, dict) and key not in table and value.default is not None:
        default = value.default
        shown = f"{default.name}=" if isinstance(default, Param) else ""
        return f"{shown}{observed} (the default: {key} is not in {value.name})"
    return f"{value.name}[{key}]={observed}"


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 4))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)
