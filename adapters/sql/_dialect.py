"""The two databases, one class each: its driver, its parameter style, its
datetime form, its connection set-up, and how it locks and moves the chain head.
Everything else (`_statements.py`) is shared SQL rendered through these.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from engine.errors import InvalidArgument

from ._errors import Errors
from ._statements import Statements

__all__ = [
    "POSTGRES_SCHEMES",
    "SQLITE_SCHEMES",
    "Counter",
    "Dialect",
    "Head",
    "PostgresDialect",
    "SqliteDialect",
    "dialect_for",
    "mask_url",
]

_POOL = 12  # SQLAlchemy's pool: the readers, the writer, and the other reads
_CONNECT_TIMEOUT_S = 5  # PostgreSQL: how long connecting may take
_PG_MIGRATION_LOCK = 7_262_001  # advisory lock id: replicas starting together migrate once


class Counter:
    """A year's order counter in a transaction: as stored (None: no row yet), and now."""

    __slots__ = ("stored", "value")

    def __init__(self, stored: int | None) -> None:
        self.stored = stored
        self.value = stored or 0


class Head:
    """The chain head as a write transaction holds it, with the order counters
    read so far (this year's is read with the head)."""

    __slots__ = ("counters", "hash", "seq", "start")

    def __init__(self, seq: int, hash: str, counters: dict[int, Counter]) -> None:
        self.seq = self.start = seq
        self.hash = hash
        self.counters = counters


class _Names(dict[str, str]):
    """A template's `{name}`: the dialect's fragment of that name, or else the
    placeholder of parameter `name` in the driver's style."""

    def __init__(self, placeholder: str, fragments: Mapping[str, str]) -> None:
        super().__init__(fragments)
        self._placeholder = placeholder

    def __missing__(self, key: str) -> str:
        return self._placeholder.format(key)


class Dialect:
    name: ClassVar[str]
    errors: ClassVar[Errors]  # what the driver and SQLAlchemy raise
    _placeholder: ClassVar[str]
    _fragments: ClassVar[Mapping[str, str]]

    def __init__(self) -> None:
        self.sql = Statements(self.render)

    def render(self, template: str) -> str:
        return template.format_map(_Names(self._placeholder, self._fragments))

    def engine(self, url: URL) -> Engine:
        raise NotImplementedError

    def when(self, moment: datetime) -> Any:
        """A datetime as a driver parameter for a datetime column."""
        raise NotImplementedError

    def read_when(self, value: Any) -> datetime:
        """A datetime column as read by the driver or by SQLAlchemy, aware, in UTC."""
        raise NotImplementedError

    def prepare_reader(self, conn: Any) -> None:
        """A new driver connection for single statements (each its own transaction)."""

    def prepare_writer(self, conn: Any) -> None:
        """A new driver connection for the write transactions."""

    def lost(self, conn: Any) -> bool:
        """Whether a pooled driver connection is closed (say, the server went away)."""
        raise NotImplementedError

    def lock_head(self, cursor: Any, year: int) -> Head:
        """Begin a write transaction by locking the chain head; `year`'s counter with it."""
        raise NotImplementedError

    def write_head(self, cursor: Any, head: Head) -> None:
        """Write back the counters that moved and the head (if it moved)."""
        self._write_counters(cursor, head)
        if head.seq != head.start:
            cursor.execute(self.sql.move_head, {"seq": head.seq, "hash": head.hash})

    def _write_counters(self, cursor: Any, head: Head, skip: int | None = None) -> None:
        for year, counter in head.counters.items():
            if year == skip or counter.value == (counter.stored or 0):
                continue
            params = {"year": year, "value": counter.value}
            statement = self.sql.new_sequence if counter.stored is None else self.sql.set_sequence
            cursor.execute(statement, params)

    def lock_migrations(self, conn: Connection) -> None:
        """Serialise processes that migrate together (inside the migration's transaction)."""


class SqliteDialect(Dialect):
    """sqlite3 in WAL mode. A write transaction is BEGIN IMMEDIATE: it holds the
    database's one write lock before it reads anything."""

    name = "sqlite"
    errors = (sqlite3.Error, SQLAlchemyError)
    _placeholder = ":{}"
    _fragments: ClassVar[Mapping[str, str]] = {"NULL_SAFE_EQ": "IS"}

    def __init__(self) -> None:
        super().__init__()
        self._head = self.render(
            "SELECT h.seq, h.hash, s.value FROM chain_head h"
            " LEFT JOIN order_sequences s ON s.year = {year} WHERE h.id = 1"
        )

    def engine(self, url: URL) -> Engine:
        engine = create_engine(
            url,
            pool_size=_POOL,
            max_overflow=_POOL,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # let SQLAlchemy (and the store's own BEGIN IMMEDIATE), not pysqlite,
            # decide when transactions begin
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # a migration takes the write lock up front, so that two processes
            # migrating together wait for each other instead of failing on an upgrade
            immediate = conn.get_execution_options().get("apex_migrate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def when(self, moment: datetime) -> Any:
        # SQLAlchemy's text form in UTC, whose order is time order
        if moment.tzinfo is not None and moment.tzinfo is not UTC:
            moment = moment.astimezone(UTC)
        return moment.isoformat(" ", "microseconds")[:26]

    def read_when(self, value: Any) -> datetime:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, datetime), f"not a datetime: {value!r}"
        # stored in UTC, handed back without a zone
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def lost(self, conn: Any) -> bool:
        try:
            conn.driver_connection.total_changes  # noqa: B018 (raises once closed)
        except sqlite3.ProgrammingError:
            return True
        return False

    def lock_head(self, cursor: Any, year: int) -> Head:
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(self._head, {"year": year})
        seq, head, counter = cursor.fetchone()
        return Head(seq, head, {year: Counter(counter)})


class PostgresDialect(Dialect):
    """psycopg 3, READ COMMITTED. A write transaction locks the head row (and this
    year's counter row) FOR UPDATE."""

    name = "postgresql"
    errors = (psycopg.Error, SQLAlchemyError)
    _placeholder = "%({})s"
    _fragments: ClassVar[Mapping[str, str]] = {"NULL_SAFE_EQ": "IS NOT DISTINCT FROM"}

    def __init__(self) -> None:
        super().__init__()
        # Both rows are locked, so that a read that waited for another writer sees
        # both as it left them (READ COMMITTED re-reads the rows it locks, and only
        # those); a year with no counter row yet returns nothing, and then the head
        # is locked alone.
        self._head = self.render(
            "SELECT h.seq, h.hash, s.value FROM chain_head h"
            " JOIN order_sequences s ON s.year = {year} WHERE h.id = 1 FOR UPDATE OF h, s"
        )
        self._head_alone = "SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE"
        # the year's counter and the chain head in one statement
        self._move_head_and_sequence = self.render(
            "WITH s AS (UPDATE order_sequences SET value = {value} WHERE year = {year})"
            " UPDATE chain_head SET seq = {seq}, hash = {hash} WHERE id = 1"
        )

    def engine(self, url: URL) -> Engine:
        # A connection that died with the server (a restart, a failover) is found by
        # the pre-ping and replaced, and a disconnect seen mid-statement invalidates
        # the pool: the store recovers when the database does, with no restart.
        # Connecting waits at most `_CONNECT_TIMEOUT_S` (unless the URL says
        # otherwise): an unreachable host answers 503 soon, not after minutes.
        connect_args = (
            {} if "connect_timeout" in url.query else {"connect_timeout": _CONNECT_TIMEOUT_S}
        )
        return create_engine(
            url,
            pool_size=_POOL,
            max_overflow=_POOL,
            pool_pre_ping=True,
            connect_args=connect_args,
        )

    def when(self, moment: datetime) -> Any:
        return moment

    def read_when(self, value: Any) -> datetime:
        assert isinstance(value, datetime), f"not a datetime: {value!r}"
        return value.astimezone(UTC)

    def prepare_reader(self, conn: Any) -> None:
        conn.rollback()  # the pool's ping may have opened a transaction
        conn.driver_connection.autocommit = True

    def prepare_writer(self, conn: Any) -> None:
        conn.rollback()

    def lost(self, conn: Any) -> bool:
        return bool(conn.driver_connection.closed)

    def lock_head(self, cursor: Any, year: int) -> Head:
        cursor.execute(self._head, {"year": year})
        row = cursor.fetchone()
        if row is not None:
            seq, head, counter = row
            return Head(seq, head, {year: Counter(counter)})
        cursor.execute(self._head_alone)
        seq, head = cursor.fetchone()
        return Head(seq, head, {})

    def write_head(self, cursor: Any, head: Head) -> None:
        # a stored counter that moved goes with the head, in one statement
        year = next(
            (y for y, c in head.counters.items() if c.stored is not None and c.value != c.stored),
            None,
        )
        if year is None or head.seq == head.start:
            super().write_head(cursor, head)
            return
        self._write_counters(cursor, head, skip=year)
        params = {"year": year, "value": head.counters[year].value}
        cursor.execute(self._move_head_and_sequence, {**params, "seq": head.seq, "hash": head.hash})

    def lock_migrations(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})


# The schemes a database URL may use; PostgreSQL's are all read with psycopg 3,
# the driver installed (SQLAlchemy would look for psycopg2 behind a bare
# "postgresql://", and knows no "postgres://", the form many hosts hand out).
SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")


def dialect_for(url: str) -> tuple[Dialect, URL]:
    """The dialect of a database URL, and the URL with its driver made explicit:
    `postgres://` and `postgresql://` become `postgresql+psycopg://`."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # neither SQLAlchemy's message nor the text: a password in a URL that does
        # not parse cannot be told apart, so none of it is quoted
        raise InvalidArgument(
            "the database URL does not parse"
            " (want: sqlite:///PATH, or postgresql://USER@HOST:PORT/DB)"
        ) from None
    if parsed.drivername in SQLITE_SCHEMES:
        return SqliteDialect(), parsed
    if parsed.drivername in POSTGRES_SCHEMES:
        return PostgresDialect(), parsed.set(drivername="postgresql+psycopg")
    raise InvalidArgument(
        f"unsupported database URL scheme {parsed.drivername!r}"
        " (want: sqlite:///PATH, or postgresql://, postgres:// or postgresql+psycopg://"
        " USER@HOST:PORT/DB; PostgreSQL is read with psycopg 3)"
    )


def mask_url(url: str) -> str:
    """A database URL as it may be shown: as given, with any password as `***`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # not parseable: hide whatever sits between "user:" and "@"
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)
