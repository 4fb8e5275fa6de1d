"""The store, on SQLite and on PostgreSQL: migrations, order ids, the chain
under concurrent writers, settings and positions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.sql.schema import audit_log, chain_head
from adapters.sql.store import Store
from engine.audit import GENESIS, verify_chain

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    store.migrate()
    yield store
    store.close()


def append_order(store: Store, **fields: Any) -> dict[str, Any]:
    with store.writing() as w:
        order_id = w.next_order_id(NOW.year)
        return w.append({"order_id": order_id, **fields}, "order", NOW)


# --- migrations and the genesis ---------------------------------------------------


def test_migrate_when_run_twice_then_second_run_changes_nothing(store: Store) -> None:
    store.migrate()

    with store.engine.connect() as conn:
        heads = conn.execute(select(chain_head.c.id, chain_head.c.seq, chain_head.c.hash)).all()
        records = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
    assert [tuple(h) for h in heads] == [(1, 0, GENESIS)]
    assert records == 0


def test_migrate_when_a_second_store_opens_the_same_database_then_data_is_kept(
    store: Store, store_url: str
) -> None:
    first = append_order(store, quantity=100)

    again = Store(store_url)
    again.migrate()
    try:
        assert list(again.audit_records()) == [first]
    finally:
        again.close()


def test_append_when_chain_is_empty_then_first_prev_hash_is_the_genesis(store: Store) -> None:
    first = append_order(store, quantity=100)
    second = append_order(store, quantity=200)

    assert GENESIS == "sha256:" + "0" * 64
    assert first["prev_hash"] == GENESIS
    assert second["prev_hash"] == first["hash"]
    assert list(store.audit_records()) == [first, second]
    assert store.audit_count() == 2


def test_audit_records_when_paged_then_after_and_limit_select_a_window(store: Store) -> None:
    appended = [append_order(store, quantity=q) for q in (1, 2, 3, 4, 5)]

    assert list(store.audit_records(after=1, limit=2)) == appended[1:3]
    assert list(store.audit_records(after=4)) == appended[4:]
    assert list(store.audit_records(after=5)) == []


# --- order ids ------------------------------------------------------------------------


def test_next_order_id_when_called_in_turn_then_ids_are_sequential(store: Store) -> None:
    ids = [append_order(store)["order_id"] for _ in range(3)]

    assert ids == ["ORD-2026-000001", "ORD-2026-000002", "ORD-2026-000003"]


def test_next_order_id_when_the_year_changes_then_the_sequence_restarts(store: Store) -> None:
    with store.writing() as w:
        ids = [w.next_order_id(2026), w.next_order_id(2027), w.next_order_id(2026)]

    assert ids == ["ORD-2026-000001", "ORD-2027-000001", "ORD-2026-000002"]


def test_next_order_id_when_a_write_fails_then_its_id_is_not_used(store: Store) -> None:
    with pytest.raises(RuntimeError, match="abandoned"), store.writing() as w:
        w.next_order_id(2026)
        w.append({"order_id": "ORD-2026-000001"}, "order", NOW)
        raise RuntimeError("abandoned")

    assert append_order(store)["order_id"] == "ORD-2026-000001"
    assert store.audit_count() == 1


def test_append_when_4_threads_append_25_each_then_ids_are_unique_and_chain_verifies(
    store: Store,
) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(number: int) -> None:
        try:
            start.wait()
            for i in range(25):
                append_order(store, thread=number, i=i)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    records = list(store.audit_records())
    assert errors == []
    assert [r["order_id"] for r in records] == [f"ORD-2026-{n:06d}" for n in range(1, 101)]
    assert sorted((r["thread"], r["i"]) for r in records) == [
        (t, i) for t in range(4) for i in range(25)
    ]
    report = verify_chain(store.audit_records())
    assert report.as_dict() == {
        "ok": True,
        "records": 100,
        "head": records[-1]["hash"],
        "first_break": None,
    }


# --- settings, positions, client ids ------------------------------------------------


def test_setting_when_written_then_read_back_and_overwritten(store: Store) -> None:
    assert store.setting("mode") is None

    with store.writing() as w:
        w.set_setting("mode", {"mode": "simulation", "since": "2026-11-30T15:00:00Z"}, NOW)
    assert store.setting("mode") == {"mode": "simulation", "since": "2026-11-30T15:00:00Z"}

    with store.writing() as w:
        w.set_setting("mode", {"mode": "research"}, NOW)
        assert w.setting("mode") == {"mode": "research"}
    assert store.setting("mode") == {"mode": "research"}
    assert store.setting("omega") is None


def test_setting_when_written_then_no_audit_record_is_added(store: Store) -> None:
    with store.writing() as w:
        w.set_setting("omega", {"active": True}, NOW)

    assert store.audit_count() == 0


def test_move_position_when_moved_then_positions_add_up_per_account(store: Store) -> None:
    with store.writing() as w:
        w.move_position("default", "AAPL", 100.0)
        w.move_position("default", "AAPL", -30.0)
        w.move_position("default", "MSFT", -5.0)
        w.move_position("paper-1", "AAPL", 7.0)

    assert store.positions("default") == {"AAPL": 70.0, "MSFT": -5.0}
    assert store.positions("paper-1") == {"AAPL": 7.0}
    assert store.positions("nobody") == {}


def test_move_position_when_flat_again_then_symbol_is_not_listed(store: Store) -> None:
    with store.writing() as w:
        w.move_position("default", "AAPL", 100.0)
    with store.writing() as w:
        w.move_position("default", "AAPL", -100.0)

    assert store.positions("default") == {}


def test_claim_when_client_id_is_claimed_then_order_and_digest_are_returned(
    store: Store,
) -> None:
    with store.writing() as w:
        w.claim("strat7-000042", "ORD-2026-000001", "sha256:" + "a" * 64)

    assert store.claimed("strat7-000042") == ("ORD-2026-000001", "sha256:" + "a" * 64)
    assert store.claimed("strat7-000043") is None


def test_read_when_an_idle_connection_has_died_then_the_read_is_retried_on_a_new_one(
    store: Store,
) -> None:
    with store.writing() as w:
        w.set_setting("mode", {"mode": "simulation"}, NOW)
    assert store.setting("mode") == {"mode": "simulation"}  # leaves one idle connection
    [idle] = store._idle
    idle.driver_connection.close()  # as a database restart would

    assert store.setting("mode") == {"mode": "simulation"}
    assert len(store._idle) == 1
    assert store._idle[0] is not idle


def test_read_when_a_new_connection_fails_then_the_error_is_raised(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store._idle.clear()

    def refused() -> Any:
        raise OSError("connection refused")

    monkeypatch.setattr(store.engine, "raw_connection", refused)

    with pytest.raises(OSError, match="refused"):
        store.setting("mode")


# --- group commit ------------------------------------------------------------------


class Gate:
    """Holds the writer's turn inside a first piece of work while other threads
    queue theirs: what is queued meanwhile is committed as one batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.inside = threading.Event()
        self.open = threading.Event()
        self.transactions = 0
        real = store._transaction

        @contextmanager
        def counted() -> Iterator[Any]:
            self.transactions += 1
            with real() as writer:
                yield writer

        store._transaction = counted  # type: ignore[method-assign]

    def hold(self, w: Any) -> dict[str, Any]:
        self.inside.set()
        assert self.open.wait(10)
        return w.append({"order_id": w.next_order_id(NOW.year), "held": True}, "order", NOW)

    def queued(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.store._queue) < count:
            assert time.monotonic() < deadline, "work was not queued"
            time.sleep(0.001)


def run_in_threads(store: Store, works: list[Any]) -> tuple[list[threading.Thread], list[Any]]:
    """store.transact(work) for each work, each on its own thread; results or errors."""
    results: list[Any] = [None] * len(works)

    def call(index: int) -> None:
        try:
            results[index] = store.transact(works[index])
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    for thread in threads:
        thread.start()
    return threads, results


def appender(n: int, fail: bool = False) -> Any:
    def work(w: Any) -> dict[str, Any]:
        linked = w.append({"order_id": w.next_order_id(NOW.year), "n": n}, "order", NOW)
        if fail:
            raise ValueError(f"work {n} failed after writing")
        return linked

    return work


def test_transact_when_work_queues_behind_a_writer_then_it_commits_as_one_batch(
    store: Store,
) -> None:
    gate = Gate(store)
    first_threads, first = run_in_threads(store, [gate.hold])
    assert gate.inside.wait(10)
    threads, results = run_in_threads(store, [appender(n) for n in range(7)])
    gate.queued(7)

    gate.open.set()
    for thread in [*first_threads, *threads]:
        thread.join(10)

    records = list(store.audit_records())
    assert gate.transactions == 2  # the held one, then the seven together
    assert records == [first[0], *sorted(results, key=lambda r: r["order_id"])]
    assert [r["order_id"] for r in records] == [f"ORD-2026-{n:06d}" for n in range(1, 9)]
    assert sorted(r["n"] for r in records[1:]) == list(range(7))
    assert verify_chain(store.audit_records()).ok


def test_transact_when_one_work_in_a_batch_fails_then_only_it_fails(store: Store) -> None:
    gate = Gate(store)
    first_threads, _ = run_in_threads(store, [gate.hold])
    assert gate.inside.wait(10)
    works = [appender(0), appender(1), appender(2, fail=True), appender(3)]
    threads, results = run_in_threads(store, works)
    gate.queued(4)

    gate.open.set()
    for thread in [*first_threads, *threads]:
        thread.join(10)

    failed = [r for r in results if isinstance(r, Exception)]
    records = list(store.audit_records())
    assert [str(e) for e in failed] == ["work 2 failed after writing"]
    # the batch was rolled back and run again piece by piece: no trace of the
    # failed work, no order id skipped, and nothing committed twice
    assert sorted(r["n"] for r in records[1:]) == [0, 1, 3]
    assert [r["order_id"] for r in records] == [f"ORD-2026-{n:06d}" for n in range(1, 5)]
    assert gate.transactions == 1 + 1 + 4
    assert verify_chain(store.audit_records()).ok


def test_writing_when_work_is_queued_then_each_waits_its_turn(store: Store) -> None:
    gate = Gate(store)
    first_threads, _ = run_in_threads(store, [gate.hold])
    assert gate.inside.wait(10)
    threads, _ = run_in_threads(store, [appender(n) for n in range(3)])
    gate.queued(3)
    order: list[str] = []

    def own_turn() -> None:
        with store.writing() as w:
            order.append(w.next_order_id(NOW.year))
            w.append({"order_id": order[-1], "own": True}, "order", NOW)

    writer = threading.Thread(target=own_turn)
    writer.start()
    gate.queued(4)
    gate.open.set()
    for thread in [*first_threads, *threads, writer]:
        thread.join(10)

    records = list(store.audit_records())
    assert len(records) == 5
    assert records[-1].get("own") is True  # queued last, served last, on its own
    assert order == ["ORD-2026-000005"]
    assert verify_chain(store.audit_records()).ok
