"""What a counterparty the `oms_fix` adapter never met may report, through the
gateway (issue 11: faults, and interoperability beyond our own fake): a raw
peer (tests/unit/test_fix_counterparties.py) whose messages are built by hand
plays a desk that answers our orders, then says things our fake never says: a
fill after the cancel it confirmed, a CumQty that skips executions or goes
beyond the order, a report for a ClOrdID we never sent that carries one of our
OrderIDs, a BusinessMessageReject naming our order only by RefSeqNum, an
OrdStatus FIX 4.4 does not define. Each ends in a booking the chain shows, a
recorded `execution_anomaly`, an order blocked with `broker_api_error`, or an
order of unknown outcome that keeps the broker from new orders until it is
resolved: never a wrong booking, never a crash of the reader, never a second
NewOrderSingle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.oms_fix import OmsFixAdapter
from adapters.sql import SqlStore
from engine import Evaluator
from engine.audit import verify_chain
from engine.gateway import Actor, Gateway
from engine.lifecycle import OrderStatus
from engine.ports import Controls, Writer
from tests.conftest import POLICIES, FixedClock, _load_policies_once, build_order
from tests.unit.test_fix_counterparties import RawPeer, eventually, tag

TRADER = Actor.of("t-1", "trader")
NAME = "oms_fix-paper"
PRICE = "150.25"


@dataclass
class ScriptedDesk:
    """Answers D with an ER New (37=DESK-n), F with an ER Cancelled, H with the
    order's state as the desk holds it; `on_order` replaces the answer to a D."""

    orders: dict[str, dict[str, str]] = field(default_factory=dict)  # by ClOrdID
    on_order: Any = None
    on_status: Any = None

    def __call__(self, peer: RawPeer, message: Any) -> None:
        kind = message.get(35)
        cl = tag(message, 11) or ""
        if kind == b"D":
            if self.on_order is not None:
                self.on_order(peer, message)
                return
            desk_id = f"DESK-{len(self.orders) + 1}"
            self.orders[cl] = {"37": desk_id, "39": "0", "14": "0", "6": "0",
                               "38": tag(message, 38) or "0"}  # fmt: skip
            peer.send("8", self.report(cl, "0", "E-NEW-" + desk_id))
        elif kind == b"F":
            orig = tag(message, 41) or ""
            self.orders[orig]["39"] = "4"
            peer.send("8", [*self.report(orig, "4", f"E-CXL-{orig}")[:-1], (11, cl), (41, orig)])
        elif kind == b"H":
            if self.on_status is not None:
                self.on_status(peer, message)
                return
            if cl not in self.orders:
                peer.send("8", [(37, "NONE"), (11, cl), (17, "E-UNKNOWN"), (150, "I"),
                                (39, "8"), (103, "5"), (55, "AAPL"), (54, "1"), (151, "0"),
                                (14, "0"), (6, "0"), (58, "unknown order")])  # fmt: skip
                return
            peer.send("8", [*self.report(cl, "I", f"E-STATUS-{peer.seq}"),
                            (790, tag(message, 790) or "")])  # fmt: skip

    def report(self, cl: str, exec_type: str, exec_id: str) -> list[tuple[int, str]]:
        order = self.orders[cl]
        if exec_type in ("0", "4"):
            order["39"] = exec_type
        leaves = "0" if order["39"] in ("2", "4") else str(float(order["38"]) - float(order["14"]))
        return [(37, order["37"]), (17, exec_id), (150, exec_type), (39, order["39"]),
                (55, "AAPL"), (54, "1"), (38, order["38"]), (151, leaves), (14, order["14"]),
                (6, order["6"]), (11, cl)]  # fmt: skip


@dataclass
class Bench:
    peer: RawPeer
    desk: ScriptedDesk
    adapter: OmsFixAdapter
    gateway: Gateway
    store: SqlStore
    clock: FixedClock

    def submit(self, cid: str, **changes: Any) -> dict[str, Any]:
        return self.gateway.submit(build_order(cid, self.clock(), **changes), TRADER).record

    def stored(self, order_id: str) -> Any:
        return self.store.order(order_id)

    def fills(self, order_id: str) -> list[tuple[str, float, float]]:
        found = self.store.transact(lambda w: w.fills(order_id))
        return [(f.execution_id, f.quantity, f.price) for f in found]

    def anomalies(self) -> list[str]:
        return [r["anomaly"] for r in self.store.audit_records()
                if r.get("kind") == "execution_anomaly"]  # fmt: skip

    def last_record(self, order_id: str) -> dict[str, Any]:
        return [r for r in self.store.audit_records() if r.get("order_id") == order_id
                and not r.get("kind")][-1]  # fmt: skip

    def new_orders(self, cl: str) -> int:
        return len([m for m in self.peer.of_type("D") if tag(m, 11) == cl])

    def send_report(self, fields: list[tuple[int, str]]) -> None:
        self.peer.send("8", fields)

    def reader_alive(self, test_id: str) -> None:
        self.peer.send("1", [(112, test_id)])
        eventually(lambda: any(tag(m, 112) == test_id for m in self.peer.of_type("0")))


@pytest.fixture
def bench(tmp_path: Path, clock: FixedClock) -> Iterator[Bench]:
    peer = RawPeer()
    desk = ScriptedDesk()
    peer.on_message = desk
    store = SqlStore(f"sqlite:///{tmp_path / 'apex.db'}")
    store.migrate()
    adapter = OmsFixAdapter(host="127.0.0.1", port=peer.port, sender_comp_id="APEX",
                            target_comp_id="OMS", clock=clock, name=NAME,
                            journal=store.journal(NAME), session_log=store.session_log(NAME),
                            request_timeout_s=0.5, reconnect_min_s=30)  # fmt: skip
    gateway = Gateway(
        store, Evaluator(_load_policies_once(POLICIES), clock), {"paper": adapter}, clock
    )
    adapter.subscribe(gateway.report)
    gateway.recover()

    def to_paper(w: Writer) -> None:
        w.set_controls(Controls("paper", {}), clock())

    store.transact(to_paper)
    try:
        yield Bench(peer, desk, adapter, gateway, store, clock)
        assert verify_chain(list(store.audit_records())).ok
    finally:
        adapter.close()
        peer.close()
        store.close()


def resting(bench: Bench, cid: str = "c-1") -> str:
    record = bench.submit(cid, limit_price=150.00)
    assert record["order_status"] == "accepted", record
    return str(record["order_id"])


def trade(bench: Bench, cl: str, exec_id: str, last_qty: str, cum: str, status: str,
          avg: str = PRICE, **extra: str) -> list[tuple[int, str]]:  # fmt: skip
    order = bench.desk.orders[cl]
    leaves = str(max(float(order["38"]) - float(cum), 0.0))
    fields = [(37, order["37"]), (11, cl), (17, exec_id), (150, "F"), (39, status),
              (55, "AAPL"), (54, "1"), (38, order["38"]), (32, last_qty), (31, PRICE),
              (151, leaves), (14, cum), (6, avg)]  # fmt: skip
    return fields + [(int(k.removeprefix("t")), v) for k, v in extra.items()]


# --- fills the gateway did not expect ---------------------------------------------------


def test_fill_after_the_cancel_it_confirmed_then_booked_as_broker_truth_and_an_anomaly(
    bench: Bench,
) -> None:
    order_id = resting(bench)
    cancelled = bench.gateway.cancel(order_id, TRADER)
    assert cancelled.record["order_status"] == "cancelled"

    bench.send_report(trade(bench, order_id, "E-LATE", "100", "100", "2"))
    eventually(lambda: "fill_after_cancel" in bench.anomalies())

    assert bench.fills(order_id) == [("E-LATE", 100.0, 150.25)]
    assert bench.store.positions("default") == {"AAPL": 100.0}
    states = bench.gateway.trading_states()
    assert "reducing" in str(states)  # the account may only reduce until compliance looks
    assert bench.new_orders(order_id) == 1


def test_cum_qty_skipping_executions_on_a_trade_then_the_rest_booked_and_the_chain_says_so(
    bench: Bench,
) -> None:
    order_id = resting(bench)

    # one execution of 10 reported, CumQty says 30: 20 were never reported to us
    bench.send_report(trade(bench, order_id, "E-1", "10", "30", "1"))
    eventually(lambda: bench.stored(order_id).filled_quantity == 30.0)

    assert bench.fills(order_id) == [("E-1", 10.0, 150.25), ("DESK-1:cum:30", 20.0, 150.25)]
    record = bench.last_record(order_id)
    assert record["order_status"] == "partially_filled"
    assert record["broker_response"]["filled_quantity"] == 30.0
    assert record["broker_response"]["detail"] == (
        "CumQty 30 above the executions received (10): the rest booked from CumQty"
    )
    # booked as the broker holds it, the average its AvgPx: not an anomaly (docs/oms-fix.md)
    assert bench.anomalies() == []
    assert bench.store.positions("default") == {"AAPL": 30.0}


def test_cum_qty_beyond_the_order_quantity_then_an_overfill_anomaly(bench: Bench) -> None:
    order_id = resting(bench)
    bench.send_report(trade(bench, order_id, "E-1", "100", "100", "2"))
    eventually(lambda: bench.stored(order_id).status == OrderStatus.FILLED)

    # a status saying 120 were executed on an order of 100
    bench.send_report([(37, "DESK-1"), (11, order_id), (17, "E-S"), (150, "I"), (39, "2"),
                       (55, "AAPL"), (54, "1"), (151, "0"), (14, "120"), (6, PRICE)])  # fmt: skip
    eventually(lambda: "overfill" in bench.anomalies())

    assert bench.fills(order_id) == [("E-1", 100.0, 150.25), ("DESK-1:cum:120", 20.0, 150.25)]
    assert bench.store.positions("default") == {"AAPL": 120.0}  # broker truth, named
    assert "reducing" in str(bench.gateway.trading_states())


def test_cum_qty_without_any_price_then_nothing_booked_at_a_made_up_price(bench: Bench) -> None:
    order_id = resting(bench)

    bench.send_report([(37, "DESK-1"), (11, order_id), (17, "E-S"), (150, "I"), (39, "1"),
                       (55, "AAPL"), (54, "1"), (151, "60"), (14, "40"), (6, "0")])  # fmt: skip
    eventually(lambda: "no AvgPx or LastPx" in str(bench.last_record(order_id)))
    held = bench.fills(order_id)
    bench.send_report([(37, "DESK-1"), (11, order_id), (17, "E-S2"), (150, "I"), (39, "1"),
                       (55, "AAPL"), (54, "1"), (151, "60"), (14, "40"), (6, "150.5")])  # fmt: skip
    eventually(lambda: bench.stored(order_id).filled_quantity == 40.0)

    assert held == []  # never a fill at price 0
    assert bench.fills(order_id) == [("DESK-1:cum:40", 40.0, 150.5)]
    assert bench.anomalies() == []


# --- reports that are not about our orders ------------------------------------------------


def test_report_for_a_cl_ord_id_we_never_sent_carrying_our_order_id_then_never_booked_into_ours(
    bench: Bench,
) -> None:
    order_id = resting(bench)
    received = len(bench.store.session_log(NAME).tail(1000))

    # another firm's order (or the desk's own), with one of OUR OrderIDs by mistake
    bench.send_report([(37, "DESK-1"), (11, "SOMEONE-ELSE-7"), (17, "E-X"), (150, "F"),
                       (39, "2"), (55, "AAPL"), (54, "1"), (32, "100"), (31, PRICE),
                       (151, "0"), (14, "100"), (6, PRICE)])  # fmt: skip
    # and one naming no ClOrdID and an OrderID that is nobody's of ours
    bench.send_report([(37, "DESK-99"), (17, "E-Y"), (150, "F"), (39, "2"), (55, "AAPL"),
                       (54, "1"), (32, "5"), (31, PRICE), (151, "0"), (14, "5"),
                       (6, PRICE)])  # fmt: skip
    bench.reader_alive("after-foreign")

    assert bench.adapter.foreign_reports == 2
    assert bench.fills(order_id) == []
    assert bench.stored(order_id).status == OrderStatus.ACCEPTED
    assert bench.store.positions("default") == {}
    # what came is kept as it came, in the FIX message log (`apex-oms brokers fix-log`)
    logged = [m.message for m in bench.store.session_log(NAME).tail(1000)[received:]
              if m.direction == "in" and m.msg_type == "8"]  # fmt: skip
    assert [b"11=SOMEONE-ELSE-7" in m for m in logged] == [True, False]
    assert bench.peer.of_type("3") == []  # well formed: nothing to reject


def test_business_reject_naming_our_order_only_by_ref_seq_num_then_blocked_with_its_words(
    bench: Bench,
) -> None:
    def refuse(peer: RawPeer, message: Any) -> None:
        peer.send("j", [(45, tag(message, 34) or ""), (372, "D"), (380, "2"),
                        (58, "unsupported security AAPL on this session")])  # fmt: skip

    bench.desk.on_order = refuse

    record = bench.submit("c-1", limit_price=150.00)

    assert record["order_status"] == "blocked"
    assert record["fail_closed_triggers"] == ["broker_api_error"]
    assert "unsupported security AAPL on this session" in record["broker_response"]["detail"]
    assert bench.new_orders(record["order_id"]) == 1
    assert bench.gateway.readiness() == []


def test_ord_status_fix_does_not_define_then_rejected_the_outcome_unknown_until_resolved(
    bench: Bench,
) -> None:
    strange: dict[str, str] = {"39": "Z"}

    def answer(peer: RawPeer, message: Any) -> None:
        cl = tag(message, 11) or ""
        bench.desk.orders[cl] = {"37": "DESK-1", "39": "0", "14": "0", "6": "0", "38": "100"}
        peer.send("8", [(37, "DESK-1"), (11, cl), (17, "E-NEW"), (150, "0"),
                        (39, strange["39"]), (55, "AAPL"), (54, "1"), (151, "100"),
                        (14, "0"), (6, "0")])  # fmt: skip

    def status(peer: RawPeer, message: Any) -> None:
        cl = tag(message, 11) or ""
        peer.send("8", [(37, "DESK-1"), (11, cl), (17, f"E-H{peer.seq}"), (150, "I"),
                        (39, strange["39"]), (55, "AAPL"), (54, "1"), (151, "100"),
                        (14, "0"), (6, "0"), (790, tag(message, 790) or "")])  # fmt: skip

    bench.desk.on_order, bench.desk.on_status = answer, status

    record = bench.submit("c-1", limit_price=150.00)
    unready = bench.gateway.readiness()
    rejects = bench.peer.of_type("3")
    strange["39"] = "0"  # the counterparty mends its ways
    bench.gateway.recover(stale_after_s=0)

    # refused at the session (373=5 value out of range), never read as something else
    assert [tag(rejects[0], t) for t in (371, 372, 373)] == ["39", "8", "5"]
    assert "OrdStatus(39) value out of range" in (tag(rejects[0], 58) or "")
    assert record["order_status"] == "submitted"  # outcome unknown, and said so
    assert any("unknown" in reason for reason in unready), unready
    assert bench.stored(record["order_id"]).status == OrderStatus.ACCEPTED
    assert bench.gateway.readiness() == []
    assert bench.new_orders(record["order_id"]) == 1
    assert bench.anomalies() == []
