"""`engine.broker.SessionLog` on the `fix_sessions` and `fix_messages` tables: a
FIX session's sequence numbers and every message in and out.

Unlike the broker journal (journal.py), which rides with the gateway's next
commit, each call here is its own transaction, committed before it returns: an
outgoing message must be durable before it is written to the socket, so that a
crash never makes the adapter send a MsgSeqNum the counterparty has already
seen (it would log us out, or worse, take a new order as a duplicate). The
message row and the session's numbers move in the same transaction.

Messages are kept as text with SOH as it was (Latin-1, byte for byte). They
append nothing to the audit chain.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update

from engine.broker import LoggedMessage
from engine.errors import InvalidArgument

from ._errors import unavailable
from .schema import fix_messages, fix_sessions

__all__ = ["SqlSessionLog", "fix_log"]

_SESSION_MAX = 32
_CL_MAX = 64


class SqlSessionLog:
    def __init__(self, session: str, engine: Engine, errors: Any) -> None:
        if not session or len(session) > _SESSION_MAX:
            raise InvalidArgument(f"a FIX session's name has 1 to {_SESSION_MAX} characters")
        self.session = session
        self._engine = engine
        self._errors = errors
        self._lock = threading.Lock()
        self._epoch: int | None = None

    @contextmanager
    def _tx(self, doing: str, how: str = "begin") -> Iterator[Any]:
        """One transaction (`begin`) or one read (`connect`), held alone."""
        with self._lock, unavailable(self._errors, doing):
            opened = self._engine.begin() if how == "begin" else self._engine.connect()
            with opened as conn:
                yield conn

    def sequences(self) -> tuple[int, int]:
        with self._tx("reading the FIX session", "begin") as conn:
            row = self._row(conn)
            return int(row.next_out), int(row.next_in)

    def _row(self, conn: Any) -> Any:
        """The session's row, created (1, 1) on first use."""
        query = select(fix_sessions).where(fix_sessions.c.session == self.session)
        row = conn.execute(query).first()
        if row is None:
            conn.execute(
                insert(fix_sessions).values(
                    session=self.session, next_out=1, next_in=1, epoch=0, updated_at=_now()
                )
            )
            row = conn.execute(query).first()
        self._epoch = int(row.epoch)
        return row

    def sent(
        self, seq: int, msg_type: str, message: bytes, at: datetime, cl_ord_id: str | None = None
    ) -> None:
        with self._tx("logging a FIX message", "begin") as conn:
            if self._epoch is None:
                self._row(conn)
            self._insert(conn, "out", seq, msg_type, message, at, cl_ord_id)
            # a resend (an earlier seq) leaves next_out where it is
            conn.execute(
                update(fix_sessions)
                .where(and_(fix_sessions.c.session == self.session, fix_sessions.c.next_out <= seq))
                .values(next_out=seq + 1, updated_at=_now())
            )

    def received(
        self, seq: int, msg_type: str, message: bytes, at: datetime, next_in: int | None
    ) -> None:
        with self._tx("logging a FIX message", "begin") as conn:
            if self._epoch is None:
                self._row(conn)
            self._insert(conn, "in", seq, msg_type, message, at, None)
            if next_in is not None:
                conn.execute(
                    update(fix_sessions)
                    .where(fix_sessions.c.session == self.session)
                    .values(next_in=next_in, updated_at=_now())
                )

    def reset(self, next_out: int, next_in: int) -> None:
        with self._tx("resetting the FIX session", "begin") as conn:
            row = self._row(conn)
            epoch = int(row.epoch) + 1
            conn.execute(
                update(fix_sessions)
                .where(fix_sessions.c.session == self.session)
                .values(next_out=next_out, next_in=next_in, epoch=epoch, updated_at=_now())
            )
            self._epoch = epoch

    def outgoing(self, begin: int, end: int) -> list[LoggedMessage]:
        with self._tx("reading the FIX message log", "begin") as conn:
            epoch = int(self._row(conn).epoch)
            rows = conn.execute(
                select(fix_messages)
                .where(
                    fix_messages.c.session == self.session,
                    fix_messages.c.epoch == epoch,
                    fix_messages.c.direction == "out",
                    fix_messages.c.seq >= begin,
                    fix_messages.c.seq <= end,
                )
                .order_by(fix_messages.c.id)
            ).all()
        first: dict[int, LoggedMessage] = {}
        for row in rows:
            first.setdefault(int(row.seq), _message(row))
        return [first[seq] for seq in sorted(first)]

    def sent_for(self, cl_ord_id: str) -> list[LoggedMessage]:
        with self._tx("reading the FIX message log", "connect") as conn:
            rows = conn.execute(
                select(fix_messages)
                .where(
                    fix_messages.c.session == self.session,
                    fix_messages.c.cl_ord_id == cl_ord_id,
                    fix_messages.c.direction == "out",
                )
                .order_by(fix_messages.c.id)
            ).all()
        return [_message(row) for row in rows]

    def tail(self, limit: int) -> list[LoggedMessage]:
        return fix_log(self._engine, self._errors, limit, self.session)

    def _insert(
        self,
        conn: Any,
        direction: str,
        seq: int,
        msg_type: str,
        message: bytes,
        at: datetime,
        cl_ord_id: str | None,
    ) -> None:
        conn.execute(
            insert(fix_messages).values(
                session=self.session,
                epoch=self._epoch or 0,
                direction=direction,
                seq=seq,
                msg_type=msg_type[:8],
                cl_ord_id=cl_ord_id[:_CL_MAX] if cl_ord_id else None,
                message=message.decode("latin-1"),
                at=at,
            )
        )


def fix_log(
    engine: Engine, errors: Any, limit: int, session: str | None = None
) -> list[LoggedMessage]:
    """The last `limit` messages (of one session, or of every one), oldest first."""
    query = select(fix_messages)
    if session is not None:
        query = query.where(fix_messages.c.session == session)
    query = query.order_by(fix_messages.c.id.desc()).limit(max(0, limit))
    with unavailable(errors, "reading the FIX message log"), engine.connect() as conn:
        rows = conn.execute(query).all()
    return [_message(row) for row in reversed(rows)]


def _message(row: Any) -> LoggedMessage:
    at = row.at if isinstance(row.at, datetime) else datetime.fromisoformat(str(row.at))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return LoggedMessage(
        direction=str(row.direction),
        seq=int(row.seq),
        msg_type=str(row.msg_type),
        message=str(row.message).encode("latin-1"),
        at=at.astimezone(UTC),
        cl_ord_id=row.cl_ord_id,
    )


def _now() -> datetime:
    return datetime.now(UTC)
