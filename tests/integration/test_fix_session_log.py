"""The FIX session log in the store (adapters/sql/session_log.py, migration
0008), on SQLite and PostgreSQL: sequence numbers and messages committed by
each call (a second store on the same database sees them at once), a resend
that leaves the numbers, the first sending of each number answered to a
ResendRequest, a reset starting a new epoch, and the log read back as sent."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.base import MemorySessionLog
from adapters.sql import SqlStore
from engine.broker import SessionLog

AT = datetime(2026, 11, 30, 15, 0, 0, 123000, tzinfo=UTC)


def use(log: SessionLog) -> None:
    log.sent(1, "A", b"8=FIX.4.4\x01logon\x01", AT)
    log.received(1, "A", b"8=FIX.4.4\x01their logon\x01", AT, 2)
    log.sent(2, "D", b"8=FIX.4.4\x01order\x01", AT, "ord-1")
    log.sent(3, "0", b"8=FIX.4.4\x01heartbeat\x01", AT)
    log.sent(2, "D", b"8=FIX.4.4\x01order again\x01", AT, "ord-1")  # a resend


def test_session_log_when_messages_pass_then_durable_at_once_and_read_back(
    store_url: str,
) -> None:
    store = SqlStore(store_url)
    store.migrate()
    other = SqlStore(store_url)  # another process on the same database
    try:
        log = store.session_log("oms_fix-paper")
        assert log.sequences() == (1, 1)

        use(log)

        seen = other.session_log("oms_fix-paper")
        assert seen.sequences() == (4, 2)  # the resend left next_out
        assert [(m.seq, m.msg_type, m.message) for m in seen.outgoing(2, 3)] == [
            (2, "D", b"8=FIX.4.4\x01order\x01"),  # its first sending
            (3, "0", b"8=FIX.4.4\x01heartbeat\x01"),
        ]
        assert [m.message for m in seen.sent_for("ord-1")] == [
            b"8=FIX.4.4\x01order\x01",
            b"8=FIX.4.4\x01order again\x01",
        ]
        tail = other.fix_log(2, "oms_fix-paper")
        assert [(m.direction, m.seq, m.at) for m in tail] == [("out", 3, AT), ("out", 2, AT)]
        assert other.fix_log(10, "oms_fix-live") == []
        seen.reset(1, 1)
        assert log.sequences() == (1, 1)
        assert log.outgoing(1, 10) == []  # the old epoch is never resent
        assert len(other.fix_log(100)) == 5  # but kept in the log
    finally:
        other.close()
        store.close()


def test_memory_session_log_when_used_alike_then_answers_alike() -> None:
    log = MemorySessionLog()

    use(log)

    assert log.sequences() == (4, 2)
    assert [m.message for m in log.outgoing(2, 2)] == [b"8=FIX.4.4\x01order\x01"]
    assert len(log.sent_for("ord-1")) == 2
    log.reset(1, 1)
    assert (log.sequences(), log.outgoing(1, 10), len(log.tail(100))) == ((1, 1), [], 5)
