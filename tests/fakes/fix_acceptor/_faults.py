"""Faults the fake acceptor can be told to commit, each once (`inject`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BusinessReject",
    "CancelReject",
    "DisconnectMidOrder",
    "DuplicateExecution",
    "Fault",
    "FillAfterCancel",
    "Garbled",
    "PartialFill",
    "Reject",
    "ResendAsk",
    "SequenceGap",
    "SessionReject",
    "Silence",
]


@dataclass(frozen=True)
class Reject:
    """The next NewOrderSingle is refused: ER 150=8 39=8, 103=0, 58=`text`."""

    text: str = "order rejected by the desk"


@dataclass(frozen=True)
class CancelReject:
    """The next cancel (F) or replace (G) is refused: 35=9 102=2 58=`text`."""

    text: str = "cancel refused by the desk"


@dataclass(frozen=True)
class PartialFill:
    """The next marketable order fills in `pieces` executions (39=1 ... then 39=2)."""

    pieces: int = 2


@dataclass(frozen=True)
class FillAfterCancel:
    """The next cancel of a resting order loses the race: the order fills
    completely (ER F 39=2), then the cancel is refused too late (35=9 102=0)."""


@dataclass(frozen=True)
class DuplicateExecution:
    """The next trade ER goes out twice: the same ExecID, the second copy under a
    new MsgSeqNum and without PossDup (a counterparty's bug, not a resend)."""


@dataclass(frozen=True)
class SequenceGap:
    """The next outgoing message jumps MsgSeqNum by `skip`; the skipped numbers
    are gap-filled when asked for."""

    skip: int = 3


@dataclass(frozen=True)
class Garbled:
    """The next outgoing application message is corrupted on the wire
    ("checksum": 10 off by one; "body_length": 9 one short). Its MsgSeqNum is
    consumed and the true message is kept, so a ResendRequest recovers it."""

    kind: str = "checksum"


@dataclass(frozen=True)
class Silence:
    """From now until the connection ends the acceptor is frozen: it reads but
    neither processes nor sends anything (no Heartbeat, no TestRequest answer)."""


@dataclass(frozen=True)
class DisconnectMidOrder:
    """The next NewOrderSingle: the connection is closed right after it arrives
    (or, `after_ack`, right after its ER New). The book executes it as usual;
    the reports wait in the outgoing store for a ResendRequest."""

    after_ack: bool = False


@dataclass(frozen=True)
class BusinessReject:
    """The next application message is answered with 35=j 380=0 58=`text` and
    otherwise ignored."""

    text: str = "business reject from the desk"


@dataclass(frozen=True)
class SessionReject:
    """The next application message is answered with 35=3 373=99 58=`text` and
    otherwise ignored."""

    text: str = "session reject from the desk"


@dataclass(frozen=True)
class ResendAsk:
    """Ask the initiator to resend `begin`..`end` (0: all) at once if logged on,
    else right after the next Logon. Its PossDup answers are processed (a known
    ClOrdID is not executed again)."""

    begin: int
    end: int = 0


Fault = (
    Reject
    | CancelReject
    | PartialFill
    | FillAfterCancel
    | DuplicateExecution
    | SequenceGap
    | Garbled
    | Silence
    | DisconnectMidOrder
    | BusinessReject
    | SessionReject
    | ResendAsk
)
