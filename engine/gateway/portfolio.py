"""Portfolio sync: a broker's positions are the truth (SPEC section 11, issue 10).

For a broker that reports positions and is mapped to one of the gateway's
accounts (`position_accounts`: broker name -> account, from the broker
configuration), each full reconciliation asks the broker for its positions and
sets the account's stored positions to them, symbol by symbol. Each change is
a `position_sync` record in the chain (broker, account, symbol, before, after,
and `price` when the broker gave one), written in the transaction that changes
the position, so that `audit verify` can replay it (engine/audit_replay.py).
Nothing changes: no record.

Marks. A broker whose adapter offers `held_positions` (engine/broker.py) gives
a price with each position; a finite price > 0 becomes the holding's mark
(`positions.price`), the price the account's gross exposure values it at, in
the same transaction. The mark is refreshed at every full reconciliation, also
when the quantity agrees (no record then: a mark is not a position). A broker
that gives no price, or one that is not finite and > 0, leaves the mark as it
was: the last fill's through the gate, or none, and a holding without a mark
leaves the account's gross exposure unknown (its check errors, which blocks).

The comparison is made under the chain lock, against the positions as that
transaction sees them, so a fill booked meanwhile is never overwritten by a
stale read. A broker that cannot be asked changes nothing.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..broker import BrokerAdapter, BrokerPosition
from ..ports import Writer
from ._records import event
from .desk import Desk
from .outcome import Actor

__all__ = ["broker_positions", "sync_positions"]

log = logging.getLogger("apex.gateway")

_TOLERANCE = 1e-9


def broker_positions(broker: BrokerAdapter, account: str) -> dict[str, BrokerPosition]:
    """The broker's positions of `account`, each with its price when the adapter
    gives one (`held_positions`) and the price is finite and > 0; one call."""
    held = getattr(broker, "held_positions", None)
    if not callable(held):
        return {s: BrokerPosition(float(q)) for s, q in broker.positions(account).items()}
    out: dict[str, BrokerPosition] = {}
    for symbol, position in held(account).items():
        price = position.price
        usable = (
            isinstance(price, int | float)
            and not isinstance(price, bool)
            and math.isfinite(price)
            and price > 0
        )
        out[symbol] = BrokerPosition(float(position.quantity), float(price) if usable else None)
    return out


def sync_positions(
    desk: Desk, broker: BrokerAdapter, account: str, actor: Actor
) -> list[dict[str, Any]]:
    """Set `account`'s stored positions (and marks) to `broker`'s; the
    `position_sync` records."""
    theirs = broker_positions(broker, account)
    now = desk.clock()

    def work(w: Writer) -> list[dict[str, Any]]:
        ours = w.positions(account)
        records = []
        for symbol in sorted(theirs.keys() | ours.keys()):
            held = theirs.get(symbol, BrokerPosition(0.0))
            before, after, price = ours.get(symbol, 0.0), held.quantity, held.price
            if math.isclose(before, after, rel_tol=0.0, abs_tol=_TOLERANCE):
                if price is not None and abs(after) > _TOLERANCE:
                    w.set_mark(account, symbol, price)
                continue
            w.set_position(account, symbol, after, price)
            known = {"price": price} if price is not None else {}
            record = event(
                "position_sync",
                now,
                actor.id,
                broker=broker.name,
                account=account,
                symbol=symbol,
                before=before,
                after=after,
                **known,
            )
            records.append(w.append(record, "position_sync", now))
        return records

    records: list[dict[str, Any]] = desk.store.transact(work)
    for record in records:
        log.warning(
            "position sync with %s: %s %s %s -> %s (price %s)",
            broker.name,
            account,
            record["symbol"],
            record["before"],
            record["after"],
            record.get("price", "not given"),
        )
    return records
