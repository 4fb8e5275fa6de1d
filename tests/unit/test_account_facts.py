"""The account-wide facts (engine/policy/account_facts.py): what crosses what,
how the open notional, the gross exposure and the day's notional are summed,
the market order's touch, and the short-sale fields of the order model."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.models import EngineState, OrderRequest, WorkingOrder
from engine.policy.account_facts import add_account_facts, crosses


def order(**changes: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "client_order_id": "c-1",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 100.0,
        "order_type": "limit",
        "limit_price": 150.0,
        "context": {"quote": {"bid": 149.9, "ask": 150.1, "last": 150.0}},
        **changes,
    }
    return OrderRequest.model_validate(fields)


def working(**changes: Any) -> WorkingOrder:
    fields: dict[str, Any] = {
        "order_id": "ORD-2026-000001",
        "symbol": "AAPL",
        "side": "sell",
        "order_type": "limit",
        "quantity": 100.0,
        "limit_price": 150.0,
        "price": 150.0,
        **changes,
    }
    return WorkingOrder.model_validate(fields)


def facts(request: OrderRequest, **state: Any) -> dict[str, Any]:
    fact: dict[str, Any] = {}
    price = {"limit": request.limit_price, "stop": request.stop_price}.get(request.order_type)
    if price is None and request.context.quote is not None:
        price = request.context.quote.ask if request.side == "buy" else request.context.quote.bid
    if price is not None:
        fact["notional"] = request.quantity * price
    signed = request.quantity if request.side == "buy" else -request.quantity
    held = EngineState.model_validate(state)
    fact["position_after"] = held.position(request.account, request.symbol) + signed
    fact["reference_price"] = 150.0
    add_account_facts(fact, request, held)
    return fact


@pytest.mark.parametrize(
    ("mine", "theirs", "crossed"),
    [
        pytest.param({}, {}, True, id="buy limit at the working sell's limit"),
        pytest.param({"limit_price": 150.01}, {}, True, id="buy limit above the sell's limit"),
        pytest.param({"limit_price": 149.99}, {}, False, id="buy limit below the sell's limit"),
        pytest.param({"side": "sell", "limit_price": 150.0}, {"side": "buy"}, True,
                     id="sell limit at the working buy's limit"),
        pytest.param({"side": "sell", "limit_price": 150.01}, {"side": "buy"}, False,
                     id="sell limit above the working buy's limit"),
        pytest.param({"order_type": "market", "limit_price": None}, {"limit_price": 999.0}, True,
                     id="market buy against any working sell limit"),
        pytest.param({"limit_price": 1.0}, {"order_type": "market", "limit_price": None}, False,
                     id="working market order: takes liquidity, rests at no price"),
        pytest.param({"order_type": "market", "limit_price": None},
                     {"order_type": "market", "limit_price": None}, False,
                     id="two market orders: neither rests"),
        pytest.param({}, {"order_type": "stop", "limit_price": None, "stop_price": 140.0}, False,
                     id="working stop: not in the book"),
        pytest.param({"order_type": "stop", "limit_price": None, "stop_price": 160.0}, {}, False,
                     id="stop order: not in the book"),
        pytest.param({}, {"side": "buy"}, False, id="same side"),
        pytest.param({}, {"symbol": "AAPL.B"}, False, id="another symbol"),
        pytest.param({}, {"quantity": 0.0}, False, id="nothing left of the working order"),
    ],
)  # fmt: skip
def test_crosses_when_prices_and_sides_meet_then_true(
    mine: dict[str, Any], theirs: dict[str, Any], crossed: bool
) -> None:
    assert crosses(order(**mine), working(**theirs)) is crossed


def test_self_match_when_crossing_then_the_note_names_at_most_three_working_orders() -> None:
    book = [working(order_id=f"ORD-2026-00000{n}").model_dump() for n in range(1, 6)]

    fact = facts(order(), working_orders=book)

    assert fact["self_match"] is True
    assert fact["self_match_note"] == (
        "would cross ORD-2026-000001 (sell 100 limit 150), ORD-2026-000002 (sell 100 limit "
        "150), ORD-2026-000003 (sell 100 limit 150) and 2 more"
    )


def test_open_notional_when_orders_work_then_what_is_left_at_their_prices_plus_the_order() -> None:
    book = [
        working(side="buy", symbol="MSFT", quantity=10.0, limit_price=400.0, price=400.0),
        working(symbol="IBM", order_type="market", limit_price=None, price=200.0, quantity=5.0),
    ]

    fact = facts(order(), working_orders=[w.model_dump() for w in book])

    assert fact["open_notional_after"] == 15_000.0 + 4_000.0 + 1_000.0


def test_open_notional_when_a_working_order_has_no_price_then_missing() -> None:
    book = [working(symbol="IBM", order_type="market", limit_price=None, price=None)]

    fact = facts(order(), working_orders=[w.model_dump() for w in book])

    assert "open_notional_after" not in fact
    assert fact["day_notional_after"] == 15_000.0


def test_gross_exposure_when_holdings_then_sizes_at_marks_and_the_symbol_at_the_order_price() -> (
    None
):
    fact = facts(
        order(side="sell", quantity=50.0),
        positions={"default:AAPL": 20.0, "MSFT": -10.0, "other:IBM": 1000.0},
        marks={"AAPL": 1.0, "MSFT": 400.0},
    )

    # AAPL 20 - 50 = -30 at 150; MSFT 10 at 400; another account's IBM does not count
    assert fact["gross_exposure_after"] == 30 * 150.0 + 10 * 400.0


def test_gross_exposure_when_a_holding_has_no_mark_then_missing() -> None:
    fact = facts(order(), positions={"MSFT": 10.0})

    assert "gross_exposure_after" not in fact


def test_day_notional_when_executed_today_then_added_to_the_order() -> None:
    fact = facts(order(), executed_notional_today=1_000.5)

    assert (fact["executed_notional_today"], fact["day_notional_after"]) == (1_000.5, 16_000.5)


@pytest.mark.parametrize(
    ("side", "quote", "distance"),
    [
        ("buy", {"bid": 149.9, "ask": 150.1, "last": 150.0}, 0.1 / 150.0 * 10_000),
        ("sell", {"bid": 140.0, "last": 150.0}, 10 / 150.0 * 10_000),
        ("sell", {"ask": 150.1, "last": 150.0}, None),
    ],
)
def test_touch_distance_when_market_then_its_side_of_the_book_from_the_reference(
    side: str, quote: dict[str, float], distance: float | None
) -> None:
    short = {"short_sale": True, "locate_id": "L-1"} if side == "sell" else {}
    request = order(side=side, order_type="market", limit_price=None, context={"quote": quote})

    fact = facts(request.model_copy(update=short))

    assert fact.get("touch_distance_bps") == (pytest.approx(distance) if distance else None)


def test_touch_distance_when_a_limit_order_then_absent() -> None:
    assert "touch_distance_bps" not in facts(order())


def test_short_sale_facts_when_marked_with_a_locate_then_both_present() -> None:
    fact = facts(order(side="sell", short_sale=True, locate_id="LOC-7"))

    assert (fact["short_sale"], fact["locate_id"]) == (True, "LOC-7")
    assert "locate_id" not in facts(order(side="sell"))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"short_sale": True}, "short_sale"),
        ({"locate_id": "LOC-1"}, "locate_id"),
        ({"side": "sell", "locate_id": "LOC 1"}, "locate_id"),
        ({"side": "sell", "locate_id": "L" * 65}, "locate_id"),
        ({"side": "sell", "short_sale": "true"}, "short_sale"),
    ],
)
def test_order_when_short_sale_fields_are_bad_then_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        order(**changes)

    assert [e["loc"] for e in caught.value.errors()] == [(field,)]
