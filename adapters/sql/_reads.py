"""Reads outside a write transaction. The hot ones (controls, settings, claims,
one order) run on idle driver connections, one statement each; the others go
through SQLAlchemy. Each sees the last committed state."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, select, text

from engine.lifecycle import OrderStatus
from engine.ports import (
    CHECKPOINT_SETTING,
    AuditState,
    Claim,
    Controls,
    OrderRow,
    StoredOrder,
    TokenRow,
)

from . import _rows
from ._dialect import Dialect
from ._errors import StoreUnavailable, describe, unavailable
from ._transactions import discard
from .schema import api_tokens, audit_log, chain_head, orders, positions, settings

__all__ = ["DriverPool", "Reads", "every", "first", "nothing"]

_READERS = 8  # driver connections kept for the hot statements
_AUDIT_PAGE = 1000
_T = TypeVar("_T")


class DriverPool:
    """Idle driver connections for single statements, each its own transaction
    (autocommit: one statement, one snapshot; a write is durable when it returns)."""

    def __init__(self, engine: Engine, dialect: Dialect, size: int = _READERS) -> None:
        self._engine = engine
        self._db = dialect
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    def run(self, statement: str, params: Mapping[str, Any], result: Callable[[Any], _T]) -> _T:
        """`result` of the cursor after one statement. A connection that fails is
        dropped; if it had served before (the server may have restarted since),
        the statement is tried once more on another: every statement sent this
        way reads, or writes the same row the same way again."""
        with self._slots:
            while True:
                with self._lock:
                    conn: Any = self._idle.pop() if self._idle else None
                reused = conn is not None
                if conn is None:
                    with unavailable(self._db.errors, "connecting"):
                        conn = self._engine.raw_connection()
                try:
                    if not reused:
                        self._db.prepare_reader(conn)
                    cursor = conn.cursor()
                    cursor.execute(statement, params)
                    value = result(cursor)
                except self._db.errors as exc:
                    discard(conn)
                    if reused:
                        continue
                    short = " ".join(statement.split())[:40]
                    raise StoreUnavailable(f"{short}... failed: {describe(exc)}") from exc
                except BaseException:
                    discard(conn)
                    raise
                with self._lock:
                    self._idle.append(conn)
                return value

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            discard(conn)


def first(cursor: Any) -> Any:
    return cursor.fetchone()


def every(cursor: Any) -> list[Any]:
    return list(cursor.fetchall())


def nothing(cursor: Any) -> None:
    return None


class Reads:
    """The read side of engine.ports.Store."""

    def __init__(self, engine: Engine, dialect: Dialect, pool: DriverPool) -> None:
        self.engine = engine
        self._db = dialect
        self._pool = pool

    # --- hot: driver connections ----------------------------------------------

    def controls(self) -> Controls:
        return _rows.controls(*self._pool.run(self._db.sql.controls, {}, first))

    def setting(self, key: str) -> Any:
        row = self._pool.run(self._db.sql.setting, {"key": key}, first)
        return json.loads(row[0]) if row is not None else None

    def claimed(self, client_order_id: str) -> Claim:
        """(order id, request digest) of the submit that claimed this client id."""
        params = {"client_order_id": client_order_id}
        row = self._pool.run(self._db.sql.claimed, params, first)
        return (row[0], row[1]) if row is not None else None

    def order(self, order_id: str) -> StoredOrder | None:
        row = self._pool.run(self._db.sql.order, {"order_id": order_id}, first)
        return _rows.stored_order(row, self._db.read_when) if row is not None else None

    # --- cold: SQLAlchemy -------------------------------------------------------

    def list_orders(
        self,
        *,
        status: str | None = None,
        symbol: str | None = None,
        account: str | None = None,
        accounts: Collection[str] | None = None,
        client_order_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Latest records, newest first; `accounts` limits to those accounts."""
        wanted = (status, symbol, account, client_order_id)
        if any(v is not None and "\x00" in v for v in wanted):
            return []  # no column holds a NUL (PostgreSQL would refuse to compare one)
        # the id alone would sort ORD-2026-1000000 before ORD-2026-999999
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
        if accounts is not None:
            query = query.where(orders.c.account.in_(sorted(accounts)))
        with unavailable(self._db.errors, "listing orders"), self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).scalars().all()
        return [json.loads(r) for r in rows]

    def orders_in(self, statuses: Collection[OrderStatus]) -> list[StoredOrder]:
        """Orders whose status is one of `statuses`, oldest first."""
        query = (
            select(*(orders.c[name] for name in _rows.ORDER_COLUMNS))
            .where(orders.c.status.in_(sorted(str(s) for s in statuses)))
            .order_by(
                orders.c.created_at,
                func.length(orders.c.order_id),
                orders.c.order_id,
            )
        )
        with unavailable(self._db.errors, "reading orders"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_rows.stored_order(row, self._db.read_when) for row in rows]

    def positions(self, account: str) -> dict[str, float]:
        query = select(positions.c.symbol, positions.c.quantity).where(
            positions.c.account == account
        )
        with unavailable(self._db.errors, "reading positions"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {r.symbol: r.quantity for r in rows if r.quantity}

    def audit_records(self, after: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Records in chain order, streamed in pages."""
        remaining = limit
        while remaining is None or remaining > 0:
            size = _AUDIT_PAGE if remaining is None else min(_AUDIT_PAGE, remaining)
            query = (
                select(audit_log.c.seq, audit_log.c.record)
                .where(audit_log.c.seq > after)
                .order_by(audit_log.c.seq)
                .limit(size)
            )
            doing = "reading the audit log"
            with unavailable(self._db.errors, doing), self.engine.connect() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield json.loads(row.record)
            if len(rows) < size:
                return
            after = rows[-1].seq
            if remaining is not None:
                remaining -= len(rows)

    def audit_of_kind(self, kind: str, after: int = 0, limit: int = 100) -> list[tuple[int, Any]]:
        """The records of one `kind` after chain position `after`, in chain order,
        each with its position (the next page starts after the last one)."""
        query = (
            select(audit_log.c.seq, audit_log.c.record)
            .where(audit_log.c.kind == kind, audit_log.c.seq > after)
            .order_by(audit_log.c.seq)
            .limit(limit)
        )
        with (
            unavailable(self._db.errors, f"reading the {kind} records"),
            self.engine.connect() as c,
        ):
            rows = c.execute(query).all()
        return [(int(row.seq), json.loads(row.record)) for row in rows]

    @contextmanager
    def audit_state(self) -> Iterator[AuditState]:
        """Everything `audit verify` compares, in one read transaction: REPEATABLE
        READ on PostgreSQL, and on SQLite (WAL) a transaction's first read fixes
        its snapshot. Every write moves the head, its records and their rows in
        one transaction, so the snapshot holds them all or none."""
        doing = "reading the chain and the rows it derives"
        with unavailable(self._db.errors, doing), self.engine.connect() as conn:
            if self._db.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                head = conn.execute(
                    select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)
                ).first()
                columns = ("order_id", "status", "quantity", "limit_price", "stop_price")
                rows = conn.execute(select(*(orders.c[n] for n in (*columns, "record")))).all()
                held = conn.execute(select(positions)).all()
                kept = conn.execute(
                    select(settings.c.value).where(settings.c.key == CHECKPOINT_SETTING)
                ).scalar()
                yield AuditState(
                    head=(int(head.seq), str(head.hash)) if head is not None else None,
                    orders=[_order_row(row) for row in rows],
                    positions={(r.account, r.symbol): float(r.quantity) for r in held},
                    records=_chain(conn),
                    checkpoint=_parsed(kept) if kept is not None else None,
                )

    def audit_count(self) -> int:
        return self._count(audit_log, "counting the audit log")

    def chain_head(self) -> tuple[int, str] | None:
        query = select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)
        with unavailable(self._db.errors, "reading the chain head"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (int(row.seq), str(row.hash)) if row is not None else None

    def token(self, token_hash: str) -> TokenRow | None:
        """A live (not revoked) token with this hash."""
        query = select(*(api_tokens.c[name] for name in _rows.TOKEN_COLUMNS)).where(
            api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None)
        )
        with unavailable(self._db.errors, "reading a token"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _rows.token_row(row, self._db.read_when) if row is not None else None

    def tokens(self) -> list[TokenRow]:
        """Every token, revoked ones included, oldest first."""
        query = select(*(api_tokens.c[name] for name in _rows.TOKEN_COLUMNS)).order_by(
            api_tokens.c.created_at, api_tokens.c.token_id
        )
        with unavailable(self._db.errors, "listing tokens"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_rows.token_row(row, self._db.read_when) for row in rows]

    def token_count(self) -> int:
        return self._count(api_tokens, "counting tokens")

    def ping(self) -> bool:
        """True when the database answers; StoreUnavailable when it does not."""
        with unavailable(self._db.errors, "pinging the database"), self.engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar() == 1

    def _count(self, table: Any, doing: str) -> int:
        with unavailable(self._db.errors, doing), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _chain(conn: Connection) -> Iterator[dict[str, Any]]:
    """The chain in order, in pages, on `conn` (and so in its snapshot)."""
    after = 0
    while True:
        query = (
            select(audit_log.c.seq, audit_log.c.record)
            .where(audit_log.c.seq > after)
            .order_by(audit_log.c.seq)
            .limit(_AUDIT_PAGE)
        )
        rows = conn.execute(query).all()
        for row in rows:
            yield json.loads(row.record)
        if len(rows) < _AUDIT_PAGE:
            return
        after = rows[-1].seq


def _order_row(row: Any) -> OrderRow:
    record = _parsed(row.record)
    return OrderRow(row.order_id, row.status, row.quantity, row.limit_price, row.stop_price, record)


def _parsed(value: str) -> Any:
    """A stored record as JSON, or its text when it is not JSON (a difference)."""
    try:
        return json.loads(value)
    except ValueError:
        return value
