"""The fake FIX 4.4 acceptor, driven by a tiny raw-socket initiator written here
(nothing from `adapters/`): the session handshake and its checks, sequence
recovery both ways, the desk's answers, and each fault."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import simplefix

from tests.fakes.fix_acceptor import (
    BusinessReject,
    CancelReject,
    DisconnectMidOrder,
    DuplicateExecution,
    FakeFixAcceptor,
    FillAfterCancel,
    Garbled,
    PartialFill,
    Reject,
    ResendAsk,
    SequenceGap,
    SessionReject,
    Silence,
)

WAIT = 10.0  # generous: a loaded 2-core CI machine


def _stamp(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.strftime("%Y%m%d-%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _intact(message: simplefix.FixMessage) -> bool:
    """BodyLength and CheckSum as the initiator must check them (simplefix does not)."""
    raw = message.encode(raw=True)
    trailer = raw.rindex(b"10=")
    body = raw[raw.index(b"35=") : trailer]
    length_ok = int(_s(message, 9) or -1) == len(body)
    return length_ok and sum(raw[:trailer]) % 256 == int(_s(message, 10) or -1)


def _s(message: simplefix.FixMessage, tag: int) -> str | None:
    value = message.get(tag)
    return None if value is None else value.decode()


class Client:
    """A minimal initiator: numbers what it sends, frames what it receives."""

    def __init__(self, port: int, *, sender: str = "APEX", target: str = "OMS") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.sender, self.target = sender, target
        self.seq = 1
        self.parser = simplefix.FixParser()
        self.sent: dict[int, bytes] = {}

    def build(
        self,
        msg_type: str,
        fields: list[tuple[int, object]] = (),  # type: ignore[assignment]
        *,
        seq: int | None = None,
        poss_dup: bool = False,
        sending_time: str | None = None,
        orig: str | None = None,
    ) -> bytes:
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_pair(56, self.target, header=True)
        number = self.seq if seq is None else seq
        if seq is None:
            self.seq += 1
        m.append_pair(34, number, header=True)
        m.append_pair(52, sending_time or _stamp(), header=True)
        if poss_dup:
            m.append_pair(43, "Y", header=True)
            m.append_pair(122, orig or _stamp(datetime.now(UTC) - timedelta(seconds=1)), True)
        for tag, value in fields:
            m.append_pair(tag, value)
        data = m.encode()
        self.sent[number] = data
        return data

    def send(self, msg_type: str, fields: list[tuple[int, object]] = (), **kw: object) -> None:  # type: ignore[assignment]
        self.sock.sendall(self.build(msg_type, fields, **kw))  # type: ignore[arg-type]

    def recv(self, timeout: float = WAIT) -> simplefix.FixMessage:
        deadline = time.monotonic() + timeout
        while True:
            message = self.parser.get_message()
            if message is not None:
                return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no message from the acceptor")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the acceptor closed the connection")
            self.parser.append_buffer(data)

    def expect(self, msg_type: str, timeout: float = WAIT) -> simplefix.FixMessage:
        """The next message that is not a Heartbeat; it must be `msg_type`."""
        while True:
            message = self.recv(timeout)
            if _s(message, 35) != "0" or msg_type == "0":
                assert _s(message, 35) == msg_type, f"want 35={msg_type}, got {message}"
                return message

    def closed(self, timeout: float = WAIT) -> bool:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (TimeoutError, ConnectionError):
            return False
        return True

    def logon(self, heartbeat: int = 30, **kw: object) -> simplefix.FixMessage:
        self.send("A", [(98, 0), (108, heartbeat)], **kw)
        return self.expect("A")

    def order(self, cl_ord_id: str, side: str = "1", qty: object = 10, **extra: object) -> None:
        fields: list[tuple[int, object]] = [
            (11, cl_ord_id),
            (1, "ACC1"),
            (55, extra.pop("symbol", "AAPL")),
            (54, side),
            (60, _stamp()),
            (38, qty),
            (40, extra.pop("ord_type", "1")),
        ]
        fields += [(tag, value) for tag, value in extra.pop("tags", [])]  # type: ignore[attr-defined]
        self.send("D", fields, **extra)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[FakeFixAcceptor]:
    with FakeFixAcceptor(mass_status=True, positions=True) as acceptor:
        acceptor.set_quote("AAPL", bid=99, ask=101, last=100)
        yield acceptor


@pytest.fixture
def client(fake: FakeFixAcceptor) -> Iterator[Client]:
    c = Client(fake.port)
    c.logon()
    yield c
    c.close()


# --- session ------------------------------------------------------------------------


def test_logon_is_answered_with_the_same_heartbeat_interval(fake: FakeFixAcceptor) -> None:
    c = Client(fake.port)
    answer = c.logon(heartbeat=17)
    assert (_s(answer, 108), _s(answer, 98), _s(answer, 49), _s(answer, 56)) == (
        "17",
        "0",
        "OMS",
        "APEX",
    )
    assert (_s(answer, 34), fake.logons, fake.next_in, fake.next_out) == ("1", 1, 2, 2)
    c.close()


def test_a_first_message_that_is_not_a_logon_closes_the_connection(fake: FakeFixAcceptor) -> None:
    c = Client(fake.port)
    c.send("0")
    assert c.closed()
    assert fake.logons == 0


def test_a_second_connection_to_a_live_session_is_closed(
    fake: FakeFixAcceptor, client: Client
) -> None:
    second = Client(fake.port)
    assert second.closed()
    client.send("1", [(112, "still here")])
    assert _s(client.expect("0"), 112) == "still here"


def test_a_wrong_comp_id_is_rejected_then_logged_out(fake: FakeFixAcceptor) -> None:
    c = Client(fake.port, sender="STRANGER")
    c.send("A", [(98, 0), (108, 30)])
    reject = c.expect("3")
    assert _s(reject, 373) == "9"
    assert "CompID" in (_s(c.expect("5"), 58) or "")
    assert c.closed()


def test_heartbeats_flow_and_a_test_request_is_answered_with_its_id(client: Client) -> None:
    client.send("1", [(112, "PING-1")])
    assert _s(client.expect("0"), 112) == "PING-1"


def test_a_silent_initiator_gets_a_test_request_then_is_dropped() -> None:
    with FakeFixAcceptor() as fake:
        c = Client(fake.port)
        c.logon(heartbeat=1)
        heartbeat = c.expect("0", timeout=5)
        assert _s(heartbeat, 112) is None
        test = c.expect("1", timeout=5)
        assert (_s(test, 112) or "").startswith("TEST-")
        assert c.closed(timeout=5)
        assert fake.counts["timeouts"] == 1


def test_a_sequence_number_too_low_is_logged_out_with_the_expected_number(
    fake: FakeFixAcceptor, client: Client
) -> None:
    client.send("0")
    client.send("0")
    client.close()
    fake.wait_for(lambda: fake.conn is None)
    again = Client(fake.port)
    again.send("A", [(98, 0), (108, 30)], seq=2)
    logout = again.expect("5")
    assert _s(logout, 58) == "MsgSeqNum too low, expecting 4 but received 2"
    assert again.closed()


def test_sequence_numbers_survive_a_reconnect(fake: FakeFixAcceptor, client: Client) -> None:
    client.send("0")
    client.close()
    fake.wait_for(lambda: fake.conn is None)
    again = Client(fake.port)
    again.seq = 3
    answer = again.logon()
    assert (_s(answer, 34), fake.next_in, fake.logons) == ("2", 4, 2)


def test_reset_seq_num_flag_starts_both_sides_at_one(fake: FakeFixAcceptor, client: Client) -> None:
    client.send("0")
    client.close()
    fake.wait_for(lambda: fake.conn is None)
    again = Client(fake.port)
    again.send("A", [(98, 0), (108, 30), (141, "Y")])
    answer = again.expect("A")
    assert (_s(answer, 34), _s(answer, 141), fake.next_in, fake.next_out) == ("1", "Y", 2, 2)


def test_a_logon_ahead_of_the_expected_number_is_accepted_then_the_gap_asked_for(
    fake: FakeFixAcceptor,
) -> None:
    c = Client(fake.port)
    c.seq = 5
    c.logon()
    request = c.expect("2")
    assert (_s(request, 7), _s(request, 16)) == ("1", "0")
    c.send("4", [(123, "Y"), (36, 6)], seq=1, poss_dup=True)
    c.send("1", [(112, "caught up")])
    assert _s(c.expect("0"), 112) == "caught up"
    assert fake.next_in == 7


def test_a_sequence_reset_in_reset_mode_moves_the_expected_number(
    fake: FakeFixAcceptor, client: Client
) -> None:
    client.send("4", [(36, 20)])
    client.seq = 20
    client.send("1", [(112, "x")])
    assert _s(client.expect("0"), 112) == "x"
    assert fake.next_in == 21


def test_a_poss_dup_without_orig_sending_time_is_rejected(client: Client) -> None:
    client.sock.sendall(_without_122(client))
    reject = client.expect("3")
    assert [_s(reject, t) for t in (371, 373)] == ["122", "1"]


def _without_122(client: Client) -> bytes:
    m = simplefix.FixMessage()
    for tag, value in ((8, "FIX.4.4"), (35, "1"), (49, "APEX"), (56, "OMS")):
        m.append_pair(tag, value, header=True)
    m.append_pair(34, client.seq, header=True)
    m.append_pair(52, _stamp(), header=True)
    m.append_pair(43, "Y", header=True)
    m.append_pair(112, "x")
    client.seq += 1
    return m.encode()


def test_a_sending_time_far_off_is_rejected_and_logged_out(client: Client) -> None:
    client.send("1", [(112, "x")], sending_time=_stamp(datetime.now(UTC) - timedelta(minutes=5)))
    assert _s(client.expect("3"), 373) == "10"
    assert "SendingTime" in (_s(client.expect("5"), 58) or "")
    assert client.closed()


def test_a_gap_is_asked_for_and_closed_by_a_gap_fill(fake: FakeFixAcceptor, client: Client) -> None:
    client.seq = 5  # 2, 3, 4 never arrive
    client.order("LATE")
    request = client.expect("2")
    assert (_s(request, 7), _s(request, 16)) == ("2", "0")
    assert fake.new_orders["LATE"] == 0  # queued until the gap closes
    client.send("4", [(123, "Y"), (36, 5)], seq=2, poss_dup=True)
    assert _s(client.expect("8"), 150) == "0"
    assert fake.next_in == 6 and fake.new_orders["LATE"] == 1


def test_a_resent_order_fills_the_gap_and_executes_once(
    fake: FakeFixAcceptor, client: Client
) -> None:
    client.order("A1")  # seq 2
    client.expect("8"), client.expect("8")
    lost = client.build("D", [(11, "B2"), (55, "AAPL"), (54, 1), (60, _stamp()), (38, 5), (40, 1)])
    del lost  # seq 3 "lost on the way"
    client.order("C3")  # seq 4
    assert _s(client.expect("2"), 7) == "3"
    client.send(
        "D",
        [(11, "B2"), (55, "AAPL"), (54, 1), (60, _stamp()), (38, 5), (40, 1)],
        seq=3,
        poss_dup=True,
    )
    reports = [client.expect("8") for _ in range(4)]
    assert [_s(r, 11) for r in reports] == ["B2", "B2", "C3", "C3"]
    assert fake.new_orders == {"A1": 1, "B2": 1, "C3": 1}
    client.send("D", [(11, "A1"), (55, "AAPL"), (54, 1), (60, _stamp()), (38, 5), (40, 1)],
                seq=2, poss_dup=True)  # fmt: skip
    client.send("1", [(112, "after")])
    assert _s(client.expect("0"), 112) == "after"
    assert fake.new_orders["A1"] == 1


def test_a_resend_request_is_answered_with_gap_fills_and_poss_dup_resends(
    fake: FakeFixAcceptor, client: Client
) -> None:
    client.order("R1")
    new, trade = client.expect("8"), client.expect("8")  # our seq 2 and 3
    client.send("1", [(112, "x")])
    client.expect("0")  # seq 4
    client.send("2", [(7, 1), (16, 0)])
    gap = client.expect("4")
    assert (_s(gap, 34), _s(gap, 123), _s(gap, 36), _s(gap, 43)) == ("1", "Y", "2", "Y")
    again = [client.expect("8"), client.expect("8")]
    assert [_s(m, 34) for m in again] == ["2", "3"]
    assert [_s(m, 43) for m in again] == ["Y", "Y"]
    assert [_s(m, 122) for m in again] == [_s(new, 52), _s(trade, 52)]
    assert [_s(m, 17) for m in again] == [_s(new, 17), _s(trade, 17)]
    tail = client.expect("4")
    assert (_s(tail, 34), _s(tail, 36)) == ("4", "5")
    assert fake.next_out == 5


def test_a_garbled_message_is_ignored_and_not_counted(
    fake: FakeFixAcceptor, client: Client
) -> None:
    data = client.build("1", [(112, "bad")])
    client.seq -= 1  # it does not count
    client.sock.sendall(
        data[:-4] + b"000\x01" if not data.endswith(b"000\x01") else data[:-4] + b"001\x01"
    )
    client.send("1", [(112, "good")])
    assert _s(client.expect("0"), 112) == "good"
    assert fake.garbled_in == 1 and fake.next_in == 3


def test_a_wrong_body_length_is_garbled_too(fake: FakeFixAcceptor, client: Client) -> None:
    data = client.build("1", [(112, "bad")])
    client.seq -= 1
    client.sock.sendall(data.replace(b"\x019=", b"\x019=1", 1))
    client.send("1", [(112, "good")])
    assert _s(client.expect("0"), 112) == "good"
    assert fake.garbled_in == 1


def test_a_missing_sending_time_is_rejected_and_consumes_the_number(
    fake: FakeFixAcceptor, client: Client
) -> None:
    m = simplefix.FixMessage()
    for tag, value in ((8, "FIX.4.4"), (35, "1"), (49, "APEX"), (56, "OMS"), (34, 2)):
        m.append_pair(tag, value, header=True)
    m.append_pair(112, "x")
    client.sock.sendall(m.encode())
    client.seq = 3
    reject = client.expect("3")
    assert (_s(reject, 371), _s(reject, 373), _s(reject, 45)) == ("52", "1", "2")
    assert fake.next_in == 3


def test_a_logout_is_answered_and_the_connection_closed(client: Client) -> None:
    client.send("5")
    client.expect("5")
    assert client.closed()


def test_an_acceptor_logout_waits_for_the_answer(fake: FakeFixAcceptor, client: Client) -> None:
    fake.logout("end of day")
    assert _s(client.expect("5"), 58) == "end of day"
    client.send("5")
    assert client.closed()


# --- the desk -----------------------------------------------------------------------


def test_a_market_buy_fills_at_the_ask(fake: FakeFixAcceptor, client: Client) -> None:
    client.order("M1", qty="10.0")
    new, trade = client.expect("8"), client.expect("8")
    assert (_s(new, 150), _s(new, 39), _s(new, 151)) == ("0", "0", "10")
    assert [_s(trade, t) for t in (150, 39, 32, 31, 14, 151, 6, 1)] == [
        "F", "2", "10", "101", "10", "0", "101", "ACC1",
    ]  # fmt: skip
    assert _s(new, 37) == _s(trade, 37) and _s(new, 17) != _s(trade, 17)
    assert fake.new_orders["M1"] == 1


def test_a_market_order_without_a_quote_is_rejected(client: Client) -> None:
    client.order("M2", symbol="ZZZZ")
    report = client.expect("8")
    assert [_s(report, t) for t in (150, 39, 58)] == ["8", "8", "no market for ZZZZ"]


def test_decimal_quantities_when_asked() -> None:
    with FakeFixAcceptor(decimal_quantities=True) as fake:
        fake.set_quote("AAPL", bid=99, ask=101, last=100)
        c = Client(fake.port)
        c.logon()
        c.order("Q1", side="2", qty="10.50")
        c.expect("8")
        trade = c.expect("8")
        assert [_s(trade, t) for t in (38, 32, 31, 14)] == ["10.5", "10.5", "99.0", "10.5"]
        c.order("Q2", qty=3)
        assert _s(c.expect("8"), 38) == "3.0"


def test_a_limit_rests_then_fills_when_the_market_comes(
    fake: FakeFixAcceptor, client: Client
) -> None:
    limit = [(44, "100.5"), (59, "1")]
    client.order("L1", ord_type="2", tags=limit)
    assert _s(client.expect("8"), 39) == "0"
    fake.set_quote("AAPL", bid=99, ask=100.25, last=100)
    trade = client.expect("8")
    assert [_s(trade, t) for t in (150, 39, 31)] == ["F", "2", "100.25"]


def test_a_stop_triggers_on_the_quote(fake: FakeFixAcceptor, client: Client) -> None:
    client.order("S1", ord_type="3", tags=[(99, 105)])
    assert _s(client.expect("8"), 39) == "0"
    fake.set_quote("AAPL", bid=105, ask=106, last=105.5)
    trade = client.expect("8")
    assert [_s(trade, t) for t in (150, 31)] == ["F", "106"]


def test_an_ioc_that_cannot_fill_is_cancelled(client: Client) -> None:
    client.order("I1", ord_type="2", tags=[(44, 90), (59, 3)])
    assert _s(client.expect("8"), 150) == "0"
    cancelled = client.expect("8")
    assert [_s(cancelled, t) for t in (150, 39)] == ["4", "4"]


def test_a_duplicate_cl_ord_id_is_rejected(fake: FakeFixAcceptor, client: Client) -> None:
    client.order("D1", ord_type="2", tags=[(44, 90)])
    client.expect("8")
    client.order("D1", ord_type="2", tags=[(44, 90)])
    report = client.expect("8")
    assert [_s(report, t) for t in (150, 103, 58, 37)] == ["8", "6", "duplicate ClOrdID D1", "NONE"]
    (order,) = fake.orders().values()
    assert order["status"] == "0"
    assert fake.new_orders["D1"] == 2  # the initiator sent it twice


def test_a_missing_required_tag_gets_a_session_reject(client: Client) -> None:
    client.send("D", [(11, "X"), (55, "AAPL"), (54, 1), (60, _stamp()), (40, 1)])
    reject = client.expect("3")
    assert [_s(reject, t) for t in (45, 371, 372, 373)] == ["2", "38", "D", "1"]


def test_cancel_of_a_resting_order(fake: FakeFixAcceptor, client: Client) -> None:
    client.order("C1", ord_type="2", tags=[(44, 90)])
    order_id = _s(client.expect("8"), 37)
    client.send("F", [(11, "C1x"), (41, "C1"), (55, "AAPL"), (54, 1), (60, _stamp())])
    report = client.expect("8")
    assert [_s(report, t) for t in (150, 39, 11, 41, 37)] == ["4", "4", "C1x", "C1", order_id]
    client.send("F", [(11, "C1y"), (41, "C1"), (55, "AAPL"), (54, 1), (60, _stamp())])
    refused = client.expect("9")
    assert [_s(refused, t) for t in (434, 102, 39)] == ["1", "0", "4"]


def test_cancel_of_an_unknown_order(client: Client) -> None:
    client.send("F", [(11, "U1x"), (41, "U1"), (55, "AAPL"), (54, 1), (60, _stamp())])
    refused = client.expect("9")
    assert [_s(refused, t) for t in (37, 11, 41, 434, 102)] == ["NONE", "U1x", "U1", "1", "1"]


def test_replace_then_fill(fake: FakeFixAcceptor, client: Client) -> None:
    client.order("P1", ord_type="2", tags=[(44, 90)])
    client.expect("8")
    client.send(
        "G",
        [
            (11, "P2"),
            (41, "P1"),
            (55, "AAPL"),
            (54, 1),
            (60, _stamp()),
            (38, 4),
            (40, 2),
            (44, 102),
        ],
    )
    replaced = client.expect("8")
    assert [_s(replaced, t) for t in (150, 39, 11, 41, 38, 151)] == ["5", "0", "P2", "P1", "4", "4"]
    trade = client.expect("8")
    assert [_s(trade, t) for t in (150, 39, 11, 32)] == ["F", "2", "P2", "4"]
    (order,) = fake.orders().values()
    assert order["cl_ord_ids"] == ["P1", "P2"]


def test_status_of_a_known_and_an_unknown_order(client: Client) -> None:
    client.order("K1")
    client.expect("8"), client.expect("8")
    client.send("H", [(790, "Q1"), (11, "K1"), (55, "AAPL"), (54, 1)])
    known = client.expect("8")
    assert [_s(known, t) for t in (150, 39, 790, 14)] == ["I", "2", "Q1", "10"]
    client.send("H", [(790, "Q2"), (11, "NEVER"), (55, "AAPL"), (54, 1)])
    unknown = client.expect("8")
    assert [_s(unknown, t) for t in (150, 39, 103, 37, 58)] == [
        "I", "8", "5", "NONE", "unknown order",
    ]  # fmt: skip


def test_mass_status_lists_every_order(client: Client) -> None:
    client.send("AF", [(584, "MS1"), (585, 7)])
    empty = client.expect("8")
    assert [_s(empty, t) for t in (150, 911, 912, 37)] == ["I", "0", "Y", "NONE"]
    client.order("A1")
    client.order("A2", ord_type="2", tags=[(44, 90)])
    for _ in range(3):
        client.expect("8")
    client.send("AF", [(584, "MS2"), (585, 7)])
    reports = [client.expect("8"), client.expect("8")]
    assert [(_s(r, 11), _s(r, 39), _s(r, 911), _s(r, 912)) for r in reports] == [
        ("A1", "2", "2", "N"),
        ("A2", "0", "2", "Y"),
    ]


def test_positions_after_fills(client: Client) -> None:
    client.order("B1", qty=10)
    client.order("S1", side="2", qty=4)
    for _ in range(4):
        client.expect("8")
    request = [(710, "PR1"), (724, 0), (1, "ACC1"), (581, 1), (715, "20261130"), (60, _stamp())]
    client.send("AN", request)
    ack = client.expect("AO")
    assert [_s(ack, t) for t in (710, 727, 728, 729)] == ["PR1", "1", "0", "0"]
    report = client.expect("AP")
    assert [_s(report, t) for t in (55, 703, 704, 705, 1)] == ["AAPL", "TQ", "6", "0", "ACC1"]


def test_mass_status_and_positions_off_are_business_rejects() -> None:
    with FakeFixAcceptor() as fake:
        c = Client(fake.port)
        c.logon()
        c.send("AF", [(584, "MS1"), (585, 7)])
        reject = c.expect("j")
        assert [_s(reject, t) for t in (380, 372, 45)] == ["3", "AF", "2"]
        req = [(710, "P"), (724, 0), (1, "A"), (581, 1), (715, "20261130"), (60, _stamp())]
        c.send("AN", req)
        assert _s(c.expect("j"), 380) == "3"


def test_fill_while_disconnected_reaches_the_initiator_through_a_resend(
    fake: FakeFixAcceptor, client: Client
) -> None:
    client.order("W1", ord_type="2", tags=[(44, 90)])
    client.expect("8")  # our 2
    client.close()
    fake.wait_for(lambda: fake.conn is None)
    fake.fill("W1", quantity=4)  # our 3, stored
    again = Client(fake.port)
    again.seq = client.seq
    answer = again.logon()
    assert _s(answer, 34) == "4"  # the initiator sees 3 missing
    again.send("2", [(7, 3), (16, 0)])
    trade = again.expect("8")
    assert [_s(trade, t) for t in (34, 43, 150, 39, 32)] == ["3", "Y", "F", "1", "4"]


# --- faults -------------------------------------------------------------------------


def test_reject_refuses_the_next_order(fake: FakeFixAcceptor, client: Client) -> None:
    fake.inject(Reject("margin"))
    client.order("F1")
    report = client.expect("8")
    assert [_s(report, t) for t in (150, 39, 103, 58, 14, 151)] == [
        "8",
        "8",
        "0",
        "margin",
        "0",
        "0",
    ]
    client.order("F2")
    assert _s(client.expect("8"), 150) == "0"


def test_cancel_reject_refuses_the_next_cancel(fake: FakeFixAcceptor, client: Client) -> None:
    client.order("F3", ord_type="2", tags=[(44, 90)])
    client.expect("8")
    fake.inject(CancelReject("not now"))
    client.send("F", [(11, "F3x"), (41, "F3"), (55, "AAPL"), (54, 1), (60, _stamp())])
    refused = client.expect("9")
    assert [_s(refused, t) for t in (434, 102, 58, 39, 11, 41)] == [
        "1",
        "2",
        "not now",
        "0",
        "F3x",
        "F3",
    ]


def test_partial_fill_splits_the_next_fill(client: Client, fake: FakeFixAcceptor) -> None:
    fake.inject(PartialFill(pieces=2))
    client.order("F4", qty=10)
    client.expect("8")
    first, second = client.expect("8"), client.expect("8")
    assert [(_s(r, 39), _s(r, 32), _s(r, 14), _s(r, 151)) for r in (first, second)] == [
        ("1", "5", "5", "5"),
        ("2", "5", "10", "0"),
    ]


def test_fill_after_cancel_fills_then_refuses_too_late(
    fake: FakeFixAcceptor, client: Client
) -> None:
    client.order("F5", ord_type="2", tags=[(44, 90)])
    client.expect("8")
    fake.inject(FillAfterCancel())
    client.send("F", [(11, "F5x"), (41, "F5"), (55, "AAPL"), (54, 1), (60, _stamp())])
    trade = client.expect("8")
    assert [_s(trade, t) for t in (150, 39, 32)] == ["F", "2", "10"]
    refused = client.expect("9")
    assert [_s(refused, t) for t in (102, 39, 434)] == ["0", "2", "1"]


def test_duplicate_execution_repeats_the_exec_id_under_a_new_number(
    fake: FakeFixAcceptor, client: Client
) -> None:
    fake.inject(DuplicateExecution())
    client.order("F6")
    client.expect("8")
    first, second = client.expect("8"), client.expect("8")
    assert _s(first, 17) == _s(second, 17) and _s(first, 150) == "F"
    assert int(_s(second, 34) or 0) == int(_s(first, 34) or 0) + 1
    assert _s(second, 43) is None


def test_sequence_gap_skips_numbers_that_a_resend_gap_fills(
    fake: FakeFixAcceptor, client: Client
) -> None:
    fake.inject(SequenceGap(skip=3))
    client.send("1", [(112, "g")])
    heartbeat = client.expect("0")
    assert _s(heartbeat, 34) == "5"  # 2, 3, 4 skipped
    client.send("2", [(7, 2), (16, 4)])
    fill = client.expect("4")
    assert [_s(fill, t) for t in (34, 123, 36, 43)] == ["2", "Y", "5", "Y"]


@pytest.mark.parametrize("kind", ["checksum", "body_length"])
def test_a_garbled_report_is_recovered_by_a_resend(
    fake: FakeFixAcceptor, client: Client, kind: str
) -> None:
    fake.inject(Garbled(kind))
    client.order("F7")
    garbled, trade = client.expect("8"), client.expect("8")
    assert not _intact(garbled) and _intact(trade)
    assert (_s(garbled, 34), _s(trade, 34)) == ("2", "3")
    client.send("2", [(7, 2), (16, 2)])
    resent = client.expect("8")
    assert _intact(resent)
    assert [_s(resent, t) for t in (34, 43, 150, 11)] == ["2", "Y", "0", "F7"]
    assert _s(resent, 122) == _s(garbled, 52)


def test_silence_answers_nothing_until_a_new_connection(
    fake: FakeFixAcceptor, client: Client
) -> None:
    fake.inject(Silence())
    sent = len(fake.sent)
    client.send("1", [(112, "anyone")])
    # a message is handled as it is read: once received, any answer would be in `sent`
    fake.wait_for(lambda: _s(fake.received[-1], 112) == "anyone")
    assert len(fake.sent) == sent and fake.next_in == 2
    client.close()
    fake.wait_for(lambda: fake.conn is None)
    again = Client(fake.port)
    again.seq = 3
    again.logon()  # the TestRequest (2) was never processed: expected is 2
    assert _s(again.expect("2"), 7) == "2"


def test_disconnect_mid_order_keeps_the_order_and_its_reports(
    fake: FakeFixAcceptor, client: Client
) -> None:
    fake.inject(DisconnectMidOrder())
    client.order("F8")
    assert client.closed()
    fake.wait_for(lambda: len(fake.orders()) == 1)
    (order,) = fake.orders().values()
    assert order["status"] == "2" and fake.new_orders["F8"] == 1
    again = Client(fake.port)
    again.seq = 3
    assert _s(again.logon(), 34) == "4"  # 2 and 3 are the order's reports
    again.send("2", [(7, 2), (16, 0)])
    new, trade = again.expect("8"), again.expect("8")
    assert (_s(new, 150), _s(trade, 150)) == ("0", "F")
    assert _s(again.expect("4"), 36) == "5"  # our Logon, gap-filled
    again.send("H", [(11, "F8"), (55, "AAPL"), (54, 1)])
    assert _s(again.expect("8"), 39) == "2"


def test_disconnect_after_ack_sends_the_new_first(fake: FakeFixAcceptor, client: Client) -> None:
    fake.inject(DisconnectMidOrder(after_ack=True))
    client.order("F9")
    assert _s(client.expect("8"), 150) == "0"
    assert client.closed()
    fake.wait_for(lambda: any(o["status"] == "2" for o in fake.orders().values()))


def test_business_reject_answers_the_next_app_message(
    fake: FakeFixAcceptor, client: Client
) -> None:
    fake.inject(BusinessReject("desk closed"))
    client.order("F10")
    reject = client.expect("j")
    assert [_s(reject, t) for t in (45, 372, 380, 58, 379)] == ["2", "D", "0", "desk closed", "F10"]
    assert fake.new_orders["F10"] == 0


def test_session_reject_answers_the_next_app_message(fake: FakeFixAcceptor, client: Client) -> None:
    fake.inject(SessionReject("bad message"))
    client.order("F11")
    reject = client.expect("3")
    assert [_s(reject, t) for t in (45, 372, 373, 58)] == ["2", "D", "99", "bad message"]
    assert fake.next_in == 3 and fake.new_orders["F11"] == 0


def test_resend_ask_gets_poss_dup_resends_that_do_not_execute_twice(
    fake: FakeFixAcceptor, client: Client
) -> None:
    client.order("F12")
    client.expect("8"), client.expect("8")
    fake.inject(ResendAsk(1))
    request = client.expect("2")
    assert (_s(request, 7), _s(request, 16)) == ("1", "0")
    client.send("4", [(123, "Y"), (36, 2)], seq=1, poss_dup=True)
    client.order("F12", seq=2, poss_dup=True)
    client.send("1", [(112, "done")])
    assert _s(client.expect("0"), 112) == "done"
    assert fake.new_orders["F12"] == 1 and len(fake.orders()) == 1


def test_runnable_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fix_acceptor", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "SenderCompID OMS, TargetCompID APEX" in line
        port = int(line.split(",")[0].rsplit(":", 1)[1])
        c = Client(port)
        c.logon()
        c.order("CLI1")
        assert _s(c.expect("8"), 150) == "0"
        assert _s(c.expect("8"), 31) == "101"
        c.close()
    finally:
        process.terminate()
        process.wait(WAIT)
