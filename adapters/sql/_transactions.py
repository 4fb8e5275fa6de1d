"""Write transactions on the writer's own driver connection, one at a time (the
group commit hands out the turn): begin by locking the chain head, finish by
writing the buffers and the head, commit, or roll back.

Broker journal entries (`journal.py`) ride along: each transaction writes the
entries queued since the last one, first thing, and they commit with it. A
transaction that rolls back, or whose COMMIT fails, queues them again (an entry
replaces its key's last value, so writing one twice is harmless)."""

from __future__ import annotations

import threading
from collections import deque
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from ._dialect import Dialect
from ._errors import CommitUnknown, StoreUnavailable, describe, unavailable
from ._writer import GuardedCursor, SqlWriter

__all__ = ["SqlTransactions", "discard"]


class SqlTransactions:
    """`_group.Transactions` for the SQL store. The connection is kept from one
    transaction to the next; one that fails to roll back or commit is dropped."""

    def __init__(self, engine: Engine, dialect: Dialect) -> None:
        self._engine = engine
        self._db = dialect
        self._conn: Any = None
        self._journal: deque[dict[str, Any]] = deque()  # entries not yet written
        self._journal_lock = threading.Lock()
        self._riding: list[dict[str, Any]] = []  # written in the open transaction

    def queue_journal(self, entry: dict[str, Any]) -> None:
        """A broker journal entry, to be written by the next transaction."""
        with self._journal_lock:
            self._journal.append(entry)

    @property
    def journal_waiting(self) -> bool:
        return bool(self._journal)

    def begin(self) -> SqlWriter:
        """A transaction holding the chain lock. A kept connection found closed
        here (the server restarted since) is replaced once: nothing has run yet."""
        while True:
            reused = self._conn is not None
            if not reused:
                self._conn = self._connect()
            try:
                cursor = GuardedCursor(self._open_cursor(), self._db.errors)
                head = self._db.lock_head(cursor, datetime.now(UTC).year)
                self._write_journal(cursor)
            except StoreUnavailable:
                self._requeue()
                lost = self._lost()
                self._drop()
                if reused and lost:
                    continue
                raise
            return SqlWriter(cursor, self._db, head)

    def finish(self, writer: SqlWriter) -> None:
        writer.finish()

    def commit(self, writer: SqlWriter) -> None:
        try:
            self._conn.commit()
        except Exception as exc:
            self._requeue()
            self._drop()
            raise CommitUnknown(
                f"COMMIT failed, the write may or may not have landed: {describe(exc)}"
            ) from exc
        self._riding = []

    def rollback(self, writer: SqlWriter) -> None:
        self._requeue()
        if self._conn is None:
            return
        try:
            self._conn.rollback()
        except Exception:
            self._drop()  # a connection that cannot roll back is not reused

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def _write_journal(self, cursor: GuardedCursor) -> None:
        with self._journal_lock:
            self._riding = list(self._journal)
            self._journal.clear()
        if not self._riding:
            return
        if len(self._riding) == 1:
            cursor.execute(self._db.sql.journal_save, self._riding[0])
        else:
            cursor.executemany(self._db.sql.journal_save, self._riding)

    def _requeue(self) -> None:
        """Entries of a transaction that did not commit go back to the front."""
        with self._journal_lock:
            self._journal.extendleft(reversed(self._riding))
            self._riding = []

    def _connect(self) -> Any:
        with unavailable(self._db.errors, "connecting for a write"):
            conn = self._engine.raw_connection()
        try:
            with unavailable(self._db.errors, "setting up a connection"):
                self._db.prepare_writer(conn)
        except BaseException:
            discard(conn)
            raise
        return conn

    def _open_cursor(self) -> Any:
        with unavailable(self._db.errors, "opening a cursor"):
            return self._conn.cursor()

    def _lost(self) -> bool:
        try:
            return self._db.lost(self._conn)
        except Exception:
            return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            discard(conn)


def discard(conn: Any) -> None:
    """Close a pooled driver connection for good (it does not go back to the pool)."""
    with suppress(Exception):
        conn.invalidate()
