"""The default policy set as plain Python: one hand-written function per rule.

This is the floor: the same fact dict (`engine.facts.build_fact`), the same
thresholds (read from the loaded `ComplianceConfig`), the same rule that a
missing input never passes, and nothing else. Keep it in step with
`policies/*.yaml`; `RULES` must name exactly the policy set's checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from engine import ComplianceConfig
from engine.policy.decision import CheckResult

__all__ = ["FUTURE_QUOTE_S", "RULES", "Limits", "decide"]

FUTURE_QUOTE_S = -1  # a literal in policies/market_data.yaml, not a parameter

PASS: CheckResult = "pass"
FAIL: CheckResult = "fail"
ERROR: CheckResult = "error"


@dataclass(frozen=True)
class Limits:
    """Every threshold the rules use, read once from the compliance configuration."""

    max_order_quantity: float
    min_order_quantity: float
    max_order_notional: float
    max_position_quantity: float
    max_price_distance_bps: float
    max_spread_bps: float
    max_volatility: float
    allowed_regimes: frozenset[str]
    max_entropy: float
    max_drift: float
    max_signal_age_s: float
    max_quote_age_s: float
    max_orders_per_window: float
    restricted_symbols: frozenset[str]
    allowed_accounts: frozenset[str]
    max_quote_deviation_bps: float
    # the credit limits: a default and a map of accounts with their own
    max_open_notional: float
    max_gross_exposure: float
    max_daily_notional: float
    max_open_notional_by_account: Mapping[str, float]
    max_gross_exposure_by_account: Mapping[str, float]
    max_daily_notional_by_account: Mapping[str, float]

    @classmethod
    def from_config(cls, config: ComplianceConfig) -> Limits:
        values: dict[str, Any] = {}
        for spec in fields(cls):
            group = (
                "compliance"
                if spec.name in _COMPLIANCE
                else "market_data"
                if spec.name in _MARKET_DATA
                else "risk"
            )
            value = config.param(f"{group}.{spec.name}")
            if value is None:
                raise KeyError(f"{group}.{spec.name} is not in the compliance configuration")
            if (spec.name in _MAPS) != isinstance(value, dict):
                raise TypeError(f"{group}.{spec.name} has an unexpected shape: {value!r}")
            if (spec.name in _SETS) != isinstance(value, list):
                raise TypeError(f"{group}.{spec.name} has an unexpected shape: {value!r}")
            values[spec.name] = frozenset(value) if isinstance(value, list) else value
        return cls(**values)


_MARKET_DATA = frozenset({"max_quote_deviation_bps"})
_COMPLIANCE = {"restricted_symbols", "allowed_accounts"}
_SETS = {"allowed_regimes", "restricted_symbols", "allowed_accounts"}
_MAPS = {
    "max_open_notional_by_account",
    "max_gross_exposure_by_account",
    "max_daily_notional_by_account",
}

# The fact from `engine.facts.build_fact`; its builder guarantees each field's type.
Fact = Mapping[str, Any]
Check = Callable[[Fact, Limits], CheckResult]


def restricted_symbol_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("symbol_root")) is None:
        return ERROR
    return FAIL if v in lim.restricted_symbols else PASS


def account_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("account")) is None:
        return ERROR
    return FAIL if v not in lim.allowed_accounts else PASS


def omega_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("omega_active")) is None:
        return ERROR
    return FAIL if v is True else PASS


def data_hash_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("data_hash_ok")) is None:
        return ERROR
    return FAIL if v is False else PASS


def quote_freshness_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("quote_age_s")) is None:
        return ERROR
    return FAIL if v > lim.max_quote_age_s or v < FUTURE_QUOTE_S else PASS


def quote_consistency_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("quote_consistent")) is None:
        return ERROR
    return FAIL if v is False else PASS


def volatility_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("volatility")) is None:
        return ERROR
    return FAIL if v > lim.max_volatility else PASS


def volatility_domain_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("volatility")) is None:
        return PASS  # applies only to a volatility that is there
    return FAIL if v < 0 else PASS


def spread_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("spread_bps")) is None:
        return ERROR
    return FAIL if v > lim.max_spread_bps else PASS


def regime_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("regime")) is None:
        return ERROR
    return FAIL if v not in lim.allowed_regimes else PASS


def entropy_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("entropy")) is None:
        return ERROR
    return FAIL if v > lim.max_entropy else PASS


def entropy_domain_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("entropy")) is None:
        return ERROR
    return FAIL if v < 0 or v > 1 else PASS


def drift_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("drift_abs")) is None:
        return ERROR
    return FAIL if v > lim.max_drift else PASS


def signal_freshness_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("signals_age_s")) is None:
        return ERROR
    return FAIL if v > lim.max_signal_age_s else PASS


def duplicate_order_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("duplicate_recent")) is None:
        return ERROR
    return FAIL if v is True else PASS


def order_rate_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("orders_in_window")) is None:
        return ERROR
    return FAIL if v >= lim.max_orders_per_window else PASS


def session_hours_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("session_open")) is None:
        return ERROR
    return FAIL if v is False else PASS


def max_quantity_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("quantity")) is None:
        return ERROR
    return FAIL if v > lim.max_order_quantity else PASS


def min_quantity_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("quantity")) is None:
        return ERROR
    return FAIL if v < lim.min_order_quantity else PASS


def whole_shares_check(f: Fact, lim: Limits) -> CheckResult:
    whole, allowed = f.get("quantity_whole"), f.get("fractional_allowed")
    if whole is None or allowed is None:
        return ERROR
    return FAIL if whole is False and allowed is False else PASS


def tick_size_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("price_on_tick")) is None:
        return ERROR
    return FAIL if v is False else PASS


def max_notional_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("notional")) is None:
        return ERROR
    return FAIL if v > lim.max_order_notional else PASS


def price_collar_check(f: Fact, lim: Limits) -> CheckResult:
    if (kind := f.get("order_type")) is None:
        return ERROR
    if kind not in ("limit", "stop"):
        return PASS
    if (v := f.get("price_distance_bps")) is None:
        return ERROR
    return FAIL if v > lim.max_price_distance_bps else PASS


def max_position_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("position_after_abs")) is None:
        return ERROR
    return FAIL if v > lim.max_position_quantity else PASS


def reduce_only_check(f: Fact, lim: Limits) -> CheckResult:
    if (reduce_only := f.get("reduce_only")) is None:
        return ERROR
    if reduce_only is not True:
        return PASS
    if (v := f.get("position_increases")) is None:
        return ERROR
    return FAIL if v is True else PASS


def market_collar_check(f: Fact, lim: Limits) -> CheckResult:
    if (kind := f.get("order_type")) is None:
        return ERROR
    if kind != "market":
        return PASS
    if (v := f.get("touch_distance_bps")) is None:
        return ERROR
    return FAIL if v > lim.max_price_distance_bps else PASS


def _over(f: Fact, field: str, by_account: Mapping[str, float], default: float) -> CheckResult:
    if (v := f.get(field)) is None:
        return ERROR
    return FAIL if v > by_account.get(f["account"], default) else PASS


def open_notional_check(f: Fact, lim: Limits) -> CheckResult:
    return _over(f, "open_notional_after", lim.max_open_notional_by_account, lim.max_open_notional)


def gross_exposure_check(f: Fact, lim: Limits) -> CheckResult:
    return _over(
        f, "gross_exposure_after", lim.max_gross_exposure_by_account, lim.max_gross_exposure
    )


def daily_notional_check(f: Fact, lim: Limits) -> CheckResult:
    return _over(f, "day_notional_after", lim.max_daily_notional_by_account, lim.max_daily_notional)


def self_match_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["self_match"] is True else PASS


def short_sale_check(f: Fact, lim: Limits) -> CheckResult:
    if f["side"] != "sell":
        return PASS
    unmarked = f["position_after"] < 0 and f["short_sale"] is False
    unlocated = f["short_sale"] is True and "locate_id" not in f
    return FAIL if unmarked or unlocated else PASS


def protocol_hash_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("protocol_hash_ok")) is None:
        return ERROR
    return FAIL if v is False else PASS


def required_protocols_check(f: Fact, lim: Limits) -> CheckResult:
    if (v := f.get("required_protocols_fired")) is None:
        return ERROR
    return FAIL if v is False else PASS


# The gateway's controls (policies/controls.yaml). Their facts are always
# present (`build_fact` writes every one), so none of them can be missing.


def mode_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["operation"] in ("submit", "replace") and f["mode"] == "research" else PASS


def broker_quote_check(f: Fact, lim: Limits) -> CheckResult:
    if f["broker_quote_required"] is not True:
        return PASS
    if (v := f.get("broker_quote_deviation_bps")) is None:
        return ERROR
    return FAIL if v > lim.max_quote_deviation_bps else PASS


def compliance_signature_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["compliance_verified"] is False else PASS


def policy_digest_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["policy_digest_ok"] is False else PASS


def compliance_expiry_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["compliance_expired"] is True else PASS


def compliance_mode_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["mode_allowed"] is False else PASS


def live_trust_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["mode"] == "live" and f["compliance_trust"] != "signed" else PASS


def live_mode_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["mode"] == "live" and f["live_unlocked"] is False else PASS


def trading_halted_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["trading_state"] == "halted" else PASS


def trading_reducing_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["trading_state"] == "reducing" and f["position_increases"] else PASS


def account_permission_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if not f["account_permitted"] else PASS


def broker_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if f["mode"] != "research" and not f["broker_configured"] else PASS


def _broker_applies(f: Fact) -> bool:
    return f["mode"] != "research" and f["broker_configured"] is True


def broker_ready_check(f: Fact, lim: Limits) -> CheckResult:
    return FAIL if _broker_applies(f) and not f["broker_ready"] else PASS


def broker_capability_check(f: Fact, lim: Limits) -> CheckResult:
    supported = (
        f["broker_supports_order_type"]
        and f["broker_supports_time_in_force"]
        and f["broker_supports_reduce_only"]
        and f["broker_supports_operation"]
    )
    return FAIL if _broker_applies(f) and not supported else PASS


RULES: dict[str, Check] = {
    check.__name__: check
    for check in (
        restricted_symbol_check,
        account_check,
        omega_check,
        data_hash_check,
        quote_freshness_check,
        quote_consistency_check,
        volatility_check,
        volatility_domain_check,
        spread_check,
        regime_check,
        entropy_check,
        entropy_domain_check,
        drift_check,
        signal_freshness_check,
        duplicate_order_check,
        order_rate_check,
        session_hours_check,
        max_quantity_check,
        min_quantity_check,
        whole_shares_check,
        tick_size_check,
        max_notional_check,
        price_collar_check,
        max_position_check,
        reduce_only_check,
        market_collar_check,
        open_notional_check,
        gross_exposure_check,
        daily_notional_check,
        self_match_check,
        short_sale_check,
        protocol_hash_check,
        required_protocols_check,
        broker_quote_check,
        mode_check,
        compliance_signature_check,
        policy_digest_check,
        compliance_expiry_check,
        compliance_mode_check,
        live_trust_check,
        live_mode_check,
        trading_halted_check,
        trading_reducing_check,
        account_permission_check,
        broker_check,
        broker_ready_check,
        broker_capability_check,
    )
}


def decide(fact: Fact, limits: Limits) -> tuple[bool, dict[str, CheckResult]]:
    """Approved when every check passes; the result of each check."""
    results = {name: check(fact, limits) for name, check in RULES.items()}
    return all(r == PASS for r in results.values()), results
