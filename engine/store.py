"""Persistence (SQLAlchemy 2 Core): the audit chain, orders, fills, positions,
settings and API tokens. SQLite (WAL) by default, PostgreSQL for replicas.

Every write runs in `Store.writing()`, which first locks the chain head
(`SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite). Writes
are therefore serialised across threads and processes, which is what keeps
order ids unique and the chain unbroken when several replicas share a database.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, bindparam, create_engine, event, func, select, text

from .audit import link
from .canonical import canonical_json
from .models import FlowCounts, OrderRequest
from .schema import (
    api_tokens,
    audit_log,
    chain_head,
    client_orders,
    fills,
    order_events,
    order_sequences,
    orders,
    positions,
    settings,
)

__all__ = ["Store", "Writer", "aware"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 7_262_001  # advisory lock id: replicas starting together migrate once


def aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        self.engine = _make_engine(url, self.dialect)
        # One writer at a time inside this process; the database lock covers the rest.
        self._write_lock = threading.Lock()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def writing(self) -> Iterator[Writer]:
        with self._write_lock, self.engine.connect() as raw:
            conn = raw.execution_options(apex_write=True)
            with conn.begin():
                head = conn.execute(_HEAD).one()
                writer = Writer(conn, head.seq, head.hash)
                yield writer
                conn.execute(_MOVE_HEAD, {"new_seq": writer.seq, "new_hash": writer.head})

    # --- reads -------------------------------------------------------------

    def setting(self, key: str) -> Any:
        with self.engine.connect() as conn:
            value = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
        return json.loads(value) if value is not None else None

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

    def claimed(self, client_order_id: str) -> tuple[str, str] | None:
        """(order_id, request digest) of the submit that claimed this client id."""
        with self.engine.connect() as conn:
            row = conn.execute(_CLAIMED, {"client_order_id": client_order_id}).first()
        return (row.order_id, row.request_digest) if row else None

    def positions(self, account: str) -> dict[str, float]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(positions.c.symbol, positions.c.quantity).where(
                    positions.c.account == account
                )
            ).all()
        return {r.symbol: r.quantity for r in rows if r.quantity}

    def snapshot(
        self,
        order: OrderRequest,
        now: datetime,
        rate_window_s: float,
        duplicate_window_s: float,
        exclude: str | None = None,
    ) -> Snapshot:
        """Everything one evaluation needs from the database, in one round of reads:
        mode and kill switch, the position in the symbol, and the flow counts."""
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
            "now": now,
            "rate_since": now - timedelta(seconds=rate_window_s),
            "duplicate_since": now - timedelta(seconds=duplicate_window_s),
        }
        with self.engine.connect() as conn:
            values: dict[str, str] = {r.key: r.value for r in conn.execute(_SETTINGS_OF_STATE)}
            position = conn.execute(_POSITION, params).scalar()
            counted = int(conn.execute(_ORDERS_IN_WINDOW, params).scalar_one())
            duplicate = conn.execute(_DUPLICATE, params).first()
        return Snapshot(
            mode=json.loads(values["mode"])["mode"] if "mode" in values else "research",
            omega=json.loads(values["omega"]) if "omega" in values else {"active": False},
            position=float(position or 0.0),
            flow=FlowCounts(orders_in_window=counted, duplicate_recent=duplicate is not None),
        )

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
    mode: str
    omega: dict[str, Any]
    position: float
    flow: FlowCounts


_NEXT_SEQUENCE = (
    order_sequences.update()
    .where(order_sequences.c.year == bindparam("y"))
    .values(value=order_sequences.c.value + 1)
    .returning(order_sequences.c.value)
)
_NOT_FLOW = ("rejected", "blocked")  # attempts that never reached a market
_SETTINGS_OF_STATE = select(settings.c.key, settings.c.value).where(
    settings.c.key.in_(("mode", "omega"))
)
_POSITION = select(positions.c.quantity).where(
    (positions.c.account == bindparam("account")) & (positions.c.symbol == bindparam("symbol"))
)
# Statements are built once: SQLAlchemy then reuses their cache keys and compiled
# forms, which on a hot path costs far less than building a statement per call.
_FLOW = (
    (orders.c.account == bindparam("account"))
    & (orders.c.operation == "submit")
    & orders.c.status.not_in(_NOT_FLOW)
    & (func.coalesce(orders.c.client_order_id, "") != bindparam("exclude"))
    & (orders.c.created_at <= bindparam("now"))
)
_ORDERS_IN_WINDOW = (
    select(func.count())
    .select_from(orders)
    .where(_FLOW & (orders.c.created_at > bindparam("rate_since")))
)
_DUPLICATE = (
    select(orders.c.order_id)
    .where(
        _FLOW
        & (orders.c.created_at > bindparam("duplicate_since"))
        & (orders.c.symbol == bindparam("symbol"))
        & (orders.c.side == bindparam("side"))
        & (orders.c.quantity == bindparam("quantity"))
        & (orders.c.order_type == bindparam("order_type"))
        & orders.c.limit_price.is_not_distinct_from(bindparam("limit_price"))
        & orders.c.stop_price.is_not_distinct_from(bindparam("stop_price"))
        # the same client order id is a retry, answered idempotently, not a duplicate
        & (func.coalesce(orders.c.client_order_id, "") != bindparam("client_order_id"))
    )
    .limit(1)
)
_HEAD = select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1).with_for_update()
_MOVE_HEAD = (
    chain_head.update()
    .where(chain_head.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)
_INSERT_AUDIT = audit_log.insert()
_INSERT_ORDER = orders.insert()
_INSERT_EVENT = order_events.insert()
_INSERT_CLAIM = client_orders.insert()
_INSERT_FILL = fills.insert()
_CLAIMED = select(client_orders.c.order_id, client_orders.c.request_digest).where(
    client_orders.c.client_order_id == bindparam("client_order_id")
)
_FILLED = select(orders.c.filled_quantity).where(orders.c.order_id == bindparam("order_id"))
_UPDATE_ORDER = orders.update().where(orders.c.order_id == bindparam("key_order_id"))
_UPDATE_POSITION = (
    positions.update()
    .where(
        (positions.c.account == bindparam("b_account"))
        & (positions.c.symbol == bindparam("b_symbol"))
    )
    .values(quantity=positions.c.quantity + bindparam("delta"))
)


@dataclass
class Writer:
    """The operations of one write transaction, holding the chain lock."""

    conn: Connection
    seq: int
    head: str

    def next_order_id(self, year: int) -> str:
        value = self.conn.execute(_NEXT_SEQUENCE, {"y": year}).scalar()
        if value is None:
            value = 1
            self.conn.execute(order_sequences.insert().values(year=year, value=value))
        return f"ORD-{year}-{value:06d}"

    def append(self, record: dict[str, Any], kind: str, at: datetime) -> dict[str, Any]:
        linked = link(record, self.head)
        self.seq += 1
        self.conn.execute(
            _INSERT_AUDIT,
            {
                "seq": self.seq,
                "kind": kind,
                "order_id": linked.get("order_id") if kind == "order" else None,
                "record": canonical_json(linked).decode("utf-8"),
                "prev_hash": linked["prev_hash"],
                "hash": linked["hash"],
                "created_at": at,
            },
        )
        self.head = linked["hash"]
        return linked

    def insert_order(self, values: dict[str, Any]) -> None:
        self.conn.execute(_INSERT_ORDER, values)

    def filled_quantity(self, order_id: str) -> float:
        value = self.conn.execute(_FILLED, {"order_id": order_id}).scalar()
        return float(value or 0.0)

    def update_order(self, order_id: str, values: dict[str, Any]) -> None:
        self.conn.execute(_UPDATE_ORDER, {**values, "key_order_id": order_id})

    def claim(self, client_order_id: str, order_id: str, digest: str) -> None:
        self.conn.execute(
            _INSERT_CLAIM,
            {"client_order_id": client_order_id, "order_id": order_id, "request_digest": digest},
        )

    def claimed(self, client_order_id: str) -> tuple[str, str] | None:
        row = self.conn.execute(_CLAIMED, {"client_order_id": client_order_id}).first()
        return (row.order_id, row.request_digest) if row else None

    def event(self, order_id: str, status: str, detail: dict[str, Any], at: datetime) -> None:
        self.conn.execute(
            _INSERT_EVENT,
            {"order_id": order_id, "status": status, "detail": json.dumps(detail), "at": at},
        )

    def fill(self, order_id: str, quantity: float, price: float, at: datetime) -> None:
        self.conn.execute(
            _INSERT_FILL, {"order_id": order_id, "quantity": quantity, "price": price, "at": at}
        )

    def move_position(self, account: str, symbol: str, delta: float) -> None:
        params = {"b_account": account, "b_symbol": symbol, "delta": delta}
        if self.conn.execute(_UPDATE_POSITION, params).rowcount == 0:
            self.conn.execute(
                positions.insert().values(account=account, symbol=symbol, quantity=delta)
            )

    def set_setting(self, key: str, value: Any, at: datetime) -> None:
        text_value = json.dumps(value, sort_keys=True)
        exists = self.conn.execute(select(settings.c.key).where(settings.c.key == key)).first()
        statement = (
            settings.update().where(settings.c.key == key)
            if exists
            else settings.insert().values(key=key)
        )
        self.conn.execute(statement.values(value=text_value, updated_at=at))

    def setting(self, key: str) -> Any:
        value = self.conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
        return json.loads(value) if value is not None else None

    def add_token(
        self, token_id: str, token_hash: str, role: str, label: str, at: datetime
    ) -> None:
        self.conn.execute(
            api_tokens.insert().values(
                token_id=token_id, token_hash=token_hash, role=role, label=label, created_at=at
            )
        )


def _make_engine(url: str, dialect: str) -> Engine:
    if dialect != "sqlite":
        return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # let SQLAlchemy, not pysqlite, decide when transactions begin
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # a writer takes the database's write lock up front: no deadlock on upgrade
        immediate = conn.get_execution_options().get("apex_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
