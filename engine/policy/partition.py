"""Split a compiled policy set into durable-rules rulesets the engine can take.

Two limits of durable-rules 2.0.28, both measured here:
- a ruleset whose rules expand into about 512 alternatives or more (`$or` adds,
  `$and` multiplies) never returns from its first fact;
- matching a fact walks the tests as a tree, depth first, with a stack of 64
  (`MAX_STACK_SIZE` in its events.c): when more tests that hold for one fact are
  waiting at once, the assert fails with error 303. 250 rules `q > i` under one
  shared test, or 65 identical `$or` tests, are enough.

So a ruleset here holds at most ALTERNATIVES alternatives, and its tests, laid out
as the engine's tree, cannot leave more than STACK tests waiting. The bound is
static and conservative: equality tests of one field with different values never
hold together, of bounds on one number (`> 5`, `< 1`) only those that one value
can meet together are counted, every other test is counted as if it held, and
tests inside an `$or` are counted as never shared with another rule's. The parts
are judged together as one decision (`_durable.DurableRulesets`); each reads only
its own fields (`keys`), so the fact is trimmed before it is asserted, since the
engine's cost per fact grows with the fact's size.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALTERNATIVES",
    "STACK",
    "Partition",
    "alternatives",
    "engine_keys",
    "partition",
    "stack_bound",
]

ALTERNATIVES = 250  # per ruleset; the engine stops returning at about 512
STACK = 60  # tests waiting at once, per ruleset; the engine fails beyond 64


@dataclass(frozen=True)
class Partition:
    """One durable-rules ruleset of a policy set, and the fact fields it reads."""

    definition: dict[str, Any]
    keys: tuple[str, ...]


def partition(definition: dict[str, Any]) -> tuple[Partition, ...]:
    """The engine rules, in their order, in as few rulesets as the limits allow."""
    parts: list[dict[str, Any]] = [{}]
    tree = _Tree()
    used = 0
    for name, rule in definition.items():
        condition = rule["all"][0]["m"]
        size = alternatives(condition)
        chains = _chains(name, condition)
        if parts[-1] and (used + size > ALTERNATIVES or not tree.fits(chains)):
            parts.append({})
            tree, used = _Tree(), 0
            tree.fits(chains)  # the first rules of a ruleset are taken whatever they cost
        parts[-1][name] = rule
        used += size
    return tuple(Partition(part, engine_keys(part)) for part in parts)


def stack_bound(definition: dict[str, Any]) -> int:
    """The most tests of `definition` that can wait on the engine's stack at once, as
    the partitioning bounds it (at most STACK in every ruleset it makes)."""
    tree = _Tree()
    for name, rule in definition.items():
        tree.fits(_chains(name, rule["all"][0]["m"]))
    return tree.root.peak


def alternatives(node: Any) -> int:
    """How many alternatives a condition expands into: `$or` adds, `$and` multiplies."""
    if not isinstance(node, dict):
        return 1
    if "$or" in node:
        return sum(alternatives(c) for c in node["$or"])
    if "$and" in node:
        total = 1
        for c in node["$and"]:
            total *= alternatives(c)
        return total
    return 1


def engine_keys(definition: dict[str, Any]) -> tuple[str, ...]:
    """Every fact field an engine definition reads (compared, flagged or referenced
    with `$m`), `kind` included."""
    keys: set[str] = {"kind"}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in ("$and", "$or"):
                walk(value)
            elif key.startswith("$"):
                for field, operand in value.items():  # {"$gt": {field: operand}}
                    keys.add(field)
                    if isinstance(operand, dict) and "$m" in operand:
                        keys.add(operand["$m"])
            else:
                keys.add(key)
                if isinstance(value, dict) and "$m" in value:
                    keys.add(value["$m"])

    for rule in definition.values():
        walk(rule["all"][0]["m"])
    return tuple(sorted(keys))


# --- the stack bound -------------------------------------------------------------------

# A test in the tree: (its JSON, its kind, the field it reads, its constant, and the
# rule owning it when it cannot share its node with the same test of another rule).
# kind: "eq" (an equality with a constant), "$gt"/"$gte"/"$lt"/"$lte" (a bound by a
# number), or "" (anything else: counted as holding whenever it might).
_Test = tuple[str, str, str, Any, str]
_RANGES = ("$gt", "$gte", "$lt", "$lte")


def _chains(name: str, condition: Any) -> list[list[_Test]]:
    """The alternatives of one engine rule, each the list of its tests in order (the
    engine keeps the order an `$and` is written in)."""
    return [list(chain) for chain in _expand(condition, name, inside_or=False)]


def _expand(node: Any, name: str, inside_or: bool) -> list[tuple[_Test, ...]]:
    if isinstance(node, dict) and "$and" in node:
        parts = [_expand(c, name, inside_or) for c in node["$and"]]
        return [tuple(t for part in combo for t in part) for combo in itertools.product(*parts)]
    if isinstance(node, dict) and "$or" in node:
        return [chain for c in node["$or"] for chain in _expand(c, name, inside_or=True)]
    text = json.dumps(node, sort_keys=True)
    kind, field, value = "", "", None
    if isinstance(node, dict) and len(node) == 1:
        [(key, operand)] = node.items()
        if not key.startswith("$") and not isinstance(operand, dict):
            kind, field, value = "eq", key, operand
        elif key in _RANGES and isinstance(operand, dict) and len(operand) == 1:
            [(name_, bound)] = operand.items()
            if isinstance(bound, int | float) and not isinstance(bound, bool):
                kind, field, value = key, name_, bound
    return [((text, kind, field, value, name if inside_or else ""),)]


def _most_at_once(bounds: list[tuple[str, float]]) -> int:
    """How many of these bounds on one number can hold for one value: the most at
    any of the constants, between two of them, or beyond them all."""
    values = sorted({v for _, v in bounds})
    points = [values[0] - 1, *values, values[-1] + 1]
    points += [(a + b) / 2 for a, b in itertools.pairwise(values)]
    holds: dict[str, Callable[[float, float], bool]] = {
        "$gt": operator.gt,
        "$gte": operator.ge,
        "$lt": operator.lt,
        "$lte": operator.le,
    }
    return max(sum(1 for op, v in bounds if holds[op](x, v)) for x in points)


class _Node:
    """A test in the tree, with what the stack bound needs of its children."""

    __slots__ = (
        "bounds", "children", "deepest", "equalities", "most", "peak", "together"
    )  # fmt: skip

    def __init__(self) -> None:
        self.children: dict[_Test, _Node] = {}
        self.equalities: dict[str, dict[str, int]] = {}  # field -> value -> tests
        self.bounds: dict[str, list[tuple[str, float]]] = {}  # field -> its bounds
        self.most: dict[str, int] = {}  # field -> its tests that can hold at once
        self.together = 0  # children that can hold at once
        self.deepest = 0  # the largest peak among the children
        self.peak = 0

    def child(self, test: _Test) -> _Node:
        node = self.children.get(test)
        if node is not None:
            return node
        node = self.children[test] = _Node()
        text, kind, field, value, _ = test
        if kind == "eq":
            # of different values at most one holds; of one value (not shared: under
            # an `$or`) all do
            counts = self.equalities.setdefault(field, {})
            counts[text] = counts.get(text, 0) + 1
            self._recount("=" + field, max(counts.values()))
        elif kind:
            bounds = self.bounds.setdefault(field, [])
            bounds.append((kind, value))
            self._recount("<" + field, _most_at_once(bounds))
        else:
            self.together += 1
        return node

    def _recount(self, group: str, most: int) -> None:
        self.together += most - self.most.get(group, 0)
        self.most[group] = most

    def update(self) -> None:
        """The most tests waiting on the stack while this subtree is walked: its
        children that can hold together wait while one of them is walked."""
        self.peak = self.together - 1 + max(1, self.deepest) if self.children else 0


class _Tree:
    """The tests of one ruleset as the engine's tree, with the stack bound. Nodes
    are only ever added, so every peak only grows and is updated along the path."""

    def __init__(self) -> None:
        self.root = _Node()

    def fits(self, chains: list[list[_Test]]) -> bool:
        """Add `chains`; whether the stack bound stays within STACK (or the tree
        held nothing before). A tree that refused is not used again."""
        empty = not self.root.children
        for chain in chains:
            path = [self.root]
            for test in chain:
                path.append(path[-1].child(test))
            for node, parent in zip(reversed(path[1:]), reversed(path[:-1]), strict=True):
                node.update()
                parent.deepest = max(parent.deepest, node.peak)
            self.root.update()
        return empty or self.root.peak <= STACK
