"""The FIX session layer (adapters/fix_session.py) against a scripted peer on
127.0.0.1, for what the fake acceptor does not do on its own: a
SequenceReset in reset mode, a TestRequest answered, a message under the wrong
CompIDs ending the session."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import simplefix

from adapters.base import MemorySessionLog
from adapters.oms_fix import OmsFixAdapter
from tests.conftest import FixedClock


class ScriptedPeer:
    """Accepts one connection, answers the Logon, then sends what a test says."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None
        self.seq = 1
        self.received: list[simplefix.FixMessage] = []
        self._parser = simplefix.FixParser()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        self.conn = conn
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self._parser.append_buffer(data)
            while (message := self._parser.get_message()) is not None:
                self.received.append(message)
                if message.get(35) == b"A":
                    self.send("A", [(98, "0"), (108, "30")])

    def send(self, msg_type: str, fields: list[tuple[int, str]], *, sender: str = "OMS") -> None:
        message = simplefix.FixMessage()
        for tag, value in [(8, "FIX.4.4"), (35, msg_type), (49, sender), (56, "APEX"),
                           (34, str(self.seq))]:  # fmt: skip
            message.append_pair(tag, value, header=True)
        message.append_utc_timestamp(52, precision=3, header=True)
        for tag, value in fields:
            message.append_pair(tag, value)
        self.seq += 1
        assert self.conn is not None
        self.conn.sendall(message.encode())

    def types(self) -> list[bytes]:
        return [m.get(35) for m in self.received]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


def eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.02)


@pytest.fixture
def peer() -> Iterator[ScriptedPeer]:
    scripted = ScriptedPeer()
    try:
        yield scripted
    finally:
        scripted.close()


@pytest.fixture
def log() -> MemorySessionLog:
    return MemorySessionLog()


@pytest.fixture
def adapter(peer: ScriptedPeer, log: MemorySessionLog) -> Iterator[OmsFixAdapter]:
    made = OmsFixAdapter(host="127.0.0.1", port=peer.port, sender_comp_id="APEX",
                         target_comp_id="OMS", clock=FixedClock(), session_log=log,
                         reconnect_min_s=30)  # fmt: skip
    try:
        assert made.check_credentials() is True
        yield made
    finally:
        made.close()


def test_sequence_reset_in_reset_mode_when_received_then_the_next_number_expected_is_its_own(
    peer: ScriptedPeer, adapter: OmsFixAdapter, log: MemorySessionLog
) -> None:
    peer.send("4", [(36, "50")])

    eventually(lambda: log.sequences()[1] == 50)
    peer.seq = 50
    peer.send("1", [(112, "after-reset")])
    eventually(lambda: b"0" in peer.types())
    assert adapter.connection_problem() is None


def test_test_request_when_received_then_heartbeat_with_its_id(
    peer: ScriptedPeer, adapter: OmsFixAdapter
) -> None:
    peer.send("1", [(112, "are-you-there")])

    eventually(lambda: b"0" in peer.types())
    heartbeat = next(m for m in peer.received if m.get(35) == b"0")
    assert heartbeat.get(112) == b"are-you-there"


def test_message_under_other_comp_ids_when_received_then_logout_and_the_session_ends(
    peer: ScriptedPeer, adapter: OmsFixAdapter
) -> None:
    peer.send("0", [], sender="SOMEONE")

    eventually(lambda: b"5" in peer.types())
    logout = next(m for m in peer.received if m.get(35) == b"5")
    assert logout.get(58) == b"CompID problem (want: OMS->APEX, got: SOMEONE->APEX)"
    assert "CompID problem" in (adapter.connection_problem() or "")


def test_sending_time_when_compared_with_the_wall_clock_then_within_a_second(
    peer: ScriptedPeer, adapter: OmsFixAdapter
) -> None:
    logon = peer.received[0]
    sent = datetime.strptime(logon.get(52).decode(), "%Y%m%d-%H:%M:%S.%f").replace(tzinfo=UTC)

    # the gate's clock is fixed in 2026-11-30 15:00; SendingTime is the wall's
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5
