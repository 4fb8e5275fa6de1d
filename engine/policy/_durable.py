"""A thin, safe runtime over the durable-rules engine core.

Why not `durable.engine.Host`: a Host starts two timer threads that dispatch
pending actions on their own; an action taken by that thread while we wait
for it is a denial we never see. We drive the engine core synchronously,
read the names of the rules that fired straight from its action queue, and
run no Python action at all, so no action exception can be swallowed.

Why our own JSON: durable's parser rejects exponent notation (`1e-05`,
`1e+16`), which `json.dumps` emits, and misreads numbers beyond about 1e15.
Numbers are written in plain decimal and facts are clamped to that range.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import durable_rules_engine as _core

from ..errors import EngineFault, InvalidArgument

__all__ = ["LIMIT", "DurableRuleset", "DurableRulesets", "encode"]

LIMIT = 1e15 - 1
_SMALLEST_PLAIN = 1e-4  # repr() of a smaller float uses an exponent
_SID = "0"
_HANDLED, _NOT_HANDLED = 0, 1


def encode(value: Any) -> str:
    """JSON text the engine core parses: numbers in plain decimal, no exponent."""
    if isinstance(value, dict):
        odd = _odd_numbers(value)
        if odd is None:  # nested, or text we could not mark safely: value by value
            return _encode(value)
        text = json.dumps(value if not odd else _marked(value, odd), **_FLAT)
        # a flat fact: json.dumps writes it in one C call; the few numbers it would
        # write with an exponent or out of range (an age of microseconds, 1e-05)
        # go in as marks and are replaced by their plain decimal text
        for index, key in enumerate(odd):
            text = text.replace(json.dumps(_MARK.format(index)), _number(value[key]), 1)
        return text
    return _encode(value)


_FLAT: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}
_MARK = "\x00{}\x00"  # never in a fact's text: text holding NUL is encoded value by value


def _odd_numbers(fact: dict[str, Any]) -> list[str] | None:
    """The keys of the numbers json.dumps would not write as the engine reads them
    (an exponent, NaN, out of range); None when a value is neither a number, text,
    a boolean nor null, or is text holding NUL."""
    odd: list[str] = []
    for key, value in fact.items():
        kind = type(value)
        if kind is float:
            if not (value == 0.0 or _SMALLEST_PLAIN <= abs(value) <= LIMIT):
                odd.append(key)
        elif kind is int:
            if abs(value) > LIMIT:
                odd.append(key)
        elif kind is str:
            if "\x00" in value:
                return None
        elif kind is not bool and value is not None:
            return None
    return odd


def _marked(fact: dict[str, Any], odd: list[str]) -> dict[str, Any]:
    marked = dict(fact)
    for index, key in enumerate(odd):
        marked[key] = _MARK.format(index)
    return marked


def _encode(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return _number(value)
    raise InvalidArgument(f"cannot encode {type(value).__name__} for the rules engine")


def _number(value: float) -> str:
    if math.isnan(value):
        raise InvalidArgument("NaN cannot be compared")
    clamped = max(-LIMIT, min(LIMIT, value))
    if isinstance(clamped, int):
        return str(clamped)
    if clamped == int(clamped):
        return str(int(clamped))
    text = repr(clamped)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


class DurableRuleset:
    """One compiled ruleset; `fired(fact)` returns the names of the rules it fires.

    Evaluations are serialised by a lock and share one state (`sid`), so the
    engine never holds more than one state however many orders it judges; the
    fact is retracted before the lock is released, so no evaluation sees
    another's fact.
    """

    def __init__(self, name: str, definition: dict[str, Any]) -> None:
        self._handle = _core.create_ruleset(name, encode(definition))
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._closed = False

    def fired(self, fact: dict[str, Any]) -> set[str]:
        with self._lock:
            if self._closed:
                raise EngineFault("ruleset was retired")
            text = encode({**fact, "sid": _SID, "id": f"e{next(self._ids)}"})
            try:
                return self._assert(text)
            finally:
                self._retract(text)

    def _assert(self, text: str) -> set[str]:
        code, state_handle = _core.assert_fact(self._handle, text)[:2]
        if code == _NOT_HANDLED:
            return set()
        if code != _HANDLED:
            raise EngineFault(f"rules engine refused the fact (code {code})")
        names: set[str] = set()
        started = _core.start_action_for_state(self._handle, state_handle)
        message = started[1] if started else None
        while message:
            names.update(json.loads(message))
            message = _core.complete_and_start_action(self._handle, state_handle)
        return names

    def _retract(self, text: str) -> None:
        try:
            _core.retract_fact(self._handle, text)
        except Exception:
            # a state we cannot clean is dropped whole, so the next order starts empty
            _core.delete_state(self._handle, _SID)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return dict(json.loads(_core.get_state(self._handle, _SID)))

    def facts(self) -> list[Any]:
        with self._lock:
            return list(json.loads(_core.get_facts(self._handle, _SID)))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                _core.delete_ruleset(self._handle)


class DurableRulesets:
    """Several rulesets judged as one: `fired(fact)` is the union of what each fires.

    A policy set too large for one ruleset (the engine stops returning at about 512
    alternatives) is split; each part reads only its own fields, so the fact is
    trimmed to them before it is asserted. Fail-closed: every part runs, in order,
    for every fact; a fault in any one raises, and the evaluator blocks the order
    with `engine_error`. With one part, the fact is passed whole, as before.
    """

    def __init__(self, name: str, parts: Sequence[tuple[dict[str, Any], tuple[str, ...]]]) -> None:
        if not parts:
            raise InvalidArgument("a policy set needs at least one ruleset")
        made: list[DurableRuleset] = []
        try:
            for index, (definition, _) in enumerate(parts):
                made.append(
                    DurableRuleset(name if len(parts) == 1 else f"{name}_{index}", definition)
                )
        except BaseException:
            for ruleset in made:
                ruleset.close()
            raise
        self._parts = tuple(made)
        self._keys = tuple(keys for _, keys in parts)
        self._split = len(made) > 1

    @property
    def size(self) -> int:
        """How many rulesets the set is split into."""
        return len(self._parts)

    def fired(self, fact: dict[str, Any]) -> set[str]:
        if not self._split:
            return self._parts[0].fired(fact)
        names: set[str] = set()
        for ruleset, keys in zip(self._parts, self._keys, strict=True):
            names |= ruleset.fired({k: fact[k] for k in keys if k in fact})
        return names

    def state(self) -> dict[str, Any]:
        if not self._split:
            return self._parts[0].state()
        return {"rulesets": [ruleset.state() for ruleset in self._parts]}

    def facts(self) -> list[Any]:
        return [fact for ruleset in self._parts for fact in ruleset.facts()]

    def close(self) -> None:
        for ruleset in self._parts:
            ruleset.close()
