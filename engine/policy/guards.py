"""Which checks an order needs judged in Python, without visiting every check.

The evaluator asks two opinions of every check: the rules engine's (the names it
fired) and the reference predicates'. A check passes when neither finds anything:
the engine fired neither its rule nor its missing-input rule, every field it needs
is in the fact, and the reference says its conditions do not hold. Asking the
reference of every check costs about a microsecond each, which a set of a
thousand per-account and per-symbol limits cannot afford on every order.

Most such checks are guarded: their conditions can hold only when one field has
one of a few values (`{field: account, eq: acct-7}` inside an `all`, or an `in`
list). The reference of a guarded check is asked only when the fact's value is one
of those; otherwise its conditions cannot hold, which is the reference's answer,
found by one dictionary lookup per guarded field. A guarded check is still judged
in full when the engine fired one of its rules (so a disagreement is still caught)
or when a field it needs is missing (so it is still `error`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from .compiler import resolve
from .config import ComplianceConfig
from .facts import Fact
from .reference import Predicate
from .rules import AllOf, Compare, Condition, FieldRef, Lookup, Rule

__all__ = ["Guard", "Plan", "choose_guards"]

Guard = tuple[str, frozenset[Any]]
_LONGEST = 64  # an `in` list longer than this is not used as a guard
_ABSENT = object()


class _Judged(Protocol):
    """What the plan reads of a check (evaluator._Check)."""

    @property
    def rule(self) -> Rule: ...
    @property
    def required(self) -> frozenset[str]: ...
    @property
    def applies(self) -> Predicate | None: ...
    @property
    def deny(self) -> Predicate: ...
    @property
    def guard(self) -> Guard | None: ...

    @property
    def inputs(self) -> Any: ...


def choose_guards(rules: Iterable[Rule], config: ComplianceConfig) -> dict[str, Guard]:
    """A guard for each rule that has one: of the comparisons both its conditions
    need, the one on the field with the most distinct guard values in the set."""
    rules = list(rules)
    candidates = {rule.id: _needed(rule, config) for rule in rules}
    spread = Counter[str]()
    for guards in candidates.values():
        for field, values in guards:
            spread[field] += len(values)
    return {
        rule_id: max(guards, key=lambda g: (spread[g[0]], -len(g[1])))
        for rule_id, guards in candidates.items()
        if guards
    }


def _needed(rule: Rule, config: ComplianceConfig) -> list[Guard]:
    return [*_necessary(rule.applies_when, config), *_necessary(rule.deny_when, config)]


def _necessary(condition: Condition | None, config: ComplianceConfig) -> list[Guard]:
    """Comparisons `condition` cannot hold without: its own, or any of an `all`'s."""
    if isinstance(condition, AllOf):
        return [g for item in condition.items for g in _necessary(item, config)]
    if not isinstance(condition, Compare) or isinstance(condition.value, FieldRef | Lookup):
        return []
    if condition.op not in ("eq", "in"):
        return []
    value = resolve(condition.value, config)
    values = list(value) if isinstance(value, list | tuple) else [value]
    if (condition.op == "eq") == isinstance(value, list | tuple) or len(values) > _LONGEST:
        return []
    if not all(isinstance(v, bool | int | float | str) for v in values):
        return []
    return [(condition.field, frozenset(values))]


# entry: (index, rule id, missing-input rule name, fields needed, applies, deny)
_Entry = tuple[int, str, str, frozenset[str], Predicate | None, Predicate]


class Plan:
    """The checks of one policy version, arranged for `to_judge`."""

    def __init__(self, checks: Sequence[_Judged]) -> None:
        unguarded: list[_Entry] = []
        tables: dict[str, dict[Any, list[_Entry]]] = {}
        by_name: dict[str, list[int]] = {}
        by_required: dict[frozenset[str], list[int]] = {}
        for index, check in enumerate(checks):
            entry: _Entry = (
                index,
                check.rule.id,
                check.inputs.missing_name,
                check.required,
                check.applies,
                check.deny,
            )
            if check.guard is None:
                unguarded.append(entry)
                continue
            field, values = check.guard
            table = tables.setdefault(field, {})
            for value in values:
                table.setdefault(value, []).append(entry)
            by_name.setdefault(check.rule.id, []).append(index)
            by_name.setdefault(check.inputs.missing_name, []).append(index)
            by_required.setdefault(check.required, []).append(index)
        self._unguarded = tuple(unguarded)
        self._tables = tuple((f, {v: tuple(e) for v, e in t.items()}) for f, t in tables.items())
        self._by_name = {name: tuple(indices) for name, indices in by_name.items()}
        self._by_required = tuple((req, tuple(ix)) for req, ix in by_required.items())

    def to_judge(self, fact: Fact, fired: set[str]) -> list[int]:
        """The indices, in order, of the checks that may not simply pass: judge them."""
        present = fact.keys()
        out = [
            index
            for index, rule_id, missing_name, required, applies, deny in self._unguarded
            if rule_id in fired
            or missing_name in fired
            or not present >= required
            or ((applies is None or applies(fact)) and deny(fact))
        ]
        if not self._tables:
            return out
        for field, table in self._tables:
            for index, _, _, _, applies, deny in table.get(fact.get(field, _ABSENT), ()):
                if (applies is None or applies(fact)) and deny(fact):
                    out.append(index)
        by_name = self._by_name
        for name in fired:
            out.extend(by_name.get(name, ()))
        for required, indices in self._by_required:
            if not present >= required:
                out.extend(indices)
        return sorted(set(out))
