"""FIX 4.4 on the wire for the `oms_fix` adapter: framing, checking and building
messages. simplefix builds and parses; everything it does not check is checked
here.

Framing. simplefix's parser trusts BodyLength (9) and never verifies CheckSum
(10), so a garbled message could swallow the next one. `Framer` cuts frames
itself: a frame starts at `8=FIX.4.4<SOH>9=`, ends at the first `<SOH>10=nnn<SOH>`
after it, and is kept only when its BodyLength and CheckSum are right; a bad one
is dropped whole and reported, so the session can let its sequence number fall
into a gap that a ResendRequest recovers. A frame that checks out but breaks a
rule of the standard otherwise (a tag without a value, MsgSeqNum missing) is
passed on: the session rejects it (adapters/fix_checks.py) or logs out.

Quantities are read in integer or decimal notation (`100`, `100.0`, `1E2` is
not FIX and is refused) and sent in integer notation when whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import simplefix
from simplefix import FixMessage

__all__ = [
    "ADMIN_TYPES",
    "BEGIN_STRING",
    "SOH",
    "FixMessage",
    "Frame",
    "Framer",
    "build",
    "decimal",
    "fix_time",
    "parse_time",
    "quantity_text",
    "readable",
]

BEGIN_STRING = "FIX.4.4"
SOH = b"\x01"
_START = b"8=FIX.4.4\x019="
_END = re.compile(rb"\x0110=(\d{3})\x01")
# session-level message types: answered with a gap fill, never resent (FIX 4.4 vol. 2)
ADMIN_TYPES = frozenset({"0", "1", "2", "3", "4", "5", "A"})
_DECIMAL = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)$")
_TIME_FORMATS = ("%Y%m%d-%H:%M:%S.%f", "%Y%m%d-%H:%M:%S")


@dataclass(frozen=True)
class Frame:
    """One cut of the input: `raw` as received; `message` when it checked out,
    else `problem` says why it was dropped."""

    raw: bytes
    message: FixMessage | None
    problem: str = ""


# A frame longer than this without its CheckSum is dropped as garbled: a peer that
# opens a frame and never ends it cannot grow our memory without bound. Far above
# any message we read (an ExecutionReport is a few hundred bytes; a PositionReport
# with its parties a few KiB).
MAX_FRAME = 1 << 20
_END_LENGTH = len(b"\x0110=000\x01")


class Framer:
    """Cut received bytes into checked frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = b""
        self._searched = 0  # the open frame holds no end before this offset
        self._max = max_frame

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            start = self._buffer.find(_START)
            if start < 0:
                # keep a tail that may be the beginning of a frame
                self._buffer, self._searched = self._buffer[-len(_START) :], 0
                return frames
            if start > 0:
                frames.append(Frame(self._buffer[:start], None, "bytes outside a frame"))
                self._buffer, self._searched = self._buffer[start:], 0
            # search only what arrived since the last search (a slow large frame is
            # read in linear time), from just before it in case an end straddles
            end = _END.search(self._buffer, max(len(_START), self._searched - _END_LENGTH))
            if end is None:
                self._searched = len(self._buffer)
                if len(self._buffer) <= self._max:
                    return frames
                # too long without an end: dropped up to the next frame's start, if any
                following = self._buffer.find(_START, 1)
                cut = following if following > 0 else len(self._buffer) - len(_START)
                problem = f"no CheckSum within {self._max} bytes"
                frames.append(Frame(self._buffer[:cut], None, problem))
                self._buffer, self._searched = self._buffer[cut:], 0
                continue
            raw, self._buffer = self._buffer[: end.end()], self._buffer[end.end() :]
            self._searched = 0
            frames.append(_check(raw, end.start() + 1))


def _check(raw: bytes, checksum_at: int) -> Frame:
    """A frame whose CheckSum field starts at `checksum_at`."""
    length_end = raw.find(SOH, len(_START))
    length_text = raw[len(_START) : length_end]
    if not length_text.isdigit():
        return Frame(raw, None, f"BodyLength is not a number (got: {length_text!r})")
    body = checksum_at - (length_end + 1)
    if int(length_text) != body:
        return Frame(raw, None, f"BodyLength wrong (want: {body}, got: {int(length_text)})")
    stated = int(raw[checksum_at + 3 : checksum_at + 6])
    computed = sum(raw[:checksum_at]) % 256
    if stated != computed:
        return Frame(raw, None, f"CheckSum wrong (want: {computed:03d}, got: {stated:03d})")
    if not raw.startswith(b"35=", length_end + 1):
        # the standard's first three fields are 8, 9, 35, in that order
        return Frame(raw, None, "MsgType(35) is not the third field")
    # an empty value is let through for the session to reject (373=4), not dropped
    parser = simplefix.FixParser(allow_empty_values=True)
    parser.append_buffer(raw)
    try:
        message = parser.get_message()
    except simplefix.errors.ParsingError as exc:  # e.g. a tag that is not a number
        return Frame(raw, None, f"unreadable: {type(exc).__name__}")
    if message is None or not message.get(35):
        return Frame(raw, None, "MsgType missing")
    return Frame(raw, message)


def build(
    msg_type: str,
    fields: list[tuple[int, str]],
    *,
    sender: str,
    target: str,
    seq: int,
    sent_at: datetime,
    orig_sent_at: str | None = None,
) -> bytes:
    """One message, header in the order 8, 9, 35, 49, 56, 34, 52 (then 43 and 122
    for a possible duplicate); simplefix adds BodyLength and CheckSum."""
    message = simplefix.FixMessage()
    message.append_pair(8, BEGIN_STRING, header=True)
    message.append_pair(35, msg_type, header=True)
    message.append_pair(49, sender, header=True)
    message.append_pair(56, target, header=True)
    message.append_pair(34, str(seq), header=True)
    message.append_pair(52, fix_time(sent_at), header=True)
    if orig_sent_at is not None:
        message.append_pair(43, "Y", header=True)
        message.append_pair(122, orig_sent_at, header=True)
    for tag, value in fields:
        message.append_pair(tag, value)
    encoded: bytes = message.encode()
    return encoded


def fix_time(moment: datetime) -> str:
    """UTCTimestamp with milliseconds: `20261130-15:00:00.123`."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y%m%d-%H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def parse_time(value: bytes | str | None) -> datetime | None:
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    for pattern in _TIME_FORMATS:
        try:
            return datetime.strptime(text[:21] if "." in text else text, pattern).replace(
                tzinfo=UTC
            )
        except ValueError:
            continue
    return None


def decimal(value: bytes | str | None) -> float | None:
    """A Qty, Price or Amt field in integer or decimal notation; None when absent
    or not a FIX decimal."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not _DECIMAL.match(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def quantity_text(value: float) -> str:
    """A quantity in integer notation when whole (`100`), else the shortest decimal."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def readable(raw: bytes) -> str:
    """tag=value form with `|` for SOH, as `brokers fix-log` prints it."""
    return raw.decode("ascii", "replace").replace("\x01", "|")
