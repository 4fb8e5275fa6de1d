"""The facts of the account-wide controls: credit and exposure (SEC 15c3-5),
self-match prevention, short sales (Reg SHO) and the market order's touch.

They read the account's book the gateway gathered with the position, in the
same transaction (`EngineState.working_orders`, `marks`, `positions`,
`executed_notional_today`). A value that needs a price nobody knows (a working
market order never valued, a held symbol without a mark: never traded here, and
no price from the broker's position sync) is left out, so the rules that read it
report `error`, which blocks: exposure that cannot be measured is not taken to
be zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..models import EngineState, OrderRequest, WorkingOrder

if TYPE_CHECKING:  # facts.py builds the fact and calls in here
    from .facts import Fact

__all__ = ["add_account_facts", "crosses", "order_price"]


def order_price(order: OrderRequest) -> float | None:
    """The price the order is valued at, as its `notional` is: the limit or stop
    price, or for a market order the touch (ask to buy, bid to sell), else last."""
    if order.order_type == "limit":
        return order.limit_price
    if order.order_type == "stop":
        return order.stop_price
    quote = order.context.quote
    if quote is None:
        return None
    touch = quote.ask if order.side == "buy" else quote.bid
    return touch if touch is not None else quote.last


def crosses(order: OrderRequest, working: WorkingOrder) -> bool:
    """Whether `order` would trade against `working` of the same account: the same
    symbol, the other side, something left of it, resting in the book, and prices
    that meet. Only a limit order rests in the book at a price: a working market
    order takes liquidity (it is in flight to the broker, or queued for an
    auction), and a stop order rests at no price until its stop is touched. A
    market order meets any resting limit; a buy limit meets a sell limit at or
    below it, a sell limit a buy limit at or above it; a stop order, when sent,
    meets nothing."""
    if working.symbol != order.symbol or working.side == order.side or working.quantity <= 0:
        return False
    if working.order_type != "limit" or order.order_type == "stop":
        return False
    mine, theirs = order.limit_price, working.limit_price
    if order.order_type == "market" or mine is None or theirs is None:
        return True  # a market order takes any resting limit (a limit always has its price)
    return mine >= theirs if order.side == "buy" else mine <= theirs


def add_account_facts(fact: Fact, order: OrderRequest, state: EngineState) -> None:
    """Add the account-wide facts; `fact` already holds the order's own
    (`notional`, `position_after`, the quote)."""
    fact["short_sale"] = order.short_sale
    if order.locate_id is not None:
        fact["locate_id"] = order.locate_id
    fact["executed_notional_today"] = state.executed_notional_today
    _add_touch(fact, order)
    _add_self_match(fact, order, state)
    notional = fact.get("notional")
    if not isinstance(notional, float | int) or isinstance(notional, bool):
        return  # nothing below can be valued without the order's own notional
    fact["day_notional_after"] = state.executed_notional_today + notional
    working = [w for w in state.working_orders if w.quantity > 0]
    if all(w.price is not None for w in working):
        fact["open_notional_after"] = notional + sum(w.quantity * (w.price or 0.0) for w in working)
    _add_gross_exposure(fact, order, state)


def _add_touch(fact: Fact, order: OrderRequest) -> None:
    """How far a market order's touch lies from the reference price, in bps."""
    quote = order.context.quote
    reference = fact.get("reference_price")
    if order.order_type != "market" or quote is None or not isinstance(reference, float | int):
        return
    touch = quote.ask if order.side == "buy" else quote.bid
    if touch is not None and reference > 0:
        fact["touch_distance_bps"] = abs(touch - reference) / reference * 10_000


def _add_self_match(fact: Fact, order: OrderRequest, state: EngineState) -> None:
    crossed = [w for w in state.working_orders if crosses(order, w)]
    fact["self_match"] = bool(crossed)
    if crossed:
        note = "would cross " + ", ".join(_describe(w) for w in crossed[:3])
        if len(crossed) > 3:
            note += f" and {len(crossed) - 3} more"
        fact["self_match_note"] = note


def _describe(working: WorkingOrder) -> str:
    price = f" {working.limit_price:g}" if working.limit_price is not None else ""
    return f"{working.order_id} ({working.side} {working.quantity:g} {working.order_type}{price})"


def _add_gross_exposure(fact: Fact, order: OrderRequest, state: EngineState) -> None:
    """Sum of |position| x price over the account's symbols after a full fill: the
    order's symbol at the order's own price, every other one at its mark."""
    price = order_price(order)
    after = fact.get("position_after")
    if price is None or not isinstance(after, float | int):
        return
    total = abs(after) * price
    for symbol, quantity in state.account_positions(order.account).items():
        if symbol == order.symbol or quantity == 0:
            continue
        mark = state.marks.get(symbol)
        if mark is None:
            return  # a holding with no known price: exposure unknown, the check errors
        total += abs(quantity) * mark
    fact["gross_exposure_after"] = total
