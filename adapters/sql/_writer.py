"""The `Writer` of one write transaction, which holds the chain lock.

Inserts are buffered per table and written together (one executemany per
table) when the transaction next reads that table, and before it commits.
Order ids come from the year's counter, read with the chain head; the counter
and the head are written back once, at the end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from engine.audit import link_text
from engine.broker import Fill
from engine.canonical import canonical_json
from engine.models import FlowCounts, OrderRequest
from engine.ports import Controls, Snapshot, StoredOrder

from . import _rows
from ._dialect import Counter, Dialect, Head
from ._errors import Errors, StoreUnavailable, describe
from ._statements import INSERT_COLUMNS

__all__ = ["GuardedCursor", "SqlWriter"]


class GuardedCursor:
    """A driver cursor whose errors are `StoreUnavailable`."""

    __slots__ = ("_cursor", "_errors")

    def __init__(self, cursor: Any, errors: Errors) -> None:
        self._cursor = cursor
        self._errors = errors

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> None:
        try:
            if params is None:
                self._cursor.execute(statement)
            else:
                self._cursor.execute(statement, params)
        except self._errors as exc:
            raise StoreUnavailable(f"{_verb(statement)} failed: {describe(exc)}") from exc

    def executemany(self, statement: str, rows: list[dict[str, Any]]) -> None:
        try:
            self._cursor.executemany(statement, rows)
        except self._errors as exc:
            raise StoreUnavailable(f"{_verb(statement)} failed: {describe(exc)}") from exc

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except self._errors as exc:
            raise StoreUnavailable(f"reading a row failed: {describe(exc)}") from exc

    def fetchall(self) -> list[Any]:
        try:
            return list(self._cursor.fetchall())
        except self._errors as exc:
            raise StoreUnavailable(f"reading rows failed: {describe(exc)}") from exc

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class SqlWriter:
    """engine.ports.Writer on one transaction's cursor."""

    def __init__(self, cursor: GuardedCursor, dialect: Dialect, head: Head) -> None:
        self.cursor = cursor
        self._db = dialect
        self._sql = dialect.sql
        self._head = head
        self._pending: dict[str, list[dict[str, Any]]] = {}
        # the canonical text of each record appended here, by hash: the orders row
        # stores the same text without encoding the record twice
        self._texts: dict[str, str] = {}

    # --- reads (they see this transaction's writes) --------------------------

    def snapshot(
        self,
        order: OrderRequest,
        now: datetime,
        rate_window_s: float,
        duplicate_window_s: float,
        exclude: str | None = None,
        day: str = "",
    ) -> Snapshot:
        """Everything one decision needs, in two statements: the controls, the
        position in the symbol, the flow counts, and the claim on the client
        order id (a submit's retry is answered from it); then the account's book
        (positions, marks, working orders, the day's executed notional)."""
        when = self._db.when
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
        self.cursor.execute(self._sql.snapshot, params)
        snap = _rows.snapshot(self.cursor.fetchone())
        self.cursor.execute(self._sql.book, {**params, "day": day})
        snap = _rows.with_book(snap, self.cursor.fetchall())
        return self._with_buffered(snap, params)

    def _with_buffered(self, snap: Snapshot, params: dict[str, Any]) -> Snapshot:
        """The snapshot with the rows this transaction buffers and has not written
        yet counted in, as the statement would have counted them: flushing them
        before each read instead would cost two round trips per order in a batch,
        inside the chain lock."""
        rows = self._pending.get("orders", ())
        claims = self._pending.get("client_orders", ())
        if not rows and not claims:
            return snap
        counted, duplicate = snap.flow.orders_in_window, snap.flow.duplicate_recent
        working = list(snap.working)
        for row in rows:
            if not _is_flow(row, params):
                continue
            if row["status"] in _rows.OPEN_STATUSES:
                working.append(_rows.working_order(row))
            if row["created_at"] > params["rate_since"]:
                counted += 1
            duplicate = duplicate or (
                row["created_at"] > params["duplicate_since"]
                and (row["client_order_id"] or "") != params["client_order_id"]
                and all(row[k] == params[k] for k in _SAME_ORDER)
            )
        claim = snap.claim
        for entry in claims:
            if entry["client_order_id"] == params["client_order_id"]:
                claim = (entry["order_id"], entry["request_digest"])
        flow = FlowCounts(orders_in_window=counted, duplicate_recent=duplicate)
        return dataclasses.replace(snap, flow=flow, claim=claim, working=tuple(working))

    def controls(self) -> Controls:
        self.cursor.execute(self._sql.controls)
        return _rows.controls(*self.cursor.fetchone())

    def setting(self, key: str) -> Any:
        self.cursor.execute(self._sql.setting, {"key": key})
        row = self.cursor.fetchone()
        return json.loads(row[0]) if row is not None else None

    def order(self, order_id: str) -> StoredOrder | None:
        self._flush("orders")
        self.cursor.execute(self._sql.order, {"order_id": order_id})
        row = self.cursor.fetchone()
        return _rows.stored_order(row, self._db.read_when) if row is not None else None

    def fills(self, order_id: str) -> list[Fill]:
        self._flush("fills")
        self.cursor.execute(self._sql.fills, {"order_id": order_id})
        return [_rows.fill(row, self._db.read_when) for row in self.cursor.fetchall()]

    # --- the chain and orders ------------------------------------------------

    def next_order_id(self, year: int) -> str:
        counter = self._head.counters.get(year)
        if counter is None:
            self.cursor.execute(self._sql.sequence, {"year": year})
            row = self.cursor.fetchone()
            counter = self._head.counters[year] = Counter(row[0] if row else None)
        counter.value += 1
        return f"ORD-{year}-{counter.value:06d}"

    def head(self) -> tuple[int, str]:
        return self._head.seq, self._head.hash

    def append(self, record: dict[str, Any], kind: str, at: datetime) -> dict[str, Any]:
        """Link `record` to the chain and append it: the record with its hashes."""
        linked, text = link_text(record, self._head.hash)
        self._head.seq += 1
        self._insert(
            "audit_log",
            seq=self._head.seq,
            kind=kind,
            order_id=linked.get("order_id") if kind == "order" else None,
            record=text,
            prev_hash=linked["prev_hash"],
            hash=linked["hash"],
            created_at=self._db.when(at),
        )
        self._head.hash = linked["hash"]
        self._texts[linked["hash"]] = text
        return linked

    def insert_order(
        self, record: dict[str, Any], request: Any, at: datetime, time_in_force: str | None
    ) -> None:
        values = _rows.order_values(
            record, self._text(record), request, self._db.when(at), time_in_force
        )
        self._insert("orders", **values)

    def update_order(
        self,
        order_id: str,
        record: dict[str, Any],
        at: datetime,
        *,
        broker_order_id: str | None = None,
        filled_quantity: float | None = None,
        average_price: float | None = None,
        terms: dict[str, Any] | None = None,
    ) -> None:
        self._flush("orders")
        values: dict[str, Any] = {
            "status": str(record["order_status"]),
            "record": self._text(record),
            "updated_at": self._db.when(at),
        }
        for column, value in (
            ("broker_order_id", broker_order_id),
            ("filled_quantity", filled_quantity),
            ("average_price", average_price),
        ):
            if value is not None:
                values[column] = value
        for column, value in (terms or {}).items():
            values[column] = _rows.json_text(value) if column == "request" else value
        statement = self._sql.update_order(tuple(values))
        self.cursor.execute(statement, {**values, "key_order_id": order_id})

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
            at=self._db.when(at),
        )

    def fill(self, order_id: str, fill: Fill) -> None:
        self._insert(
            "fills",
            order_id=order_id,
            quantity=fill.quantity,
            price=fill.price,
            at=self._db.when(fill.at),
            execution_id=fill.execution_id or None,
        )

    # --- positions, controls, settings, tokens -------------------------------

    def move_position(
        self, account: str, symbol: str, delta: float, price: float | None = None
    ) -> None:
        params = {"account": account, "symbol": symbol, "quantity": delta, "price": price}
        self.cursor.execute(self._sql.move_position, params)
        if self.cursor.rowcount == 0:
            self.cursor.execute(self._sql.new_position, params)

    def add_executed(self, account: str, day: str, notional: float) -> None:
        params = {"account": account, "day": day, "notional": notional}
        self.cursor.execute(self._sql.add_notional, params)

    def positions(self, account: str) -> dict[str, float]:
        """The account's stored positions, as this transaction sees them."""
        self._flush("positions")
        self.cursor.execute(self._sql.positions, {"account": account})
        return {str(r[0]): float(r[1]) for r in self.cursor.fetchall() if r[1]}

    def set_position(
        self, account: str, symbol: str, quantity: float, price: float | None = None
    ) -> None:
        # without a broker's price the mark stays what the fills left (or none)
        params = {"account": account, "symbol": symbol, "quantity": quantity, "price": price}
        self.cursor.execute(self._sql.set_position, params)
        if self.cursor.rowcount == 0:
            self.cursor.execute(self._sql.new_position, params)

    def set_mark(self, account: str, symbol: str, price: float) -> None:
        params = {"account": account, "symbol": symbol, "price": price}
        self.cursor.execute(self._sql.set_mark, params)

    def set_controls(self, controls: Controls, at: datetime) -> None:
        """Both keys, always: once `trading_states` is written, a legacy `omega`
        setting no longer counts."""
        self.set_setting("mode", {"mode": controls.mode}, at)
        self.set_setting("trading_states", controls.states, at)

    def set_setting(self, key: str, value: Any, at: datetime) -> None:
        params = {"key": key, "value": json.dumps(value, sort_keys=True), "at": self._db.when(at)}
        self.cursor.execute(self._sql.update_setting, params)
        if self.cursor.rowcount == 0:
            self.cursor.execute(self._sql.new_setting, params)

    def add_token(
        self,
        token_id: str,
        token_hash: str,
        role: str,
        label: str,
        accounts: Collection[str] | None,
        at: datetime,
        expires_at: datetime | None = None,
    ) -> None:
        params = {
            "token_id": token_id,
            "token_hash": token_hash,
            "role": role,
            "label": label,
            "accounts": _rows.accounts_text(accounts),
            "at": self._db.when(at),
            "expires_at": self._db.when(expires_at) if expires_at is not None else None,
        }
        self.cursor.execute(self._sql.new_token, params)

    def revoke_token(self, token_id: str, at: datetime) -> bool:
        """Revoke a live token; False if there is none of this id."""
        params = {"token_id": token_id, "at": self._db.when(at)}
        self.cursor.execute(self._sql.revoke_token, params)
        return self.cursor.rowcount == 1

    # --- the end of the transaction -----------------------------------------

    def finish(self) -> None:
        """Write what is buffered, the order counters and the chain head."""
        self._flush(*INSERT_COLUMNS)
        self._db.write_head(self.cursor, self._head)

    def _text(self, record: dict[str, Any]) -> str:
        """A linked record's canonical text, as appended to the chain."""
        text = self._texts.get(record.get("hash", ""))
        return text if text is not None else canonical_json(record).decode("utf-8")

    def _insert(self, table: str, **row: Any) -> None:
        self._pending.setdefault(table, []).append(row)

    def _flush(self, *tables: str) -> None:
        for table in tables:
            rows = self._pending.pop(table, None)
            if rows is None:
                continue
            if len(rows) == 1:  # psycopg's executemany runs a pipeline: dear for one row
                self.cursor.execute(self._sql.inserts[table], rows[0])
            else:
                self.cursor.executemany(self._sql.inserts[table], rows)


_SAME_ORDER = ("symbol", "side", "quantity", "order_type", "limit_price", "stop_price")


def _is_flow(row: dict[str, Any], params: dict[str, Any]) -> bool:
    """The statement's flow condition (`_FLOW` in _statements.py), on a buffered row."""
    return (
        row["account"] == params["account"]
        and row["operation"] == "submit"
        and row["status"] not in ("rejected", "blocked")
        and (row["client_order_id"] or "") != params["exclude"]
        and row["created_at"] <= params["now"]
    )


def _verb(statement: str) -> str:
    """The start of a statement, for messages: "INSERT INTO orders (order_id, ..."."""
    short = " ".join(statement.split())
    return short if len(short) <= 40 else short[:40] + "..."
