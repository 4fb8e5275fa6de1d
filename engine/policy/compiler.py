"""Compile a validated policy set into one durable-rules ruleset, built from data.

Each rule becomes up to two engine rules over the order fact:
- `<id>`: applies_when AND deny_when; firing means the check failed;
- `<id>__missing`: an input of the rule is absent; firing means `error`.
Absence is tested on a presence flag (`<field>?`) written into every fact,
because the engine's `$nex` on its own never returns. A field that every fact
holds (`FieldSpec.always`) gets no flag and no missing-input test in the engine:
fewer rules to match on every order. The evaluator's reference still checks its
presence, so a fact without it would be a disagreement, blocked as `engine_error`.
`not` is pushed down to the comparisons (De Morgan), since the engine has no
negation operator.

A comparison with another field (`{field: limit_price, gt: {field: ask}}`) is
the engine's own reference to a field of the same fact (`{"$m": "ask"}`). A map
lookup is resolved in Python before the engine sees the fact, into a derived
field named after it (`risk.max_notional_by_account[account]`): the engine then
compares two plain fields of one fact, and a key absent from a map without a
default leaves the derived field out, so the rule is `error` like any other
missing input. Beware: durable-rules treats a missing `$m` operand as matching
everything, which is why both sides are always in the rule's missing-input test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from .config import ComplianceConfig
from .facts import FIELDS
from .partition import Partition, alternatives, partition
from .rules import AllOf, AnyOf, Compare, Condition, FieldRef, Lookup, Not, Param, PolicySet, Rule

__all__ = [
    "MAX_ALTERNATIVES",
    "MISSING_SUFFIX",
    "SHORT_LIST",
    "CompiledPolicy",
    "Derived",
    "Membership",
    "RuleInputs",
    "compile_policy",
    "derived_name",
    "input_fields",
    "other_field",
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
SHORT_LIST = 16  # longer `in` lists become set lookups (see Membership)
# durable-rules never returns from a ruleset that expands into 512 alternatives
# or more (measured here: 500 one-condition rules answer, 1,000 never do). The
# compiled set is split into rulesets it can take (`partition.py`), judged together
# as one decision; one engine rule cannot be split, and the loader refuses a rule
# beyond MAX_ALTERNATIVES (it sits alone in its ruleset).
MAX_ALTERNATIVES = 400


@dataclass(frozen=True)
class RuleInputs:
    """Fields a rule cannot be judged without: those of applies_when, then of deny_when;
    `missing_name`, the engine rule that fires when one is absent (shared by the rules
    whose missing-input test is the same)."""

    when: tuple[str, ...]
    deny: tuple[str, ...]
    missing_name: str


@dataclass(frozen=True)
class Membership:
    """A long `in` list, looked up in a set before the fact reaches the engine.

    durable-rules stops returning (it spins holding the GIL) once a ruleset
    expands into about 512 alternatives, which a restricted list of a few
    hundred symbols written as `$or` would reach. The engine then tests the
    boolean `name` instead.
    """

    name: str
    field: str
    values: frozenset[Any]


@dataclass(frozen=True)
class Derived:
    """A map lookup, resolved per order into the field `name` before judging.

    `value(fact)`: the map's value at the fact's key field, else the default; None
    (the field is left out, so the rule is `error`) when the key field is missing,
    or the key is not in the map and there is no default.
    """

    name: str
    key: str
    table: dict[str, Any]
    default: Any = None  # None: no default

    def value(self, fact: dict[str, Any]) -> Any:
        key = fact.get(self.key)
        if key is None:
            return None
        return self.table.get(key, self.default)


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy version ready to evaluate: the engine definition and what it needs."""

    policies: PolicySet
    config: ComplianceConfig
    definition: dict[str, Any]
    flagged_fields: tuple[str, ...]
    inputs: dict[str, RuleInputs]
    memberships: tuple[Membership, ...] = ()
    derived: tuple[Derived, ...] = ()

    @property
    def alternatives(self) -> int:
        """Alternatives the engine expands the whole set into (see partition.py)."""
        return sum(self.rule_alternatives().values())

    def rule_alternatives(self) -> dict[str, int]:
        """Alternatives of each engine rule (a check's rule and its `__missing` rule)."""
        return {name: alternatives(rule["all"][0]["m"]) for name, rule in self.definition.items()}

    def partitions(self) -> tuple[Partition, ...]:
        """The engine rules in as many rulesets as the engine's limits need
        (`partition.py`); one when the whole set fits."""
        return partition(self.definition)


def presence_flag(field: str) -> str:
    return f"{field}?"


def derived_name(lookup: Lookup) -> str:
    """The field a lookup is resolved into: `risk.limits[account]`, with its default
    after a `|` (two rules may look one map up with different defaults)."""
    name = f"{lookup.name}[{lookup.key}]"
    default = lookup.default
    if default is None:
        return name
    shown = default.name if isinstance(default, Param) else repr(default)
    return f"{name}|{shown}"


def compile_policy(policies: PolicySet, config: ComplianceConfig) -> CompiledPolicy:
    definition: dict[str, Any] = {}
    flagged: set[str] = set()
    inputs: dict[str, RuleInputs] = {}
    compiler = _Compiler(config)
    # one engine rule per distinct missing-input test: rules over the same fields
    # share it (the engine overflows when more than 64 identical `$or` tests match
    # one fact, error 303; and it is less to match)
    shared: dict[str, str] = {}
    for rule in policies.rules:
        deny_fields = referenced_fields(rule.deny_when)
        when_fields = referenced_fields(rule.applies_when)
        applies = compiler.condition(rule.applies_when, False) if rule.applies_when else None
        deny = compiler.condition(rule.deny_when, False)
        flagged.update(_flagged_fields(rule, compiler.derived))
        definition[rule.id] = _rule([applies, deny] if applies else [deny])
        missing = _missing(
            applies,
            _may_miss(when_fields, compiler.derived),
            _may_miss(deny_fields, compiler.derived),
        )
        missing_name = rule.id + MISSING_SUFFIX
        if missing is not None:
            key = json.dumps(missing, sort_keys=True)
            missing_name = shared.setdefault(key, missing_name)
            if missing_name not in definition:
                definition[missing_name] = _rule([missing])
        inputs[rule.id] = RuleInputs(when_fields, deny_fields, missing_name)
    return CompiledPolicy(
        policies,
        config,
        definition,
        tuple(sorted(flagged)),
        inputs,
        tuple(compiler.memberships.values()),
        tuple(compiler.derived.values()),
    )


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
    """Fields a condition needs: every compared field except those only tested for
    absence, the other field of a field-to-field comparison, and for a map lookup its
    key field and the derived field it is resolved into."""
    return tuple(
        sorted({f for c in _leaves(condition) if c.op != "missing" for f in input_fields(c)})
    )


def input_fields(leaf: Compare) -> tuple[str, ...]:
    """The fields one comparison reads."""
    value = leaf.value
    if isinstance(value, FieldRef):
        return (leaf.field, value.field)
    if isinstance(value, Lookup):
        return (leaf.field, value.key, derived_name(value))
    return (leaf.field,)


def _always(field: str, derived: dict[str, Derived]) -> bool:
    """In every fact: a fact field built for every order, or a lookup with a default
    keyed by such a field."""
    spec = FIELDS.get(field)
    if spec is not None:
        return spec.always
    lookup = derived[field]
    return lookup.default is not None and FIELDS[lookup.key].always


def _may_miss(fields: tuple[str, ...], derived: dict[str, Derived]) -> tuple[str, ...]:
    return tuple(f for f in fields if not _always(f, derived))


def _flagged_fields(rule: Rule, derived: dict[str, Derived]) -> set[str]:
    """Fields whose presence flag the engine reads: those that can be missing, and
    any field a rule tests with `missing`."""
    leaves = (*_leaves(rule.deny_when), *_leaves(rule.applies_when))
    flagged = set()
    for leaf in leaves:
        if leaf.op == "missing":
            flagged.add(leaf.field)
        flagged.update(f for f in input_fields(leaf) if not _always(f, derived))
    return flagged


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
    """The constant a comparison uses: a parameter's value, or the literal. A field
    or a lookup has none: it is read from each fact (see `other_field`)."""
    if isinstance(value, Param):
        return config.param(value.name)
    if isinstance(value, FieldRef | Lookup):
        raise InvalidArgument("a field reference has no constant value")
    return value


def other_field(value: Any) -> str | None:
    """The fact field a comparison reads its right-hand side from, if it does."""
    if isinstance(value, FieldRef):
        return value.field
    if isinstance(value, Lookup):
        return derived_name(value)
    return None


class _Compiler:
    def __init__(self, config: ComplianceConfig) -> None:
        self.config = config
        self.memberships: dict[tuple[str, frozenset[Any]], Membership] = {}
        self.derived: dict[str, Derived] = {}

    def condition(self, condition: Condition, negated: bool) -> dict[str, Any]:
        if isinstance(condition, Not):
            return self.condition(condition.item, not negated)
        if isinstance(condition, AllOf | AnyOf):
            conjunction = isinstance(condition, AllOf) != negated
            parts = [self.condition(item, negated) for item in condition.items]
            return {"$and" if conjunction else "$or": parts}
        return self.compare(condition, negated)

    def compare(self, leaf: Compare, negated: bool) -> dict[str, Any]:
        field, op = leaf.field, str(leaf.op)
        if isinstance(leaf.value, FieldRef | Lookup):
            return self.reference(field, _NEGATE[op] if negated else op, leaf.value)
        value = resolve(leaf.value, self.config)
        if op == "missing":
            present = not value if not negated else bool(value)
            return {presence_flag(field): present}
        if op == "matches":
            if negated:  # the loader refuses this; guard the invariant all the same
                raise InvalidArgument("a negated `matches` cannot be compiled")
            return {"$mt": {field: value}}
        if negated:
            op = _NEGATE[op]
        if op in ("in", "not_in") and len(value) > SHORT_LIST:
            return {self.membership(field, value).name: op == "in"}
        if op == "eq":
            return {field: value}
        if op == "ne":
            return {"$neq": {field: value}}
        if op == "in":
            return {"$or": [{field: v} for v in value]}
        if op == "not_in":
            return {"$and": [{"$neq": {field: v}} for v in value]}
        return {_RANGE[op]: {field: value}}

    def reference(self, field: str, op: str, value: FieldRef | Lookup) -> dict[str, Any]:
        """`field op other`, the other side read by the engine from the same fact."""
        if isinstance(value, Lookup):
            self.lookup(value)
        other = {"$m": other_field(value)}
        if op == "eq":
            return {field: other}
        if op == "ne":
            return {"$neq": {field: other}}
        return {_RANGE[op]: {field: other}}

    def lookup(self, lookup: Lookup) -> Derived:
        name = derived_name(lookup)
        if name not in self.derived:
            table = self.config.param(lookup.name)
            default: Any = lookup.default
            if isinstance(default, Param):
                default = self.config.param(default.name)
            if not isinstance(table, dict):  # the loader refuses this; guard the invariant
                raise InvalidArgument(f"{lookup.name} is not a map")
            self.derived[name] = Derived(name, lookup.key, dict(table), default)
        return self.derived[name]

    def membership(self, field: str, values: Any) -> Membership:
        key = (field, frozenset(values))
        if key not in self.memberships:
            name = f"{field}?in{len(self.memberships)}"
            self.memberships[key] = Membership(name, field, key[1])
        return self.memberships[key]
