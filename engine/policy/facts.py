"""Turn an order, its context and the trading state into one flat fact.

Derived values are computed here, in Python, so policies compare plain fields.
A value that cannot be computed (its input is missing) is left out of the fact,
and every rule that refers to it reports `error`: missing input never passes.
The gateway's facts (operation, mode, trading state, broker, the actor's
accounts) are always present: the gateway supplies every one of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from ..canonical import sha256_digest
from ..clock import format_utc
from ..models import BrokerFacts, EngineState, OrderRequest, RecentOrder
from .account_facts import add_account_facts
from .calendar import session_open
from .config import ComplianceConfig

__all__ = ["FIELDS", "NOTES", "Fact", "FieldSpec", "FieldType", "build_fact"]

FieldType = Literal["number", "string", "bool"]
Fact = dict[str, float | str | bool]


@dataclass(frozen=True)
class FieldSpec:
    type: FieldType
    description: str
    # `build_fact` writes it into every fact: a rule on it needs no missing-input
    # test in the rules engine (the evaluator's reference still checks presence)
    always: bool = False


def _f(type_: FieldType, description: str) -> FieldSpec:
    return FieldSpec(type_, description)


def _a(type_: FieldType, description: str) -> FieldSpec:
    return FieldSpec(type_, description, always=True)


FIELDS: dict[str, FieldSpec] = {
    # the order as sent
    "account": _a("string", "account the order is for"),
    "symbol": _a("string", "instrument symbol, upper case"),
    "symbol_root": _a(
        "string",
        "the symbol without a share-class or punctuation suffix: BRK.B, BRK/B, BRK-B and "
        "BRK. are all BRK (what the restricted list is matched against)",
    ),
    "side": _a("string", "buy or sell"),
    "quantity": _a("number", "order quantity (shares)"),
    "quantity_whole": _a("bool", "the quantity is a whole number of shares"),
    "fractional_allowed": _a(
        "bool", "the symbol, exactly as sent, is listed in risk.fractional_symbols"
    ),
    "order_type": _a("string", "market, limit or stop"),
    "limit_price": _f("number", "limit price (limit orders only)"),
    "stop_price": _f("number", "stop price (stop orders only)"),
    "time_in_force": _a("string", "day, gtc, ioc, fok, opg or cls"),
    "reduce_only": _a("bool", "the order may only reduce the position"),
    "decision_reason": _a("string", "why the strategy sent the order"),
    # the quote and what follows from it
    "bid": _f("number", "quoted bid"),
    "ask": _f("number", "quoted ask"),
    "last": _f("number", "last trade price"),
    "mid_price": _f("number", "(bid + ask) / 2"),
    "reference_price": _f("number", "mid price, or last when bid/ask are missing"),
    "spread_bps": _f("number", "(ask - bid) / mid, in basis points"),
    "quote_age_s": _f("number", "seconds between the quote's timestamp and now"),
    "quote_consistent": _f("bool", "bid <= ask and last within [bid, ask] widened by the spread"),
    "price_on_tick": _a(
        "bool",
        "every price on the order is on the tick: whole cents from $1, hundredths of a "
        "cent below (SEC Reg NMS rule 612); true for an order without a price",
    ),
    "notional": _f(
        "number",
        "quantity x price: limit or stop price, or the touch (ask to buy, bid to sell)",
    ),
    "price_distance_bps": _f(
        "number", "|limit or stop price - reference price| / reference, in basis points"
    ),
    # model signals
    "volatility": _f("number", "annualised volatility estimate"),
    "regime": _f("string", "market regime label"),
    "entropy": _f("number", "signal entropy"),
    "drift": _f("number", "model drift (signed)"),
    "drift_abs": _f("number", "|drift|"),
    "signals_age_s": _f("number", "seconds since the signals were computed (as_of)"),
    # integrity of what the client sent
    "data_hash_ok": _f("bool", "data_hash equals sha256 of the canonical JSON of the quote"),
    "protocol_hash_ok": _f(
        "bool", "protocol_hash equals sha256 of the canonical JSON of the sorted protocols"
    ),
    "required_protocols_fired": _a(
        "bool", "every protocol in protocols.required is among protocols_fired"
    ),
    # state
    "position_before": _a("number", "signed position in the symbol before the order"),
    "position_after": _a("number", "signed position if the order fills completely"),
    "position_after_abs": _a("number", "|position_after|"),
    "position_increases": _a(
        "bool", "the order makes the absolute position larger or flips its sign"
    ),
    "orders_in_window": _a("number", "orders from the account within flow.rate_window_s"),
    "duplicate_recent": _a("bool", "an identical order was seen within flow.duplicate_window_s"),
    "omega_active": _a("bool", "the Omega directive (kill switch) is in force"),
    # the account's book: credit and exposure (SEC 15c3-5), self-match, Reg SHO
    "open_notional_after": _f(
        "number",
        "notional of the account's working orders (what is left of each, at its limit or "
        "stop price, a market order at the touch it was judged at) plus this order's",
    ),
    "gross_exposure_after": _f(
        "number",
        "sum of |position| x price over the account's symbols if the order fills: its own "
        "symbol at the order's price, every other at its mark (last execution price, "
        "or the broker's price from a position sync)",
    ),
    "executed_notional_today": _a(
        "number", "notional the account executed on the trading day (session timezone) so far"
    ),
    "day_notional_after": _f("number", "executed_notional_today plus this order's notional"),
    "self_match": _a(
        "bool",
        "the order would cross a working limit order of the same account in the same "
        "symbol on the other side (market and stop orders rest at no price)",
    ),
    "short_sale": _a("bool", "the order is marked short (a sell only)"),
    "locate_id": _f("string", "the borrow locate of a short sale, as sent"),
    "touch_distance_bps": _f(
        "number",
        "a market order's touch (ask to buy, bid to sell) from the reference price, in bps",
    ),
    "session_open": _a("bool", "the trading session is open now"),
    # the gateway: what is asked, in which mode and state, of which broker, by whom
    "operation": _a("string", "evaluate, submit or replace: what the caller asked for"),
    "mode": _a("string", "research, simulation, paper or live: the gateway's mode"),
    "trading_state": _a(
        "string", "active, reducing or halted: the stricter of the account's and the gateway's"
    ),
    "broker_configured": _a("bool", "the mode routes to a broker"),
    "broker_ready": _a(
        "bool", "that broker may take new orders now (false when there is no broker)"
    ),
    "broker_supports_order_type": _a(
        "bool", "the broker takes the order's type (true when there is no broker)"
    ),
    "broker_supports_time_in_force": _a(
        "bool", "the broker takes the order's time in force (true when there is no broker)"
    ),
    "broker_supports_reduce_only": _a(
        "bool",
        "the order is not reduce-only, or the broker takes reduce-only orders "
        "(true when there is no broker)",
    ),
    "broker_supports_operation": _a(
        "bool", "the broker can do what is asked: replace needs its support (true when no broker)"
    ),
    "account_permitted": _a(
        "bool", "the caller may trade the order's account (true when it is bound to none)"
    ),
    # the compliance configuration in force (SPEC section 3: its conditions are checks)
    "compliance_verified": _a(
        "bool",
        "the configuration in force verified: signatures of a threshold of trusted keys (or "
        "the development root's, outside live), payload as the YAML, version not rolled back",
    ),
    "policy_digest_ok": _a(
        "bool", "the configuration's policy_digest pins the rules that judge this order"
    ),
    "compliance_expired": _a("bool", "the configuration in force is past its `expires`"),
    "compliance_trust": _a(
        "string",
        "who vouches for the configuration: signed (a threshold of trusted signers), "
        "development (the data directory's development root) or none",
    ),
    "mode_allowed": _a("bool", "the configuration's `modes` allow the gateway's mode"),
    "live_unlocked": _a(
        "bool", "the live unlock was walked and every live requirement still holds"
    ),
    # the routed broker's own quote (SPEC section 4: data_integrity_mismatch)
    "broker_quote_required": _a(
        "bool",
        "the routed broker's quotes are a reference the client's quote must agree with",
    ),
    "broker_quote_deviation_bps": _f(
        "number",
        "|client reference price - broker reference price| / broker reference, in basis "
        "points (each reference: the mid, or last without bid and ask); missing when the "
        "broker has no quote for the symbol or the client sent none",
    ),
}

# A gateway fact whose failing value is explained by a note: the reason shows it
# after the comparison (`policy_digest_ok is false (want ..., got ...)`). Notes
# are in the fact only when there is something to say; no rule reads them.
NOTES: dict[str, str] = {
    "compliance_verified": "compliance_verified_note",
    "policy_digest_ok": "policy_digest_ok_note",
    "compliance_expired": "compliance_expired_note",
    "mode_allowed": "mode_allowed_note",
    "live_unlocked": "live_unlocked_note",
    "broker_quote_deviation_bps": "broker_quote_note",
    "self_match": "self_match_note",
    # a capability refusal names the broker and the capability
    "broker_supports_order_type": "broker_supports_order_type_note",
    "broker_supports_time_in_force": "broker_supports_time_in_force_note",
    "broker_supports_reduce_only": "broker_supports_reduce_only_note",
    "broker_supports_operation": "broker_supports_operation_note",
}


_SUFFIX = re.compile(r"[./\-]")


def symbol_root(symbol: str) -> str:
    """The issuer's root symbol: everything before the first `.`, `/` or `-`. A
    restricted issuer stays restricted in every share class and notation."""
    return _SUFFIX.split(symbol, maxsplit=1)[0]


def on_tick(price: float) -> bool:
    """Reg NMS rule 612: quotes of $1 or more in whole cents, below $1 to four
    decimals (a float's noise below a millionth of the tick is not a sub-tick)."""
    ticks = price * (100 if price >= 1 else 10_000)
    return abs(ticks - round(ticks)) < 1e-6


def fractional_allowed(config: ComplianceConfig, symbol: str) -> bool:
    """Fractions of a share only where the configuration lists the symbol itself
    (not its root: BRK.A and BRK.B are different shares); a missing or malformed
    list allows none."""
    listed = config.param("risk.fractional_symbols")
    return isinstance(listed, list) and symbol in listed


def build_fact(
    order: OrderRequest, state: EngineState, config: ComplianceConfig, now: datetime
) -> Fact:
    fact: Fact = {
        "account": order.account,
        "symbol": order.symbol,
        "symbol_root": symbol_root(order.symbol),
        "side": order.side,
        "quantity": order.quantity,
        "quantity_whole": float(order.quantity).is_integer(),
        "fractional_allowed": fractional_allowed(config, order.symbol),
        "order_type": order.order_type,
        "time_in_force": order.time_in_force,
        "reduce_only": order.reduce_only,
        "decision_reason": order.decision_reason,
        "omega_active": state.omega_active,
        "session_open": session_open(config.session, now),
    }
    _add_gateway(fact, order, state)
    _add_compliance(fact, state, now)
    fact["price_on_tick"] = all(
        on_tick(p) for p in (order.limit_price, order.stop_price) if p is not None
    )
    _put(fact, "limit_price", order.limit_price)
    _put(fact, "stop_price", order.stop_price)
    _add_quote(fact, order, now)
    _add_broker_quote(fact, state)
    _add_signals(fact, order, now)
    _add_integrity(fact, order, config)
    _add_state(fact, order, state, config, now)
    add_account_facts(fact, order, state)
    return fact


def _add_gateway(fact: Fact, order: OrderRequest, state: EngineState) -> None:
    broker = state.broker
    fact["operation"] = state.operation
    fact["mode"] = state.mode
    fact["trading_state"] = state.trading_state
    accounts = state.actor_accounts
    fact["account_permitted"] = accounts is None or order.account in accounts
    if broker is None:
        # nothing to refuse: broker_check says that there is no broker at all
        fact["broker_configured"] = False
        fact["broker_ready"] = False
        fact["broker_supports_order_type"] = True
        fact["broker_supports_time_in_force"] = True
        fact["broker_supports_reduce_only"] = True
        fact["broker_supports_operation"] = True
        return
    fact["broker_configured"] = True
    fact["broker_ready"] = broker.ready
    fact["broker_supports_order_type"] = order.order_type in broker.order_types
    fact["broker_supports_time_in_force"] = order.time_in_force in broker.time_in_force
    fact["broker_supports_reduce_only"] = broker.reduce_only or not order.reduce_only
    fact["broker_supports_operation"] = state.operation != "replace" or broker.replace
    _add_capability_notes(fact, order, broker)


def _add_capability_notes(fact: Fact, order: OrderRequest, broker: BrokerFacts) -> None:
    name = broker.name
    if not fact["broker_supports_order_type"]:
        fact["broker_supports_order_type_note"] = (
            f"broker {name}: order_types {_format_list(broker.order_types)}, "
            f"got: {order.order_type}"
        )
    if not fact["broker_supports_time_in_force"]:
        fact["broker_supports_time_in_force_note"] = (
            f"broker {name}: time_in_force {_format_list(broker.time_in_force)}, "
            f"got: {order.time_in_force}"
        )
    if not fact["broker_supports_reduce_only"]:
        fact["broker_supports_reduce_only_note"] = (
            f"broker {name}: reduce_only false (neither native nor emulated)"
        )
    if not fact["broker_supports_operation"]:
        fact["broker_supports_operation_note"] = f"broker {name}: replace false"


def _format_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _add_compliance(fact: Fact, state: EngineState, now: datetime) -> None:
    facts = state.compliance
    fact["compliance_verified"] = facts.verified
    fact["policy_digest_ok"] = facts.digest_ok
    expired = facts.expires is not None and now >= facts.expires
    fact["compliance_expired"] = expired
    fact["compliance_trust"] = facts.trust
    allowed = facts.modes is None or state.mode in facts.modes
    fact["mode_allowed"] = allowed
    fact["live_unlocked"] = facts.live_unlocked
    if not facts.verified:
        fact["compliance_verified_note"] = facts.verified_note
    if not facts.digest_ok:
        fact["policy_digest_ok_note"] = facts.digest_note
    if expired and facts.expires is not None:
        fact["compliance_expired_note"] = f"expired at {format_utc(facts.expires)}"
    if not allowed:
        fact["mode_allowed_note"] = "allowed modes: " + ", ".join(facts.modes or ())
    if not facts.live_unlocked and state.mode == "live":
        fact["live_unlocked_note"] = facts.live_note


def _put(fact: Fact, name: str, value: float | str | bool | None) -> None:
    if value is not None:
        fact[name] = value


def _add_quote(fact: Fact, order: OrderRequest, now: datetime) -> None:
    quote = order.context.quote
    if quote is None:
        own = order.limit_price if order.order_type == "limit" else order.stop_price
        if own is not None:  # a priced order's notional needs no quote
            fact["notional"] = order.quantity * own
        return
    bid, ask, last = quote.bid, quote.ask, quote.last
    _put(fact, "bid", bid)
    _put(fact, "ask", ask)
    _put(fact, "last", last)
    if quote.timestamp is not None:
        fact["quote_age_s"] = (now - quote.timestamp).total_seconds()
    reference = last
    if bid is not None and ask is not None:
        mid = (bid + ask) / 2
        reference = mid
        fact["mid_price"] = mid
        fact["spread_bps"] = (ask - bid) / mid * 10_000
        width = max(ask - bid, 0.0)
        fact["quote_consistent"] = bid <= ask and (
            last is None or bid - width <= last <= ask + width
        )
    _put(fact, "reference_price", reference)
    if order.order_type == "market":
        touch = ask if order.side == "buy" else bid
        price = touch if touch is not None else last
    else:
        price = order.limit_price if order.order_type == "limit" else order.stop_price
        if price is not None and reference is not None:
            fact["price_distance_bps"] = abs(price - reference) / reference * 10_000
    if price is not None:
        fact["notional"] = order.quantity * price


def _add_broker_quote(fact: Fact, state: EngineState) -> None:
    broker = state.broker
    required = broker is not None and broker.reference_quotes
    fact["broker_quote_required"] = required
    quote = state.broker_quote
    client = fact.get("reference_price")
    if not required or quote is None or not isinstance(client, float | int):
        return
    if quote.bid is not None and quote.ask is not None:
        reference = (quote.bid + quote.ask) / 2
    elif quote.last is not None:
        reference = quote.last
    else:
        return
    if reference <= 0:
        return
    fact["broker_quote_deviation_bps"] = abs(client - reference) / reference * 10_000
    name = broker.name if broker is not None else "?"
    fact["broker_quote_note"] = f"client {client:.4f}, broker {name} {reference:.4f}"


def _add_signals(fact: Fact, order: OrderRequest, now: datetime) -> None:
    ctx = order.context
    _put(fact, "volatility", ctx.volatility)
    _put(fact, "regime", ctx.regime)
    _put(fact, "entropy", ctx.entropy)
    _put(fact, "drift", ctx.drift)
    if ctx.drift is not None:
        fact["drift_abs"] = abs(ctx.drift)
    as_of = ctx.as_of or (ctx.quote.timestamp if ctx.quote else None)
    if as_of is not None:
        fact["signals_age_s"] = (now - as_of).total_seconds()


def _add_integrity(fact: Fact, order: OrderRequest, config: ComplianceConfig) -> None:
    ctx = order.context
    quote_digest = ctx.quote_digest if ctx.data_hash is not None else None
    if quote_digest is not None:
        fact["data_hash_ok"] = ctx.data_hash == quote_digest
    if ctx.protocol_hash is not None:
        fact["protocol_hash_ok"] = ctx.protocol_hash == sha256_digest(sorted(ctx.protocols_fired))
    fact["required_protocols_fired"] = set(config.protocols.required) <= set(ctx.protocols_fired)


def _add_state(
    fact: Fact,
    order: OrderRequest,
    state: EngineState,
    config: ComplianceConfig,
    now: datetime,
) -> None:
    before = state.position(order.account, order.symbol)
    signed = order.quantity if order.side == "buy" else -order.quantity
    after = before + signed
    fact["position_before"] = before
    fact["position_after"] = after
    fact["position_after_abs"] = abs(after)
    fact["position_increases"] = abs(after) > abs(before) or before * after < 0
    if state.flow is not None:
        fact["orders_in_window"] = state.flow.orders_in_window
        fact["duplicate_recent"] = state.flow.duplicate_recent
        return
    rate_since = now - timedelta(seconds=config.flow.rate_window_s)
    dup_since = now - timedelta(seconds=config.flow.duplicate_window_s)
    mine = [r for r in state.recent_orders if r.account == order.account and r.at <= now]
    fact["orders_in_window"] = sum(1 for r in mine if r.at > rate_since)
    fact["duplicate_recent"] = any(r.at > dup_since and _same_order(r, order) for r in mine)


def _same_order(recent: RecentOrder, order: OrderRequest) -> bool:
    if recent.client_order_id is not None and recent.client_order_id == order.client_order_id:
        # the same id is a retry of the same order, which the gateway answers idempotently
        return False
    return (
        recent.symbol,
        recent.side,
        recent.quantity,
        recent.order_type,
        recent.limit_price,
        recent.stop_price,
    ) == (
        order.symbol,
        order.side,
        order.quantity,
        order.order_type,
        order.limit_price,
        order.stop_price,
    )
