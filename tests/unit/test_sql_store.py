"""The SQL store against the store port (engine/ports.py), on SQLite and on
PostgreSQL: migrations, the chain, order ids, group commit and its failures,
the decision snapshot, controls, orders, fills, positions, tokens, the broker
journal, and StoreUnavailable for every driver error."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select

from adapters.sql import SqlStore
from adapters.sql._errors import CommitUnknown
from adapters.sql._writer import SqlWriter
from adapters.sql.schema import audit_log, chain_head, fills, orders
from engine.audit import GENESIS, verify_chain
from engine.broker import Fill
from engine.errors import StoreUnavailable
from engine.lifecycle import OrderStatus
from engine.models import FlowCounts, OrderRequest, WorkingOrder
from engine.ports import Controls, Snapshot, StoredOrder, TokenRow
from engine.records import OrderRecord

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
DIGEST = "sha256:" + "d" * 64


@pytest.fixture
def store(sql_store: SqlStore) -> SqlStore:
    return sql_store


# --- helpers ----------------------------------------------------------------------


def append_order(store: SqlStore, **fields: Any) -> dict[str, Any]:
    with store.writing() as w:
        order_id = w.next_order_id(NOW.year)
        return w.append({"order_id": order_id, **fields}, "order", NOW)


def order_record(order_id: str, **changes: Any) -> dict[str, Any]:
    """A submitted limit order's record, as the gateway would append it."""
    record = OrderRecord(
        order_id=order_id,
        symbol="AAPL",
        timestamp="2026-11-30T15:00:00Z",
        side="buy",
        quantity=100,
        order_type="limit",
        limit_price=150.25,
        decision_reason="manual_trigger",
        risk_checks_run=("omega_check",),
        risk_check_results={"omega_check": "pass"},
        fail_closed_triggers=(),
        order_status=OrderStatus.SUBMITTED,
        broker_response=None,
        client_order_id=None,
        mode="simulation",
        broker="simulated",
        policy_digest="sha256:" + "p" * 64,
        compliance_digest="sha256:" + "c" * 64,
        actor="tok-1",
        operation="submit",
        account="default",
    )
    return record.evolve(**changes).as_dict()


def add_order(
    w: SqlWriter, *, at: datetime = NOW, request: Any = None, **changes: Any
) -> dict[str, Any]:
    """Append a new order's record and insert its row: the record as linked."""
    order_id = w.next_order_id(NOW.year)
    linked = w.append(order_record(order_id, **changes), "order", at)
    body = request if request is not None else {"client_order_id": changes.get("client_order_id")}
    w.insert_order(linked, body, at, "day")
    return linked


def asking(**changes: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "client_order_id": "strat7-000099",
        "account": "default",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 100.0,
        "order_type": "limit",
        "limit_price": 150.25,
    }
    fields.update(changes)
    return OrderRequest.model_validate(fields)


def driver_error(store: SqlStore, message: str) -> Exception:
    """The error the store's driver raises when its connection drops."""
    if store.dialect == "sqlite":
        return sqlite3.OperationalError(message)
    return psycopg.OperationalError(message)


# --- migrations and the chain ------------------------------------------------------


def test_migrate_when_run_twice_then_second_run_changes_nothing(store: SqlStore) -> None:
    store.migrate()

    with store.engine.connect() as conn:
        heads = conn.execute(select(chain_head.c.id, chain_head.c.seq, chain_head.c.hash)).all()
        records = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
    assert [tuple(h) for h in heads] == [(1, 0, GENESIS)]
    assert records == 0


def test_migrate_when_a_second_store_opens_the_same_database_then_data_is_kept(
    store: SqlStore, store_url: str
) -> None:
    first = append_order(store, quantity=100)

    again = SqlStore(store_url)
    again.migrate()
    try:
        assert list(again.audit_records()) == [first]
    finally:
        again.close()


def test_append_when_chain_is_empty_then_first_prev_hash_is_the_genesis(store: SqlStore) -> None:
    first = append_order(store, quantity=100)
    second = append_order(store, quantity=200)

    assert GENESIS == "sha256:" + "0" * 64
    assert first["prev_hash"] == GENESIS
    assert second["prev_hash"] == first["hash"]
    assert list(store.audit_records()) == [first, second]
    assert store.audit_count() == 2


def test_audit_records_when_paged_then_after_and_limit_select_a_window(store: SqlStore) -> None:
    appended = [append_order(store, quantity=q) for q in (1, 2, 3, 4, 5)]

    assert list(store.audit_records(after=1, limit=2)) == appended[1:3]
    assert list(store.audit_records(after=4)) == appended[4:]
    assert list(store.audit_records(after=5)) == []


# --- order ids ------------------------------------------------------------------------


def test_next_order_id_when_called_in_turn_then_ids_are_sequential(store: SqlStore) -> None:
    ids = [append_order(store)["order_id"] for _ in range(3)]

    assert ids == ["ORD-2026-000001", "ORD-2026-000002", "ORD-2026-000003"]


def test_next_order_id_when_the_year_changes_then_the_sequence_restarts(store: SqlStore) -> None:
    with store.writing() as w:
        ids = [w.next_order_id(2026), w.next_order_id(2027), w.next_order_id(2026)]
    with store.writing() as w:  # both counters move, and the head with them
        later = [w.next_order_id(2027), w.next_order_id(2026)]
        w.append({"order_id": later[-1]}, "order", NOW)
    with store.writing() as w:
        last = [w.next_order_id(2026), w.next_order_id(2027)]

    assert ids == ["ORD-2026-000001", "ORD-2027-000001", "ORD-2026-000002"]
    assert later == ["ORD-2027-000002", "ORD-2026-000003"]
    assert last == ["ORD-2026-000004", "ORD-2027-000003"]


def test_next_order_id_when_a_write_fails_then_its_id_is_not_used(store: SqlStore) -> None:
    with pytest.raises(RuntimeError, match="abandoned"), store.writing() as w:
        w.next_order_id(2026)
        w.append({"order_id": "ORD-2026-000001"}, "order", NOW)
        raise RuntimeError("abandoned")

    assert append_order(store)["order_id"] == "ORD-2026-000001"
    assert store.audit_count() == 1


def test_append_when_4_threads_append_25_each_then_ids_are_unique_and_chain_verifies(
    store: SqlStore,
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


def test_setting_when_written_then_read_back_and_overwritten(store: SqlStore) -> None:
    assert store.setting("mode") is None

    with store.writing() as w:
        w.set_setting("mode", {"mode": "simulation", "since": "2026-11-30T15:00:00Z"}, NOW)
    assert store.setting("mode") == {"mode": "simulation", "since": "2026-11-30T15:00:00Z"}

    with store.writing() as w:
        w.set_setting("mode", {"mode": "research"}, NOW)
        assert w.setting("mode") == {"mode": "research"}
    assert store.setting("mode") == {"mode": "research"}
    assert store.setting("omega") is None


def test_setting_when_written_then_no_audit_record_is_added(store: SqlStore) -> None:
    with store.writing() as w:
        w.set_setting("omega", {"active": True}, NOW)

    assert store.audit_count() == 0


def test_move_position_when_moved_then_positions_add_up_per_account(store: SqlStore) -> None:
    with store.writing() as w:
        w.move_position("default", "AAPL", 100.0)
        w.move_position("default", "AAPL", -30.0)
        w.move_position("default", "MSFT", -5.0)
        w.move_position("paper-1", "AAPL", 7.0)

    assert store.positions("default") == {"AAPL": 70.0, "MSFT": -5.0}
    assert store.positions("paper-1") == {"AAPL": 7.0}
    assert store.positions("nobody") == {}


def test_move_position_when_flat_again_then_symbol_is_not_listed(store: SqlStore) -> None:
    with store.writing() as w:
        w.move_position("default", "AAPL", 100.0)
    with store.writing() as w:
        w.move_position("default", "AAPL", -100.0)

    assert store.positions("default") == {}


def test_set_position_when_set_then_the_broker_figure_replaces_the_booked_one(
    store: SqlStore,
) -> None:
    with store.writing() as w:
        w.move_position("default", "AAPL", 100.0)
    with store.writing() as w:
        w.set_position("default", "AAPL", 160.0)
        w.set_position("default", "MSFT", -20.0)

    assert store.positions("default") == {"AAPL": 160.0, "MSFT": -20.0}


def test_claim_when_client_id_is_claimed_then_order_and_digest_are_returned(
    store: SqlStore,
) -> None:
    with store.writing() as w:
        w.claim("strat7-000042", "ORD-2026-000001", DIGEST)

    assert store.claimed("strat7-000042") == ("ORD-2026-000001", DIGEST)
    assert store.claimed("strat7-000043") is None


# --- controls ---------------------------------------------------------------------------

HALTED = {"state": "halted", "reason": "desk closed", "actor": "comp-1", "at": "2026-11-30T15:00Z"}
REDUCING = {"state": "reducing", "reason": "overfill", "actor": "gw", "at": "2026-11-30T15:01Z"}


def test_controls_when_nothing_is_stored_then_research_and_every_scope_active(
    store: SqlStore,
) -> None:
    controls = store.controls()

    assert controls == Controls(mode="research", states={})
    assert (controls.state_of("global"), controls.omega_active) == ("active", False)


def test_set_controls_when_written_then_the_store_and_the_writer_read_them_back(
    store: SqlStore,
) -> None:
    wanted = Controls(mode="simulation", states={"global": HALTED, "ACC-1": REDUCING})

    with store.writing() as w:
        w.set_controls(wanted, NOW)
        inside = w.controls()

    assert inside == wanted
    assert store.controls() == wanted
    assert store.controls().omega_active is True
    assert store.setting("trading_states") == {"global": HALTED, "ACC-1": REDUCING}
    assert store.audit_count() == 0


@pytest.mark.parametrize(
    ("omega", "states"),
    [
        (
            {"active": True, "reason": "halt", "actor": "comp-1", "at": "2026-11-29T10:00:00Z"},
            {
                "global": {
                    "state": "halted",
                    "reason": "halt",
                    "actor": "comp-1",
                    "at": "2026-11-29T10:00:00Z",
                }
            },
        ),
        ({"active": False, "reason": "clear", "actor": "comp-1", "at": "x"}, {}),
    ],
    ids=["active", "cleared"],
)
def test_controls_when_only_a_legacy_omega_is_stored_then_it_reads_as_the_global_state(
    store: SqlStore, omega: dict[str, Any], states: dict[str, Any]
) -> None:
    with store.writing() as w:
        w.set_setting("omega", omega, NOW)
        inside = w.controls()

    assert store.controls() == Controls(mode="research", states=states)
    assert inside == Controls(mode="research", states=states)


def test_controls_when_trading_states_are_written_then_a_legacy_omega_no_longer_counts(
    store: SqlStore,
) -> None:
    with store.writing() as w:
        w.set_setting("omega", {"active": True, "reason": "old", "actor": "a", "at": "t"}, NOW)
    with store.writing() as w:
        w.set_controls(Controls(mode="paper", states={"ACC-1": REDUCING}), NOW)

    assert store.controls() == Controls(mode="paper", states={"ACC-1": REDUCING})
    assert store.controls().omega_active is False


# --- the decision snapshot --------------------------------------------------------------


def test_snapshot_when_the_transaction_wrote_an_order_and_a_claim_then_it_sees_them(
    store: SqlStore,
) -> None:
    states = {"ACC-1": REDUCING}

    with store.writing() as w:
        w.set_controls(Controls(mode="simulation", states=states), NOW)
        w.move_position("default", "AAPL", 40.0)
        first = add_order(w, client_order_id="strat7-000001", at=NOW - timedelta(seconds=1))
        w.claim("strat7-000099", first["order_id"], DIGEST)
        snap = w.snapshot(asking(client_order_id="strat7-000099"), NOW, 60.0, 10.0)

    assert snap == Snapshot(
        controls=Controls(mode="simulation", states=states),
        position=40.0,
        flow=FlowCounts(orders_in_window=1, duplicate_recent=True),
        claim=(first["order_id"], DIGEST),
        positions={"AAPL": 40.0},
        working=(
            WorkingOrder(
                order_id=first["order_id"],
                symbol="AAPL",
                side="buy",
                order_type="limit",
                quantity=100.0,
                limit_price=150.25,
                price=150.25,
            ),
        ),
    )


def test_snapshot_when_orders_never_reached_a_market_or_lie_outside_the_window_then_not_counted(
    store: SqlStore,
) -> None:
    second = timedelta(seconds=1)
    with store.writing() as w:
        add_order(w, client_order_id="a", at=NOW - 30 * second)  # counted, too old for a duplicate
        add_order(w, client_order_id="b", order_status=OrderStatus.BLOCKED, at=NOW - 5 * second)
        add_order(w, client_order_id="c", order_status=OrderStatus.REJECTED, at=NOW - 5 * second)
        add_order(
            w,
            client_order_id="d",
            operation="evaluate",
            order_status=OrderStatus.EVALUATED,
            at=NOW - 5 * second,
        )
        add_order(w, client_order_id="e", account="other", at=NOW - 5 * second)
        add_order(w, client_order_id="f", order_status=OrderStatus.FILLED, at=NOW - 61 * second)
        add_order(w, client_order_id="g", order_status=OrderStatus.CANCELLED, at=NOW - 5 * second)
        add_order(w, client_order_id="h", at=NOW - 1 * second)  # excluded below
        add_order(w, client_order_id="i", at=NOW + 1 * second)  # after now

    with store.writing() as w:
        counted = w.snapshot(asking(), NOW, 60.0, 10.0, exclude="h")
        without_g = w.snapshot(asking(), NOW, 60.0, 10.0, exclude="g")

    assert counted.flow == FlowCounts(orders_in_window=2, duplicate_recent=True)
    assert without_g.flow == FlowCounts(orders_in_window=2, duplicate_recent=True)  # h is back
    assert counted.claim is None
    assert counted.position == 0.0


@pytest.mark.parametrize(
    ("stored", "asked", "duplicate"),
    [
        (
            {"order_type": "market", "limit_price": None},
            {"order_type": "market", "limit_price": None},
            True,
        ),
        ({}, {}, True),
        ({}, {"limit_price": 150.30}, False),
        ({"side": "sell"}, {}, False),
        ({"client_order_id": "strat7-000099"}, {}, False),  # a retry, not a duplicate
    ],
    ids=["market-null-prices", "same-limit", "other-limit", "other-side", "same-client-id"],
)
def test_snapshot_when_a_recent_order_has_the_same_terms_then_it_is_a_duplicate(
    store: SqlStore, stored: dict[str, Any], asked: dict[str, Any], duplicate: bool
) -> None:
    stored = {"client_order_id": "strat7-000001", **stored}
    with store.writing() as w:
        add_order(w, at=NOW - timedelta(seconds=2), **stored)

    with store.writing() as w:
        snap = w.snapshot(asking(**asked), NOW, 60.0, 10.0)

    assert snap.flow.duplicate_recent is duplicate


# --- orders ---------------------------------------------------------------------------


def test_insert_order_when_read_back_then_every_column_maps_to_the_stored_order(
    store: SqlStore,
) -> None:
    body = {"client_order_id": "strat7-000001", "symbol": "AAPL", "quantity": 100}
    with store.writing() as w:
        linked = add_order(w, client_order_id="strat7-000001", request=body)
        inside = w.order(linked["order_id"])

    expected = StoredOrder(
        order_id="ORD-2026-000001",
        operation="submit",
        client_order_id="strat7-000001",
        account="default",
        symbol="AAPL",
        status=OrderStatus.SUBMITTED,
        broker="simulated",
        broker_order_id=None,
        filled_quantity=0.0,
        average_price=None,
        request=body,
        record=OrderRecord.from_dict(linked),
        created_at=NOW,
        updated_at=NOW,
        linked=linked,
    )
    assert inside == expected
    assert store.order("ORD-2026-000001") == expected
    with store.engine.connect() as conn:
        row = conn.execute(
            select(orders.c.side, orders.c.quantity, orders.c.order_type, orders.c.limit_price)
            .add_columns(orders.c.stop_price, orders.c.time_in_force, orders.c.reduce_only)
            .where(orders.c.order_id == "ORD-2026-000001")
        ).one()
    assert tuple(row) == ("buy", 100.0, "limit", 150.25, None, "day", False)


def test_insert_order_when_the_record_was_appended_then_the_row_holds_the_chain_text(
    store: SqlStore,
) -> None:
    with store.writing() as w:
        linked = add_order(w, client_order_id="strat7-000001", comment="naïve ✓")

    with store.engine.connect() as conn:
        chained = conn.execute(select(audit_log.c.record)).scalar_one()
        stored = conn.execute(select(orders.c.record)).scalar_one()
    assert stored == chained
    assert json.loads(stored) == linked


def test_insert_order_when_the_request_has_a_lone_surrogate_then_it_is_kept_as_ascii_escapes(
    store: SqlStore,
) -> None:
    body = {"client_order_id": "x\ud800", "note": "é"}
    with store.writing() as w:
        linked = add_order(w, client_order_id="strat7-000001", request=body)

    with store.engine.connect() as conn:
        text = conn.execute(select(orders.c.request)).scalar_one()
    assert text == '{"client_order_id": "x\\ud800", "note": "\\u00e9"}'
    stored = store.order(linked["order_id"])
    assert stored is not None
    assert stored.request == body


def test_update_order_when_the_broker_answers_and_terms_change_then_the_row_follows(
    store: SqlStore,
) -> None:
    with store.writing() as w:
        first = add_order(w, client_order_id="strat7-000001")
    later = NOW + timedelta(seconds=3)
    new_body = {"client_order_id": "strat7-000001", "quantity": 80, "limit_price": 150.1}

    with store.writing() as w:
        changed = order_record(
            first["order_id"],
            client_order_id="strat7-000001",
            order_status=OrderStatus.PARTIALLY_FILLED,
            quantity=80,
            limit_price=150.1,
            broker_response={"status": "partially_filled", "broker_order_id": "SIM-000001"},
            operation="replace",
        )
        linked = w.append(changed, "order", later)
        w.update_order(
            first["order_id"],
            linked,
            later,
            broker_order_id="SIM-000001",
            filled_quantity=40.0,
            average_price=150.2,
            terms={"quantity": 80, "limit_price": 150.1, "stop_price": None, "request": new_body},
        )
        inside = w.order(first["order_id"])

    stored = store.order(first["order_id"])
    assert stored == inside
    assert stored is not None
    assert (stored.status, stored.broker_order_id) == (OrderStatus.PARTIALLY_FILLED, "SIM-000001")
    assert (stored.filled_quantity, stored.average_price) == (40.0, 150.2)
    assert (stored.request, stored.record) == (new_body, OrderRecord.from_dict(linked))
    assert (stored.created_at, stored.updated_at) == (NOW, later)
    with store.engine.connect() as conn:
        terms = conn.execute(
            select(orders.c.quantity, orders.c.limit_price, orders.c.stop_price, orders.c.operation)
        ).one()
        chained = conn.execute(select(audit_log.c.record).where(audit_log.c.seq == 2)).scalar()
        row_text = conn.execute(select(orders.c.record)).scalar()
    assert tuple(terms) == (80.0, 150.1, None, "submit")
    assert row_text == chained


def test_update_order_when_terms_name_another_column_then_it_is_refused(store: SqlStore) -> None:
    with store.writing() as w:
        first = add_order(w, client_order_id="strat7-000001")

    with pytest.raises(ValueError, match=r"cannot set \['account'\]"), store.writing() as w:
        w.update_order(first["order_id"], first, NOW, terms={"account": "other"})


def test_order_when_unknown_then_none(store: SqlStore) -> None:
    with store.writing() as w:
        inside = w.order("ORD-2026-999999")

    assert inside is None
    assert store.order("ORD-2026-999999") is None


def test_orders_in_when_statuses_are_given_then_their_orders_come_oldest_first(
    store: SqlStore,
) -> None:
    second = timedelta(seconds=1)
    with store.writing() as w:
        newer = add_order(w, client_order_id="a", at=NOW)
        add_order(w, client_order_id="b", order_status=OrderStatus.FILLED, at=NOW - 9 * second)
        older = add_order(
            w, client_order_id="c", order_status=OrderStatus.PENDING_CANCEL, at=NOW - 5 * second
        )
        add_order(w, client_order_id="d", order_status=OrderStatus.BLOCKED, at=NOW - 7 * second)

    found = store.orders_in({OrderStatus.SUBMITTED, OrderStatus.PENDING_CANCEL})

    assert [o.order_id for o in found] == [older["order_id"], newer["order_id"]]
    assert [o.status for o in found] == [OrderStatus.PENDING_CANCEL, OrderStatus.SUBMITTED]
    assert found[0].created_at == NOW - 5 * second
    assert store.orders_in(set()) == []


def test_list_orders_when_limited_to_accounts_then_only_their_records_newest_first(
    store: SqlStore,
) -> None:
    second = timedelta(seconds=1)
    with store.writing() as w:
        a1 = add_order(w, client_order_id="a1", account="A", at=NOW - 3 * second)
        add_order(w, client_order_id="b1", account="B", at=NOW - 2 * second)
        c1 = add_order(w, client_order_id="c1", account="C", at=NOW - 1 * second)
        a2 = add_order(
            w, client_order_id="a2", account="A", order_status=OrderStatus.FILLED, at=NOW
        )

    def ids(**filters: Any) -> list[str]:
        return [r["order_id"] for r in store.list_orders(**filters)]

    assert ids(accounts={"A", "C"}) == [a2["order_id"], c1["order_id"], a1["order_id"]]
    assert ids(accounts={"A"}, status="filled") == [a2["order_id"]]
    assert ids(accounts={"A", "C"}, limit=1, offset=1) == [c1["order_id"]]
    assert ids(accounts=set()) == []
    assert len(ids()) == 4
    assert store.list_orders(client_order_id="a1") == [a1]


# --- fills ------------------------------------------------------------------------------


def test_fill_when_booked_then_fills_returns_them_in_order_with_their_execution_ids(
    store: SqlStore,
) -> None:
    booked = [
        Fill(30.0, 150.2, NOW, "EX-1"),
        Fill(20.0, 150.3, NOW + timedelta(seconds=1), "EX-2"),
        Fill(10.0, 150.4, NOW + timedelta(seconds=2)),  # a broker without execution ids
    ]
    with store.writing() as w:
        first = add_order(w, client_order_id="strat7-000001")
        for fill in booked:
            w.fill(first["order_id"], fill)
        inside = w.fills(first["order_id"])
        other = w.fills("ORD-2026-999999")

    with store.writing() as w:
        after = w.fills(first["order_id"])

    assert inside == booked
    assert after == booked
    assert other == []
    with store.engine.connect() as conn:
        ids = conn.execute(select(fills.c.execution_id).order_by(fills.c.id)).scalars().all()
    assert ids == ["EX-1", "EX-2", None]


# --- tokens -----------------------------------------------------------------------------


def test_add_token_when_bound_to_accounts_then_token_reads_them_as_a_set(store: SqlStore) -> None:
    with store.writing() as w:
        w.add_token("t1", "h" * 64, "trader", "desk A", ["B", "A", "B"], NOW)
        w.add_token("t2", "i" * 64, "trader", "desk all", None, NOW + timedelta(seconds=1))

    assert store.token("h" * 64) == TokenRow("t1", "trader", frozenset({"A", "B"}), "desk A", NOW)
    assert store.token("i" * 64) == TokenRow(
        "t2", "trader", None, "desk all", NOW + timedelta(seconds=1)
    )
    assert store.token("j" * 64) is None
    assert store.token_count() == 2


def test_revoke_token_when_live_then_it_no_longer_authenticates_and_is_listed_revoked(
    store: SqlStore,
) -> None:
    later = NOW + timedelta(minutes=5)
    with store.writing() as w:
        w.add_token("t1", "h" * 64, "trader", "desk A", ["A"], NOW)
        w.add_token("t2", "i" * 64, "auditor", "audit", None, NOW + timedelta(seconds=1))

    with store.writing() as w:
        revoked = w.revoke_token("t1", later)
        again = w.revoke_token("t1", later + timedelta(minutes=1))
        unknown = w.revoke_token("t9", later)

    assert (revoked, again, unknown) == (True, False, False)
    assert store.token("h" * 64) is None
    assert store.tokens() == [
        TokenRow("t1", "trader", frozenset({"A"}), "desk A", NOW, revoked_at=later),
        TokenRow("t2", "auditor", None, "audit", NOW + timedelta(seconds=1)),
    ]
    assert store.token_count() == 2


def test_add_token_when_it_expires_then_expiry_is_read_back_and_listed(store: SqlStore) -> None:
    expires = NOW + timedelta(days=30)
    with store.writing() as w:
        w.add_token("t1", "h" * 64, "auditor", "30 days", None, NOW, expires)
        w.add_token("t2", "i" * 64, "auditor", "forever", None, NOW + timedelta(seconds=1))

    assert store.token("h" * 64) == TokenRow(
        "t1", "auditor", None, "30 days", NOW, expires_at=expires
    )
    assert [row.expires_at for row in store.tokens()] == [expires, None]


# --- the broker journal ---------------------------------------------------------------


def test_journal_when_saved_then_a_new_store_loads_the_last_entry_of_each_key(
    store: SqlStore, store_url: str
) -> None:
    journal = store.journal("simulated")
    journal.save("SIM-000001", {"status": "accepted", "filled": 0})
    journal.save("SIM-000002", {"status": "accepted", "filled": 0})
    journal.save("SIM-000001", {"status": "partially_filled", "filled": 40.0})
    store.journal("other").save("SIM-000001", {"status": "filled"})
    store.transact(lambda w: None)  # the next commit takes them

    again = SqlStore(store_url)
    try:
        loaded = again.journal("simulated").load()
    finally:
        again.close()

    assert loaded == {
        "SIM-000001": {"status": "partially_filled", "filled": 40.0},
        "SIM-000002": {"status": "accepted", "filled": 0},
    }
    assert store.journal("nobody").load() == {}
    assert store.audit_count() == 0  # the journal is not part of the chain


def test_journal_entry_then_written_with_the_next_commit_and_not_before(
    store: SqlStore,
) -> None:
    journal = store.journal("simulated")
    journal.save("SIM-000001", {"status": "accepted"})

    before = journal.load()
    with store.writing() as w:
        linked = add_order(w)
    after = journal.load()

    assert before == {}
    assert after == {"SIM-000001": {"status": "accepted"}}
    assert store.order(linked["order_id"]) is not None


def test_journal_entry_when_its_transaction_rolls_back_then_the_next_commit_writes_it(
    store: SqlStore,
) -> None:
    journal = store.journal("simulated")
    journal.save("SIM-000001", {"status": "filled"})

    def failing(w: SqlWriter) -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        store.transact(failing)
    lost = journal.load()
    store.transact(lambda w: None)

    assert lost == {}
    assert journal.load() == {"SIM-000001": {"status": "filled"}}


def test_journal_entry_when_the_store_closes_then_written(store_url: str) -> None:
    first = SqlStore(store_url)
    first.migrate()
    first.journal("simulated").save("SIM-000001", {"status": "accepted"})
    first.close()

    again = SqlStore(store_url)
    try:
        loaded = again.journal("simulated").load()
    finally:
        again.close()

    assert loaded == {"SIM-000001": {"status": "accepted"}}


def test_journal_when_a_key_is_too_long_then_it_is_refused(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="1 to 64 characters"):
        store.journal("simulated").save("k" * 65, {})


# --- group commit ------------------------------------------------------------------


class Gate:
    """Holds the writer's turn inside a first piece of work while other threads
    queue theirs: what is queued meanwhile is committed as one batch. Counts the
    transactions begun."""

    def __init__(self, store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.inside = threading.Event()
        self.open = threading.Event()
        self.begun = 0
        self.fail_begin_at: int | None = None
        real = store._transactions.begin

        def counted() -> SqlWriter:
            self.begun += 1
            if self.begun == self.fail_begin_at:
                raise StoreUnavailable("connecting for a write failed: refused")
            return real()

        monkeypatch.setattr(store._transactions, "begin", counted)

    def hold(self, w: SqlWriter) -> dict[str, Any]:
        self.inside.set()
        assert self.open.wait(10)
        return w.append({"order_id": w.next_order_id(NOW.year), "held": True}, "order", NOW)

    def queued(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.store._group._queue) < count:
            assert time.monotonic() < deadline, "work was not queued"
            time.sleep(0.001)

    def batch(self, works: list[Callable[[SqlWriter], Any]]) -> tuple[Any, list[Any]]:
        """The held work's outcome, and each queued work's result or error, after
        the queued works ran as one batch behind the held one."""
        first_threads, first = run_in_threads(self.store, [self.hold])
        assert self.inside.wait(10)
        threads, results = run_in_threads(self.store, works)
        self.queued(len(works))
        self.open.set()
        for thread in [*first_threads, *threads]:
            thread.join(10)
        return first[0], results


@pytest.fixture
def gate(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> Gate:
    return Gate(store, monkeypatch)


def run_in_threads(
    store: SqlStore, works: list[Callable[[SqlWriter], Any]]
) -> tuple[list[threading.Thread], list[Any]]:
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


def appender(n: int, fail: bool = False, claim: str | None = None) -> Callable[[SqlWriter], Any]:
    def work(w: SqlWriter) -> dict[str, Any]:
        linked = w.append({"order_id": w.next_order_id(NOW.year), "n": n}, "order", NOW)
        if claim is not None:
            w.claim(claim, linked["order_id"], DIGEST)
        if fail:
            raise ValueError(f"work {n} failed after writing")
        return linked

    return work


def test_transact_when_work_queues_behind_a_writer_then_it_commits_as_one_batch(
    store: SqlStore, gate: Gate
) -> None:
    first, results = gate.batch([appender(n) for n in range(7)])

    records = list(store.audit_records())
    assert gate.begun == 2  # the held one, then the seven together
    assert records == [first, *sorted(results, key=lambda r: r["order_id"])]
    assert [r["order_id"] for r in records] == [f"ORD-2026-{n:06d}" for n in range(1, 9)]
    assert sorted(r["n"] for r in records[1:]) == list(range(7))
    assert verify_chain(store.audit_records()).ok


def test_transact_when_one_work_in_a_batch_fails_then_only_it_fails(
    store: SqlStore, gate: Gate
) -> None:
    works = [appender(0), appender(1), appender(2, fail=True), appender(3)]

    _, results = gate.batch(works)

    failed = [r for r in results if isinstance(r, Exception)]
    records = list(store.audit_records())
    assert [(type(e), str(e)) for e in failed] == [(ValueError, "work 2 failed after writing")]
    # the batch was rolled back and run again piece by piece: no trace of the
    # failed work, no order id skipped, and nothing committed twice
    assert sorted(r["n"] for r in records[1:]) == [0, 1, 3]
    assert [r["order_id"] for r in records] == [f"ORD-2026-{n:06d}" for n in range(1, 5)]
    assert gate.begun == 1 + 1 + 4
    assert verify_chain(store.audit_records()).ok


def test_transact_when_a_buffered_write_of_one_work_fails_then_only_it_fails(
    store: SqlStore, gate: Gate
) -> None:
    with store.writing() as w:
        w.claim("taken", "ORD-2026-000000", DIGEST)
    works = [appender(0, claim="c0"), appender(1, claim="taken"), appender(2, claim="c2")]

    _, results = gate.batch(works)

    assert [type(r) for r in results] == [dict, StoreUnavailable, dict]
    assert isinstance(results[1].__cause__, sqlite3.IntegrityError | psycopg.IntegrityError)
    assert sorted(r["n"] for r in list(store.audit_records())[1:]) == [0, 2]
    assert store.claimed("c0") == (results[0]["order_id"], DIGEST)
    assert store.claimed("taken") == ("ORD-2026-000000", DIGEST)


def test_transact_when_the_work_raises_then_its_own_exception_passes_unchanged(
    store: SqlStore,
) -> None:
    error = KeyError("mine")

    def work(w: SqlWriter) -> None:
        w.append({"n": 1}, "order", NOW)
        raise error

    with pytest.raises(KeyError) as raised:
        store.transact(work)

    assert raised.value is error
    assert store.audit_count() == 0


def test_writing_when_work_is_queued_then_each_waits_its_turn(store: SqlStore, gate: Gate) -> None:
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


def test_transact_when_a_batch_cannot_begin_then_every_work_fails_and_none_is_retried(
    store: SqlStore, gate: Gate
) -> None:
    gate.fail_begin_at = 2

    _, results = gate.batch([appender(n) for n in range(3)])

    assert [type(r) for r in results] == [StoreUnavailable] * 3
    assert len({id(r) for r in results}) == 3  # each thread raises its own
    assert gate.begun == 2
    assert store.audit_count() == 1


# --- ambiguous commits ----------------------------------------------------------------


class DropsAtCommit:
    """The writer's driver connection, whose COMMIT number `at` raises the driver's
    error, as a connection dropped during COMMIT would; `landed`: whether the
    transaction was committed before the connection dropped."""

    def __init__(self, conn: Any, error: Exception, at: int, landed: bool) -> None:
        self._conn = conn
        self._error = error
        self._at = at
        self._landed = landed
        self.commits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> None:
        self.commits += 1
        if self.commits != self._at:
            self._conn.commit()
            return
        if self._landed:
            self._conn.commit()
        raise self._error


def drop_at_commit(store: SqlStore, at: int, landed: bool) -> DropsAtCommit:
    with store.writing() as w:  # the writer's connection, opened
        w.set_setting("mode", {"mode": "simulation"}, NOW)
    conn = store._transactions._conn
    dropping = DropsAtCommit(conn, driver_error(store, "server closed the connection"), at, landed)
    store._transactions._conn = dropping
    return dropping


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
def test_transact_when_commit_fails_then_store_unavailable_and_the_work_is_not_run_again(
    store: SqlStore, landed: bool
) -> None:
    drop_at_commit(store, 1, landed)
    runs: list[int] = []

    def work(w: SqlWriter) -> dict[str, Any]:
        runs.append(1)
        linked: dict[str, Any] = appender(0)(w)
        return linked

    with pytest.raises(StoreUnavailable, match="may or may not have landed") as raised:
        store.transact(work)

    assert isinstance(raised.value, CommitUnknown)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError | psycopg.OperationalError)
    assert runs == [1]
    assert store.audit_count() == (1 if landed else 0)
    assert store._transactions._conn is None  # the dropped connection is not reused
    assert append_order(store)["order_id"] == ("ORD-2026-000002" if landed else "ORD-2026-000001")
    assert verify_chain(store.audit_records()).ok


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
def test_transact_when_a_batch_commit_fails_then_every_work_fails_and_none_is_retried(
    store: SqlStore, gate: Gate, landed: bool
) -> None:
    drop_at_commit(store, 2, landed)  # the held transaction commits, the batch does not
    begun = gate.begun

    _, results = gate.batch([appender(n) for n in range(4)])

    assert [type(r) for r in results] == [CommitUnknown] * 4
    assert all(isinstance(r.__cause__, sqlite3.Error | psycopg.Error) for r in results)
    assert gate.begun - begun == 2  # the held transaction and the batch: no piece again
    records = list(store.audit_records())
    assert sorted(r.get("n", -1) for r in records) == ([-1, 0, 1, 2, 3] if landed else [-1])
    assert verify_chain(store.audit_records()).ok


# --- connections and StoreUnavailable ------------------------------------------------------


def test_read_when_an_idle_connection_has_died_then_the_read_is_retried_on_a_new_one(
    store: SqlStore,
) -> None:
    with store.writing() as w:
        w.set_setting("mode", {"mode": "simulation"}, NOW)
    assert store.setting("mode") == {"mode": "simulation"}  # leaves one idle connection
    [idle] = store._pool._idle
    idle.driver_connection.close()  # as a database restart would

    assert store.setting("mode") == {"mode": "simulation"}
    assert len(store._pool._idle) == 1
    assert store._pool._idle[0] is not idle


def test_read_when_a_new_connection_fails_then_store_unavailable_with_the_driver_error(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store._pool._idle.clear()
    refused = driver_error(store, "connection refused")

    def connect() -> Any:
        raise refused

    monkeypatch.setattr(store.engine, "raw_connection", connect)

    with pytest.raises(StoreUnavailable, match="connection refused") as raised:
        store.setting("mode")
    assert raised.value.__cause__ is refused


def test_transact_when_the_writer_connection_died_while_idle_then_a_new_one_is_used(
    store: SqlStore,
) -> None:
    append_order(store)
    dead = store._transactions._conn
    dead.driver_connection.close()  # as a database restart would

    assert append_order(store)["order_id"] == "ORD-2026-000002"
    assert store._transactions._conn is not dead
    assert verify_chain(store.audit_records()).ok


def test_writer_when_a_statement_fails_then_the_work_sees_store_unavailable(
    store: SqlStore,
) -> None:
    seen: list[BaseException] = []

    with pytest.raises(StoreUnavailable), store.writing() as w:
        w.add_token("t1", "h" * 64, "trader", "one", None, NOW)
        try:
            w.add_token("t1", "i" * 64, "trader", "same id", None, NOW)
        except Exception as exc:
            seen.append(exc)
            raise

    assert [type(e) for e in seen] == [StoreUnavailable]
    assert isinstance(seen[0].__cause__, sqlite3.IntegrityError | psycopg.IntegrityError)
    assert store.token_count() == 0


def _unreachable(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'apex.db'}"
    return "postgresql+psycopg://postgres@127.0.0.1:1/test"


CALLS: dict[str, Callable[[SqlStore], Any]] = {
    "migrate": lambda s: s.migrate(),
    "controls": lambda s: s.controls(),
    "setting": lambda s: s.setting("mode"),
    "claimed": lambda s: s.claimed("strat7-000001"),
    "order": lambda s: s.order("ORD-2026-000001"),
    "list_orders": lambda s: s.list_orders(accounts={"A"}),
    "orders_in": lambda s: s.orders_in({OrderStatus.SUBMITTED}),
    "positions": lambda s: s.positions("default"),
    "audit_records": lambda s: list(s.audit_records()),
    "audit_count": lambda s: s.audit_count(),
    "token": lambda s: s.token("h" * 64),
    "tokens": lambda s: s.tokens(),
    "token_count": lambda s: s.token_count(),
    "ping": lambda s: s.ping(),
    "journal_load": lambda s: s.journal("simulated").load(),
    # a journal save is queued for the next commit, which is where it fails
    "transact": lambda s: s.transact(lambda w: w.next_order_id(2026)),
    "writing": lambda s: s.writing().__enter__(),
}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_store_when_the_database_does_not_answer_then_every_call_raises_store_unavailable(
    backend: str, tmp_path: Path
) -> None:
    store = SqlStore(_unreachable(backend, tmp_path))
    failures: dict[str, tuple[str, str]] = {}
    try:
        for name, call in CALLS.items():
            try:
                call(store)
            except StoreUnavailable as exc:
                cause = exc.__cause__
                failures[name] = (type(exc).__name__, type(cause).__module__.split(".")[0])
            else:
                failures[name] = ("no error", "")
    finally:
        store.close()

    driver = "sqlite3" if backend == "sqlite" else "psycopg"
    causes = {"sqlalchemy", driver}
    assert {name: kind for name, (kind, _) in failures.items()} == dict.fromkeys(
        CALLS, "StoreUnavailable"
    )
    assert {module for _, module in failures.values()} <= causes


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account", "a" * 65),
        ("client_order_id", "c" * 65),
        ("symbol", "S" * 33),
        ("side", "xxxxxxxxx"),
        ("order_type", "stop_limit"),
        ("account", "nul\x00byte"),
    ],
    ids=["account-65", "client-order-id-65", "symbol-33", "side-9", "order-type-10", "nul"],
)
def test_insert_order_when_a_rejected_request_carries_unfit_text_then_column_empty_record_whole(
    store: SqlStore, field: str, value: str
) -> None:
    with store.writing() as w:
        linked = add_order(w, order_status="rejected", **{field: value})

    stored = store.order(linked["order_id"])
    with store.engine.connect() as conn:
        column = conn.execute(
            select(orders.c[field]).where(orders.c.order_id == linked["order_id"])
        ).scalar_one()

    assert stored is not None
    assert stored.linked[field] == value
    assert column is None


def test_list_orders_when_a_filter_holds_a_nul_then_nothing_matches(store: SqlStore) -> None:
    with store.writing() as w:
        add_order(w)

    assert store.list_orders(status="submitted\x00") == []
    assert store.list_orders(symbol="AA\x00PL") == []
    assert len(store.list_orders()) == 1
