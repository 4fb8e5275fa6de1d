"""Persistence: the audit chain, orders, fills, positions, settings and API tokens.
SQLite (WAL) by default, PostgreSQL for replicas. The schema is SQLAlchemy Core
(`schema.py`) and Alembic migrations; the statements of every order run on the
driver's own connections (sqlite3, psycopg), with SQL written once per dialect.

Every write runs in one transaction that first locks the chain head (`SELECT
... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite). Writes are
therefore serialised across threads and processes, which is what keeps order
ids unique and the chain unbroken when several replicas share a database.

Group commit: `Store.transact(work)` queues `work`; whichever waiting thread
holds no lock becomes the leader and runs every queued piece of work in one
transaction, then wakes the others with their results. Under load one lock,
one chain-head update and one commit serve many orders. A piece of work that
fails takes the batch's transaction down with it; the batch is then run again
one piece per transaction, so that only the failing piece fails, and no piece
is ever committed twice (each retry starts from a rolled-back transaction).
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, select, text

from engine.audit import link_text
from engine.models import FlowCounts, OrderRequest
from engine.ports import UNREAD, Claim

from .schema import api_tokens, audit_log, orders, positions

__all__ = ["UNREAD", "Claim", "Snapshot", "Store", "Writer", "aware"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 7_262_001  # advisory lock id: replicas starting together migrate once
MAX_BATCH = 256  # pieces of work per group-committed transaction
_READERS = 8  # driver connections kept for the hot reads
_POOL = 12  # SQLAlchemy's pool: the readers, the writer, and the other reads
_T = TypeVar("_T")


def aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        self.engine = _make_engine(url, self.dialect)
        self._sql = _Statements(self.dialect)
        # Group commit: work waiting for the writer's turn, and whether a thread has it.
        self._mutex = threading.Lock()
        self._queue: deque[_Work[Any]] = deque()
        self._leading = False
        self._write_conn: Any = None  # used only by the leader
        self._idle: list[Any] = []  # driver connections for reads
        self._idle_lock = threading.Lock()
        self._readers = threading.BoundedSemaphore(_READERS)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.connect() as raw:
            # SQLite: take the write lock up front, so two processes migrating
            # together wait for each other instead of failing on a lock upgrade
            conn = raw.execution_options(apex_migrate=True)
            with conn.begin():
                if self.dialect == "postgresql":
                    lock = text("SELECT pg_advisory_xact_lock(:k)")
                    conn.execute(lock, {"k": _PG_MIGRATION_LOCK})
                config.attributes["connection"] = conn
                command.upgrade(config, "head")

    def close(self) -> None:
        self._take_turn(_Work(None))  # a batch in flight finishes first
        try:
            with self._idle_lock:
                idle, self._idle = self._idle, []
            if self._write_conn is not None:
                idle.append(self._write_conn)
                self._write_conn = None
            for conn in idle:
                conn.close()
            self.engine.dispose()
        finally:
            self._pass_turn()

    # --- writes --------------------------------------------------------------

    def transact(self, work: Callable[[Writer], _T]) -> _T:
        """Run `work` in a write transaction that holds the chain lock, group-committed
        with whatever other threads queued meanwhile; its result, or its exception."""
        item: _Work[_T] = _Work(work)
        if self._take_turn(item):
            batch = [item]
            try:
                with self._mutex:
                    while self._queue and len(batch) < MAX_BATCH and self._queue[0].work:
                        batch.append(self._queue.popleft())
                self._run(batch)
            finally:
                for other in batch[1:]:
                    if not other.done:  # only if _run itself was interrupted
                        other.fail(RuntimeError("the write batch was abandoned"))
                    other.wake.release()
                self._pass_turn()
        return item.outcome()

    @contextmanager
    def writing(self) -> Iterator[Writer]:
        """One write transaction of the caller's own, holding the chain lock
        (no group commit): for tools, tests and rare changes."""
        self._take_turn(_Work(None))
        try:
            with self._transaction() as writer:
                yield writer
        finally:
            self._pass_turn()

    def _take_turn(self, item: _Work[Any]) -> bool:
        """Wait until this thread may write (True), or until a leader has done
        `item`'s work (False). One wake-up per waiting thread, no stampede."""
        with self._mutex:
            if not self._leading:
                self._leading = True
                return True
            self._queue.append(item)
        item.wake.acquire()
        return not item.done

    def _pass_turn(self) -> None:
        """Hand the writer's turn to the first thread still waiting, or free it."""
        with self._mutex:
            following = self._queue.popleft() if self._queue else None
            if following is None:
                self._leading = False
        if following is not None:
            following.wake.release()

    def _run(self, batch: list[_Work[Any]]) -> None:
        """Every piece in one transaction; if that fails, each piece in its own."""
        results: list[Any] = []
        try:
            with self._transaction() as writer:
                results = [item.run(writer) for item in batch]
        except Exception as exc:
            if len(batch) == 1:
                batch[0].fail(exc)
                return
            for item in batch:
                try:
                    with self._transaction() as writer:
                        result = item.run(writer)
                except Exception as single:
                    item.fail(single)
                else:
                    item.succeed(result)
            return
        for item, result in zip(batch, results, strict=True):
            item.succeed(result)

    @contextmanager
    def _transaction(self) -> Iterator[Writer]:
        sql = self._sql
        conn: Any = self._write_conn or self.engine.raw_connection()
        self._write_conn = conn
        try:
            cursor = conn.cursor()
            if self.dialect == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            # the chain head, and this year's order counter with it
            year = datetime.now(UTC).year
            cursor.execute(sql.head, {"year": year})
            row = cursor.fetchone()
            if row is None:  # PostgreSQL, no counter for the year yet: the head alone
                cursor.execute(sql.head_alone)
                row = (*cursor.fetchone(), _UNKNOWN)
            seq, head, counter = row
            writer = Writer(cursor, sql, seq, head)
            if counter is not _UNKNOWN:
                writer.counters[year] = _Counter(counter)
            yield writer
            writer.finish()
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                # a connection that cannot roll back is not reused
                self._write_conn = None
                _discard(conn)
            raise

    # --- hot reads -------------------------------------------------------------

    def _read_one(self, sql: str, params: dict[str, Any]) -> Any:
        """The first row of one statement, on an idle driver connection (autocommit:
        one statement, one snapshot). A connection that fails is dropped; if it had
        served before (the server may have restarted since), the read is tried once
        more on a new one: a read changes nothing."""
        with self._readers:
            while True:
                with self._idle_lock:
                    conn: Any = self._idle.pop() if self._idle else None
                reused = conn is not None
                if conn is None:
                    conn = self.engine.raw_connection()
                    if self.dialect == "postgresql":
                        conn.rollback()  # the pool's ping may have opened a transaction
                        conn.driver_connection.autocommit = True
                try:
                    cursor = conn.cursor()
                    cursor.execute(sql, params)
                    row = cursor.fetchone()
                except Exception:
                    _discard(conn)
                    if reused:
                        continue
                    raise
                with self._idle_lock:
                    self._idle.append(conn)
                return row

    def snapshot(
        self,
        order: OrderRequest,
        now: datetime,
        rate_window_s: float,
        duplicate_window_s: float,
        exclude: str | None = None,
    ) -> Snapshot:
        """Everything one evaluation needs from the database, in one statement:
        mode and kill switch, the position in the symbol, the flow counts, and
        the claim on the client order id (a submit's retry is answered from it)."""
        when = self._sql.when
        params = {
            "account": order.account,
            "symbol": order.symbol,
            "side": order.side,
            "quantity": order.quantity,
            "order_type": order.order_type,
            "limit_price": order.limit_price,
            "stop_price": order.stop_price,
            "client_order_id": order.client_order_id,
            "exclude": exclude or "",
            "now": when(now),
            "rate_since": when(now - timedelta(seconds=rate_window_s)),
            "duplicate_since": when(now - timedelta(seconds=duplicate_window_s)),
        }
        row = self._read_one(self._sql.snapshot, params)
        mode, omega, position, counted, duplicate, claimed, digest = row
        return Snapshot(
            mode=json.loads(mode)["mode"] if mode is not None else "research",
            omega=json.loads(omega) if omega is not None else {"active": False},
            position=float(position or 0.0),
            flow=FlowCounts(orders_in_window=int(counted), duplicate_recent=duplicate is not None),
            claim=(claimed, digest) if claimed is not None else None,
        )

    def claimed(self, client_order_id: str) -> tuple[str, str] | None:
        """(order_id, request digest) of the submit that claimed this client id."""
        row = self._read_one(self._sql.claimed, {"client_order_id": client_order_id})
        return (row[0], row[1]) if row else None

    def setting(self, key: str) -> Any:
        row = self._read_one(self._sql.setting, {"key": key})
        return json.loads(row[0]) if row is not None else None

    # --- other reads ----------------------------------------------------------

    def order(self, order_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(orders).where(orders.c.order_id == order_id)).first()
        return dict(row._mapping) if row is not None else None

    def order_record(self, order_id: str) -> dict[str, Any] | None:
        row = self.order(order_id)
        return json.loads(row["record"]) if row else None

    def list_orders(
        self,
        *,
        status: str | None = None,
        symbol: str | None = None,
        account: str | None = None,
        client_order_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        # newest first; the id alone would sort ORD-2026-1000000 before ORD-2026-999999
        query = select(orders.c.record).order_by(
            orders.c.created_at.desc(),
            func.length(orders.c.order_id).desc(),
            orders.c.order_id.desc(),
        )
        for column, value in (
            (orders.c.status, status),
            (orders.c.symbol, symbol),
            (orders.c.account, account),
            (orders.c.client_order_id, client_order_id),
        ):
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).scalars().all()
        return [json.loads(r) for r in rows]

    def positions(self, account: str) -> dict[str, float]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(positions.c.symbol, positions.c.quantity).where(
                    positions.c.account == account
                )
            ).all()
        return {r.symbol: r.quantity for r in rows if r.quantity}

    def open_orders(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(orders).where(
                    orders.c.status.in_(("accepted", "partially_filled", "replaced"))
                )
            ).all()
        return [dict(r._mapping) for r in rows]

    def audit_records(self, after: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Records in chain order, streamed in pages."""
        page = 1000
        remaining = limit
        while remaining is None or remaining > 0:
            size = page if remaining is None else min(page, remaining)
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(audit_log.c.seq, audit_log.c.record)
                    .where(audit_log.c.seq > after)
                    .order_by(audit_log.c.seq)
                    .limit(size)
                ).all()
            for row in rows:
                yield json.loads(row.record)
            if len(rows) < size:
                return
            after = rows[-1].seq
            if remaining is not None:
                remaining -= len(rows)

    def audit_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())

    def token(self, token_hash: str) -> tuple[str, str] | None:
        """(token id, role) of a live token with this hash."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_tokens.c.token_id, api_tokens.c.role).where(
                    api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None)
                )
            ).first()
        return (row.token_id, row.role) if row else None

    def token_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(api_tokens)).scalar_one())

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1


@dataclass(frozen=True)
class Snapshot:
    """The old store's snapshot (replaced by engine.ports.Snapshot in the new store)."""

    mode: str
    omega: dict[str, Any]
    position: float
    flow: FlowCounts
    claim: Claim  # on the order's client order id


class _Work(Generic[_T]):
    """One queued piece of work and, once its batch is done, its outcome. `wake`
    is held until the waiting thread may go on: its work is done, or it writes next.
    No work (None): a thread that wants the writer's turn for itself."""

    __slots__ = ("done", "error", "result", "wake", "work")

    def __init__(self, work: Callable[[Writer], _T] | None) -> None:
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()

    def run(self, writer: Writer) -> _T:
        if self.work is None:
            raise RuntimeError("a turn-only entry was put in a write batch")
        return self.work(writer)

    def succeed(self, result: Any) -> None:
        self.result, self.done = result, True

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True

    def outcome(self) -> _T:
        if self.error is not None:
            raise self.error
        result: _T = self.result
        return result


# --- SQL, once per dialect ----------------------------------------------------------

_NOT_FLOW = "('rejected', 'blocked')"  # attempts that never reached a market
# A submit that counts as flow for this account, up to now; the same client order
# id is a retry (answered idempotently) or the order being replaced, not new flow.
_FLOW = (
    "o.account = :account AND o.operation = 'submit' AND o.status NOT IN " + _NOT_FLOW + " "
    "AND coalesce(o.client_order_id, '') <> :exclude AND o.created_at <= :now"
)
_SNAPSHOT = f"""
SELECT
  (SELECT value FROM settings WHERE key = 'mode'),
  (SELECT value FROM settings WHERE key = 'omega'),
  (SELECT quantity FROM positions WHERE account = :account AND symbol = :symbol),
  (SELECT count(*) FROM orders o WHERE {_FLOW} AND o.created_at > :rate_since),
  (SELECT o.order_id FROM orders o WHERE {_FLOW} AND o.created_at > :duplicate_since
     AND o.symbol = :symbol AND o.side = :side AND o.quantity = :quantity
     AND o.order_type = :order_type
     AND o.limit_price IS NOT DISTINCT FROM :limit_price
     AND o.stop_price IS NOT DISTINCT FROM :stop_price
     AND coalesce(o.client_order_id, '') <> :client_order_id
   LIMIT 1),
  (SELECT order_id FROM client_orders WHERE client_order_id = :client_order_id),
  (SELECT request_digest FROM client_orders WHERE client_order_id = :client_order_id)
"""
# Buffered inserts: written with one executemany per table when the transaction
# next reads or updates that table, and before it commits.
_INSERT_COLUMNS = {
    "audit_log": ("seq", "kind", "order_id", "record", "prev_hash", "hash", "created_at"),
    "orders": (
        "order_id", "operation", "client_order_id", "account", "symbol", "side", "quantity",
        "order_type", "limit_price", "stop_price", "time_in_force", "reduce_only", "status",
        "broker", "broker_order_id", "filled_quantity", "average_price", "request", "record",
        "created_at", "updated_at",
    ),
    "order_events": ("order_id", "status", "detail", "at"),
    "fills": ("order_id", "quantity", "price", "at"),
    "client_orders": ("client_order_id", "order_id", "request_digest"),
}  # fmt: skip
_ORDER_COLUMNS = frozenset(orders.c.keys())
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


class _Statements:
    """The store's hot SQL in the driver's parameter style, and its datetime form."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        postgres = dialect == "postgresql"
        # The head, and the year's order counter. SQLite: BEGIN IMMEDIATE has the
        # write lock before anything is read. PostgreSQL: both rows are locked, so
        # that a read that waited for another writer sees both rows as it left them
        # (READ COMMITTED re-reads the rows it locks, and only those); a year with
        # no counter row yet returns nothing, and `head_alone` locks the head.
        if postgres:
            self.head = self.of(
                "SELECT h.seq, h.hash, s.value FROM chain_head h"
                " JOIN order_sequences s ON s.year = :year WHERE h.id = 1 FOR UPDATE OF h, s"
            )
        else:
            self.head = self.of(
                "SELECT h.seq, h.hash, s.value FROM chain_head h"
                " LEFT JOIN order_sequences s ON s.year = :year WHERE h.id = 1"
            )
        self.head_alone = "SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE"
        # PostgreSQL: the year's counter and the chain head in one statement
        self.move_head_and_sequence = self.of(
            "WITH s AS (UPDATE order_sequences SET value = :value WHERE year = :year)"
            " UPDATE chain_head SET seq = :seq, hash = :hash WHERE id = 1"
        )
        self.move_head = self.of("UPDATE chain_head SET seq = :seq, hash = :hash WHERE id = 1")
        snapshot = _SNAPSHOT if postgres else _SNAPSHOT.replace("IS NOT DISTINCT FROM", "IS")
        self.snapshot = self.of(snapshot)
        self.claimed = self.of(
            "SELECT order_id, request_digest FROM client_orders"
            " WHERE client_order_id = :client_order_id"
        )
        self.setting = self.of("SELECT value FROM settings WHERE key = :key")
        self.sequence = self.of("SELECT value FROM order_sequences WHERE year = :year")
        self.set_sequence = self.of("UPDATE order_sequences SET value = :value WHERE year = :year")
        self.new_sequence = self.of(
            "INSERT INTO order_sequences (year, value) VALUES (:year, :value)"
        )
        self.filled = self.of("SELECT filled_quantity FROM orders WHERE order_id = :order_id")
        self.move_position = self.of(
            "UPDATE positions SET quantity = quantity + :delta"
            " WHERE account = :account AND symbol = :symbol"
        )
        self.new_position = self.of(
            "INSERT INTO positions (account, symbol, quantity) VALUES (:account, :symbol, :delta)"
        )
        self.update_setting = self.of(
            "UPDATE settings SET value = :value, updated_at = :at WHERE key = :key"
        )
        self.new_setting = self.of(
            "INSERT INTO settings (key, value, updated_at) VALUES (:key, :value, :at)"
        )
        self.new_token = self.of(
            "INSERT INTO api_tokens (token_id, token_hash, role, label, created_at)"
            " VALUES (:token_id, :token_hash, :role, :label, :at)"
        )
        self.inserts = {
            table: self.of(
                f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join(':' + c for c in columns)})"
            )
            for table, columns in _INSERT_COLUMNS.items()
        }
        self._order_updates: dict[tuple[str, ...], str] = {}

    def of(self, sql: str) -> str:
        """`:name` parameters in the driver's style (psycopg: `%(name)s`)."""
        return sql if self.dialect == "sqlite" else _PARAM.sub(r"%(\1)s", sql)

    def when(self, moment: datetime) -> Any:
        """A datetime as the column stores it: SQLite keeps SQLAlchemy's UTC text form,
        whose order is time order; PostgreSQL takes the aware datetime."""
        if self.dialect != "sqlite":
            return moment
        if moment.tzinfo is not None and moment.tzinfo is not UTC:
            moment = moment.astimezone(UTC)
        return moment.isoformat(" ", "microseconds")[:26]

    def update_order(self, columns: tuple[str, ...]) -> str:
        statement = self._order_updates.get(columns)
        if statement is None:
            unknown = set(columns) - _ORDER_COLUMNS
            if unknown:
                raise ValueError(f"orders has no column {sorted(unknown)}")
            assignments = ", ".join(f"{c} = :{c}" for c in columns)
            statement = self.of(f"UPDATE orders SET {assignments} WHERE order_id = :key_order_id")
            self._order_updates[columns] = statement
        return statement


@dataclass
class Writer:
    """The operations of one write transaction, holding the chain lock. Inserts are
    buffered per table and written together; order ids come from a counter read
    once per transaction (the chain lock makes this transaction the only writer)."""

    cursor: Any
    sql: _Statements
    seq: int
    head: str
    counters: dict[int, _Counter] = field(default_factory=dict)  # order ids, per year
    _pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def next_order_id(self, year: int) -> str:
        counter = self.counters.get(year)
        if counter is None:
            self.cursor.execute(self.sql.sequence, {"year": year})
            row = self.cursor.fetchone()
            counter = self.counters[year] = _Counter(row[0] if row else None)
        counter.value += 1
        return f"ORD-{year}-{counter.value:06d}"

    def append(self, record: dict[str, Any], kind: str, at: datetime) -> dict[str, Any]:
        """Link `record` to the chain and append it: the record with its hashes."""
        return self.append_text(record, kind, at)[0]

    def append_text(
        self, record: dict[str, Any], kind: str, at: datetime
    ) -> tuple[dict[str, Any], str]:
        """As `append`, with the record's canonical JSON text as stored."""
        linked, text = link_text(record, self.head)
        self.seq += 1
        self._insert(
            "audit_log",
            seq=self.seq,
            kind=kind,
            order_id=linked.get("order_id") if kind == "order" else None,
            record=text,
            prev_hash=linked["prev_hash"],
            hash=linked["hash"],
            created_at=self.sql.when(at),
        )
        self.head = linked["hash"]
        return linked, text

    def insert_order(self, values: dict[str, Any]) -> None:
        row: dict[str, Any] = dict.fromkeys(_INSERT_COLUMNS["orders"])
        row.update(values)
        row["filled_quantity"] = row["filled_quantity"] or 0.0
        row["reduce_only"] = bool(row["reduce_only"])
        row["created_at"] = self.sql.when(values["created_at"])
        row["updated_at"] = self.sql.when(values["updated_at"])
        self._insert("orders", **row)

    def filled_quantity(self, order_id: str) -> float:
        self._flush("orders")
        self.cursor.execute(self.sql.filled, {"order_id": order_id})
        row = self.cursor.fetchone()
        return float(row[0] or 0.0) if row else 0.0

    def update_order(self, order_id: str, values: dict[str, Any]) -> None:
        self._flush("orders")
        params = dict(values)
        if "updated_at" in params:
            params["updated_at"] = self.sql.when(params["updated_at"])
        statement = self.sql.update_order(tuple(values))
        self.cursor.execute(statement, {**params, "key_order_id": order_id})

    def claim(self, client_order_id: str, order_id: str, digest: str) -> None:
        self._insert(
            "client_orders",
            client_order_id=client_order_id,
            order_id=order_id,
            request_digest=digest,
        )

    def event(self, order_id: str, status: str, detail: dict[str, Any], at: datetime) -> None:
        self._insert(
            "order_events",
            order_id=order_id,
            status=status,
            detail=json.dumps(detail),
            at=self.sql.when(at),
        )

    def fill(self, order_id: str, quantity: float, price: float, at: datetime) -> None:
        at_text = self.sql.when(at)
        self._insert("fills", order_id=order_id, quantity=quantity, price=price, at=at_text)

    def move_position(self, account: str, symbol: str, delta: float) -> None:
        params = {"account": account, "symbol": symbol, "delta": delta}
        self.cursor.execute(self.sql.move_position, params)
        if self.cursor.rowcount == 0:
            self.cursor.execute(self.sql.new_position, params)

    def set_setting(self, key: str, value: Any, at: datetime) -> None:
        params = {"key": key, "value": json.dumps(value, sort_keys=True), "at": self.sql.when(at)}
        self.cursor.execute(self.sql.update_setting, params)
        if self.cursor.rowcount == 0:
            self.cursor.execute(self.sql.new_setting, params)

    def setting(self, key: str) -> Any:
        self.cursor.execute(self.sql.setting, {"key": key})
        row = self.cursor.fetchone()
        return json.loads(row[0]) if row is not None else None

    def add_token(
        self, token_id: str, token_hash: str, role: str, label: str, at: datetime
    ) -> None:
        params = {"token_id": token_id, "token_hash": token_hash, "role": role, "label": label}
        self.cursor.execute(self.sql.new_token, {**params, "at": self.sql.when(at)})

    def finish(self) -> None:
        """Write what is buffered, the order counters and the chain head."""
        self._flush(*_INSERT_COLUMNS)
        head = {"seq": self.seq, "hash": self.head}
        for year, counter in self.counters.items():
            if counter.value == (counter.stored or 0):
                continue
            params = {"year": year, "value": counter.value}
            if counter.stored is None:
                self.cursor.execute(self.sql.new_sequence, params)
            elif self.sql.dialect == "postgresql" and head:
                self.cursor.execute(self.sql.move_head_and_sequence, {**params, **head})
                head = {}
            else:
                self.cursor.execute(self.sql.set_sequence, params)
        if head:
            self.cursor.execute(self.sql.move_head, head)

    def _insert(self, table: str, **row: Any) -> None:
        self._pending.setdefault(table, []).append(row)

    def _flush(self, *tables: str) -> None:
        for table in tables:
            rows = self._pending.pop(table, None)
            if rows is None:
                continue
            if len(rows) == 1:  # psycopg's executemany runs a pipeline: dear for one row
                self.cursor.execute(self.sql.inserts[table], rows[0])
            else:
                self.cursor.executemany(self.sql.inserts[table], rows)


_UNKNOWN = object()  # a counter not read with the head


class _Counter:
    """A year's order counter in a transaction: as stored (None: no row yet), and now."""

    __slots__ = ("stored", "value")

    def __init__(self, stored: int | None) -> None:
        self.stored = stored
        self.value = stored or 0


def _discard(conn: Any) -> None:
    """Close a driver connection for good (it does not go back to the pool)."""
    with suppress(Exception):
        conn.invalidate()


def _make_engine(url: str, dialect: str) -> Engine:
    if dialect != "sqlite":
        return create_engine(url, pool_size=_POOL, max_overflow=_POOL, pool_pre_ping=True)
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
        immediate = conn.get_execution_options().get("apex_migrate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
