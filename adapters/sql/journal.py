"""`engine.broker.BrokerJournal` on the `broker_journal` table: durable memory of
an in-process broker (the simulator), so that a restart loses no working order
or fill. It appends nothing to the chain.

A save is written by the store's next write transaction and commits with it
(`_transactions.py`). The gateway books every broker answer in a transaction
right after the call, so the broker's memory of an order and the gateway's
booking of it land together, or not at all: after a crash between the two, the
gateway holds the order `submitted` and the simulator never heard of it, so
recovery closes it as never sent. A separate transaction per save would cost a
commit per submit (and on SQLite a second writer polling for the database's one
write lock).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from engine.errors import InvalidArgument

from ._dialect import Dialect
from ._reads import DriverPool, every

__all__ = ["SqlJournal"]

Queue = Callable[[dict[str, Any]], None]

_BROKER_MAX = 32  # the columns' widths, checked here: SQLite does not enforce them
_KEY_MAX = 64


class SqlJournal:
    def __init__(self, broker: str, pool: DriverPool, dialect: Dialect, queue: Queue) -> None:
        if not broker or len(broker) > _BROKER_MAX:
            raise InvalidArgument(f"a journal's broker name has 1 to {_BROKER_MAX} characters")
        self.broker = broker
        self._pool = pool
        self._db = dialect
        self._queue = queue

    def load(self) -> dict[str, dict[str, object]]:
        """Every entry saved, by key."""
        rows = self._pool.run(self._db.sql.journal_load, {"broker": self.broker}, every)
        return {key: json.loads(value) for key, value in rows}

    def save(self, key: str, value: dict[str, object]) -> None:
        """Write one entry (replacing the key's last one) with the store's next commit."""
        if not key or len(key) > _KEY_MAX:
            raise InvalidArgument(f"a journal key has 1 to {_KEY_MAX} characters (got: {key!r})")
        params = {
            "broker": self.broker,
            "key": key,
            "value": json.dumps(value, sort_keys=True),
            "at": self._db.when(datetime.now(UTC)),
        }
        self._queue(params)
