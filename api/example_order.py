"""An order body that is valid now (`apex-oms orders example`): the order of SPEC
section 6, quoted at the current time, with correct digests, so that a hand-made
request is judged on its merits at any hour."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from engine.canonical import sha256_digest
from engine.clock import format_utc

__all__ = ["ORDER_TYPES", "SIDES", "example_order"]

SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market", "stop")
# One quote for every symbol: the default policies judge the order against the
# quote it carries (spread 6.7 bps, price at the mid, inside every collar).
_BID, _ASK, _LAST = 150.20, 150.30, 150.25
_PROTOCOLS = ["T01", "T07"]  # T01 is the protocol the default policies require


def example_order(
    now: datetime,
    *,
    symbol: str = "AAPL",
    side: str = "buy",
    order_type: str = "limit",
    quantity: float = 100,
    client_order_id: str | None = None,
) -> dict[str, Any]:
    """The order body, quoted at `now`; digests over the quote and protocols exactly
    as they are written, which is what the engine recomputes."""
    now = now.replace(microsecond=0)  # never later than `now`: the quote is not in the future
    quote = {"bid": _BID, "ask": _ASK, "last": _LAST, "timestamp": format_utc(now)}
    protocols = sorted(_PROTOCOLS)
    price = _LAST  # on the tick, at the mid: inside the price collar
    # Reg SHO: judged from a flat account a sell is a short sale, so the example
    # marks it short with a (made-up) locate, as short_sale_check wants
    short = {"short_sale": True, "locate_id": "LOC-EXAMPLE-1"} if side == "sell" else {}
    return {
        # a fresh id each time: a repeated id is an idempotent replay on submit
        "client_order_id": client_order_id
        or f"example-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}",
        "account": "default",
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "order_type": order_type,
        "limit_price": price if order_type == "limit" else None,
        "stop_price": price if order_type == "stop" else None,
        "time_in_force": "day",
        "reduce_only": False,
        "decision_reason": "manual_trigger",
        **short,
        "context": {
            "quote": quote,
            "volatility": 0.23,
            "regime": "trending",
            "entropy": 0.41,
            "drift": 0.12,
            "data_hash": sha256_digest(quote),
            "protocols_fired": protocols,
            "protocol_hash": sha256_digest(protocols),
        },
    }
