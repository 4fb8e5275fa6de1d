"""What the `oms_fix` adapter books from ExecutionReports (adapters/fix_orders.py):
each ExecID once, CumQty guarding the lifecycle (a duplicate under any ExecID
is told to the gateway as one, a missed execution is booked from CumQty, an
overfill is booked as reported for the gateway to name), OrdStatus mapped,
and the memory read back from the journal as it was."""

from __future__ import annotations

from datetime import UTC, datetime

import simplefix

from adapters.fix_orders import BookedOrder
from engine.broker import BrokerOrder
from engine.lifecycle import OrderStatus

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def report(**tags: str) -> simplefix.FixMessage:
    names = {"exec_type": 150, "ord_status": 39, "exec_id": 17, "last_qty": 32,
             "last_px": 31, "cum_qty": 14, "avg_px": 6, "order_id": 37, "cl": 11,
             "poss_dup": 43, "text": 58, "reason": 103}  # fmt: skip
    message = simplefix.FixMessage()
    message.append_pair(35, "8")
    for name, value in tags.items():
        message.append_pair(names[name], value)
    return message


def trade(
    exec_id: str, qty: str, cum: str, status: str = "1", px: str = "101"
) -> simplefix.FixMessage:
    return report(exec_type="F", ord_status=status, exec_id=exec_id, last_qty=qty, last_px=px,
                  cum_qty=cum, avg_px=px, order_id="O-1", cl="ord-1")  # fmt: skip


def booked(quantity: float = 10.0) -> BookedOrder:
    order = BrokerOrder("ord-1", "acct-1", "AAPL", "buy", quantity, "market")
    entry = BookedOrder.new(order, 1)
    entry.apply(report(exec_type="0", ord_status="0", order_id="O-1", cl="ord-1"), NOW, "OMS")
    return entry


def test_trades_when_reported_in_pieces_then_booked_once_each_and_filled() -> None:
    entry = booked()

    entry.apply(trade("X1", "4", "4"), NOW, "OMS")
    entry.apply(trade("X2", "6.0", "10.0", "2"), NOW, "OMS")
    ack = entry.ack()

    assert (ack.status, ack.filled_quantity, ack.broker_order_id) == (
        OrderStatus.FILLED,
        10.0,
        "O-1",
    )
    assert [(f.execution_id, f.quantity) for f in ack.fills] == [("X1", 4.0), ("X2", 6.0)]


def test_same_exec_id_again_when_not_a_possdup_then_told_once_as_a_duplicate() -> None:
    entry = booked()
    entry.apply(trade("X1", "10", "10", "2"), NOW, "OMS")

    entry.apply(trade("X1", "10", "10", "2"), NOW, "OMS")
    told = entry.ack(consume=True)

    assert [f.execution_id for f in told.fills] == ["X1", "X1"]  # the gateway names it
    assert told.filled_quantity == 10.0
    assert [f.execution_id for f in entry.ack().fills] == ["X1"]  # told once


def test_same_exec_id_again_when_a_possdup_replay_then_nothing() -> None:
    entry = booked()
    entry.apply(trade("X1", "10", "10", "2"), NOW, "OMS")
    replay = trade("X1", "10", "10", "2")
    replay.append_pair(43, "Y")

    assert entry.apply(replay, NOW, "OMS") is False
    assert len(entry.ack().fills) == 1


def test_new_exec_id_when_cum_qty_says_already_counted_then_not_booked_but_told() -> None:
    entry = booked()
    entry.apply(trade("X1", "10", "10", "2"), NOW, "OMS")

    entry.apply(trade("X9", "10", "10", "2"), NOW, "OMS")
    told = entry.ack(consume=True)

    assert told.filled_quantity == 10.0
    assert [f.execution_id for f in told.fills] == ["X1", "X1"]


def test_cum_qty_above_what_was_booked_when_an_execution_was_missed_then_the_rest_is_booked() -> (
    None
):
    entry = booked()
    entry.apply(trade("X1", "4", "4", px="100"), NOW, "OMS")

    entry.apply(report(exec_type="I", ord_status="2", cum_qty="10", avg_px="100.6",
                       order_id="O-1", cl="ord-1"), NOW, "OMS")  # fmt: skip
    ack = entry.ack()

    assert ack.status is OrderStatus.FILLED
    assert [(f.execution_id, f.quantity, f.price) for f in ack.fills] == [
        ("X1", 4.0, 100.0),
        ("O-1:cum:10", 6.0, 101.0),
    ]
    assert ack.average_price == 100.6
    assert ack.detail == "CumQty 10 above the executions received (4): the rest booked from CumQty"


def test_cum_qty_above_what_was_booked_when_no_price_is_given_then_held_until_one_is() -> None:
    entry = booked()
    entry.apply(trade("X1", "4", "4", px="100"), NOW, "OMS")

    # a status without AvgPx (or 6=0) and no LastPx: nobody stated a price
    entry.apply(report(exec_type="I", ord_status="2", cum_qty="10", avg_px="0",
                       order_id="O-1", cl="ord-1"), NOW, "OMS")  # fmt: skip
    held = entry.ack()
    entry.apply(report(exec_type="I", ord_status="2", cum_qty="10", avg_px="100.6",
                       order_id="O-1", cl="ord-1"), NOW, "OMS")  # fmt: skip
    priced = entry.ack()

    assert [(f.execution_id, f.quantity, f.price) for f in held.fills] == [("X1", 4.0, 100.0)]
    assert held.status is OrderStatus.PARTIALLY_FILLED  # 39=2, but 4 of 10 booked
    assert held.detail == (
        "CumQty 10 above the executions received (4), with no AvgPx or LastPx to price "
        "the rest: not booked until a report prices it"
    )
    assert [(f.execution_id, f.quantity, f.price) for f in priced.fills] == [
        ("X1", 4.0, 100.0),
        ("O-1:cum:10", 6.0, 101.0),
    ]
    assert priced.status is OrderStatus.FILLED


def test_cum_qty_beyond_the_order_quantity_when_booked_from_cum_qty_then_all_of_it_booked() -> None:
    entry = booked(quantity=10.0)
    entry.apply(trade("X1", "10", "10", "2", px="100"), NOW, "OMS")

    entry.apply(report(exec_type="I", ord_status="2", cum_qty="12", avg_px="100",
                       order_id="O-1", cl="ord-1"), NOW, "OMS")  # fmt: skip

    # broker truth: 12 executed; the gateway names the overfill (engine/gateway/executions.py)
    assert [(f.execution_id, f.quantity) for f in entry.ack().fills] == [
        ("X1", 10.0),
        ("O-1:cum:12", 2.0),
    ]


def test_cum_qty_below_what_was_booked_when_reported_then_told_once_as_an_anomaly() -> None:
    entry = booked()
    entry.apply(trade("X1", "4", "4"), NOW, "OMS")
    entry.apply(trade("X2", "4", "8"), NOW, "OMS")
    status = report(exec_type="I", ord_status="1", cum_qty="4", order_id="O-1", cl="ord-1")

    entry.apply(status, NOW, "OMS")
    told = entry.ack(consume=True)
    entry.apply(status, NOW, "OMS")

    assert [f.execution_id for f in told.fills] == ["X1", "X2", "X2"]
    assert told.detail == "CumQty 4 below the executions booked (8)"
    assert [f.execution_id for f in entry.ack().fills] == ["X1", "X2"]


def test_fill_beyond_the_order_quantity_when_reported_then_booked_for_the_gateway_to_name() -> None:
    entry = booked(quantity=10.0)
    entry.apply(trade("X1", "10", "10", "2"), NOW, "OMS")

    entry.apply(trade("X2", "5", "15", "2"), NOW, "OMS")

    assert entry.ack().filled_quantity == 15.0  # the gateway records the overfill


def test_rejected_when_the_desk_refuses_then_blocked_with_its_words() -> None:
    order = BrokerOrder("ord-1", "acct-1", "AAPL", "buy", 10.0, "market")
    entry = BookedOrder.new(order, 1)

    entry.apply(report(exec_type="8", ord_status="8", order_id="NONE", cl="ord-1",
                       text="no market", reason="0"), NOW, "OMS")  # fmt: skip

    ack = entry.ack()
    assert (ack.status, ack.broker_order_id) == (OrderStatus.BLOCKED, "")
    assert ack.detail == "OMS rejected the order: no market (OrdRejReason 0)"


def test_journal_when_saved_and_read_back_then_the_same_order() -> None:
    entry = booked()
    entry.apply(trade("X1", "4", "4"), NOW, "OMS")
    entry.next_cl_ord_id()

    again = BookedOrder.from_json(entry.to_json())

    assert again.ack() == entry.ack()
    assert (again.chain, again.cl_ord_id) == (["ord-1", "ord-1.1"], "ord-1")
