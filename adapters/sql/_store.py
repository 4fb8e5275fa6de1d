"""`SqlStore`: engine.ports.Store on SQLite (WAL, the default) or PostgreSQL
(for replicas).

The schema is SQLAlchemy Core (`schema.py`) with Alembic migrations. The
statements of every order run on the driver's own connections (sqlite3,
psycopg), because SQLAlchemy's execution layer was about a third of the
server's time per order; colder reads go through SQLAlchemy.

Every write runs in one transaction that first locks the chain head (`FOR
UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so writes are serialised
across threads and processes: order ids stay unique and the chain unbroken
when several replicas share a database, and what a transaction reads cannot
change under it. Threads' writes are group-committed (`_group.py`).

Driver and SQLAlchemy errors never leave the store: each becomes
`StoreUnavailable`, the original as its cause. An exception raised by the
caller's own work passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from alembic import command
from alembic.config import Config

from ._dialect import dialect_for, mask_url
from ._errors import StoreUnavailable, reason, unavailable
from ._group import GroupCommit
from ._reads import DriverPool, Reads
from ._transactions import SqlTransactions
from ._writer import SqlWriter
from .journal import SqlJournal
from .policy_versions import SqlPolicyArchive
from .session_log import SqlSessionLog, fix_log

if TYPE_CHECKING:
    from engine.broker import LoggedMessage
    from engine.ports import Store, Writer

__all__ = ["SqlStore"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_T = TypeVar("_T")


class SqlStore(Reads):
    """The store on one database URL: `sqlite:///path`, or for PostgreSQL
    `postgresql://user@host/db` (`postgres://` and `postgresql+psycopg://` too:
    all are read with psycopg 3). Call `migrate()` before use."""

    def __init__(self, url: str) -> None:
        dialect, parsed = dialect_for(url)
        engine = dialect.engine(parsed)
        super().__init__(engine, dialect, DriverPool(engine, dialect))
        self.url = url
        self.shown_url = mask_url(url)  # for messages: the password hidden
        self.dialect = dialect.name
        self._transactions = SqlTransactions(engine, dialect)
        self._group = GroupCommit(self._transactions)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision. The first contact with
        the database: when it does not answer, the error says where it was sought."""
        try:
            self.ping()
        except StoreUnavailable as exc:
            # the driver's error stays the cause, as for every StoreUnavailable
            raise StoreUnavailable(
                f"cannot reach the database at {self.shown_url}: {reason(exc)}"
            ) from exc.__cause__
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with unavailable(self._db.errors, "migrating"), self.engine.connect() as raw:
            conn = raw.execution_options(apex_migrate=True)
            with conn.begin():
                self._db.lock_migrations(conn)
                config.attributes["connection"] = conn
                command.upgrade(config, "head")

    def close(self) -> None:
        with self._group.turn():  # a batch in flight finishes first
            if self._transactions.journal_waiting:  # journal entries no commit took yet
                with suppress(StoreUnavailable):
                    writer = self._transactions.begin()
                    self._transactions.finish(writer)
                    self._transactions.commit(writer)
            self._transactions.close()
            self._pool.close()
            self.engine.dispose()

    def transact(self, work: Callable[[SqlWriter], _T]) -> _T:
        """Run `work` in a write transaction holding the chain lock, group-committed
        with other threads' work; its result, or its exception."""
        return self._group.transact(work)

    def writing(self) -> AbstractContextManager[SqlWriter]:
        """A write transaction of the caller's own (no group commit): for tools,
        tests and rare changes."""
        return self._group.writing()

    def journal(self, broker: str) -> SqlJournal:
        """Durable memory for an in-process broker of this name."""
        return SqlJournal(broker, self._pool, self._db, self._transactions.queue_journal)

    def session_log(self, session: str) -> SqlSessionLog:
        """A FIX session's sequence numbers and message log (each write its own
        commit: adapters/sql/session_log.py)."""
        return SqlSessionLog(session, self.engine, self._db.errors)

    def policy_archive(self) -> SqlPolicyArchive:
        """Every policy version ever in force, by its digests (engine/policy/versions.py)."""
        return SqlPolicyArchive(self.engine, self._db.errors)

    def fix_log(self, limit: int, session: str | None = None) -> list[LoggedMessage]:
        """The last `limit` FIX messages (of one session), oldest first."""
        return fix_log(self.engine, self._db.errors, limit, session)


if TYPE_CHECKING:  # mypy holds the store and its writer to the ports

    def _conforms(store: SqlStore, writer: SqlWriter) -> tuple[Store, Writer]:
        return store, writer
