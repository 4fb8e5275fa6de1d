"""The default policy set as Cedar policies, evaluated by `cedarpy`.

One `forbid` per rule, annotated `@id("<rule id>")`, plus one `permit`; the
fact from `engine.facts.build_fact` is the request context.

Cedar has no floats, so a number goes into the context as the integer
10^4 x value rounded up, and, where a policy asks "below" or "at least", as a
companion `<field>__floor` rounded down; a threshold is the exact integer
10^4 x threshold. `x > t` is then exactly `ceil(10^4 x) > T` and `x < t`
exactly `floor(10^4 x) < T`, for any x, as long as every threshold has at most
four decimals (checked). The context holds only the attributes the policies
name: cedarpy's cost grows with every attribute it has to read.

A missing input makes its forbid hold, as a missing input never passes in our
engine; a Cedar evaluation error, which Cedar answers by skipping the policy,
is counted as a denial.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import cedarpy
from _plain import FUTURE_QUOTE_S, Limits

from engine.policy.facts import Fact

__all__ = ["SCALE", "CedarGate", "Verdict", "context_of", "policy_text"]

SCALE = 10_000
_LONG = 2**63 - 1
_PERMIT_ID = "default_permit"
_ACTION = {"type": "Action", "id": "submit_order"}
_FLOOR = "__floor"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    denying: frozenset[str]  # ids of the forbids that held
    errors: tuple[str, ...] = ()


def _scaled(value: float, rounding: Any) -> int:
    # repr is the shortest decimal that round-trips, so x > t as floats iff repr(x) > repr(t)
    return max(-_LONG, min(_LONG, int(rounding(Decimal(repr(value)) * SCALE))))


def _fixed(threshold: float) -> int:
    exact = Decimal(repr(threshold)) * SCALE
    if exact != exact.to_integral_value():
        raise ValueError(f"threshold {threshold} has more than four decimals")
    return int(exact)


def context_of(fact: Fact, attributes: Iterable[str]) -> dict[str, Any]:
    """The named attributes of the fact as a Cedar context, numbers in fixed point."""
    out: dict[str, Any] = {}
    for name in attributes:
        field = name.removesuffix(_FLOOR)
        value = fact.get(field)
        if value is None:
            continue
        if isinstance(value, bool | str):
            out[name] = value
        else:
            out[name] = _scaled(value, math.floor if name != field else math.ceil)
    return out


def _set(values: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in sorted(values)) + "]"


def _gt(field: str, threshold: float) -> str:
    return f"context.{field} > {_fixed(threshold)}"


def _ge(field: str, threshold: float) -> str:
    return f"context.{field}{_FLOOR} >= {_fixed(threshold)}"


def _lt(field: str, threshold: float) -> str:
    return f"context.{field}{_FLOOR} < {_fixed(threshold)}"


def _by_account(field: str, by_account: dict[str, float], default: float) -> str:
    """`field` above the account's own limit, or the default for an account not listed."""
    own = [f'(context.account == "{a}" && {_gt(field, t)})' for a, t in sorted(by_account.items())]
    rest = f"(!{_set(by_account)}.contains(context.account) && {_gt(field, default)})"
    return "(" + " || ".join([*own, rest]) + ")"


def _guarded(field: str, condition: str) -> str:
    """Deny when the field is missing, or when the condition holds."""
    return f"!(context has {field}) || {condition}"


def _applies(field: str, applies: str, deny: str) -> str:
    return f"!(context has {field}) || ({applies} && ({deny}))"


def _conditions(lim: Limits) -> dict[str, str]:
    return {
        "restricted_symbol_check": _guarded(
            "symbol_root", f"{_set(lim.restricted_symbols)}.contains(context.symbol_root)"
        ),
        "account_check": _guarded(
            "account", f"!{_set(lim.allowed_accounts)}.contains(context.account)"
        ),
        "omega_check": _guarded("omega_active", "context.omega_active"),
        "data_hash_check": _guarded("data_hash_ok", "!context.data_hash_ok"),
        "quote_freshness_check": _guarded(
            "quote_age_s",
            f"{_gt('quote_age_s', lim.max_quote_age_s)} || {_lt('quote_age_s', FUTURE_QUOTE_S)}",
        ),
        "quote_consistency_check": _guarded("quote_consistent", "!context.quote_consistent"),
        "volatility_check": _guarded("volatility", _gt("volatility", lim.max_volatility)),
        "volatility_domain_check": (f"context has volatility{_FLOOR} && {_lt('volatility', 0)}"),
        "spread_check": _guarded("spread_bps", _gt("spread_bps", lim.max_spread_bps)),
        "regime_check": _guarded(
            "regime", f"!{_set(lim.allowed_regimes)}.contains(context.regime)"
        ),
        "entropy_check": _guarded("entropy", _gt("entropy", lim.max_entropy)),
        "entropy_domain_check": _guarded(
            "entropy", f"({_lt('entropy', 0)} || {_gt('entropy', 1)})"
        ),
        "drift_check": _guarded("drift_abs", _gt("drift_abs", lim.max_drift)),
        "signal_freshness_check": _guarded(
            "signals_age_s", _gt("signals_age_s", lim.max_signal_age_s)
        ),
        "duplicate_order_check": _guarded("duplicate_recent", "context.duplicate_recent"),
        "order_rate_check": _guarded(
            "orders_in_window", _ge("orders_in_window", lim.max_orders_per_window)
        ),
        "session_hours_check": _guarded("session_open", "!context.session_open"),
        "max_quantity_check": _guarded("quantity", _gt("quantity", lim.max_order_quantity)),
        "min_quantity_check": _guarded("quantity", _lt("quantity", lim.min_order_quantity)),
        "whole_shares_check": _guarded(
            "quantity_whole",
            _guarded(
                "fractional_allowed", "(!context.quantity_whole && !context.fractional_allowed)"
            ),
        ),
        "tick_size_check": _guarded("price_on_tick", "!context.price_on_tick"),
        "max_notional_check": _guarded("notional", _gt("notional", lim.max_order_notional)),
        "price_collar_check": _applies(
            "order_type",
            '["limit", "stop"].contains(context.order_type)',
            _guarded("price_distance_bps", _gt("price_distance_bps", lim.max_price_distance_bps)),
        ),
        "max_position_check": _guarded(
            "position_after_abs", _gt("position_after_abs", lim.max_position_quantity)
        ),
        "reduce_only_check": _applies(
            "reduce_only",
            "context.reduce_only",
            _guarded("position_increases", "context.position_increases"),
        ),
        "market_collar_check": _applies(
            "order_type",
            'context.order_type == "market"',
            _guarded("touch_distance_bps", _gt("touch_distance_bps", lim.max_price_distance_bps)),
        ),
        "open_notional_check": _guarded(
            "open_notional_after",
            _by_account(
                "open_notional_after",
                dict(lim.max_open_notional_by_account),
                lim.max_open_notional,
            ),
        ),
        "gross_exposure_check": _guarded(
            "gross_exposure_after",
            _by_account(
                "gross_exposure_after",
                dict(lim.max_gross_exposure_by_account),
                lim.max_gross_exposure,
            ),
        ),
        "daily_notional_check": _guarded(
            "day_notional_after",
            _by_account(
                "day_notional_after",
                dict(lim.max_daily_notional_by_account),
                lim.max_daily_notional,
            ),
        ),
        "self_match_check": "context.self_match",
        "short_sale_check": (
            'context.side == "sell" && ('
            f"({_lt('position_after', 0)} && !context.short_sale)"
            " || (context.short_sale && !(context has locate_id)))"
        ),
        "protocol_hash_check": _guarded("protocol_hash_ok", "!context.protocol_hash_ok"),
        "required_protocols_check": _guarded(
            "required_protocols_fired", "!context.required_protocols_fired"
        ),
        # the gateway's controls (policies/controls.yaml); their facts are always present
        "mode_check": 'context.operation != "evaluate" && context.mode == "research"',
        "broker_quote_check": "context.broker_quote_required && ("
        + _guarded(
            "broker_quote_deviation_bps",
            _gt("broker_quote_deviation_bps", lim.max_quote_deviation_bps),
        )
        + ")",
        "compliance_signature_check": "!context.compliance_verified",
        "policy_digest_check": "!context.policy_digest_ok",
        "compliance_expiry_check": "context.compliance_expired",
        "compliance_mode_check": "!context.mode_allowed",
        "live_trust_check": 'context.mode == "live" && context.compliance_trust != "signed"',
        "live_mode_check": 'context.mode == "live" && !context.live_unlocked',
        "trading_halted_check": 'context.trading_state == "halted"',
        "trading_reducing_check": (
            'context.trading_state == "reducing" && context.position_increases'
        ),
        "account_permission_check": "!context.account_permitted",
        "broker_check": 'context.mode != "research" && !context.broker_configured',
        "broker_ready_check": (
            'context.mode != "research" && context.broker_configured && !context.broker_ready'
        ),
        "broker_capability_check": (
            'context.mode != "research" && context.broker_configured && '
            "!(context.broker_supports_order_type && context.broker_supports_time_in_force && "
            "context.broker_supports_reduce_only && context.broker_supports_operation)"
        ),
    }


def policy_text(lim: Limits) -> str:
    policies = [f'@id("{_PERMIT_ID}")\npermit (principal, action, resource);']
    for rule_id, condition in _conditions(lim).items():
        policies.append(
            f'@id("{rule_id}")\nforbid (principal, action, resource)\nwhen {{ {condition} }};'
        )
    return "\n\n".join(policies) + "\n"


class CedarGate:
    """Cedar policies parsed once; one request per order, the fact as its context."""

    def __init__(self, limits: Limits) -> None:
        self.text = policy_text(limits)
        self.rule_ids = tuple(_conditions(limits))
        self.attributes = tuple(sorted(set(re.findall(r"context(?:\.| has )(\w+)", self.text))))
        self._policies = cedarpy.PolicySet.from_str(self.text)
        self._entities = cedarpy.Entities.from_json_str("[]")

    def request(self, fact: Fact) -> dict[str, Any]:
        return {
            "principal": {"type": "Account", "id": str(fact.get("account", ""))},
            "action": _ACTION,
            "resource": {"type": "Symbol", "id": str(fact.get("symbol", ""))},
            "context": context_of(fact, self.attributes),
        }

    def decide(self, request: dict[str, Any]) -> Verdict:
        return _verdict(cedarpy.is_authorized(request, self._policies, self._entities))

    def decide_batch(self, requests: Sequence[dict[str, Any]]) -> list[Verdict]:
        results = cedarpy.is_authorized_batch(list(requests), self._policies, self._entities)
        return [_verdict(r) for r in results]


def _verdict(result: Any) -> Verdict:
    diagnostics = result.diagnostics
    names = diagnostics.id_annotations_by_reason
    denying = frozenset(names.get(r, r) for r in diagnostics.reasons) - {_PERMIT_ID}
    errors = tuple(str(e) for e in diagnostics.errors)
    # an erroring forbid is skipped by Cedar; we count it as a denial (fail-closed)
    return Verdict(result.allowed and not errors, denying, errors)
