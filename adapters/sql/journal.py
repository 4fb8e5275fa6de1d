"""`engine.broker.BrokerJournal` on the `broker_journal` table: durable memory of
an in-process broker (the simulator), so that a restart loses no working order
or fill. Each save is one statement in its own transaction, durable when it
returns; it does not touch the chain.

On SQLite a save waits for the database's one write lock: never save from
inside a store transaction (`transact`, `writing`) of the same process.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from engine.errors import InvalidArgument

from ._dialect import Dialect
from ._reads import DriverPool, every, nothing

__all__ = ["SqlJournal"]

_BROKER_MAX = 32  # the columns' widths, checked here: SQLite does not enforce them
_KEY_MAX = 64


class SqlJournal:
    def __init__(self, broker: str, pool: DriverPool, dialect: Dialect) -> None:
        if not broker or len(broker) > _BROKER_MAX:
            raise InvalidArgument(f"a journal's broker name has 1 to {_BROKER_MAX} characters")
        self.broker = broker
        self._pool = pool
        self._db = dialect

    def load(self) -> dict[str, dict[str, object]]:
        """Every entry saved, by key."""
        rows = self._pool.run(self._db.sql.journal_load, {"broker": self.broker}, every)
        return {key: json.loads(value) for key, value in rows}

    def save(self, key: str, value: dict[str, object]) -> None:
        """Write one entry (replacing the key's last one) durably before returning."""
        if not key or len(key) > _KEY_MAX:
            raise InvalidArgument(f"a journal key has 1 to {_KEY_MAX} characters (got: {key!r})")
        params = {
            "broker": self.broker,
            "key": key,
            "value": json.dumps(value, sort_keys=True),
            "at": self._db.when(datetime.now(UTC)),
        }
        self._pool.run(self._db.sql.journal_save, params, nothing)
