"""What changes between two loaded policy sets, by meaning rather than by text.

A compliance officer signing a candidate set needs to know what it decides
differently, not which lines moved. So both sets are compared after loading:
rules by id, conditions in a normal form, parameters by value.

Nothing that leaves every decision as it was shows: the order of rules and of
files, the file a rule lives in, YAML layout, quoting and comments, the order
of the items of an `all` or `any` (and an `all` nested in an `all`), the order
of an `in` list or of a list parameter (lists here are sets: `in`, `not_in`,
holidays, modes, required protocols), `10000` against `10000.0`, and one
instant written in two time zones. `true` is never `1`.

A rule is `changed` when its `trigger`, `code`, `applies_when` or `deny_when`
differs, and also its `description` or `reason`: that wording is what readers
of a blocked order see, and what signers approve. Each change names its key
with the old and new text.

Parameters are everything in `compliance.yaml`, flattened into dotted names:
`risk.max_order_quantity`, `flow.rate_window_s`, `session.holidays`,
`version`, `expires`. A map (a parameter map, `session.early_closes`) is
compared key by key (`risk.max_notional_by_account.ACC-1`) when it is a map on
both sides; a name that is a single value on one side and a map on the other
is one change with both whole values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from pydantic import BaseModel

from ..clock import format_utc
from .loader import LoadedPolicies
from .rules import AllOf, AnyOf, Compare, Not, Rule

__all__ = [
    "ParamChange",
    "ParamValueAt",
    "PolicyDiff",
    "RuleChange",
    "RuleRef",
    "ValueChange",
    "diff_policies",
    "parameter_changes",
    "rule_changes",
]

# the keys of a rule that are compared, in the order changes are reported
RULE_KEYS: tuple[str, ...] = (
    "trigger",
    "code",
    "applies_when",
    "deny_when",
    "description",
    "reason",
)


@dataclass(frozen=True)
class RuleRef:
    """A rule added or removed: where it is written, what it raises."""

    id: str
    file: str
    line: int | None
    trigger: str
    code: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "file": self.file,
            "line": self.line,
            "trigger": self.trigger,
            "code": self.code,
        }


@dataclass(frozen=True)
class ValueChange:
    """One key of a rule: its old and new text (`(none)` for an absent condition)."""

    key: str
    old: str
    new: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class RuleChange:
    """A rule in both sets that decides or reads differently; file and line are the new set's."""

    id: str
    file: str
    line: int | None
    changes: tuple[ValueChange, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "file": self.file,
            "line": self.line,
            "changes": [c.as_dict() for c in self.changes],
        }


@dataclass(frozen=True)
class ParamChange:
    name: str
    old: Any
    new: Any

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class ParamValueAt:
    """A parameter (or a map's key) present on one side only."""

    name: str
    value: Any

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value}


@dataclass(frozen=True)
class PolicyDiff:
    rules_added: tuple[RuleRef, ...]
    rules_removed: tuple[RuleRef, ...]
    rules_changed: tuple[RuleChange, ...]
    params_changed: tuple[ParamChange, ...]
    params_added: tuple[ParamValueAt, ...]
    params_removed: tuple[ParamValueAt, ...]
    old_digests: dict[str, str]
    new_digests: dict[str, str]

    @property
    def empty(self) -> bool:
        """No semantic difference (the digests may still differ)."""
        return not (
            self.rules_added
            or self.rules_removed
            or self.rules_changed
            or self.params_changed
            or self.params_added
            or self.params_removed
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules": {
                "added": [r.as_dict() for r in self.rules_added],
                "removed": [r.as_dict() for r in self.rules_removed],
                "changed": [r.as_dict() for r in self.rules_changed],
            },
            "parameters": {
                "changed": [p.as_dict() for p in self.params_changed],
                "added": [p.as_dict() for p in self.params_added],
                "removed": [p.as_dict() for p in self.params_removed],
            },
            "digests": {"old": self.old_digests, "new": self.new_digests},
        }


def diff_policies(old: LoadedPolicies, new: LoadedPolicies) -> PolicyDiff:
    """What `new` changes against `old`; both are valid, loaded sets."""
    old_rules = {r.id: r for r in old.policies.rules}
    new_rules = {r.id: r for r in new.policies.rules}
    changed = []
    for rule_id in sorted(old_rules.keys() & new_rules.keys()):
        changes = rule_changes(old_rules[rule_id], new_rules[rule_id])
        if changes:
            rule = new_rules[rule_id]
            changed.append(RuleChange(rule_id, rule.source, rule.line, changes))
    params, added, removed = parameter_changes(
        _plain(old.config.model_dump()), _plain(new.config.model_dump())
    )
    return PolicyDiff(
        rules_added=_refs(new_rules[i] for i in sorted(new_rules.keys() - old_rules.keys())),
        rules_removed=_refs(old_rules[i] for i in sorted(old_rules.keys() - new_rules.keys())),
        rules_changed=tuple(changed),
        params_changed=params,
        params_added=added,
        params_removed=removed,
        old_digests=_digests(old),
        new_digests=_digests(new),
    )


def rule_changes(old: Rule, new: Rule) -> tuple[ValueChange, ...]:
    """Each compared key in which `new` differs from `old` in meaning."""
    out = []
    for key in RULE_KEYS:
        before, after = getattr(old, key), getattr(new, key)
        if _normal(before) != _normal(after):
            out.append(ValueChange(key, _text(before), _text(after)))
    return tuple(out)


def _refs(rules: Iterable[Rule]) -> tuple[RuleRef, ...]:
    return tuple(RuleRef(r.id, r.source, r.line, r.trigger, r.code) for r in rules)


def _digests(loaded: LoadedPolicies) -> dict[str, str]:
    return {
        "policy": loaded.policies.policy_digest,
        "compliance": loaded.policies.compliance_digest,
    }


# --- rules -----------------------------------------------------------------------


def _normal(value: Any) -> Any:
    """A hashable normal form: equal exactly when the two values decide alike.

    Written over pydantic models in general, so that an operand or condition
    the language gains later (a parameter lookup with a key, a field on the
    right-hand side) is compared field by field without being listed here.
    """
    if isinstance(value, AllOf | AnyOf):
        kind = type(value)
        items: list[Any] = []
        for item in value.items:
            # all(a, all(b, c)) is all(a, b, c)
            items.extend(item.items if isinstance(item, kind) else (item,))
        if len(items) == 1:
            return _normal(items[0])
        return (kind.__name__, _as_set(_normal(i) for i in items))
    if (
        isinstance(value, Compare)
        and value.op in ("in", "not_in")
        and isinstance(value.value, tuple)
    ):
        return ("Compare", value.field, value.op, _as_set(_scalar(v) for v in value.value))
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return (type(value).__name__, *((k, _normal(getattr(value, k))) for k in fields))
    if isinstance(value, tuple | list):
        return tuple(_normal(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _normal(v)) for k, v in value.items()))
    return _scalar(value)


def _scalar(value: Any) -> Any:
    # bool before int: in Python True == 1, in a policy they never meet
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return (type(value).__name__, value)


def _as_set(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(sorted(set(items), key=repr))


def _text(value: Any) -> str:
    return "(none)" if value is None else _render(value)


def _render(value: Any) -> str:
    """A condition in the flow YAML a policy file would use:
    `{all: [{field: quantity, gt: {param: risk.max_order_quantity}}, ...]}`.

    Written over the models' fields, so that a part the language gains later (a
    lookup `key` and `default` on a parameter, a field on the right-hand side)
    is shown rather than dropped: two conditions never read alike here while
    they differ."""
    if isinstance(value, AllOf | AnyOf):
        name = "all" if isinstance(value, AllOf) else "any"
        return "{" + name + ": [" + ", ".join(_render(i) for i in value.items) + "]}"
    if isinstance(value, Not):
        return "{not: " + _render(value.item) + "}"
    if isinstance(value, Compare):
        return "{field: " + value.field + ", " + value.op + ": " + _render(value.value) + "}"
    if isinstance(value, BaseModel):
        parts = []
        for key in type(value).model_fields:
            part = getattr(value, key)
            if part is not None:
                # a parameter's `name` is written `param:` (`{param: risk.x, key: account}`)
                shown = "param" if key == "name" else key
                parts.append(f"{shown}: {_render(part)}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value) if isinstance(value, str) else repr(value)


# --- parameters ------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """The configuration as JSON values: instants in UTC, dates and times in ISO form."""
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat(timespec="minutes" if not value.second else "seconds")
    return value


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, list) and isinstance(new, list):
        return _as_set(_normal(v) for v in old) == _as_set(_normal(v) for v in new)
    return bool(_normal(old) == _normal(new))


def parameter_changes(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[tuple[ParamChange, ...], tuple[ParamValueAt, ...], tuple[ParamValueAt, ...]]:
    """Changed, added and removed values between two configurations given as JSON
    values (nested mappings), under dotted names, each list sorted by name."""
    changed: list[ParamChange] = []
    added: list[ParamValueAt] = []
    removed: list[ParamValueAt] = []
    _compare_values("", dict(old), dict(new), changed, added, removed)
    return tuple(changed), tuple(added), tuple(removed)


def _compare_values(
    prefix: str,
    old: Any,
    new: Any,
    changed: list[ParamChange],
    added: list[ParamValueAt],
    removed: list[ParamValueAt],
) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            name = f"{prefix}.{key}" if prefix else key
            if key not in new:
                removed.append(ParamValueAt(name, old[key]))
            elif key not in old:
                added.append(ParamValueAt(name, new[key]))
            else:
                _compare_values(name, old[key], new[key], changed, added, removed)
    elif not _same(old, new):
        changed.append(ParamChange(prefix, old, new))
