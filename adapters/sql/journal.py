"""`engine.broker.BrokerJournal` on the `broker_journal` table: durable memory of
an in-process broker (the simulator), so that a restart loses no working order
or fill. Each save is durable when it returns; it appends nothing to the chain.

On SQLite saves join the store's group commit (`transact`) rather than writing
on a connection of their own: a second writer would wait for the database's one
write lock by polling (a submit's p99 went from 22 to 119 ms). So never save
from inside a store transaction of the same process: the gateway calls brokers
only between transactions. On PostgreSQL a save is one autocommitted statement
on a connection of its own (no chain lock, one round trip).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from engine.errors import InvalidArgument

from ._dialect import Dialect
from ._reads import DriverPool, every, nothing
from ._writer import SqlWriter

__all__ = ["SqlJournal"]

Transact = Callable[[Callable[[SqlWriter], None]], None]

_BROKER_MAX = 32  # the columns' widths, checked here: SQLite does not enforce them
_KEY_MAX = 64


class SqlJournal:
    def __init__(self, broker: str, pool: DriverPool, dialect: Dialect, transact: Transact) -> None:
        if not broker or len(broker) > _BROKER_MAX:
            raise InvalidArgument(f"a journal's broker name has 1 to {_BROKER_MAX} characters")
        self.broker = broker
        self._pool = pool
        self._db = dialect
        self._transact = transact

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
        statement = self._db.sql.journal_save
        if not self._db.one_writer:
            self._pool.run(statement, params, nothing)
            return

        def write(w: SqlWriter) -> None:
            w.cursor.execute(statement, params)

        self._transact(write)
