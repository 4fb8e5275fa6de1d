"""The policy language as frozen models: rules and their conditions.

A rule says when an order is denied. `deny_when` is a condition tree of
`all`, `any`, `not` and comparisons of one fact field against a constant, a
named parameter from the compliance configuration, a map parameter looked up
by another field, or another field of the same fact. `applies_when`, if given,
limits the rule to some orders (a price collar only for priced orders); when
it does not hold, the check passes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "OPERATORS",
    "TRIGGERS",
    "AllOf",
    "AnyOf",
    "Compare",
    "Condition",
    "Constant",
    "FieldRef",
    "Lookup",
    "Not",
    "Operand",
    "Param",
    "PolicySet",
    "Rule",
]

_Frozen = ConfigDict(frozen=True, extra="forbid")

Operator = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "matches", "missing"]
OPERATORS: tuple[str, ...] = (
    "eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "matches", "missing",
)  # fmt: skip

# Triggers a policy rule may raise (SPEC section 4): every one but `engine_error`,
# which only the engine itself raises when it cannot judge. The mode and broker
# triggers are raised by rules over the facts the gateway supplies.
TRIGGERS: tuple[str, ...] = (
    "risk_denied",
    "omega_directive",
    "drift_entropy_unsafe",
    "data_integrity_mismatch",
    "protocol_mismatch",
    "broker_api_error",
    "compliance_failure",
    "mode_research",
    "broker_capability",
)

Constant = bool | int | float | str | tuple[bool | int | float | str, ...]


class Param(BaseModel):
    """A reference to `group.name` in the compliance configuration."""

    model_config = _Frozen
    name: str


class FieldRef(BaseModel):
    """Another field of the same fact: `{field: limit_price, gt: {field: ask}}`."""

    model_config = _Frozen
    field: str


class Lookup(BaseModel):
    """A map parameter looked up by a fact field: `{param: risk.max_notional_by_account,
    key: account, default: {param: risk.max_order_notional}}`.

    Keys match exactly. Without `default`, an order whose key is not in the map has
    no value to compare with: the rule is `error`, which blocks, as for any missing
    input.
    """

    model_config = _Frozen
    name: str
    key: str
    default: bool | int | float | str | Param | None = None


Operand = Constant | Param | FieldRef | Lookup


class Compare(BaseModel):
    model_config = _Frozen
    field: str
    op: Operator
    value: Operand


class AllOf(BaseModel):
    model_config = _Frozen
    items: tuple[Condition, ...]


class AnyOf(BaseModel):
    model_config = _Frozen
    items: tuple[Condition, ...]


class Not(BaseModel):
    model_config = _Frozen
    item: Condition


Condition = Compare | AllOf | AnyOf | Not


class Rule(BaseModel):
    model_config = _Frozen

    id: str
    description: str
    trigger: str
    code: str
    reason: str
    deny_when: Condition
    applies_when: Condition | None = None
    source: str = ""
    line: int | None = None


class PolicySet(BaseModel):
    """Every rule of a policy directory, with the digests that name this version."""

    model_config = _Frozen

    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    policy_digest: str
    compliance_digest: str
