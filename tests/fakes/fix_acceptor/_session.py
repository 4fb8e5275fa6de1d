"""The acceptor's session layer (FIX 4.4 Vol. 2): one session, one connection at a
time, sequence numbers and the outgoing store kept for the fake's life."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import simplefix

from ._faults import (
    BusinessReject,
    DisconnectMidOrder,
    Fault,
    Garbled,
    ResendAsk,
    SequenceGap,
    SessionReject,
    Silence,
)
from ._wire import BEGIN_STRING, Frame, format_utc, get, parse_utc, split_frames

__all__ = ["ADMIN", "Connection", "Session"]

log = logging.getLogger("tests.fakes.fix_acceptor")
_T = TypeVar("_T")
_F = TypeVar("_F")

# session-level MsgTypes: gap-filled, never resent (Vol. 2, "Resending messages")
ADMIN = frozenset({"0", "1", "2", "3", "4", "5", "A"})
MAX_LATENCY_S = 120.0  # SendingTime accuracy, as QuickFIX and most engines check
Fields = list[tuple[int, str]]


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    logged_on: bool = False
    heartbeat_s: float = 30.0
    last_in: float = field(default_factory=time.monotonic)
    last_out: float = field(default_factory=time.monotonic)
    test_request: tuple[str, float] | None = None  # (TestReqID, when sent)
    silent: bool = False
    closed: bool = False
    logout_sent: bool = False
    close_after_ack: bool = False  # DisconnectMidOrder(after_ack=True) is pending


@dataclass
class _Stored:
    msg_type: str
    fields: Fields
    sending_time: str


class Session:
    """Runs the server and the session; `handle_app` (the desk) gets each
    in-sequence application message."""

    def __init__(self, *, sender_comp_id: str, target_comp_id: str, host: str, port: int) -> None:
        self.sender_comp_id = sender_comp_id
        self.target_comp_id = target_comp_id
        self.host = host
        self.port = port
        self.next_in = 1
        self.next_out = 1
        self.logons = 0
        self.garbled_in = 0  # garbled messages received and ignored
        self.received: list[simplefix.FixMessage] = []
        self.sent: list[simplefix.FixMessage] = []
        self.counts: Counter[str] = Counter()  # what the session did, for tests
        self._store: dict[int, _Stored] = {}
        self._queue: dict[int, tuple[simplefix.FixMessage, bool]] = {}  # seq -> (msg, done)
        self._resend_pending = False
        self._asked: tuple[int, int] | None = None  # a range we asked the initiator for
        self._faults: list[Fault] = []
        self._test_ids = itertools.count(1)
        self.conn: Connection | None = None
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- running --------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        await self.open()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.open())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-fix-acceptor", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("the fake FIX acceptor did not start")

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._thread = None

    async def _shutdown(self) -> None:
        if self.conn is not None:
            self.conn.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` on the fake's loop (the books have one owner) and return its result."""
        if self._loop is None or self._thread is None:
            return fn()

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def take(self, kind: type[_F]) -> _F | None:
        for fault in self._faults:
            if isinstance(fault, kind):
                self._faults.remove(fault)
                return fault
        return None

    def add_fault(self, fault: Fault) -> None:
        if isinstance(fault, ResendAsk) and self.conn is not None and self.conn.logged_on:
            self._ask(fault)
            return
        if isinstance(fault, Silence) and self.conn is not None:
            self.conn.silent = True
            return
        self._faults.append(fault)

    # --- the connection -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
        if self.conn is not None and not self.conn.closed and self.conn.logged_on:
            # one session, one connection: a second logon attempt is hung up on,
            # as a real acceptor does, without touching the live session
            log.warning("second connection for a live session: closed")
            writer.close()
            return
        if self.conn is not None:
            self.close(self.conn)  # connected but never logged on: the newcomer wins
        self.conn = conn
        self._resend_pending = False
        self._queue.clear()
        pulse = asyncio.ensure_future(self._pulse(conn))
        buffer = bytearray()
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
                for frame in split_frames(buffer):
                    if conn.closed:
                        break
                    self._on_frame(conn, frame)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the peer went away, or the fake is stopping
        except Exception:
            log.exception("fake FIX acceptor failed on a message")
        finally:
            pulse.cancel()
            self.close(conn)

    def close(self, conn: Connection | None = None) -> None:
        conn = conn or self.conn
        if conn is None:
            return
        conn.closed = True
        conn.writer.close()
        if self.conn is conn:
            self.conn = None

    async def _pulse(self, conn: Connection) -> None:
        """Heartbeats on outgoing silence; a TestRequest on incoming silence past
        HeartBtInt + 20%, and the connection dropped if that goes unanswered."""
        while not conn.closed:
            await asyncio.sleep(min(0.1, conn.heartbeat_s / 10))
            if not conn.logged_on or conn.silent or conn.closed:
                continue
            now = time.monotonic()
            if now - conn.last_out >= conn.heartbeat_s:
                self.send("0", [], conn=conn)
            if conn.test_request is None and now - conn.last_in > conn.heartbeat_s * 1.2:
                test_id = f"TEST-{next(self._test_ids)}"
                conn.test_request = (test_id, now)
                self.send("1", [(112, test_id)], conn=conn)
            elif conn.test_request is not None and now - conn.test_request[1] > conn.heartbeat_s:
                log.info("no answer to TestRequest %s: dropped", conn.test_request[0])
                self.counts["timeouts"] += 1
                self.close(conn)

    # --- sending --------------------------------------------------------------------

    def _live(self, conn: Connection | None) -> Connection | None:
        conn = conn or self.conn
        if conn is None or conn.closed or conn.silent:
            return None
        return conn

    def send(self, msg_type: str, fields: Fields, *, conn: Connection | None = None) -> int:
        """Number, store and (if a connection is up) write one new message."""
        gap = self.take(SequenceGap)
        if gap is not None:
            self.next_out += gap.skip
        seq = self.next_out
        self.next_out += 1
        stamp = format_utc(datetime.now(UTC))
        self._store[seq] = _Stored(msg_type, list(fields), stamp)
        live = self._live(conn)
        if live is None or (not live.logged_on and msg_type not in ADMIN):
            return seq  # kept for a ResendRequest, as a real counterparty does
        message = self._build(msg_type, seq, stamp, fields)
        data = message.encode()
        if msg_type not in ADMIN:
            garbled = self.take(Garbled)
            if garbled is not None:
                data = _garble(data, garbled.kind)
        self._write(live, message, data)
        return seq

    def _build(
        self, msg_type: str, seq: int, stamp: str, fields: Fields, orig: str | None = None
    ) -> simplefix.FixMessage:
        m = simplefix.FixMessage()
        m.append_pair(8, BEGIN_STRING, header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.sender_comp_id, header=True)
        m.append_pair(56, self.target_comp_id, header=True)
        m.append_pair(34, seq, header=True)
        m.append_pair(52, stamp, header=True)
        if orig is not None:
            m.append_pair(43, "Y", header=True)
            m.append_pair(122, orig, header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        return m

    def _write(self, conn: Connection, message: simplefix.FixMessage, data: bytes) -> None:
        if conn.writer.is_closing():
            return
        conn.writer.write(data)
        conn.last_out = time.monotonic()
        self.sent.append(message)

    def _answer_resend(self, conn: Connection, begin: int, end: int) -> None:
        """Resend what we sent: application messages as they were (43=Y, 122),
        runs of admin or skipped numbers as one SequenceReset-GapFill each."""
        last = self.next_out - 1
        if end == 0 or end >= 999_999 or end > last:  # 999999: "infinity" before 4.2
            end = last
        self.counts["resend_requests_answered"] += 1
        gap_from: int | None = None
        for seq in range(max(begin, 1), end + 1):
            stored = self._store.get(seq)
            if stored is None or stored.msg_type in ADMIN:
                gap_from = seq if gap_from is None else gap_from
                continue
            if gap_from is not None:
                self._gap_fill(conn, gap_from, seq)
                gap_from = None
            now = format_utc(datetime.now(UTC))
            message = self._build(stored.msg_type, seq, now, stored.fields, stored.sending_time)
            self._write(conn, message, message.encode())
        if gap_from is not None:
            self._gap_fill(conn, gap_from, end + 1)

    def _gap_fill(self, conn: Connection, seq: int, new_seq: int) -> None:
        now = format_utc(datetime.now(UTC))
        fields: Fields = [(123, "Y"), (36, str(new_seq))]
        message = self._build("4", seq, now, fields, orig=now)
        self._write(conn, message, message.encode())

    def _send_resend_request(self, begin: int, end: int = 0) -> None:
        self.counts["resend_requests_sent"] += 1
        self.send("2", [(7, str(begin)), (16, str(end))])

    def _ask(self, fault: ResendAsk) -> None:
        """Our own ResendRequest (a fault): the PossDup answers in that range are
        processed by the desk, not dropped as duplicates."""
        self._asked = (fault.begin, fault.end or 2**31)
        self._send_resend_request(fault.begin, fault.end)

    def session_reject(
        self,
        ref: simplefix.FixMessage,
        reason: str,
        text: str,
        tag: int | None = None,
        conn: Connection | None = None,
    ) -> None:
        fields: Fields = [(45, get(ref, 34) or "0")]
        if tag is not None:
            fields.append((371, str(tag)))
        msg_type = get(ref, 35)
        if msg_type:
            fields.append((372, msg_type))
        fields += [(373, reason), (58, text)]
        self.counts["rejects_sent"] += 1
        self.send("3", fields, conn=conn)

    def end_session(self, text: str, conn: Connection | None = None, *, close: bool = True) -> None:
        """Logout (58=`text`), then close unless we wait for the answer."""
        conn = conn or self.conn
        if conn is None:
            return
        self.send("5", [(58, text)] if text else [], conn=conn)
        conn.logout_sent = True
        if close:
            self.close(conn)

    # --- receiving ------------------------------------------------------------------

    def _on_frame(self, conn: Connection, frame: Frame) -> None:
        if frame.garbled:
            # Vol. 2: a garbled message is ignored, not rejected, and not counted
            log.info("garbled message ignored (%s): %r", frame.garbled, frame.raw[:80])
            self.garbled_in += 1
            return
        message = frame.parse()
        self.received.append(message)
        if conn.silent:
            return
        conn.last_in = time.monotonic()
        conn.test_request = None
        self._on_message(conn, message)

    def _on_message(self, conn: Connection, m: simplefix.FixMessage) -> None:
        msg_type = get(m, 35) or ""
        if not conn.logged_on and msg_type != "A":
            log.info("first message is %r, not a Logon: disconnected", msg_type)
            self.close(conn)
            return
        if get(m, 49) != self.target_comp_id or get(m, 56) != self.sender_comp_id:
            text = (
                f"CompID problem: want 49={self.target_comp_id} 56={self.sender_comp_id}, "
                f"got 49={get(m, 49)} 56={get(m, 56)}"
            )
            self.session_reject(m, "9", text, conn=conn)
            self.end_session(text, conn)
            return
        seq_text = get(m, 34)
        if seq_text is None or not seq_text.isdigit():
            self.end_session(f"MsgSeqNum (34) missing or not a number: {seq_text!r}", conn)
            return
        seq = int(seq_text)
        if not self._good_times(conn, m):
            return
        poss_dup = get(m, 43) == "Y"
        if msg_type == "A" and not conn.logged_on and get(m, 141) == "Y":
            # ResetSeqNumFlag: both sides start again at 1, before the number is judged
            self.next_in, self.next_out = 1, 1
            self._store.clear()
            self._queue.clear()
        if msg_type == "4" and get(m, 123) != "Y":
            self._sequence_reset(conn, m, seq)  # reset mode: MsgSeqNum is not checked
            return
        if seq < self.next_in:
            if poss_dup:
                asked = self._asked
                if asked is not None and asked[0] <= seq <= asked[1] and msg_type not in ADMIN:
                    self._app(conn, m, poss_dup=True)
                self.counts["duplicates_ignored"] += 1
                return
            text = f"MsgSeqNum too low, expecting {self.next_in} but received {seq}"
            self.end_session(text, conn)
            return
        if seq > self.next_in:
            done = False
            if msg_type in ("A", "2", "5"):
                # processed at once, then the gap asked for (Vol. 2, "Logon" and
                # "Resend request"); a Logout ends the session anyway
                self._process(conn, m, seq)
                done = True
            if conn.closed:
                return
            self._queue[seq] = (m, done)
            if not self._resend_pending:
                self._resend_pending = True
                self._send_resend_request(self.next_in, 0)
            return
        self.next_in += 1
        self._process(conn, m, seq)
        self._drain(conn)

    def _drain(self, conn: Connection) -> None:
        while self._queue and not conn.closed:
            seq = min(self._queue)
            if seq > self.next_in:
                return
            message, done = self._queue.pop(seq)
            if seq < self.next_in:
                continue
            self.next_in += 1
            if not done:
                self._process(conn, message, seq)
        self._resend_pending = False

    def _good_times(self, conn: Connection, m: simplefix.FixMessage) -> bool:
        stamp = get(m, 52)
        if stamp is None:
            self._consume(m)
            self.session_reject(m, "1", "Required tag missing: SendingTime (52)", 52, conn)
            return False
        sent = parse_utc(stamp)
        if sent is None:
            self._consume(m)
            self.session_reject(m, "6", f"SendingTime (52) not a UTCTimestamp: {stamp}", 52, conn)
            return False
        skew = abs((datetime.now(UTC) - sent).total_seconds())
        if skew > MAX_LATENCY_S:
            text = f"SendingTime accuracy problem: {skew:.0f} s off"
            self.session_reject(m, "10", text, 52, conn)
            self.end_session(text, conn)
            return False
        if get(m, 43) == "Y" and get(m, 35) != "4":
            orig_text = get(m, 122)
            orig = parse_utc(orig_text) if orig_text else None
            if orig_text is None:
                text = "Required tag missing: OrigSendingTime (122) on a PossDup message"
                self._consume(m)
                self.session_reject(m, "1", text, 122, conn)
                return False
            if orig is None or orig > sent:
                text = f"OrigSendingTime (122) {orig_text} later than SendingTime {stamp}"
                self.session_reject(m, "10", text, 122, conn)
                self.end_session(text, conn)
                return False
        return True

    def _consume(self, m: simplefix.FixMessage) -> None:
        """A rejected message still uses up its MsgSeqNum."""
        seq = get(m, 34)
        if seq is not None and seq.isdigit() and int(seq) == self.next_in:
            self.next_in += 1

    def _process(self, conn: Connection, m: simplefix.FixMessage, seq: int) -> None:
        msg_type = get(m, 35) or ""
        if msg_type == "A":
            self._logon(conn, m, seq)
        elif msg_type == "0":
            pass  # its arrival already proved the initiator alive
        elif msg_type == "1":
            test_id = get(m, 112)
            if test_id is None:
                self.session_reject(m, "1", "Required tag missing: TestReqID (112)", 112, conn)
            else:
                self.send("0", [(112, test_id)], conn=conn)
        elif msg_type == "2":
            begin, end = get(m, 7), get(m, 16)
            if begin is None or end is None or not begin.isdigit() or not end.isdigit():
                tag = 7 if begin is None or not begin.isdigit() else 16
                self.session_reject(m, "1", f"ResendRequest needs 7 and 16, tag {tag}", tag, conn)
            else:
                self._answer_resend(conn, int(begin), int(end))
        elif msg_type == "3":
            log.info("session Reject from the initiator: %s", m)
        elif msg_type == "4":
            self._sequence_reset(conn, m, seq)
        elif msg_type == "5":
            if not conn.logout_sent:
                self.send("5", [], conn=conn)
            self.close(conn)
        else:
            self._app(conn, m, poss_dup=get(m, 43) == "Y")

    def _logon(self, conn: Connection, m: simplefix.FixMessage, seq: int) -> None:
        if conn.logged_on:
            self.session_reject(m, "99", "Logon on a session already logged on", None, conn)
            return
        heartbeat = get(m, 108)
        if heartbeat is None or not heartbeat.isdigit() or int(heartbeat) <= 0:
            self.end_session(f"HeartBtInt (108) missing or invalid: {heartbeat!r}", conn)
            return
        if get(m, 98) != "0":
            self.end_session(f"EncryptMethod (98) must be 0, got {get(m, 98)!r}", conn)
            return
        reset = get(m, 141) == "Y"
        conn.logged_on = True
        conn.heartbeat_s = float(heartbeat)
        self.logons += 1
        reply: Fields = [(98, "0"), (108, heartbeat)]
        if reset:
            reply.append((141, "Y"))
        self.send("A", reply, conn=conn)
        if self.take(Silence) is not None:
            conn.silent = True
        self._asked = None
        asked = self.take(ResendAsk)
        if asked is not None:
            self._ask(asked)

    def _sequence_reset(self, conn: Connection, m: simplefix.FixMessage, seq: int) -> None:
        new_text = get(m, 36)
        if new_text is None or not new_text.isdigit():
            self.session_reject(m, "1", "Required tag missing: NewSeqNo (36)", 36, conn)
            return
        new = int(new_text)
        if get(m, 123) == "Y":
            if new <= seq:
                text = f"attempt to lower sequence number: NewSeqNo {new} after {seq}"
                self.session_reject(m, "5", text, 36, conn)
                return
            self.next_in = max(self.next_in, new)
            self._drain(conn)
            return
        if new < self.next_in:
            text = f"SequenceReset may not lower the sequence: want >= {self.next_in}, got {new}"
            self.session_reject(m, "5", text, 36, conn)
            return
        self.next_in = new
        self._queue = {s: q for s, q in self._queue.items() if s >= new}
        self._drain(conn)

    # --- application hook -----------------------------------------------------------

    def _app(self, conn: Connection, m: simplefix.FixMessage, *, poss_dup: bool) -> None:
        business = self.take(BusinessReject)
        if business is not None:
            self.business_reject(m, "0", business.text)
            return
        rejected = self.take(SessionReject)
        if rejected is not None:
            self.session_reject(m, "99", rejected.text, None, conn)
            return
        if get(m, 35) == "D":
            cut = self.take(DisconnectMidOrder)
            if cut is not None and not cut.after_ack:
                self.close(conn)
            elif cut is not None:
                conn.close_after_ack = True
        self.handle_app(m, poss_dup)

    def business_reject(self, m: simplefix.FixMessage, reason: str, text: str) -> None:
        fields: Fields = [(45, get(m, 34) or "0"), (372, get(m, 35) or "")]
        ref = get(m, 11) or get(m, 584) or get(m, 710)
        if ref:
            fields.append((379, ref))
        fields += [(380, reason), (58, text)]
        self.send("j", fields)

    def handle_app(self, m: simplefix.FixMessage, poss_dup: bool) -> None:
        raise NotImplementedError


def _garble(data: bytes, kind: str) -> bytes:
    if kind == "body_length":
        head, _, rest = data.partition(b"\x019=")
        length, _, tail = rest.partition(b"\x01")
        return head + b"\x019=" + str(int(length) - 1).encode() + b"\x01" + tail
    checksum = int(data[-4:-1])
    return data[:-4] + f"{(checksum + 1) % 256:03d}".encode() + b"\x01"
