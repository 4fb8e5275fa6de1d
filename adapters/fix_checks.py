"""Is a framed FIX 4.4 message well formed? (internal to the `oms_fix` session)

A message that passed framing (BodyLength, CheckSum) can still break the rules
of FIX 4.4 volume 2: a required tag missing, a tag without a value, a value of
the wrong type. The standard answers those with a session-level Reject (35=3)
naming the message (45 RefSeqNum, 372 RefMsgType), the tag (371 RefTagID) and
the reason (373 SessionRejectReason), and the message is not acted on; what is
checked here is what the session and the adapter read, never more: an unknown
or user-defined tag (5000 and up) is nobody's business, a repeating group is
read by its first occurrence of a tag, and a field the adapter can do without
(AvgPx on an ExecutionReport of a new order) is not required of the
counterparty. A trade's ExecutionReport must carry CumQty (what guards the
booking), and ExecType and OrdStatus must be values FIX 4.4 defines (ExecType
also FIX 4.2's 1 and 2): another value is refused (373=5), never guessed at.

Types are FIX's, global per tag: int and SeqNum are digits, Qty/Price/Amt are
decimals in integer or decimal notation, Boolean is Y or N, UTCTimestamp is
`YYYYMMDD-HH:MM:SS` with or without a fraction of 1 to 9 digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .fix_codec import FixMessage, decimal, parse_time

__all__ = [
    "COMPID_PROBLEM",
    "INCORRECT_DATA_FORMAT",
    "REQUIRED_TAG_MISSING",
    "TAG_WITHOUT_VALUE",
    "VALUE_INCORRECT",
    "Malformed",
    "problem_of",
]

# SessionRejectReason (373), FIX 4.4
REQUIRED_TAG_MISSING = "1"
TAG_WITHOUT_VALUE = "4"
VALUE_INCORRECT = "5"
INCORRECT_DATA_FORMAT = "6"
COMPID_PROBLEM = "9"

_NAMES = {
    7: "BeginSeqNo", 14: "CumQty", 16: "EndSeqNo", 31: "LastPx", 32: "LastQty", 36: "NewSeqNo",
    38: "OrderQty", 39: "OrdStatus", 43: "PossDupFlag", 44: "Price", 45: "RefSeqNum",
    52: "SendingTime", 6: "AvgPx", 60: "TransactTime", 97: "PossResend", 98: "EncryptMethod",
    99: "StopPx", 108: "HeartBtInt", 112: "TestReqID", 122: "OrigSendingTime",
    123: "GapFillFlag", 141: "ResetSeqNumFlag", 150: "ExecType", 151: "LeavesQty",
    704: "LongQty", 705: "ShortQty",
}  # fmt: skip
# body tags required by the messages the session and the adapter act on
_REQUIRED: dict[str, tuple[int, ...]] = {
    "A": (98, 108),
    "1": (112,),
    "2": (7, 16),
    "3": (45,),
    "4": (36,),
    "8": (150, 39),  # what the report means; the rest is read when present
}
# ... and on an ExecutionReport that reports a trade (ExecType F, or FIX 4.2's 1
# and 2): CumQty, which guards the booking against duplicates and overfills
_TRADE_EXEC_TYPES = frozenset({b"F", b"1", b"2"})
_TRADE_REQUIRED = (14,)
# the values FIX 4.4 defines (ExecType also FIX 4.2's 1 and 2, read as trades);
# a value outside them is refused (373=5), never read as something it is not
_ENUMS: dict[int, frozenset[bytes]] = {
    39: frozenset(c.encode() for c in "0123456789ABCDE"),
    150: frozenset(c.encode() for c in "0123456789ABCDEFGHI"),
}
_INTS = frozenset({7, 16, 36, 45, 98, 108})
_DECIMALS = frozenset({6, 14, 31, 32, 38, 44, 99, 151, 704, 705})
_BOOLEANS = frozenset({43, 97, 123, 141})
_TIMES = frozenset({52, 60, 122})
_DIGITS = re.compile(rb"^\d+$")
_TIMESTAMP = re.compile(rb"^\d{8}-\d{2}:\d{2}:\d{2}(\.\d{1,9})?$")


@dataclass(frozen=True)
class Malformed:
    """Why a message is refused: SessionRejectReason (373), RefTagID (371), Text (58)."""

    reason: str
    tag: int
    text: str


def _name(tag: int) -> str:
    return f"{_NAMES[tag]}({tag})" if tag in _NAMES else f"tag {tag}"


def problem_of(message: FixMessage, msg_type: str) -> Malformed | None:
    """The first rule the message breaks, or None. MsgSeqNum and the CompIDs are
    the session's to judge (they end the session rather than reject)."""
    for tag, value in message:
        if value == b"":
            return Malformed(TAG_WITHOUT_VALUE, tag, f"{_name(tag)} has no value")
    if message.get(52) is None:
        return Malformed(REQUIRED_TAG_MISSING, 52, "SendingTime(52) missing")
    if message.get(43) == b"Y" and message.get(122) is None and msg_type != "4":
        # a gap fill carries no original message: engines do not require 122 on it
        return Malformed(REQUIRED_TAG_MISSING, 122, "OrigSendingTime(122) missing on PossDupFlag=Y")
    required = _REQUIRED.get(msg_type, ())
    if msg_type == "8" and message.get(150) in _TRADE_EXEC_TYPES:
        required = (*required, *_TRADE_REQUIRED)
    for tag in required:
        if message.get(tag) is None:
            return Malformed(REQUIRED_TAG_MISSING, tag, f"{_name(tag)} missing")
    for tag, value in message:
        wrong = _format_wrong(tag, value)
        if wrong:
            got = value.decode("ascii", "replace")
            text = f"{_name(tag)} incorrect data format (want: {wrong}, got: {got!r})"
            return Malformed(INCORRECT_DATA_FORMAT, tag, text)
    if msg_type == "8":
        for tag, allowed in _ENUMS.items():
            value = message.get(tag)
            if value is not None and value not in allowed:
                want = ", ".join(sorted(v.decode() for v in allowed))
                got = value.decode("ascii", "replace")
                text = f"{_name(tag)} value out of range (want: one of {want}, got: {got!r})"
                return Malformed(VALUE_INCORRECT, tag, text)
    return None


def _format_wrong(tag: int, value: bytes) -> str:
    """What the value should have been, or "" when it is right."""
    if tag in _INTS and not _DIGITS.match(value):
        return "an integer"
    if tag in _DECIMALS and decimal(value) is None:
        return "a decimal"
    if tag in _BOOLEANS and value not in (b"Y", b"N"):
        return "Y or N"
    if tag in _TIMES and (not _TIMESTAMP.match(value) or parse_time(value) is None):
        return "a UTCTimestamp YYYYMMDD-HH:MM:SS[.fff]"
    return ""
