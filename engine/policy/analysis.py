"""What a valid policy set says that its author most likely did not mean.

- A rule that can never deny: its conditions contradict each other (`gt: 10` and
  `lt: 5` on one field, `eq` two different values, an `in` list and a `not_in`
  list leaving nothing, a field both `missing: true` and compared). Such a rule is
  a control that never acts: it would approve what its author meant to block, so
  it is an ERROR (`never_denies`) and the set is refused.
- A branch of an `any` that can never hold: the rule still denies through its
  other branches, so this is a warning (`never_holds`).
- Two rules with the same condition (`duplicate_condition`): one is redundant or
  was copied and not edited; a warning.
- A parameter in compliance.yaml that no rule and no part of the gateway reads
  (`unused_param`): a limit that limits nothing, most often a misspelt name; a
  warning.

Contradictions are found per field, on the alternatives (`any` multiplied out,
`not` pushed down) of applies_when and deny_when together. A comparison with
another field, a map lookup or a pattern is not reasoned about: it is taken as
able to hold, so the analysis never reports a rule that can deny.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .compiler import referenced_fields
from .config import ComplianceConfig
from .facts import FIELDS
from .required import condition_text
from .rules import AllOf, AnyOf, Compare, Condition, FieldRef, Lookup, Not, Param, Rule

__all__ = [
    "READ_BY_THE_GATEWAY",
    "Contradiction",
    "duplicate_conditions",
    "never_denies",
    "never_holding_branches",
    "unused_params",
    "used_params",
]

# Parameters the gateway reads itself, not through a rule (facts.py, gateway/desk.py).
# A parameter read in code must be listed here, or `policy validate` calls it unused.
READ_BY_THE_GATEWAY: frozenset[str] = frozenset(
    {"risk.fractional_symbols", "compliance.allowed_accounts"}
)
# beyond this many alternatives a condition is not analysed (taken as able to hold)
_MAX_TERMS = 256
_NEGATE = {
    "eq": "ne", "ne": "eq", "gt": "le", "le": "gt", "ge": "lt", "lt": "ge",
    "in": "not_in", "not_in": "in",
}  # fmt: skip
_SYMBOL = {
    "eq": "==", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<=",
    "in": "in", "not_in": "not in",
}  # fmt: skip


@dataclass(frozen=True)
class _Atom:
    """One comparison of a field with a constant, negations already applied."""

    field: str
    op: str
    value: Any

    def text(self) -> str:
        if self.op == "missing":
            return f"{self.field} is {'missing' if self.value else 'present'}"
        shown = _shown(self.value)
        return f"{self.field} {_SYMBOL[self.op]} {shown}"


@dataclass(frozen=True)
class Contradiction:
    """Why a condition can never hold: the comparisons of one field that exclude
    each other, in the first alternative (all of them are contradictory)."""

    atoms: tuple[_Atom, ...]

    def text(self) -> str:
        if all(a.op == "missing" and a.value for a in self.atoms):
            name = self.atoms[0].field
            return (
                f"{name} is tested as missing while the rule compares it, and a rule with "
                "a missing input is error, never fail"
            )
        return " and ".join(dict.fromkeys(a.text() for a in self.atoms)) + " cannot all hold"


def never_denies(rule: Rule, config: ComplianceConfig) -> tuple[str, Contradiction] | None:
    """(`applies_when` or `deny_when`, why) when `rule` can never fail, else None."""
    required = set(referenced_fields(rule.applies_when)) | set(referenced_fields(rule.deny_when))
    if rule.applies_when is not None:
        why = _never(rule.applies_when, config, required)
        if why is not None:
            return "applies_when", why
        both = AllOf(items=(rule.applies_when, rule.deny_when))
        why = _never(both, config, required)
        return ("deny_when", why) if why is not None else None
    why = _never(rule.deny_when, config, required)
    return ("deny_when", why) if why is not None else None


def never_holding_branches(
    condition: Condition, config: ComplianceConfig, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], Contradiction]]:
    """Each branch of an `any` (at any depth) that can never hold on its own, with its
    path in the rule file (the paths a policy file's YAML has)."""
    for node, where in _walk(condition, path):
        if isinstance(node, AnyOf):
            for index, item in enumerate(node.items):
                why = _never(item, config, set())
                if why is not None:
                    yield (*where, "any", index), why


def duplicate_conditions(rules: Iterable[Rule]) -> Iterator[tuple[Rule, Rule]]:
    """(later, first) for each rule whose applies_when and deny_when are those of an
    earlier rule, the order of `all`/`any` members and of lists aside."""
    seen: dict[tuple[str, str], Rule] = {}
    for rule in rules:
        key = (_canonical(rule.applies_when), _canonical(rule.deny_when))
        first = seen.setdefault(key, rule)
        if first is not rule:
            yield rule, first


def used_params(rules: Iterable[Rule]) -> set[str]:
    names: set[str] = set()
    for rule in rules:
        for leaf in (*_leaves(rule.applies_when), *_leaves(rule.deny_when)):
            value = leaf.value
            if isinstance(value, Param):
                names.add(value.name)
            elif isinstance(value, Lookup):
                names.add(value.name)
                if isinstance(value.default, Param):
                    names.add(value.default.name)
    return names


def unused_params(rules: Iterable[Rule], config: ComplianceConfig) -> list[str]:
    used = used_params(rules) | READ_BY_THE_GATEWAY
    defined = [
        f"{group}.{name}"
        for group, values in (
            ("risk", config.risk),
            ("compliance", config.compliance),
            ("market_data", config.market_data),
        )
        for name in values
    ]
    return [name for name in defined if name not in used]


# --- the reasoning ---------------------------------------------------------------------


def _never(
    condition: Condition, config: ComplianceConfig, required: set[str]
) -> Contradiction | None:
    """Why `condition` never holds for a fact holding every field of `required`, or
    None when it can hold (or is too large to tell)."""
    terms = _terms(condition, False, config)
    if terms is None or not terms:
        return None
    first: Contradiction | None = None
    for term in terms:
        why = _contradiction(term, required)
        if why is None:
            return None
        first = first or why
    return first


def _terms(
    condition: Condition, negated: bool, config: ComplianceConfig
) -> list[list[_Atom]] | None:
    """The alternatives of `condition` (each a conjunction of atoms), or None when
    there are more than _MAX_TERMS."""
    if isinstance(condition, Not):
        return _terms(condition.item, not negated, config)
    if isinstance(condition, AllOf | AnyOf):
        parts = [_terms(item, negated, config) for item in condition.items]
        if any(p is None for p in parts):
            return None
        known = [p for p in parts if p is not None]
        if isinstance(condition, AllOf) != negated:
            out: list[list[_Atom]] = [[]]
            for part in known:
                if len(out) * len(part) > _MAX_TERMS:
                    return None
                out = [a + b for a, b in itertools.product(out, part)]
            return out
        union = [term for part in known for term in part]
        return union if len(union) <= _MAX_TERMS else None
    atom = _atom(condition, negated, config)
    return [[atom] if atom is not None else []]


def _atom(leaf: Compare, negated: bool, config: ComplianceConfig) -> _Atom | None:
    value: Any = leaf.value
    if isinstance(value, FieldRef | Lookup) or leaf.op == "matches":
        return None  # not reasoned about: taken as able to hold
    if isinstance(value, Param):
        value = config.param(value.name)
    if leaf.op == "missing":
        return _Atom(leaf.field, "missing", bool(value) != negated)
    op = _NEGATE[leaf.op] if negated else str(leaf.op)
    if op in ("in", "not_in"):
        value = frozenset(value) if isinstance(value, list | tuple) else frozenset()
    return _Atom(leaf.field, op, value)


def _contradiction(term: list[_Atom], required: set[str]) -> Contradiction | None:
    by_field: dict[str, list[_Atom]] = {}
    for atom in term:
        by_field.setdefault(atom.field, []).append(atom)
    for name, atoms in by_field.items():
        if not _satisfiable(name, atoms, name in required):
            return Contradiction(tuple(atoms))
    return None


@dataclass
class _Domain:
    """What the comparisons of one field leave possible."""

    candidates: set[Any] | None = None  # None: not narrowed to a finite set
    excluded: set[Any] = field(default_factory=set)
    low: tuple[float, bool] | None = None  # (bound, inclusive)
    high: tuple[float, bool] | None = None

    def narrow(self, values: Iterable[Any]) -> None:
        values = set(values)
        self.candidates = values if self.candidates is None else self.candidates & values

    def allows(self, value: Any) -> bool:
        if value in self.excluded:
            return False
        if self.low is not None and (
            value < self.low[0] or (value == self.low[0] and not self.low[1])
        ):
            return False
        return not (
            self.high is not None
            and (value > self.high[0] or (value == self.high[0] and not self.high[1]))
        )


def _satisfiable(name: str, atoms: list[_Atom], required: bool) -> bool:
    spec = FIELDS.get(name)
    missing = {a.value for a in atoms if a.op == "missing"}
    compared = any(a.op != "missing" for a in atoms)
    if len(missing) > 1:
        return False  # both missing and present
    if True in missing and (compared or required):
        return False  # a compared field that is missing makes the rule `error`, not `fail`
    domain = _Domain()
    for atom in atoms:
        _apply(domain, atom)
    if spec is not None and spec.type == "bool":
        domain.narrow((True, False))
    if domain.candidates is not None:
        return any(domain.allows(v) for v in domain.candidates)
    if domain.low is not None and domain.high is not None:
        (low, low_in), (high, high_in) = domain.low, domain.high
        if low > high:
            return False
        if low == high:
            return low_in and high_in and low not in domain.excluded
    return True


def _apply(domain: _Domain, atom: _Atom) -> None:
    op, value = atom.op, atom.value
    if op == "eq":
        domain.narrow((value,))
    elif op == "in":
        domain.narrow(value)
    elif op == "ne":
        domain.excluded.add(value)
    elif op == "not_in":
        domain.excluded.update(value)
    elif op in ("gt", "ge"):
        bound = (value, op == "ge")
        if domain.low is None or (value, not bound[1]) > (domain.low[0], not domain.low[1]):
            domain.low = bound
    elif op in ("lt", "le"):
        bound = (value, op == "le")
        if domain.high is None or (value, bound[1]) < (domain.high[0], domain.high[1]):
            domain.high = bound


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return "[" + ", ".join(sorted(_shown(v) for v in value)) + "]"
    return str(value)


def _leaves(condition: Condition | None) -> Iterator[Compare]:
    for node, _ in _walk(condition, ()):
        if isinstance(node, Compare):
            yield node


def _walk(
    condition: Condition | None, path: tuple[str | int, ...]
) -> Iterator[tuple[Condition, tuple[str | int, ...]]]:
    """Every node of a condition with its path in the rule file."""
    if condition is None:
        return
    yield condition, path
    if isinstance(condition, Not):
        yield from _walk(condition.item, (*path, "not"))
    elif isinstance(condition, AllOf | AnyOf):
        name = "all" if isinstance(condition, AllOf) else "any"
        for index, item in enumerate(condition.items):
            yield from _walk(item, (*path, name, index))


def _canonical(condition: Condition | None) -> str:
    """A condition's text with the members of `all`/`any` and of lists in one order."""
    if condition is None:
        return "-"
    if isinstance(condition, Not):
        return "{not: " + _canonical(condition.item) + "}"
    if isinstance(condition, AllOf | AnyOf):
        name = "all" if isinstance(condition, AllOf) else "any"
        return "{" + name + ": [" + ", ".join(sorted(_canonical(c) for c in condition.items)) + "]}"
    if isinstance(condition.value, tuple):
        ordered = tuple(sorted(condition.value, key=lambda v: (type(v).__name__, str(v))))
        return condition_text(condition.model_copy(update={"value": ordered}))
    return condition_text(condition)
