"""Portfolio sync: a broker's positions are the truth (SPEC section 11, issue 10).

For a broker that reports positions and is mapped to one of the gateway's
accounts (`position_accounts`: broker name -> account, from the broker
configuration), each full reconciliation asks the broker for its positions and
sets the account's stored positions to them, symbol by symbol. Each change is
a `position_sync` record in the chain (broker, account, symbol, before, after),
written in the transaction that changes the position, so that `audit verify`
can replay it (engine/audit_replay.py). Nothing changes: no record.

The comparison is made under the chain lock, against the positions as that
transaction sees them, so a fill booked meanwhile is never overwritten by a
stale read. A broker that cannot be asked changes nothing.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..broker import BrokerAdapter
from ..ports import Writer
from ._records import event
from .desk import Desk
from .outcome import Actor

__all__ = ["sync_positions"]

log = logging.getLogger("apex.gateway")

_TOLERANCE = 1e-9


def sync_positions(
    desk: Desk, broker: BrokerAdapter, account: str, actor: Actor
) -> list[dict[str, Any]]:
    """Set `account`'s stored positions to `broker`'s; the `position_sync` records."""
    theirs = {s: float(q) for s, q in broker.positions(account).items()}
    now = desk.clock()

    def work(w: Writer) -> list[dict[str, Any]]:
        ours = w.positions(account)
        records = []
        for symbol in sorted(theirs.keys() | ours.keys()):
            before, after = ours.get(symbol, 0.0), theirs.get(symbol, 0.0)
            if math.isclose(before, after, rel_tol=0.0, abs_tol=_TOLERANCE):
                continue
            w.set_position(account, symbol, after)
            record = event(
                "position_sync",
                now,
                actor.id,
                broker=broker.name,
                account=account,
                symbol=symbol,
                before=before,
                after=after,
            )
            records.append(w.append(record, "position_sync", now))
        return records

    records: list[dict[str, Any]] = desk.store.transact(work)
    for record in records:
        log.warning(
            "position sync with %s: %s %s %s -> %s",
            broker.name,
            account,
            record["symbol"],
            record["before"],
            record["after"],
        )
    return records
