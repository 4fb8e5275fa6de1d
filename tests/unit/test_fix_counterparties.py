"""The `oms_fix` initiator against counterparties it has never met (issue 11,
build 6): a raw peer, an asyncio server on 127.0.0.1 written here, whose
messages are built by hand (BodyLength and CheckSum computed in this file, not
by our codec, tags in whatever order a test puts them) and whose input is read
with simplefix. Each test is one rule of FIX 4.4 volume 2, or one habit of real
counterparties: a Logon with ResetSeqNumFlag, session Rejects of malformed
messages, messages split at every byte or several in one read, header and body
tags in any order with groups and user-defined tags, FIX 4.2-style reports,
SendingTime with seconds to microseconds, another HeartBtInt, a Logout with
text, a peer that never answers the Logon."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import simplefix

from adapters.base import MemorySessionLog
from adapters.fix_codec import Framer
from adapters.oms_fix import OmsFixAdapter
from adapters.sql import SqlStore
from engine.broker import BrokerAck, BrokerOrder
from engine.lifecycle import OrderStatus
from tests.conftest import FixedClock

SOH = b"\x01"
Fields = list[tuple[int, str]]


def frame(fields: Fields) -> bytes:
    """A FIX 4.4 message by hand: 8 and 9 first, the fields as given, then 10."""
    body = b"".join(f"{tag}={value}".encode() + SOH for tag, value in fields)
    head = b"8=FIX.4.4" + SOH + f"9={len(body)}".encode() + SOH
    return head + body + f"10={sum(head + body) % 256:03d}".encode() + SOH


def sending_time(digits: int = 3) -> str:
    """UTC now with 0 (seconds), 3 (milliseconds) or 6 (microseconds) decimals."""
    now = datetime.now(UTC)
    text = now.strftime("%Y%m%d-%H:%M:%S")
    return text if digits == 0 else f"{text}.{now.microsecond:06d}"[: len(text) + 1 + digits]


def tag(message: Any, number: int) -> str | None:
    value = message.get(number)
    return None if value is None else value.decode()


def eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.02)


class RawPeer:
    """An acceptor that does only what a test tells it. `logon_reply` makes the
    bytes answering the first Logon of each connection (None: never answer); a
    Logout is answered unless it sent one; `on_message` sees every other message."""

    def __init__(self) -> None:
        self.seq = 1
        self.received: list[Any] = []
        self.connections: list[float] = []  # monotonic time of each accept
        self.eofs = 0  # connections our side closed
        self.logon_reply: Callable[[RawPeer], bytes] | None = lambda p: p.message(
            "A", [(98, "0"), (108, "30")]
        )
        self.on_message: Callable[[RawPeer, Any], None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._logged_out = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(time.monotonic())
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writer = writer
        parser = simplefix.FixParser()
        answered = False
        try:
            while data := await reader.read(65536):
                parser.append_buffer(data)
                while (message := parser.get_message()) is not None:
                    self.received.append(message)
                    if message.get(35) == b"A" and not answered:
                        answered = True
                        if self.logon_reply is not None:
                            writer.write(self.logon_reply(self))
                    elif message.get(35) == b"5" and not self._logged_out:
                        writer.write(self.message("5", []))  # a Logout of ours answered
                    elif self.on_message is not None:
                        self.on_message(self, message)
        except ConnectionError:
            pass  # closed by our side while the peer wrote: the same end
        self.eofs += 1  # our side closed the connection
        writer.close()

    def message(self, msg_type: str, body: Fields, *, header: Fields | None = None,
                seq: int | None = None, sent: str | None = None) -> bytes:  # fmt: skip
        """Header 35, 49, 56, 34, 52 (or `header` as given, whole), then `body`."""
        self._logged_out = self._logged_out or msg_type == "5"
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        if header is None:
            header = [(49, "OMS"), (56, "APEX"), (34, str(seq)), (52, sent or sending_time())]
        return frame([(35, msg_type), *header, *body])

    def write(self, data: bytes, *, byte_by_byte: bool = False) -> None:
        """Write now (from a callback on the peer's loop) or from the test's thread."""

        async def write() -> None:
            assert self._writer is not None
            pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
            for piece in pieces:
                self._writer.write(piece)
                await self._writer.drain()
                if byte_by_byte:
                    await asyncio.sleep(0.001)  # each byte a segment of its own

        if threading.current_thread() is self._thread:
            assert self._writer is not None
            self._writer.write(data)
        else:
            self._run(write())

    def send(self, msg_type: str, body: Fields, **options: Any) -> None:
        self.write(self.message(msg_type, body, **options))

    def of_type(self, msg_type: str) -> list[Any]:
        return [m for m in self.received if m.get(35) == msg_type.encode()]

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            if self._writer is not None:
                self._writer.close()

        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture
def peer() -> Iterator[RawPeer]:
    made = RawPeer()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def log() -> MemorySessionLog:
    return MemorySessionLog()


@pytest.fixture
def connect(peer: RawPeer, log: MemorySessionLog) -> Iterator[Callable[..., OmsFixAdapter]]:
    made: list[OmsFixAdapter] = []

    def new(**options: Any) -> OmsFixAdapter:
        settings: dict[str, Any] = {"reconnect_min_s": 30, "request_timeout_s": 3.0}
        settings.update(options)
        adapter = OmsFixAdapter(host="127.0.0.1", port=peer.port, sender_comp_id="APEX",
                                target_comp_id="OMS", clock=FixedClock(), session_log=log,
                                **settings)  # fmt: skip
        made.append(adapter)
        return adapter

    try:
        yield new
    finally:
        for adapter in made:
            adapter.close()


def logged_on(connect: Callable[..., OmsFixAdapter], **options: Any) -> OmsFixAdapter:
    adapter = connect(**options)
    assert adapter.check_credentials() is True
    return adapter


def answered_test_request(peer: RawPeer, test_id: str) -> bool:
    return any(tag(m, 112) == test_id for m in peer.of_type("0"))


# --- 1. ResetSeqNumFlag (141=Y) on a Logon ---------------------------------------------


def test_logon_answer_with_reset_flag_when_received_then_both_sides_start_again_at_1(
    peer: RawPeer, log: MemorySessionLog, connect: Callable[..., OmsFixAdapter]
) -> None:
    log.reset(7, 5)  # a session in progress: ours next 7, theirs next 5
    peer.logon_reply = lambda p: p.message("A", [(98, "0"), (108, "30"), (141, "Y")], seq=1)
    peer.seq = 2

    logged_on(connect)

    eventually(lambda: len(peer.of_type("A")) == 2)
    ours, answer = peer.of_type("A")
    assert (tag(ours, 34), tag(ours, 141)) == ("7", None)
    assert (tag(answer, 34), tag(answer, 141), tag(answer, 108)) == ("1", "Y", "30")
    assert log.sequences() == (2, 2)
    peer.send("1", [(112, "after-reset")])
    eventually(lambda: answered_test_request(peer, "after-reset"))
    assert tag(peer.of_type("0")[0], 34) == "2"
    assert log.sequences() == (3, 3)
    assert peer.of_type("2") == []  # no gap seen on either side


def test_logon_with_reset_flag_mid_session_when_received_then_ours_answers_and_numbers_reset(
    peer: RawPeer, log: MemorySessionLog, connect: Callable[..., OmsFixAdapter]
) -> None:
    adapter = logged_on(connect)
    for n in range(3):
        peer.send("1", [(112, f"before-{n}")])
    eventually(lambda: answered_test_request(peer, "before-2"))
    assert log.sequences() == (5, 5)

    peer.send("A", [(98, "0"), (108, "30"), (141, "Y")], seq=1)
    peer.seq = 2

    eventually(lambda: len(peer.of_type("A")) == 2)
    answer = peer.of_type("A")[1]
    assert (tag(answer, 34), tag(answer, 141)) == ("1", "Y")
    assert log.sequences() == (2, 2)  # persisted before our Logon left
    # a ResendRequest is answered from the new epoch only: our Logon, gap-filled
    peer.send("2", [(7, "1"), (16, "0")])
    eventually(lambda: len(peer.of_type("4")) == 1)
    gap_fill = peer.of_type("4")[0]
    assert [tag(gap_fill, t) for t in (34, 123, 36)] == ["1", "Y", "2"]
    peer.send("1", [(112, "after-reset")])
    eventually(lambda: answered_test_request(peer, "after-reset"))
    assert len(peer.of_type("A")) == 2  # one answer, no Logon ping-pong
    assert adapter.connection_problem() is None
    assert [m.msg_type for m in log.tail(100) if m.direction == "out"].count("A") == 2


def test_reset_by_the_counterparty_when_the_store_keeps_the_session_then_a_restart_resumes_after_it(
    peer: RawPeer, sql_store: SqlStore
) -> None:
    def adapter() -> OmsFixAdapter:
        return OmsFixAdapter(host="127.0.0.1", port=peer.port, sender_comp_id="APEX",
                             target_comp_id="OMS", clock=FixedClock(), name="oms_fix-paper",
                             session_log=sql_store.session_log("oms_fix-paper"),
                             reconnect_min_s=30)  # fmt: skip

    first = adapter()
    try:
        assert first.check_credentials() is True
        for n in range(2):
            peer.send("1", [(112, f"before-{n}")])
        eventually(lambda: answered_test_request(peer, "before-1"))
        peer.send("A", [(98, "0"), (108, "30"), (141, "Y")], seq=1)
        peer.seq = 2
        eventually(lambda: len(peer.of_type("A")) == 2)
        assert sql_store.session_log("oms_fix-paper").sequences() == (2, 2)
    finally:
        first.close()  # our Logout is 2, the answer its 2
    again = adapter()
    try:
        assert again.check_credentials() is True

        assert [tag(m, 34) for m in peer.of_type("A")] == ["1", "1", "3"]
        assert sql_store.session_log("oms_fix-paper").sequences() == (4, 4)
        out = [m for m in sql_store.session_log("oms_fix-paper").tail(100) if m.direction == "out"]
        resets = [m for m in out if m.msg_type == "A" and b"\x01141=Y\x01" in m.message]
        assert [m.seq for m in resets] == [1]  # our answer to the reset, kept
    finally:
        again.close()


# --- 2. session Reject (35=3) of a malformed message -----------------------------------


def without(fields: Fields, drop: int) -> Fields:
    return [(t, v) for t, v in fields if t != drop]


@pytest.mark.parametrize(
    ("msg_type", "make", "ref_tag", "reason"),
    [
        ("0", lambda s: [(49, "OMS"), (56, "APEX"), (34, s)], "52", "1"),
        ("0", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, "30-11-2026 15:00")], "52", "6"),
        ("1", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, sending_time()), (43, "Y"),
                         (112, "dup")], "122", "1"),
        ("1", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, sending_time()), (112, "")],
         "112", "4"),
        ("1", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, sending_time())], "112", "1"),
        ("8", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, sending_time()),
                         (37, "X1"), (11, "nobody"), (17, "E1"), (150, "F"), (39, "1"),
                         (55, "AAPL"), (54, "1"), (32, "5"), (31, "10"), (151, "5"),
                         (14, "five"), (6, "10")], "14", "6"),
        ("2", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, sending_time()), (7, "one"),
                         (16, "0")], "7", "6"),
        ("8", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, sending_time()),
                         (37, "X1"), (11, "nobody"), (17, "E1"), (150, "F"), (39, "1"),
                         (55, "AAPL"), (54, "1"), (32, "5"), (31, "10"), (151, "5"),
                         (6, "10")], "14", "1"),
        ("8", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, sending_time()),
                         (37, "X1"), (11, "nobody"), (17, "E1"), (150, "0"), (39, "Z"),
                         (55, "AAPL"), (54, "1"), (151, "5"), (14, "0"), (6, "0")], "39", "5"),
        ("8", lambda s: [(49, "OMS"), (56, "APEX"), (34, s), (52, sending_time()),
                         (37, "X1"), (11, "nobody"), (17, "E1"), (150, "X"), (39, "0"),
                         (55, "AAPL"), (54, "1"), (151, "5"), (14, "0"), (6, "0")], "150", "5"),
    ],
    ids=["no-sending-time", "sending-time-format", "possdup-without-orig-sending-time",
         "tag-without-value", "test-request-without-id", "cum-qty-not-a-number",
         "resend-request-begin-not-a-number", "trade-without-cum-qty",
         "ord-status-out-of-range", "exec-type-out-of-range"],
)  # fmt: skip
def test_malformed_message_when_received_in_sequence_then_session_reject_and_number_consumed(
    peer: RawPeer,
    log: MemorySessionLog,
    connect: Callable[..., OmsFixAdapter],
    msg_type: str,
    make: Callable[[str], Fields],
    ref_tag: str,
    reason: str,
) -> None:
    adapter = logged_on(connect)

    peer.write(frame([(35, msg_type), *make("2")]))
    peer.seq = 3

    eventually(lambda: len(peer.of_type("3")) == 1)
    reject = peer.of_type("3")[0]
    assert [tag(reject, t) for t in (45, 371, 372, 373)] == ["2", ref_tag, msg_type, reason]
    assert ref_tag in (tag(reject, 58) or "")
    peer.send("1", [(112, "next")])
    eventually(lambda: answered_test_request(peer, "next"))
    assert peer.of_type("2") == []  # 2 was consumed: no gap, no ResendRequest
    assert [tag(m, 112) for m in peer.of_type("0")] == ["next"]  # the rejected one not acted on
    assert log.sequences()[1] == 4
    assert adapter.connection_problem() is None


@pytest.mark.parametrize(
    ("seq_field", "said"),
    [([], "MsgSeqNum(34) missing"), ([(34, "two")], "MsgSeqNum(34) not a number (got: 'two')")],
    ids=["missing", "not-a-number"],
)
def test_msg_seq_num_unusable_when_received_then_logout_saying_so_and_disconnect(
    peer: RawPeer,
    log: MemorySessionLog,
    connect: Callable[..., OmsFixAdapter],
    seq_field: Fields,
    said: str,
) -> None:
    adapter = logged_on(connect)

    peer.write(frame([(35, "1"), (49, "OMS"), (56, "APEX"), *seq_field,
                      (52, sending_time()), (112, "x")]))  # fmt: skip

    eventually(lambda: peer.eofs == 1)
    assert [tag(m, 58) for m in peer.of_type("5")] == [said]
    assert adapter.connection_problem() == said
    assert log.sequences()[1] == 2  # nothing consumed: a new logon asks again


def test_sequence_reset_below_the_expected_number_when_received_then_rejected_value_incorrect(
    peer: RawPeer, log: MemorySessionLog, connect: Callable[..., OmsFixAdapter]
) -> None:
    logged_on(connect)
    peer.send("1", [(112, "one")])
    eventually(lambda: answered_test_request(peer, "one"))

    peer.send("4", [(36, "2")])

    eventually(lambda: len(peer.of_type("3")) == 1)
    reject = peer.of_type("3")[0]
    assert [tag(reject, t) for t in (45, 371, 372, 373)] == ["3", "36", "4", "5"]
    assert log.sequences()[1] == 3


def test_message_under_other_comp_ids_when_received_then_reject_compid_problem_then_logout(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    logged_on(connect)

    peer.send("0", [], header=[(49, "SOMEONE"), (56, "APEX"), (34, "2"), (52, sending_time())])

    eventually(lambda: peer.eofs == 1)
    assert [m.get(35) for m in peer.received[1:]] == [b"3", b"5"]
    reject = peer.of_type("3")[0]
    assert [tag(reject, t) for t in (45, 371, 373)] == ["2", "49", "9"]


# --- 3. reading what real counterparties send ------------------------------------------


def test_framer_when_two_messages_are_split_at_every_byte_then_both_read_whole() -> None:
    first = frame([(35, "0"), (49, "OMS"), (56, "APEX"), (34, "1"), (52, sending_time())])
    second = frame([(35, "1"), (49, "OMS"), (56, "APEX"), (34, "2"), (52, sending_time()),
                    (112, "x")])  # fmt: skip
    stream = first + second

    for cut in range(1, len(stream)):
        framer = Framer()
        frames = framer.feed(stream[:cut]) + framer.feed(stream[cut:])

        assert [(f.problem, f.raw) for f in frames] == [("", first), ("", second)], cut


def test_messages_one_byte_per_read_and_several_in_one_read_when_received_then_all_answered(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    logged_on(connect)

    peer.write(peer.message("1", [(112, "slow-1")]) + peer.message("1", [(112, "slow-2")]),
               byte_by_byte=True)  # fmt: skip
    peer.write(b"".join(peer.message("1", [(112, f"burst-{n}")]) for n in range(3)))

    eventually(lambda: answered_test_request(peer, "burst-2"))
    assert [tag(m, 112) for m in peer.of_type("0")] == [
        "slow-1", "slow-2", "burst-0", "burst-1", "burst-2",
    ]  # fmt: skip


def test_test_request_in_the_same_read_as_the_logon_answer_then_answered(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    peer.logon_reply = lambda p: (
        p.message("A", [(98, "0"), (108, "30")]) + p.message("1", [(112, "right-after-logon")])
    )

    logged_on(connect)

    eventually(lambda: answered_test_request(peer, "right-after-logon"))


def order_desk(peer: RawPeer, message: Any) -> None:
    """Answers a NewOrderSingle the way some desks do: header tags shuffled with
    optional 115/128/50/57, body in its own order with a parties group and
    user-defined tags, microsecond SendingTime, no AvgPx; a status request with
    AvgPx 0."""
    kind, seq = message.get(35), str(peer.seq)
    if kind == b"D":
        peer.seq += 1
        header = [(52, sending_time(6)), (115, "PRIME"), (56, "APEX"), (128, "DESK-7"),
                  (34, seq), (49, "OMS"), (50, "TRADER-1"), (57, "GATE")]  # fmt: skip
        body = [(5001, "desk-internal"), (39, "0"), (453, "2"), (448, "EXEC-FIRM"),
                (447, "D"), (452, "1"), (448, "CLEARER"), (447, "D"), (452, "4"),
                (11, tag(message, 11) or ""), (150, "0"), (17, "EX-NEW"), (37, "DESK-1"),
                (54, "1"), (55, "AAPL"), (38, "10"), (151, "10"), (14, "0"),
                (9999, "x")]  # fmt: skip
        peer.write(frame([(35, "8"), *header, *body]))
    elif kind == b"H":
        peer.send("8", [(37, "DESK-1"), (11, tag(message, 11) or ""), (790, tag(message, 790)
                  or ""), (17, "EX-STATUS"), (150, "I"), (39, "0"), (55, "AAPL"), (54, "1"),
                  (151, "10"), (14, "0"), (6, "0")])  # fmt: skip


def test_execution_reports_of_real_desks_when_received_then_read_by_tag_and_fill_booked(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    peer.on_message = order_desk
    adapter = logged_on(connect)
    told: list[BrokerAck] = []
    adapter.subscribe(told.append)

    ack = adapter.submit(BrokerOrder("ord-1", "acct-1", "AAPL", "buy", 10.0, "market"))

    assert (ack.status, ack.broker_order_id, ack.filled_quantity) == (
        OrderStatus.ACCEPTED, "DESK-1", 0.0,
    )  # fmt: skip
    # a FIX 4.2-style fill (ExecType 2), groups and user tags among its fields,
    # SendingTime in whole seconds, no AvgPx
    peer.send("8", [(37, "DESK-1"), (11, "ord-1"), (17, "EX-FILL"), (150, "2"), (39, "2"),
                    (453, "1"), (448, "CLEARER"), (447, "D"), (452, "4"), (382, "1"),
                    (375, "CONTRA"), (437, "999"), (55, "AAPL"), (54, "1"), (32, "10"),
                    (31, "187.5"), (151, "0"), (14, "10"), (6000, "y")],
              sent=sending_time(0))  # fmt: skip
    eventually(lambda: len(told) == 1)
    assert told[0].status == OrderStatus.FILLED
    assert [(f.quantity, f.price, f.execution_id) for f in told[0].fills] == [
        (10.0, 187.5, "EX-FILL")
    ]
    assert peer.of_type("3") == []  # nothing of it rejected


def test_heartbeat_answering_our_test_request_when_received_then_the_session_stays(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    def answer(p: RawPeer, message: Any) -> None:
        if message.get(35) == b"1":  # silent otherwise
            p.write(p.message("0", [(112, tag(message, 112) or "")]))

    peer.on_message = answer
    peer.logon_reply = lambda p: p.message("A", [(98, "0"), (108, "1")])
    adapter = logged_on(connect, heartbeat_s=1)

    eventually(lambda: len(peer.of_type("1")) >= 2)  # a second one: the first was answered

    assert [tag(m, 112) for m in peer.of_type("1")[:2]] == ["TEST-1", "TEST-2"]
    assert len(peer.connections) == 1
    assert adapter.connection_problem() is None


def test_logon_answer_with_another_heartbtint_when_shorter_then_we_heartbeat_at_it(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    peer.logon_reply = lambda p: p.message("A", [(98, "0"), (108, "1")])

    adapter = logged_on(connect, heartbeat_s=30)

    eventually(lambda: len([m for m in peer.of_type("0") if m.get(112) is None]) >= 2)
    assert tag(peer.of_type("A")[0], 108) == "30"
    assert peer.of_type("1") == []  # its silence is judged by the longer, ours
    session = adapter._session  # the intervals in force: sent at 1 s, asked after 36 s
    assert session is not None and session.heartbeat_intervals == (1.0, 36.0)


def test_logout_with_text_from_the_counterparty_then_answered_and_disconnected(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    adapter = logged_on(connect)

    peer.send("5", [(58, "end of day")])

    eventually(lambda: peer.eofs == 1)
    assert len(peer.of_type("5")) == 1
    assert adapter.connection_problem() == "the counterparty logged out: end of day"


def test_peer_that_never_answers_the_logon_then_problem_stated_and_retried_with_backoff(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    peer.logon_reply = None

    adapter = connect(logon_timeout_s=0.5, reconnect_min_s=0.2, reconnect_max_s=5)

    problem = adapter.connection_problem() or ""
    assert problem == f"logon to 127.0.0.1:{peer.port} failed: no Logon answer in time"
    eventually(lambda: len(peer.connections) >= 4, within_s=20)
    gaps = [b - a for a, b in zip(peer.connections, peer.connections[1:], strict=False)]
    # each attempt waits the logon timeout, then a delay doubling from 0.2 s
    assert all(gap >= 0.5 + delay - 0.05 for gap, delay in zip(gaps, (0.2, 0.4, 0.8), strict=False))
    assert len(peer.of_type("A")) == len(peer.connections)  # a Logon on each, never an order


def test_fill_without_exec_id_nor_avg_px_when_received_then_booked_from_cum_qty_at_last_px(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    peer.on_message = order_desk
    adapter = logged_on(connect)
    told: list[BrokerAck] = []
    adapter.subscribe(told.append)
    adapter.submit(BrokerOrder("ord-1", "acct-1", "AAPL", "buy", 10.0, "market"))

    peer.send("8", [(37, "DESK-1"), (11, "ord-1"), (150, "2"), (39, "2"), (55, "AAPL"),
                    (54, "1"), (32, "10"), (31, "187.5"), (151, "0"), (14, "10")])  # fmt: skip

    eventually(lambda: len(told) == 1)
    assert [(f.quantity, f.price, f.execution_id) for f in told[0].fills] == [
        (10.0, 187.5, "DESK-1:cum:10")
    ]


def test_replay_ending_on_a_malformed_message_when_rejected_then_the_next_gap_asked_again(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    logged_on(connect)
    replayed = [(43, "Y"), (122, sending_time())]
    peer.send("1", [], seq=3)  # beyond 2, and without its TestReqID

    eventually(lambda: len(peer.of_type("2")) == 1)
    peer.send("0", [], header=[(49, "OMS"), (56, "APEX"), (34, "2"), (52, sending_time()),
                               *replayed])  # fmt: skip
    peer.send("1", [], header=[(49, "OMS"), (56, "APEX"), (34, "3"), (52, sending_time()),
                               *replayed])  # fmt: skip
    eventually(lambda: len(peer.of_type("3")) == 1)
    peer.send("0", [], seq=6)  # 4 and 5 missing: a gap of its own

    eventually(lambda: len(peer.of_type("2")) == 2)
    assert [tag(m, 7) for m in peer.of_type("2")] == ["2", "4"]
    assert [tag(peer.of_type("3")[0], t) for t in (45, 371, 373)] == ["3", "112", "1"]


def test_trade_without_cum_qty_for_our_order_when_received_then_rejected_and_nothing_booked(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    peer.on_message = order_desk
    adapter = logged_on(connect)
    told: list[BrokerAck] = []
    adapter.subscribe(told.append)
    adapter.submit(BrokerOrder("ord-1", "acct-1", "AAPL", "buy", 10.0, "market"))

    # FIX 4.4 requires CumQty: without it nothing guards the booking against a duplicate
    peer.send("8", [(37, "DESK-1"), (11, "ord-1"), (17, "EX-FILL"), (150, "F"), (39, "2"),
                    (55, "AAPL"), (54, "1"), (32, "10"), (31, "187.5"), (151, "0"),
                    (6, "187.5")])  # fmt: skip

    eventually(lambda: len(peer.of_type("3")) == 1)
    reject = peer.of_type("3")[0]
    assert [tag(reject, t) for t in (371, 372, 373)] == ["14", "8", "1"]
    assert adapter.order_status("ord-1", "DESK-1").filled_quantity == 0.0
    assert told == []


def test_logout_answering_our_logon_with_text_then_the_reason_shown_and_the_logon_retried(
    peer: RawPeer, connect: Callable[..., OmsFixAdapter]
) -> None:
    peer.logon_reply = lambda p: p.message("5", [(58, "unknown CompID APEX for this port")])

    adapter = connect(reconnect_min_s=0.1, reconnect_max_s=0.2)

    assert adapter.check_credentials() is False
    assert adapter.connection_problem() == (
        "the counterparty refused the logon: unknown CompID APEX for this port"
    )
    eventually(lambda: len(peer.connections) >= 2)  # tried again, with the backoff
    assert [m.get(35) for m in peer.received].count(b"D") == 0
