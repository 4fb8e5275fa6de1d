"""A fake FIX 4.4 acceptor on 127.0.0.1: an institutional OMS / broker order desk
(issue 11, item 4), written from the FIX 4.4 specification and sharing no code
with our initiator (`adapters/`), so that two implementations are seen to agree.
Runnable by a user:

    python -m tests.fakes.fix_acceptor --port 9878 --quote AAPL:99:101:100

simplefix encodes and parses fields; framing, checks and the session are ours.

The wire. Each incoming message is cut from the stream at its trailer
(`<SOH>10=nnn<SOH>`) and must start `8=FIX.4.4|9=|35=`, with a BodyLength and a
CheckSum that are right: otherwise it is garbled and ignored (not rejected, not
counted), and the next message still parses. Then: 49/56 must be the session's
CompIDs (else Reject 373=9 and Logout); 34 present (else Logout); 52 a
UTCTimestamp `YYYYMMDD-HH:MM:SS[.sss]` within 120 s of our clock (missing: Reject
371=52 373=1; unparseable: 373=6; off: 373=10 and Logout); a PossDup (43=Y)
message other than a SequenceReset carries 122 no later than 52.

The session. The first message must be a Logon (35=A, 98=0, 108>0), else the
connection is closed. The answer is a Logon with the same 108 (and 141=Y when
asked: both sides start again at 1). MsgSeqNum lower than expected without
PossDup: Logout 58 "MsgSeqNum too low, expecting N but received M", closed.
Higher: the message is queued (a Logon, ResendRequest or Logout is acted on at
once) and one ResendRequest (7=expected, 16=0) goes out; SequenceReset-GapFill
(123=Y, 36) and reset mode (123=N) move the expectation, queued messages are
processed as the gap closes. A PossDup below the expectation is ignored, unless
it answers a `ResendAsk` of ours: then its application content is processed (a
known ClOrdID is not executed again). A ResendRequest from the initiator is
answered from the outgoing store: application messages resent with their
numbers, 43=Y and 122; admin messages and skipped numbers as
SequenceReset-GapFill (34 = first of the run, 43=Y, 123=Y, 36 = next). Heartbeat
after HeartBtInt of outgoing silence; TestRequest (112=TEST-n) after HeartBtInt
+ 20% of incoming silence, the connection dropped one HeartBtInt later if still
nothing; TestRequest answered with Heartbeat 112. Logout answered with Logout,
then closed. One connection at a time: a second one is closed. Sequence numbers
and the store live as long as the fake: messages produced while no one is
connected (a `fill`, a quote) are numbered and stored, and reach the initiator
through its ResendRequest after the next Logon shows it the gap.

The desk. App messages missing a required tag get Reject 35=3 (45, 371, 372,
373=1, 58); a bad Side 373=5; a number or time in a wrong format 373=6. Any
other MsgType: BusinessMessageReject 35=j 380=3 (as are AF and AN when
`mass_status`/`positions` are off).
- D (11, 55, 54 1|2|5, 60, 38, 40 1|2|3|4, 44 for limits, 99 for stops, 59 0|1|2|3|4|7,
  1, 21): ER New (150=0 39=0), then trades (150=F 39=1|2, 32, 31). A market
  order buys at the ask, sells at the bid; no quote: rejected "no market for
  SYMBOL". A marketable limit fills at the touch, else rests; a stop triggers
  when the touch or last reaches it (also on `set_quote`), then fills at the
  touch (a stop limit then works as a limit). IOC/FOK that cannot fill: ER New,
  then 150=4 39=4. Refused: ER 150=8 39=8 103 (0 desk, 6 duplicate ClOrdID with
  37=NONE, the known order untouched, 11 unsupported, 13 quantity), 58.
  A PossDup D of a known ClOrdID is not executed again and not answered.
- F (11, 41, 55, 54, 60; 37 optional): ER 150=4 39=4 11=new 41=orig; refused
  with 35=9 (37 or NONE, 11, 41, 39, 434=1, 102 0 too late | 1 unknown | 2 desk
  | 6 duplicate ClOrdID, 58).
- G (11, 41, 55, 54, 60, 38, 40, 44/99): ER 150=5 39=0|1 11=new 41=orig, then
  fills if now marketable; refused with 35=9 434=2 (102=99 when 38 < CumQty).
- H (11, 55, 54; 37, 790 optional), by OrderID or any ClOrdID of the chain:
  ER 150=I with the order's status and 790; unknown: ER 150=I 37=NONE 39=8
  103=5 58 "unknown order".
- AF (584, 585 = 7 all orders | 1 one symbol; 1 filters): one ER 150=I per
  order the desk ever had, 584, 911 = count, 912=Y on the last; none: one ER
  37=NONE 150=I 39=8 911=0 912=Y.
- AN (710, 724=0, 1, 581, 715, 60): AO (721, 710, 727 = reports, 728 0 | 2 none
  found, 729=0, 1, 581), then one AP per symbol held in that account (721, 710,
  715, 1, 581, 55, 730, 731, 734, 702=1 703=TQ 704 long 705 short). 730 and
  734 are the quote's last price (0 without a quote); `set_settl_price` sets
  what 730 says (or leaves it out), `hold` books a position taken elsewhere.
ER fields: 37 (unique for the fake's life), 11, 41 on cancel/replace, 17
(unique; a trade's is repeated only by DuplicateExecution), 150, 39, 1 when
given, 55, 54, 38, 40, 44/99, 59, 151, 14, 6, 60, 32/31 on trades, 103/58 on
refusals. Quantities and prices in integer notation when whole ("10"), decimal
otherwise ("10.5"); `decimal_quantities=True` always sends a decimal ("10.0").
Incoming quantities may be either.

For tests: `new_orders` (ClOrdID -> D's taken as new orders), `received` and
`sent` (every message in and out, as simplefix messages), `logons`, `next_in`,
`next_out`, `garbled_in`, `counts`, `orders()`, `wait_for`. Faults (`inject`,
each once): Reject, CancelReject, PartialFill, FillAfterCancel,
DuplicateExecution, SequenceGap, Garbled, Silence, DisconnectMidOrder,
BusinessReject, SessionReject, ResendAsk (see `_faults.py`).
"""

from __future__ import annotations

from ._acceptor import FakeFixAcceptor
from ._faults import (
    BusinessReject,
    CancelReject,
    DisconnectMidOrder,
    DuplicateExecution,
    Fault,
    FillAfterCancel,
    Garbled,
    PartialFill,
    Reject,
    ResendAsk,
    SequenceGap,
    SessionReject,
    Silence,
)

__all__ = [
    "BusinessReject",
    "CancelReject",
    "DisconnectMidOrder",
    "DuplicateExecution",
    "FakeFixAcceptor",
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
