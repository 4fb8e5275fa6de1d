"""The checks every policy set must hold, pinned here and not in the policy files.

The mode gate, the trading states, the Omega directive, the actor's accounts and
the broker's readiness and capabilities are written as ordinary YAML rules, so
that every check runs on every order and a blocked record lists every trigger
that held. Because they are files, someone can delete or weaken them; the loader
therefore refuses a policy set in which one of these checks is absent
(`missing_required_check`) or differs from its definition below
(`required_check_altered`). The wording (`description`, `reason`) stays free,
and the rule may live in any file; what it decides may not change.

This list is code, not policy: changing it is a change to the product, reviewed
as such, never an edit in `policies/`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .rules import AllOf, AnyOf, Compare, Condition, Constant, FieldRef, Lookup, Not, Param, Rule

__all__ = [
    "REQUIRED_CHECKS",
    "REQUIRED_CHECK_IDS",
    "RequiredCheck",
    "condition_text",
    "differences",
]


@dataclass(frozen=True)
class RequiredCheck:
    """A check as it must appear in the policy set: what it decides, not its wording."""

    id: str
    trigger: str
    code: str
    deny_when: Condition
    applies_when: Condition | None = None


def _is(field: str, value: Constant) -> Compare:
    return Compare(field=field, op="eq", value=value)


def _is_not(field: str, value: Constant) -> Compare:
    return Compare(field=field, op="ne", value=value)


_NOT_RESEARCH = _is_not("mode", "research")

REQUIRED_CHECKS: tuple[RequiredCheck, ...] = (
    # Omega first: it is the control an operator reaches for when everything else fails
    RequiredCheck("omega_check", "omega_directive", "OMEGA_DIRECTIVE_IN_FORCE",
                  _is("omega_active", True)),
    # research mode judges orders (evaluate) but sends none (SPEC section 3)
    RequiredCheck("mode_check", "mode_research", "MODE_RESEARCH", _is("mode", "research"),
                  Compare(field="operation", op="in", value=("submit", "replace"))),
    # the compliance configuration in force (SPEC section 3): verified, pinning
    # the rules being judged, not expired, allowing the mode; each its own check,
    # so a blocked record names every condition that failed
    RequiredCheck("compliance_signature_check", "compliance_failure", "COMPLIANCE_NOT_VERIFIED",
                  _is("compliance_verified", False)),
    RequiredCheck("policy_digest_check", "compliance_failure", "POLICY_DIGEST_MISMATCH",
                  _is("policy_digest_ok", False)),
    RequiredCheck("compliance_expiry_check", "compliance_failure", "COMPLIANCE_EXPIRED",
                  _is("compliance_expired", True)),
    RequiredCheck("compliance_mode_check", "compliance_failure", "MODE_NOT_ALLOWED",
                  _is("mode_allowed", False)),
    # live: a configuration signed by the threshold (never the development root),
    # and the unlock walked with every requirement still holding; every operation,
    # so an evaluate in live mode says what a submit would get
    RequiredCheck("live_trust_check", "compliance_failure", "LIVE_NEEDS_SIGNED_CONFIG",
                  _is_not("compliance_trust", "signed"), _is("mode", "live")),
    RequiredCheck("live_mode_check", "compliance_failure", "LIVE_LOCKED",
                  _is("live_unlocked", False), _is("mode", "live")),
    RequiredCheck("trading_halted_check", "omega_directive", "TRADING_HALTED",
                  _is("trading_state", "halted")),
    RequiredCheck("trading_reducing_check", "risk_denied", "REDUCE_ONLY_STATE",
                  _is("position_increases", True), _is("trading_state", "reducing")),
    RequiredCheck("account_permission_check", "compliance_failure", "ACCOUNT_NOT_PERMITTED",
                  _is("account_permitted", False)),
    RequiredCheck("broker_check", "broker_capability", "NO_BROKER",
                  _is("broker_configured", False), _NOT_RESEARCH),
    RequiredCheck("broker_ready_check", "broker_api_error", "BROKER_NOT_READY",
                  _is("broker_ready", False),
                  AllOf(items=(_NOT_RESEARCH, _is("broker_configured", True)))),
    RequiredCheck("broker_capability_check", "broker_capability", "BROKER_CANNOT_TAKE",
                  AnyOf(items=(
                      _is("broker_supports_order_type", False),
                      _is("broker_supports_time_in_force", False),
                      _is("broker_supports_reduce_only", False),
                      _is("broker_supports_operation", False),
                  )),
                  AllOf(items=(_NOT_RESEARCH, _is("broker_configured", True)))),
)  # fmt: skip
REQUIRED_CHECK_IDS: tuple[str, ...] = tuple(check.id for check in REQUIRED_CHECKS)


def differences(rule: Rule, want: RequiredCheck) -> list[tuple[str, str, str]]:
    """Each key in which `rule` departs from `want`, as (key, want, got) in rule text."""
    pairs: tuple[tuple[str, object, object], ...] = (
        ("trigger", want.trigger, rule.trigger),
        ("code", want.code, rule.code),
        ("applies_when", want.applies_when, rule.applies_when),
        ("deny_when", want.deny_when, rule.deny_when),
    )
    out = []
    for key, expected, got in pairs:
        # compare the text as well: pydantic's equality holds 1 == true
        if expected != got or _text(expected) != _text(got):
            out.append((key, _text(expected), _text(got)))
    return out


def _text(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, Compare | AllOf | AnyOf | Not):
        return condition_text(value)
    return str(value)


def condition_text(condition: Condition) -> str:
    """A condition in the flow YAML a policy file would use: `{field: mode, eq: live}`."""
    if isinstance(condition, Not):
        return "{not: " + condition_text(condition.item) + "}"
    if isinstance(condition, AllOf | AnyOf):
        name = "all" if isinstance(condition, AllOf) else "any"
        return "{" + name + ": [" + ", ".join(condition_text(c) for c in condition.items) + "]}"
    return "{field: " + condition.field + ", " + condition.op + ": " + _value(condition.value) + "}"


def _value(value: Constant | Param | FieldRef | Lookup) -> str:
    if isinstance(value, Param):
        return "{param: " + value.name + "}"
    if isinstance(value, FieldRef):
        return "{field: " + value.field + "}"
    if isinstance(value, Lookup):
        default = "" if value.default is None else ", default: " + _value(value.default)
        return "{param: " + value.name + ", key: " + value.key + default + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return repr(value)
