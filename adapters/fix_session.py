"""The FIX 4.4 session layer of the `oms_fix` adapter (internal), as an initiator
on asyncio streams. What the standard asks of a session (FIX 4.4, volume 2), and
nothing about orders: those are the adapter's (adapters/oms_fix.py).

- Logon (35=A, 98=0, 108=HeartBtInt); the first message back must be a Logon,
  or a Logout whose text says why not.
- Heartbeat (0) when we sent nothing for HeartBtInt; TestRequest (1) when the
  peer was silent for HeartBtInt + 20%; the session is dropped when that
  TestRequest gets no answer in as long again (`problem` says so), then
  reconnected with backoff.
- Sequence numbers come from a `SessionLog` (engine/broker.py): every outgoing
  message is logged there, durably, before it is written to the socket, and
  every incoming one before it is acted on, with the next number expected.
- Incoming MsgSeqNum higher than expected: a ResendRequest (2, 7=expected,
  16=0) and the message is discarded (it comes back in the replay). Lower, with
  PossDupFlag 43=Y: a duplicate, ignored. Lower without it: Logout with "MsgSeqNum
  too low, expecting X but received Y" and disconnect, as the standard says.
- SequenceReset (4): GapFill (123=Y) moves the expected number to NewSeqNo (36)
  in sequence; Reset moves it whatever its own number.
- A ResendRequest from the peer is answered from the log: administrative
  messages (and any the log lacks) by SequenceReset-GapFill (43=Y, 123=Y, 36),
  application messages resent as they were with 43=Y and OrigSendingTime (122),
  under their original MsgSeqNum.
- A garbled message (BodyLength or CheckSum wrong) is dropped unread; the gap
  it leaves is recovered by the next message's ResendRequest.
- A framed but malformed message in sequence (a required tag missing, a tag
  without a value, a value of the wrong type: adapters/fix_checks.py) gets a
  session Reject (3: 45, 371, 372, 373, 58), is not acted on, and its number is
  consumed (a SequenceReset's is not). No usable MsgSeqNum: Logout, disconnect.
  Other CompIDs: Reject 373=9, then Logout and disconnect.
- A Logon with ResetSeqNumFlag (141=Y), the answer to ours or mid-session: both
  sides start again at 1, in a new epoch of the session log, and we answer with
  our Logon 141=Y 34=1 (unless it answers one of ours).
- HeartBtInt: ours is proposed; if the counterparty's Logon names another, we
  heartbeat at the shorter and wait the longer (+20%) before a TestRequest.
- Logout both ways: `close()` sends one and waits for the answer; a peer's
  Logout is answered and the session ends (then reconnected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.broker import BrokerError, SessionLog
from engine.clock import Clock

from .fix_checks import COMPID_PROBLEM, VALUE_INCORRECT, Malformed, problem_of
from .fix_codec import ADMIN_TYPES, FixMessage, Framer, build, fix_time

__all__ = ["FixSession", "SessionSettings", "text_of"]

log = logging.getLogger("apex.broker.fix")

_HEADER_TAGS = frozenset({8, 9, 35, 49, 56, 34, 52, 43, 97, 122, 10})
_SILENCE = 1.2  # HeartBtInt + 20%: the peer's heartbeat is late


@dataclass(frozen=True)
class SessionSettings:
    host: str
    port: int
    sender_comp_id: str
    target_comp_id: str
    heartbeat_s: float = 30.0
    logon_timeout_s: float = 5.0
    reconnect_min_s: float = 0.25
    reconnect_max_s: float = 30.0


def text_of(message: FixMessage, tag: int, default: str = "") -> str:
    value = message.get(tag)
    return default if value is None else value.decode("utf-8", "replace")


class FixSession:
    """One FIX session with one counterparty. Runs on the caller's event loop:
    every method is called on it."""

    def __init__(
        self,
        settings: SessionSettings,
        journal: SessionLog,
        clock: Clock,
        *,
        name: str,
        on_message: Callable[[FixMessage], None],
        on_logon: Callable[[], Awaitable[None]],
        on_down: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.name = name
        self._log = journal
        self._clock = clock
        self._on_message = on_message
        self._on_logon = on_logon
        self._on_down = on_down
        self.problem: str | None = "not connected yet"
        self.connections = 0
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader_task: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._logon: asyncio.Future[None] | None = None
        self._logout: asyncio.Future[None] | None = None
        self._logged_on = False
        self._closing = False
        self._next_out, self._next_in = 1, 1
        self._resend_until = 0  # a ResendRequest of ours is out until next_in passes this
        self._last_sent = self._last_received = time.monotonic()
        self._test_id: str | None = None
        self._test_sent_at = 0.0
        self._tests = 0
        self._peer_heartbeat = 0  # HeartBtInt of the counterparty's Logon
        self._reset_out = False  # our Logon 141=Y is the last Logon: a 141=Y now answers it

    @property
    def heartbeat_int(self) -> int:
        """HeartBtInt as sent: whole seconds, at least 1."""
        return max(1, round(self.settings.heartbeat_s))

    @property
    def heartbeat_intervals(self) -> tuple[float, float]:
        """(send a Heartbeat after this much quiet, ask with a TestRequest after this
        much silence). Both sides should use the initiator's HeartBtInt; when the
        counterparty's Logon names another, we heartbeat at the shorter of the two
        (more often never hurts) and wait the longer one (+20%) before asking."""
        ours = self.heartbeat_int
        theirs = self._peer_heartbeat if self._peer_heartbeat > 0 else ours
        return float(min(ours, theirs)), max(ours, theirs) * _SILENCE

    @property
    def sequences(self) -> tuple[int, int]:
        return self._next_out, self._next_in

    # --- connecting -------------------------------------------------------------------

    async def start(self) -> None:
        """The first connection attempt; on failure, reconnects in the background
        and raises `BrokerError`."""
        try:
            await self._connect()
        except BrokerError:
            self._schedule_reconnect()
            raise

    async def _connect(self) -> None:
        s = self.settings
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(s.host, s.port), s.logon_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            self.problem = f"cannot connect to {s.host}:{s.port}: {_words(exc)}"
            raise BrokerError(f"{self.name}: {self.problem}") from exc
        self._writer = writer
        self._next_out, self._next_in = self._log.sequences()
        self._resend_until = 0
        self._test_id = None
        self._peer_heartbeat, self._reset_out = 0, False
        self._logon = asyncio.get_running_loop().create_future()
        self._reader_task = self._spawn(self._read(reader, writer))
        self._send("A", [(98, "0"), (108, str(self.heartbeat_int))])
        try:
            await asyncio.wait_for(asyncio.shield(self._logon), s.logon_timeout_s)
        except (TimeoutError, BrokerError, ConnectionError) as exc:
            words = exc if isinstance(exc, BrokerError) else "no Logon answer in time"
            self._drop(f"logon to {s.host}:{s.port} failed: {words}", reconnect=False)
            raise BrokerError(f"{self.name}: {self.problem}") from exc
        self._logged_on = True
        self.problem = None
        self.connections += 1
        self._last_received = time.monotonic()
        self._spawn(self._heartbeats(writer))
        log.info("%s: logged on to %s:%s, next out %s, next in %s", self.name, s.host, s.port,
                 self._next_out, self._next_in)  # fmt: skip
        self._spawn(self._on_logon())

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _schedule_reconnect(self) -> None:
        if self._closing or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay, ceiling = self.settings.reconnect_min_s, self.settings.reconnect_max_s
        while not self._closing and self.problem is not None:
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                await self._connect()
            except BrokerError as exc:
                log.info("%s: reconnect failed, next in %.2fs: %s", self.name, delay, exc)
                delay = min(delay * 2, ceiling)

    def _drop(self, problem: str, *, reconnect: bool = True) -> None:
        """The session is over: close the socket, fail what waits, reconnect later."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        self._logged_on = False
        self.problem = problem
        log.warning("%s: %s", self.name, problem)
        writer.close()
        if self._logon is not None and not self._logon.done():
            self._logon.set_exception(BrokerError(problem))
            self._logon.exception()  # retrieved: whoever waits has its own copy
        if self._logout is not None and not self._logout.done():
            self._logout.set_result(None)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and task is not self._reader_task:
                task.cancel()
        if self._reader_task is not None and self._reader_task is not current:
            self._reader_task.cancel()
        self._on_down(problem)
        if reconnect:
            self._schedule_reconnect()

    async def close(self, text: str = "") -> None:
        """Log out (waiting briefly for the answer) and stop reconnecting."""
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._logged_on and self._writer is not None:
            await self.logout(text)
        self._drop("closed", reconnect=False)

    async def logout(self, text: str = "") -> None:
        """Send Logout and wait (up to the logon timeout) for the peer's."""
        if self._writer is None:
            return
        self._logout = asyncio.get_running_loop().create_future()
        self._send("5", [(58, text)] if text else [])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._logout, self.settings.logon_timeout_s)

    # --- sending ----------------------------------------------------------------------

    def send(
        self, msg_type: str, fields: list[tuple[int, str]], cl_ord_id: str | None = None
    ) -> int:
        """Send an application message now; its MsgSeqNum. `BrokerError` when the
        session is not logged on (nothing was sent)."""
        if not self._logged_on or self._writer is None:
            raise BrokerError(f"{self.name}: not connected ({self.problem})")
        return self._send(msg_type, fields, cl_ord_id)

    def _send(
        self, msg_type: str, fields: list[tuple[int, str]], cl_ord_id: str | None = None
    ) -> int:
        assert self._writer is not None
        seq = self._next_out
        now = self._clock()
        raw = build(
            msg_type, fields, sender=self.settings.sender_comp_id,
            target=self.settings.target_comp_id, seq=seq, sent_at=now,
        )  # fmt: skip
        # durable before it leaves: a crash never reuses a number the peer saw
        self._log.sent(seq, msg_type, raw, now, cl_ord_id)
        self._next_out = seq + 1
        self._write(raw)
        return seq

    def _write(self, raw: bytes) -> None:
        assert self._writer is not None
        self._writer.write(raw)
        self._last_sent = time.monotonic()

    # --- receiving --------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer()
        problem = "the counterparty closed the connection"
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for frame in framer.feed(data):
                    if frame.message is None:
                        log.warning("%s: dropped a garbled message: %s", self.name, frame.problem)
                        continue
                    self._last_received = time.monotonic()
                    self._handle(frame.message, frame.raw)
                    if self._writer is not writer:  # the session ended on this message
                        return
        except (ConnectionError, OSError) as exc:
            problem = f"connection lost: {_words(exc)}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: reading the session failed", self.name)
            problem = f"reading the session failed: {_words(exc)}"
        if self._writer is writer:
            self._drop(problem)

    def _handle(self, message: FixMessage, raw: bytes) -> None:
        msg_type = text_of(message, 35)
        now = self._clock()
        seq_text = text_of(message, 34)
        if not seq_text.isdigit() or int(seq_text) < 1:
            # no number to consume or to reject by: the standard logs out
            self._log.received(0, msg_type, raw, now, None)
            said = "missing" if message.get(34) is None else f"not a number (got: {seq_text!r})"
            self._fatal(f"MsgSeqNum(34) {said}")
            return
        seq = int(seq_text)
        sender, target = text_of(message, 49), text_of(message, 56)
        if (sender, target) != (self.settings.target_comp_id, self.settings.sender_comp_id):
            self._log.received(seq, msg_type, raw, now, None)
            want = f"{self.settings.target_comp_id}->{self.settings.sender_comp_id}"
            text = f"CompID problem (want: {want}, got: {sender}->{target})"
            tag = 49 if sender != self.settings.target_comp_id else 56
            self._reject(seq, msg_type, Malformed(COMPID_PROBLEM, tag, text))
            self._fatal(text)
            return
        malformed = problem_of(message, msg_type)
        if msg_type == "A" and malformed is not None:
            self._log.received(seq, msg_type, raw, now, None)
            self._fatal(f"Logon malformed: {malformed.text}")
            return
        if msg_type == "A" and text_of(message, 141) == "Y":
            self._peer_reset(message, raw, seq)
            return
        if msg_type == "4" and text_of(message, 123) != "Y":
            self._sequence_reset(message, raw, seq, malformed)
            return
        if seq < self._next_in:
            self._log.received(seq, msg_type, raw, now, None)
            if text_of(message, 43) == "Y":
                return  # a duplicate we already have
            self._fatal(f"MsgSeqNum too low, expecting {self._next_in} but received {seq}")
            return
        if seq > self._next_in:
            self._log.received(seq, msg_type, raw, now, None)
            self._gap(message, msg_type, seq, act=malformed is None)
            return
        if malformed is not None:
            self._refuse(raw, msg_type, seq, malformed)
            return
        if msg_type == "4":  # SequenceReset-GapFill, in sequence
            self._next_in = max(seq + 1, int(text_of(message, 36)))
        else:
            self._next_in = seq + 1
        self._reset_out = False
        self._log.received(seq, msg_type, raw, now, self._next_in)
        if self._resend_until and self._next_in > self._resend_until:
            self._resend_until = 0
        self._act(message, msg_type)

    def _refuse(self, raw: bytes, msg_type: str, seq: int, malformed: Malformed) -> None:
        """A malformed message in sequence: Reject (3) and not acted on. Its number
        is consumed, except a SequenceReset's (whose NewSeqNo we could not take):
        the next message then shows the gap and a ResendRequest recovers it."""
        consumed = msg_type != "4"
        if consumed:
            self._next_in = seq + 1
            if self._resend_until and self._next_in > self._resend_until:
                self._resend_until = 0  # a replay that ends on it is over all the same
        self._log.received(seq, msg_type, raw, self._clock(), self._next_in if consumed else None)
        log.warning("%s: rejected the counterparty's %s %s: %s", self.name, msg_type, seq,
                    malformed.text)  # fmt: skip
        self._reject(seq, msg_type, malformed)

    def _reject(self, seq: int, msg_type: str, malformed: Malformed) -> None:
        """A session-level Reject (35=3) of the counterparty's message `seq`."""
        self._send("3", [(45, str(seq)), (371, str(malformed.tag)), (372, msg_type),
                         (373, malformed.reason), (58, malformed.text)])  # fmt: skip

    def _sequence_reset(
        self, message: FixMessage, raw: bytes, seq: int, malformed: Malformed | None
    ) -> None:
        """SequenceReset in Reset mode: NewSeqNo (36) is the next number expected,
        whatever the message's own; one below the expected number is refused
        (373=5), as the standard says, and nothing moves."""
        now = self._clock()
        if malformed is None and int(text_of(message, 36)) < self._next_in:
            new = text_of(message, 36)
            malformed = Malformed(VALUE_INCORRECT, 36,
                                  f"NewSeqNo(36) too low (want: at least {self._next_in}, "
                                  f"got: {new})")  # fmt: skip
        if malformed is not None:
            self._log.received(seq, "4", raw, now, None)
            self._reject(seq, "4", malformed)
            return
        self._next_in = int(text_of(message, 36))
        self._resend_until = 0
        self._log.received(seq, "4", raw, now, self._next_in)

    def _peer_reset(self, message: FixMessage, raw: bytes, seq: int) -> None:
        """A Logon with ResetSeqNumFlag (141=Y), the answer to ours or mid-session:
        both sides start again at 1. The counterparty's Logon is its number `seq`
        (1); unless it answers a Logon 141=Y of ours, we answer with ours, 141=Y
        and 34=1, in a new epoch of the session log (persisted before it is sent)."""
        now = self._clock()
        self._next_in = seq + 1
        self._resend_until = 0
        if self._reset_out:  # the answer to our reset
            self._reset_out = False
            self._log.received(seq, "A", raw, now, self._next_in)
        else:
            log.warning("%s: the counterparty reset the sequence numbers (Logon 141=Y, "
                        "MsgSeqNum %s): ours start again at 1", self.name, seq)  # fmt: skip
            self._log.reset(1, self._next_in)
            self._next_out = 1
            self._log.received(seq, "A", raw, now, self._next_in)
            self._send("A", [(98, "0"), (108, str(self.heartbeat_int)), (141, "Y")])
            self._reset_out = True
        self._act(message, "A")

    def _gap(self, message: FixMessage, msg_type: str, seq: int, *, act: bool) -> None:
        """A message beyond the one expected: ask for the missing ones (once per
        gap) and discard it; only a well-formed Logon, Logout or ResendRequest is
        acted on now (a resend would otherwise wait on ours forever)."""
        if act and msg_type in ("A", "5", "2"):
            self._act(message, msg_type)
        if self._writer is None:
            return
        if self._resend_until < seq:
            if not self._resend_until:
                log.warning("%s: sequence gap (want: %s, got: %s); asking for a resend",
                            self.name, self._next_in, seq)  # fmt: skip
                self._send("2", [(7, str(self._next_in)), (16, "0")])
            self._resend_until = seq

    def _act(self, message: FixMessage, msg_type: str) -> None:
        if msg_type == "A":
            theirs = text_of(message, 108)
            if theirs.isdigit() and int(theirs) != self.heartbeat_int:
                log.info("%s: the counterparty's HeartBtInt is %s, ours %s", self.name, theirs,
                         self.heartbeat_int)  # fmt: skip
            self._peer_heartbeat = int(theirs) if theirs.isdigit() else 0
            if self._logon is not None and not self._logon.done():
                self._logon.set_result(None)
        elif msg_type == "0":
            if self._test_id is not None and text_of(message, 112) == self._test_id:
                self._test_id = None
        elif msg_type == "1":
            self._send("0", [(112, text_of(message, 112))])
        elif msg_type == "2":
            self._resend(int(text_of(message, 7)), int(text_of(message, 16)))  # checked digits
        elif msg_type == "5":
            self._peer_logout(text_of(message, 58))
        elif msg_type == "4":
            pass
        else:  # application messages, and a session Reject (3) of one of ours
            try:
                self._on_message(message)
            except Exception:
                log.exception("%s: handling a %s message failed", self.name, msg_type)

    def _peer_logout(self, text: str) -> None:
        if self._logout is not None:  # the answer to ours
            if not self._logout.done():
                self._logout.set_result(None)
            self._drop("logged out", reconnect=False)
            return
        said = f": {text}" if text else ""
        if self._logon is not None and not self._logon.done():
            self._drop(f"the counterparty refused the logon{said}")
            return
        with contextlib.suppress(Exception):
            self._send("5", [])
        self._drop(f"the counterparty logged out{said}")

    def _fatal(self, text: str) -> None:
        """A session-level error the standard ends the session for."""
        with contextlib.suppress(Exception):
            self._send("5", [(58, text)])
        self._drop(text)

    # --- answering a ResendRequest ----------------------------------------------------

    def _resend(self, begin: int, end: int) -> None:
        last = self._next_out - 1
        end = last if end == 0 or end > last else end
        if begin < 1 or begin > end:
            return
        logged = {m.seq: m for m in self._log.outgoing(begin, end)}
        gap_from: int | None = None
        for seq in range(begin, end + 1):
            entry = logged.get(seq)
            if entry is None or entry.msg_type in ADMIN_TYPES:
                gap_from = seq if gap_from is None else gap_from
                continue
            if gap_from is not None:
                self._gap_fill(gap_from, seq)
                gap_from = None
            self._replay(entry.message, seq, entry.msg_type, entry.cl_ord_id)
        if gap_from is not None:
            self._gap_fill(gap_from, end + 1)

    def _gap_fill(self, seq: int, new_seq: int) -> None:
        assert self._writer is not None
        at = self._clock()
        raw = build(
            "4", [(123, "Y"), (36, str(new_seq))], sender=self.settings.sender_comp_id,
            target=self.settings.target_comp_id, seq=seq, sent_at=at, orig_sent_at=fix_time(at),
        )  # fmt: skip
        self._log.sent(seq, "4", raw, at)
        self._write(raw)

    def _replay(self, original: bytes, seq: int, msg_type: str, cl_ord_id: str | None) -> None:
        """An application message again, as it was, marked a possible duplicate."""
        assert self._writer is not None
        frames = Framer().feed(original)
        message = frames[0].message if frames else None
        if message is None:  # unreadable in our own log: skipped, never guessed at
            self._gap_fill(seq, seq + 1)
            return
        body = [(tag, value.decode()) for tag, value in message if tag not in _HEADER_TAGS]
        at = self._clock()
        raw = build(
            msg_type, body, sender=self.settings.sender_comp_id,
            target=self.settings.target_comp_id, seq=seq, sent_at=at,
            orig_sent_at=text_of(message, 52),
        )  # fmt: skip
        self._log.sent(seq, msg_type, raw, at, cl_ord_id)
        self._write(raw)

    # --- heartbeats -------------------------------------------------------------------

    async def _heartbeats(self, writer: asyncio.StreamWriter) -> None:
        while self._writer is writer:
            interval, late = self.heartbeat_intervals  # a reset Logon may change them
            await asyncio.sleep(min(1.0, interval / 5))
            if self._writer is not writer:
                return
            now = time.monotonic()
            if self._test_id is not None and self._last_received < self._test_sent_at:
                if now - self._test_sent_at > late:
                    self._drop(f"no answer to TestRequest {self._test_id} within {late:g}s")
                    return
            elif now - self._last_received > late:
                self._tests += 1
                self._test_id = f"TEST-{self._tests}"
                self._test_sent_at = now
                self._send("1", [(112, self._test_id)])
                continue
            if now - self._last_sent >= interval:
                self._send("0", [])
            with contextlib.suppress(ConnectionError):
                await writer.drain()


def _words(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
