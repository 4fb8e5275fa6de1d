"""Short sales over FIX 4.4 (Reg SHO; issue 12 marks them, the `oms_fix` adapter
sends them): Side 54=5, the locate as LocateReqd 114=N and a Locate/Lending
Firm party (453=1, 448 the locate id, 447=D, 452=8), or 114=Y (the broker is to
locate) without one; the same Side on cancel and status, the marks kept in the
journal across a restart, and against the fake acceptor the order works as a
sale."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.base import MemoryJournal, MemorySessionLog
from adapters.oms_fix import OmsFixAdapter
from engine.broker import BrokerOrder
from engine.lifecycle import OrderStatus
from tests.conftest import FixedClock
from tests.fakes.fix_acceptor import FakeFixAcceptor


def tag(message: Any, number: int) -> str | None:
    value = message.get(number)
    return None if value is None else value.decode()


def short_sale(order_id: str, locate_id: str | None) -> BrokerOrder:
    return BrokerOrder(order_id, "acct-1", "AAPL", "sell", 10.0, "limit", limit_price=500.0,
                       short_sale=True, locate_id=locate_id)  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeFixAcceptor]:
    with FakeFixAcceptor(sender_comp_id="OMS", target_comp_id="APEX") as acceptor:
        acceptor.set_quote("AAPL", bid=99.0, ask=101.0, last=100.0)
        yield acceptor


@pytest.fixture
def journal() -> MemoryJournal:
    return MemoryJournal()


@pytest.fixture
def session_log() -> MemorySessionLog:
    return MemorySessionLog()


def adapter_on(
    fake: FakeFixAcceptor, journal: MemoryJournal, log: MemorySessionLog
) -> OmsFixAdapter:
    return OmsFixAdapter(host=fake.host, port=fake.port, sender_comp_id="APEX",
                         target_comp_id="OMS", clock=FixedClock(), journal=journal,
                         session_log=log, request_timeout_s=3.0, reconnect_min_s=0.05)  # fmt: skip


def sent(fake: FakeFixAcceptor, msg_type: str) -> list[Any]:
    return [m for m in fake.received if tag(m, 35) == msg_type]


def test_short_sale_with_a_locate_when_sent_then_side_5_locate_party_and_it_rests_as_a_sale(
    fake: FakeFixAcceptor, journal: MemoryJournal, session_log: MemorySessionLog
) -> None:
    adapter = adapter_on(fake, journal, session_log)
    try:
        ack = adapter.submit(short_sale("short-1", "LOC-20261130-7"))
    finally:
        adapter.close()

    assert ack.status == OrderStatus.ACCEPTED
    order = sent(fake, "D")[0]
    assert [tag(order, t) for t in (54, 114, 453, 448, 447, 452)] == [
        "5", "N", "1", "LOC-20261130-7", "D", "8",
    ]  # fmt: skip
    assert fake.orders()[ack.broker_order_id]["side"] == "5"


def test_short_sale_without_a_locate_when_sent_then_the_broker_is_asked_to_locate(
    fake: FakeFixAcceptor, journal: MemoryJournal, session_log: MemorySessionLog
) -> None:
    adapter = adapter_on(fake, journal, session_log)
    try:
        adapter.submit(short_sale("short-2", None))
    finally:
        adapter.close()

    order = sent(fake, "D")[0]
    assert [tag(order, t) for t in (54, 114, 453, 448)] == ["5", "Y", None, None]


def test_plain_sale_when_sent_then_side_2_and_no_locate_tags(
    fake: FakeFixAcceptor, journal: MemoryJournal, session_log: MemorySessionLog
) -> None:
    adapter = adapter_on(fake, journal, session_log)
    try:
        adapter.submit(BrokerOrder("sell-1", "acct-1", "AAPL", "sell", 10.0, "limit",
                                   limit_price=500.0))  # fmt: skip
    finally:
        adapter.close()

    order = sent(fake, "D")[0]
    assert [tag(order, t) for t in (54, 114, 453)] == ["2", None, None]


def test_short_sale_after_a_restart_when_cancelled_then_the_same_side_5_and_cancelled(
    fake: FakeFixAcceptor, journal: MemoryJournal, session_log: MemorySessionLog
) -> None:
    first = adapter_on(fake, journal, session_log)
    try:
        ack = first.submit(short_sale("short-3", "LOC-1"))
    finally:
        first.close()
    again = adapter_on(fake, journal, session_log)  # the order read back from the journal
    try:
        cancelled = again.cancel("short-3", ack.broker_order_id)
    finally:
        again.close()

    assert cancelled.status == OrderStatus.CANCELLED
    assert [tag(m, 54) for m in sent(fake, "F")] == ["5"]
    assert {tag(m, 54) for m in sent(fake, "H")} == {"5"}
