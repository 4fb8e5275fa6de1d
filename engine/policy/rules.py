"""The policy language as frozen models: rules and their conditions.

A rule says when an order is denied. `deny_when` is a condition tree of
`all`, `any`, `not` and comparisons of one fact field against a constant or a
named parameter from the compliance configuration. `applies_when`, if given,
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


Operand = Constant | Param


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
