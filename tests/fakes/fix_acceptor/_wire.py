"""The wire of the fake acceptor: framing, the checks every message passes before
the session sees it, timestamps and number notation (FIX 4.4 Vol. 2, "Message
format" and "Data types")."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import simplefix

__all__ = [
    "BEGIN_STRING",
    "Frame",
    "format_number",
    "format_utc",
    "get",
    "parse_number",
    "parse_utc",
    "split_frames",
]

BEGIN_STRING = "FIX.4.4"
_SOH = b"\x01"
# the trailer is the only place `<SOH>10=` can appear (no raw data fields here): we
# frame on it, so a message whose BodyLength lies is found, judged garbled, and the
# next one still parses (the spec's "resynchronise on the next 8=")
_TRAILER = re.compile(rb"\x0110=(\d{3})\x01")
_HEAD = re.compile(rb"^8=([^\x01]*)\x019=(\d+)\x0135=")
_UTC = re.compile(r"^\d{8}-\d{2}:\d{2}:\d{2}(\.\d{3})?$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class Frame:
    """One message cut from the stream: its bytes, and why it is garbled (or "")."""

    def __init__(self, raw: bytes, garbled: str) -> None:
        self.raw = raw
        self.garbled = garbled

    def parse(self) -> simplefix.FixMessage:
        parser = simplefix.FixParser()
        parser.append_buffer(self.raw)
        message = parser.get_message()
        if message is None:  # cannot happen for a frame that passed the checks
            raise ValueError(f"unparseable frame {self.raw!r}")
        return message


def split_frames(buffer: bytearray) -> list[Frame]:
    """Cut every complete message off the front of `buffer` (which keeps the rest)."""
    frames: list[Frame] = []
    while True:
        start = buffer.find(b"8=")
        if start < 0:
            # nothing that can begin a message: keep a possible half "8"
            del buffer[: max(len(buffer) - 1, 0)]
            return frames
        if start > 0:
            frames.append(Frame(bytes(buffer[:start]), "bytes before BeginString"))
            del buffer[:start]
        trailer = _TRAILER.search(buffer)
        if trailer is None:
            return frames
        checksum, end = int(trailer.group(1)), trailer.end()  # before the buffer moves
        raw = bytes(buffer[:end])
        del buffer[:end]
        frames.append(Frame(raw, _check(raw, checksum)))


def _check(raw: bytes, checksum: int) -> str:
    head = _HEAD.match(raw)
    if head is None:
        return "the first fields are not 8, 9, 35"
    if head.group(1).decode(errors="replace") != BEGIN_STRING:
        return f"BeginString want {BEGIN_STRING}, got {head.group(1)!r}"
    body_start = raw.index(b"\x0135=") + 1
    body_end = len(raw) - len(b"10=000\x01")
    declared = int(head.group(2))
    if body_end - body_start != declared:
        return f"BodyLength want {body_end - body_start}, got {declared}"
    computed = sum(raw[:body_end]) % 256
    if computed != checksum:
        return f"CheckSum want {computed:03d}, got {checksum:03d}"
    return ""


def get(message: simplefix.FixMessage, tag: int) -> str | None:
    value = message.get(tag)
    return None if value is None else bytes(value).decode(errors="replace")


def format_utc(moment: datetime) -> str:
    """UTCTimestamp with milliseconds, the FIX 4.4 form."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%d-%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def parse_utc(text: str) -> datetime | None:
    """`YYYYMMDD-HH:MM:SS` or `YYYYMMDD-HH:MM:SS.sss` (FIX 4.4 allows nothing else)."""
    if not _UTC.match(text):
        return None
    pattern = "%Y%m%d-%H:%M:%S.%f" if "." in text else "%Y%m%d-%H:%M:%S"
    try:
        return datetime.strptime(text, pattern).replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_number(text: str | None) -> float | None:
    """A Qty or Price: digits with an optional decimal part, no exponent."""
    if text is None or not _NUMBER.match(text):
        return None
    return float(text)


def format_number(value: float, *, decimal: bool = False) -> str:
    """Integer notation when whole ("10"), else decimal ("10.5"); `decimal`
    forces a decimal point ("10.0"), as some counterparties always send."""
    text = f"{value:.8f}".rstrip("0")
    if text.endswith("."):
        return text + "0" if decimal else text[:-1]
    return text
