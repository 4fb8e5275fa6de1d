"""The FIX session of the `oms_fix` adapter against the fake acceptor (issue 11,
done when): a sequence gap is asked for and recovered, a ResendRequest from the
counterparty is answered with gap fills and possible-duplicate resends that are
not executed twice, a silent counterparty is detected (TestRequest) and the
session dropped and made again, a restart in the middle of a session resumes
with the right sequence numbers (kept in the store), decimal quantities are
read, and a counterparty's Logout is answered."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.base import BrokerConfigError, MemoryJournal, MemorySessionLog
from adapters.oms_fix import OmsFixAdapter, from_config
from adapters.sql import SqlStore
from engine.broker import BrokerOrder, SessionLog
from engine.lifecycle import OrderStatus
from tests.conftest import FixedClock
from tests.fakes.fix_acceptor import FakeFixAcceptor, ResendAsk, SequenceGap, Silence

NAME = "oms_fix-paper"


def eventually(check: Callable[[], bool], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.02)


def market_buy(order_id: str, quantity: float = 10.0) -> BrokerOrder:
    return BrokerOrder(order_id, "acct-1", "AAPL", "buy", quantity, "market")


def resting_buy(order_id: str) -> BrokerOrder:
    return BrokerOrder(order_id, "acct-1", "AAPL", "buy", 10.0, "limit", limit_price=50.0)


def tag(message: Any, number: int) -> str | None:
    value = message.get(number)
    return None if value is None else value.decode()


@pytest.fixture
def fake() -> Iterator[FakeFixAcceptor]:
    with FakeFixAcceptor(sender_comp_id="OMS", target_comp_id="APEX") as acceptor:
        acceptor.set_quote("AAPL", bid=99.0, ask=101.0, last=100.0)
        yield acceptor


class Adapters:
    """Adapters on one fake, one journal and one session log (a second is a restart)."""

    def __init__(self, fake: FakeFixAcceptor, session_log: SessionLog | None = None) -> None:
        self.fake = fake
        self.journal = MemoryJournal()
        self.session_log = session_log or MemorySessionLog()
        self.made: list[OmsFixAdapter] = []

    def new(self, **options: Any) -> OmsFixAdapter:
        settings: dict[str, Any] = {
            "request_timeout_s": 2.0,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            "heartbeat_s": 5,
        }
        settings.update(options)
        adapter = OmsFixAdapter(
            host=self.fake.host,
            port=self.fake.port,
            sender_comp_id="APEX",
            target_comp_id="OMS",
            clock=FixedClock(),
            name=NAME,
            journal=self.journal,
            session_log=self.session_log,
            **settings,
        )
        self.made.append(adapter)
        return adapter

    def close(self) -> None:
        for adapter in self.made:
            adapter.close()


@pytest.fixture
def adapters(fake: FakeFixAcceptor) -> Iterator[Adapters]:
    made = Adapters(fake)
    try:
        yield made
    finally:
        made.close()


# --- logon, sequence numbers ----------------------------------------------------------


def test_logon_when_connected_then_header_order_heartbeat_and_sending_time_with_millis(
    fake: FakeFixAcceptor, adapters: Adapters
) -> None:
    adapter = adapters.new(heartbeat_s=7)

    assert adapter.check_credentials() is True

    logon = next(m for m in fake.received if tag(m, 35) == "A")
    assert [t for t, _ in list(logon)[:7]] == [8, 9, 35, 49, 56, 34, 52]
    assert (tag(logon, 98), tag(logon, 108), tag(logon, 49), tag(logon, 56)) == (
        "0",
        "7",
        "APEX",
        "OMS",
    )
    sending_time = tag(logon, 52) or ""
    assert len(sending_time) == len("20261130-15:00:00.000") and sending_time[17] == "."


def test_sequence_gap_when_the_counterparty_skips_then_resend_asked_and_nothing_lost(
    fake: FakeFixAcceptor, adapters: Adapters
) -> None:
    adapter = adapters.new()
    adapter.check_credentials()
    fake.inject(SequenceGap(skip=3))

    ack = adapter.submit(market_buy("ord-1"))
    eventually(
        lambda: adapter.order_status("ord-1", ack.broker_order_id).status is OrderStatus.FILLED
    )

    asks = [m for m in fake.received if tag(m, 35) == "2"]
    assert len(asks) == 1
    assert tag(asks[0], 16) == "0"
    assert adapter.positions("acct-1") == {"AAPL": 10.0}
    assert fake.new_orders["ord-1"] == 1
    # every number the counterparty used came in, or was gap-filled
    assert adapter.session_log.sequences()[1] == fake.next_out


def test_resend_request_from_the_peer_when_answered_then_gap_fills_and_possdup_run_once(
    fake: FakeFixAcceptor, adapters: Adapters
) -> None:
    adapter = adapters.new()
    filled = adapter.submit(market_buy("ord-1"))
    fake.inject(ResendAsk(begin=1))
    fake.wait_for(lambda: any(tag(m, 43) == "Y" and tag(m, 35) == "D" for m in fake.received))
    fake.wait_for(lambda: fake.next_in == adapter.session_log.sequences()[0])

    resent = [m for m in fake.received if tag(m, 43) == "Y"]
    orders = [m for m in resent if tag(m, 35) == "D"]
    gap_fills = [m for m in resent if tag(m, 35) == "4"]
    assert [tag(m, 11) for m in orders] == ["ord-1"]
    assert tag(orders[0], 122) is not None
    assert tag(orders[0], 34) == "2"  # its original number
    assert gap_fills and all(tag(m, 123) == "Y" and tag(m, 36) for m in gap_fills)
    assert fake.new_orders["ord-1"] == 1
    assert adapter.find("ord-1") == filled


def test_message_seq_too_low_when_the_counterparty_goes_back_then_logout_and_disconnect(
    fake: FakeFixAcceptor, adapters: Adapters
) -> None:
    log = MemorySessionLog()
    log.reset(1, 500)  # we expect far more than the counterparty will send
    adapter = Adapters(fake, log).new()
    adapters.made.append(adapter)

    assert adapter.check_credentials() is False
    assert "MsgSeqNum too low" in (adapter.connection_problem() or "")
    fake.wait_for(lambda: any(tag(m, 35) == "5" for m in fake.received))
    logout = next(m for m in fake.received if tag(m, 35) == "5")
    assert tag(logout, 58) == "MsgSeqNum too low, expecting 500 but received 1"


# --- heartbeats ------------------------------------------------------------------------


def test_heartbeat_timeout_when_the_counterparty_goes_silent_then_dropped_and_reconnected(
    fake: FakeFixAcceptor, adapters: Adapters
) -> None:
    adapter = adapters.new(heartbeat_s=1)
    adapter.check_credentials()
    fake.inject(Silence())

    eventually(lambda: "TestRequest" in (adapter.connection_problem() or ""))
    eventually(lambda: adapter.connection_problem() is None and adapter.connections == 2)

    assert any(tag(m, 35) == "1" for m in fake.received)
    assert adapter.submit(market_buy("ord-1")).status is OrderStatus.FILLED


# --- restart ---------------------------------------------------------------------------


def test_restart_in_the_middle_of_a_session_when_the_store_keeps_it_then_same_numbers_resumed(
    store_url: str, fake: FakeFixAcceptor
) -> None:
    store = SqlStore(store_url)
    store.migrate()
    made = Adapters(fake, store.session_log(NAME))
    made.journal = store.journal(NAME)  # type: ignore[assignment]
    try:
        before = made.new()
        resting = before.submit(resting_buy("ord-1"))
        before.close()  # logs out; the store keeps the numbers
        sent_before = len(fake.received)

        after = made.new()
        fake.fill("ord-1", price=49.0)
        eventually(
            lambda: (
                after.order_status("ord-1", resting.broker_order_id).status is OrderStatus.FILLED
            )
        )

        assert after.connections == 1
        assert fake.logons == 2
        logon = next(m for m in fake.received[sent_before:] if tag(m, 35) == "A")
        next_out, next_in = store.session_log(NAME).sequences()
        assert int(tag(logon, 34) or 0) > 1  # not back to 1: the fake would log it out
        assert (next_out, next_in) == (fake.next_in, fake.next_out)
        assert not any("too low" in (tag(m, 58) or "") for m in fake.sent)
    finally:
        made.close()
        store.close()


def test_restart_when_the_journal_lost_the_order_then_found_from_the_fix_message_log(
    fake: FakeFixAcceptor,
) -> None:
    log = MemorySessionLog()
    first = Adapters(fake, log)
    second = Adapters(fake, log)  # a new journal: the entry never committed
    try:
        submitted = first.new().submit(market_buy("ord-1"))
        first.close()

        again = second.new()

        found = again.find("ord-1")
        refused = again.submit(market_buy("ord-1"))
        assert found is not None
        assert (found.status, found.broker_order_id, found.filled_quantity) == (
            OrderStatus.FILLED,
            submitted.broker_order_id,
            10.0,
        )
        assert refused.status is OrderStatus.BLOCKED
        assert fake.new_orders["ord-1"] == 1
    finally:
        second.close()


# --- the application layer --------------------------------------------------------------


def test_decimal_quantities_when_the_counterparty_sends_them_then_read_and_ours_sent_whole() -> (
    None
):
    with FakeFixAcceptor(decimal_quantities=True) as fake:
        fake.set_quote("AAPL", bid=99.0, ask=101.0, last=100.0)
        made = Adapters(fake)
        try:
            adapter = made.new()
            ack = adapter.submit(market_buy("ord-1", quantity=10.0))
            half = adapter.submit(market_buy("ord-2", quantity=2.5))
        finally:
            made.close()

    assert (ack.status, ack.filled_quantity) == (OrderStatus.FILLED, 10.0)
    assert (half.status, half.filled_quantity) == (OrderStatus.FILLED, 2.5)
    sent = {tag(m, 11): tag(m, 38) for m in fake.received if tag(m, 35) == "D"}
    assert sent == {"ord-1": "10", "ord-2": "2.5"}
    assert any(tag(m, 14) == "10.0" for m in fake.sent)


def test_logout_from_the_counterparty_when_received_then_answered_and_session_made_again(
    fake: FakeFixAcceptor, adapters: Adapters
) -> None:
    adapter = adapters.new()
    adapter.check_credentials()

    fake.logout("end of day")
    eventually(lambda: adapter.connections == 2 and adapter.connection_problem() is None)

    answers = [m for m in fake.received if tag(m, 35) == "5"]
    assert len(answers) == 1


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"port": 9878, "sender_comp_id": "A", "target_comp_id": "B"}, "paper.host"),
        ({"host": "h", "port": "S3CRET", "sender_comp_id": "A", "target_comp_id": "B"},
         "paper.port"),
        ({"host": "h", "port": 9878, "target_comp_id": "B"}, "paper.sender_comp_id"),
        ({"host": "h", "port": 9878, "sender_comp_id": "S3CRET\x01", "target_comp_id": "B"},
         "paper.sender_comp_id"),
        ({"host": "h", "port": 9878, "sender_comp_id": "A", "target_comp_id": "B",
          "heartbeat_s": 0.5}, "paper.heartbeat_s"),
        ({"host": "h", "port": 9878, "sender_comp_id": "A", "target_comp_id": "B",
          "mass_status": "S3CRET"}, "paper.mass_status"),
        ({"host": "h", "port": 9878, "sender_comp_id": "A", "target_comp_id": "B",
          "password": "S3CRET"}, "paper.password"),
    ],
    ids=["no-host", "port-text", "no-sender", "sender-with-soh", "heartbeat-under-1s",
         "mass-status-text", "unknown-key"],
)  # fmt: skip
def test_from_config_when_a_field_is_wrong_then_names_it(
    section: dict[str, Any], field: str
) -> None:
    with pytest.raises(BrokerConfigError) as caught:
        from_config({"adapter": "oms_fix", **section}, {}, role="paper", clock=FixedClock())

    assert caught.value.field == field
    assert "S3CRET" not in str(caught.value)  # the kind of a value, never the value


def test_from_config_when_complete_then_the_keys_of_spec_section_11_and_nothing_connects() -> None:
    adapter = from_config(
        {"adapter": "oms_fix", "host": "127.0.0.1", "port": 9, "sender_comp_id": "APEX",
         "target_comp_id": "OMS", "heartbeat_s": 10, "mass_status": True, "positions": True},
        {}, role="live", clock=FixedClock(),
    )  # fmt: skip

    assert (adapter.name, adapter.settings.heartbeat_s) == ("oms_fix-live", 10.0)
    assert (adapter.mass_status, adapter.ask_positions) == (True, True)
    assert (adapter.capabilities.paper, adapter.capabilities.live) == (True, True)
    assert adapter.capabilities.market_data is False and adapter.quote("AAPL") is None
    adapter.close()
