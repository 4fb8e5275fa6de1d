"""The account book's read of working orders (adapters/sql/_statements.py `_BOOK`) is
served by the partial index ix_orders_working on SQLite and PostgreSQL, so its cost
does not grow with the account's history of filled, cancelled and evaluated orders.
The status lists of the read, the index and engine.lifecycle.OPEN are one list."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from adapters.sql import schema
from adapters.sql._rows import OPEN_STATUSES
from adapters.sql._statements import _OPEN
from adapters.sql._store import SqlStore
from engine.lifecycle import OPEN
from engine.models import OrderRequest
from tests.conftest import build_order

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def _statuses(sql: str) -> set[str]:
    return set(re.findall(r"'([a-z_]+)'", sql))


def test_working_statuses_when_compared_then_the_read_the_index_and_the_lifecycle_agree() -> None:
    expected = {status.value for status in OPEN}

    assert _statuses(_OPEN) == expected
    assert _statuses(schema.WORKING) == expected
    assert set(OPEN_STATUSES) == expected
    assert f"status IN {_OPEN}" == schema.WORKING


def _plan(store: SqlStore, account: str) -> str:
    sql, params = store._db.sql.book, {"account": account, "exclude": "", "day": "2026-12-01"}
    with store.engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        cursor = raw.cursor()
        if store.dialect == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute("ANALYZE orders")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(str(row[0]) for row in cursor.fetchall())


def _fill_history(store: SqlStore, account: str, done: int, working: int) -> None:
    """`done` filled submits and `working` accepted ones of `account`, written directly."""
    names = [column.name for column in schema.orders.c]
    columns, values = ", ".join(names), ", ".join(f":{name}" for name in names)
    rows = []
    for i in range(done + working):
        row: dict[str, Any] = dict.fromkeys(names)
        row.update(
            order_id=f"ORD-2026-{i + 1:06d}", client_order_id=f"c-{i}", operation="submit",
            account=account,
            symbol="AAPL", side="buy", quantity=1.0, order_type="limit", limit_price=10.0,
            time_in_force="day", reduce_only=False, filled_quantity=0.0, request="{}",
            record="{}", created_at="2026-12-01T15:00:00Z", updated_at="2026-12-01T15:00:00Z",
            status="filled" if i < done else "accepted",
        )  # fmt: skip
        rows.append(row)
    with store.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO orders ({columns}) VALUES ({values})"), rows)


def test_book_when_the_account_has_a_long_history_then_working_orders_are_read_by_their_index(
    sql_store: SqlStore,
) -> None:
    _fill_history(sql_store, "desk-1", done=3000, working=3)

    plan = _plan(sql_store, "desk-1")

    assert "ix_orders_working" in plan, plan
    order = OrderRequest.model_validate(build_order("probe-1", NOW, account="desk-1"))
    with sql_store.writing() as w:
        snap = w.snapshot(order, NOW, 60.0, 60.0, day="2026-12-01")
    assert [o.order_id for o in snap.working] == [f"ORD-2026-{i:06d}" for i in (3001, 3002, 3003)]
