"""The audit chain exactly as SPEC section 7 defines it, recomputed here with
nothing but hashlib and json, and every way of breaking it named."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy import text

from adapters.sql import SqlStore
from api.runtime import Runtime
from engine.audit import GENESIS, Finding, link, link_text, record_hash, verify_chain
from engine.audit_replay import verify_export, verify_state, verify_store
from engine.gateway import Actor
from engine.ports import AuditState, OrderRow


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def expected_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def order_record(number: int) -> dict[str, Any]:
    return {
        "order_id": f"ORD-2026-{number:06d}",
        "symbol": "AAPL",
        "timestamp": "2026-11-30T15:00:00Z",
        "side": "buy",
        "quantity": 100 + number,
        "order_type": "limit",
        "limit_price": 150.25,
        "decision_reason": "manual_trigger",
        "risk_check_results": {"volatility_check": "pass", "spread_check": "pass"},
        "fail_closed_triggers": [],
        "order_status": "submitted",
        "broker_response": None,
    }


def chain(length: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    prev = GENESIS
    for number in range(1, length + 1):
        records.append(link(order_record(number), prev))
        prev = records[-1]["hash"]
    return records


# --- link and record_hash ---------------------------------------------------------


def test_genesis_is_sha256_prefix_and_64_zeros() -> None:
    assert GENESIS == "sha256:0000000000000000000000000000000000000000000000000000000000000000"


def test_link_when_given_a_record_then_sets_prev_hash_and_the_spec_hash() -> None:
    record = order_record(1)

    linked = link(record, GENESIS)

    assert linked == {**record, "prev_hash": GENESIS, "hash": expected_hash(linked)}
    assert linked["hash"] == (
        "sha256:" + hashlib.sha256(canonical({**record, "prev_hash": GENESIS})).hexdigest()
    )
    assert "hash" not in record  # the input is not modified


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
# keys around "hash" on purpose: the text is assembled on either side of it
_KEYS = st.sampled_from(["", "a", "has", "hash", "hasi", "hash0", "prev_hash", "z", "ü", "H"])


@given(st.dictionaries(_KEYS | st.text(max_size=6), _JSON, max_size=8))
def test_link_text_when_any_record_then_text_is_the_canonical_json_of_link(
    record: dict[str, Any],
) -> None:
    linked, text = link_text(record, GENESIS)

    assert linked == link(record, GENESIS)
    assert text.encode("utf-8") == canonical(linked)
    assert linked["hash"] == expected_hash(linked)


def test_link_when_record_carries_old_chain_fields_then_they_are_replaced() -> None:
    stale = {**order_record(1), "prev_hash": "sha256:" + "f" * 64, "hash": "sha256:bogus"}

    linked = link(stale, GENESIS)

    assert linked["prev_hash"] == GENESIS
    assert linked["hash"] == expected_hash({**order_record(1), "prev_hash": GENESIS})


def test_record_hash_when_record_has_a_hash_key_then_it_is_left_out() -> None:
    record = {**order_record(1), "prev_hash": GENESIS}

    assert record_hash(record) == record_hash({**record, "hash": "sha256:anything"})
    assert record_hash(record) == expected_hash(record)


def test_record_hash_when_keys_are_in_another_order_then_hash_is_the_same() -> None:
    record = {**order_record(1), "prev_hash": GENESIS}
    reversed_keys = dict(reversed(list(record.items())))

    assert record_hash(reversed_keys) == record_hash(record)


def test_record_hash_when_text_is_not_ascii_then_utf8_bytes_are_hashed() -> None:
    record = {"decision_reason": "réduction du risque ✓", "prev_hash": GENESIS}
    escaped = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    assert record_hash(record) == expected_hash(record)
    assert record_hash(record) != "sha256:" + hashlib.sha256(escaped.encode()).hexdigest()


def test_record_hash_when_any_value_changes_then_hash_changes() -> None:
    record = {**order_record(1), "prev_hash": GENESIS}

    assert record_hash({**record, "quantity": 102}) != record_hash(record)
    assert record_hash({**record, "prev_hash": "sha256:" + "1" * 64}) != record_hash(record)


# --- verify_chain -------------------------------------------------------------------


def test_verify_chain_when_chain_is_intact_then_ok_with_count_and_head() -> None:
    records = chain(5)

    report = verify_chain(records)

    assert report.as_dict() == {
        "ok": True,
        "records": 5,
        "head": records[-1]["hash"],
        "first_break": None,
    }


def test_verify_chain_when_chain_is_empty_then_ok_at_genesis() -> None:
    report = verify_chain([])

    assert report.as_dict() == {"ok": True, "records": 0, "head": GENESIS, "first_break": None}


def test_verify_chain_when_first_record_does_not_start_at_genesis_then_breaks_at_1() -> None:
    records = [link(order_record(1), "sha256:" + "1" * 64)]

    report = verify_chain(records)

    assert report.first_break is not None
    assert report.first_break.position == 1
    assert report.first_break.reason == (
        f"prev_hash mismatch (want: {GENESIS}, got: sha256:{'1' * 64})"
    )


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize(
    ("field", "value"),
    [("quantity", 1_000_000), ("order_status", "filled"), ("limit_price", 150.26)],
    ids=["quantity", "order_status", "limit_price"],
)
def test_verify_chain_when_one_field_of_record_k_is_tampered_then_break_names_k(
    k: int, field: str, value: Any
) -> None:
    records = chain(5)
    records[k - 1][field] = value

    report = verify_chain(records)

    assert not report.ok
    assert report.first_break is not None
    assert report.first_break.position == k
    assert report.first_break.order_id == f"ORD-2026-{k:06d}"
    assert report.first_break.reason == (
        f"hash mismatch (want: {expected_hash(records[k - 1])}, got: {records[k - 1]['hash']})"
    )
    assert report.records == k
    assert report.head == (GENESIS if k == 1 else records[k - 2]["hash"])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_verify_chain_when_tampered_record_k_is_rehashed_then_break_names_k_plus_1(
    k: int,
) -> None:
    records = chain(5)
    forged = dict(records[k - 1])
    forged["quantity"] = 1_000_000
    records[k - 1] = link(forged, forged["prev_hash"])

    report = verify_chain(records)

    assert report.first_break is not None
    assert report.first_break.position == k + 1
    assert report.first_break.reason.startswith("prev_hash mismatch")


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_verify_chain_when_record_k_is_deleted_then_break_names_the_next_one(k: int) -> None:
    records = chain(5)
    following = records[k]
    del records[k - 1]

    report = verify_chain(records)

    assert report.first_break is not None
    assert report.first_break.position == k  # the next record now sits at position k
    assert report.first_break.order_id == following["order_id"]
    assert report.first_break.reason == (
        f"prev_hash mismatch (want: {records[k - 2]['hash'] if k > 1 else GENESIS}, "
        f"got: {following['prev_hash']})"
    )


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_verify_chain_when_records_k_and_k_plus_1_are_swapped_then_break_names_k(
    k: int,
) -> None:
    records = chain(5)
    records[k - 1], records[k] = records[k], records[k - 1]

    report = verify_chain(records)

    assert report.first_break is not None
    assert report.first_break.position == k
    assert report.first_break.reason.startswith("prev_hash mismatch")


def test_verify_chain_when_a_record_is_duplicated_then_break_names_the_copy() -> None:
    records = chain(3)
    records.insert(2, copy.deepcopy(records[1]))

    report = verify_chain(records)

    assert report.first_break is not None
    assert report.first_break.position == 3


def test_verify_chain_when_hash_field_is_replaced_then_break_names_that_record() -> None:
    records = chain(3)
    records[1]["hash"] = "sha256:" + "2" * 64

    report = verify_chain(records)

    assert report.first_break is not None
    assert report.first_break.position == 2
    assert report.first_break.reason.startswith("hash mismatch")


def test_verify_chain_when_a_record_has_no_order_id_then_break_names_none() -> None:
    records = [link({"event": "omega_invoked", "reason": "drill"}, GENESIS)]
    records[0]["reason"] = "quiet"

    report = verify_chain(records)

    assert report.first_break is not None
    assert report.first_break.position == 1
    assert report.first_break.order_id is None


# --- verify_state: the chain against the stored head and rows (pure) -----------------


def linked_chain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    prev = GENESIS
    for record in records:
        out.append(link(record, prev))
        prev = out[-1]["hash"]
    return out


def state_of(
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    positions: dict[tuple[str, str], float] | None = None,
) -> AuditState:
    """A store that holds `records` with `rows` as its orders rows (their records
    as stored, columns taken from them)."""
    head = (len(records), records[-1]["hash"] if records else GENESIS)
    orders = [
        OrderRow(
            r["order_id"],
            r["order_status"],
            r.get("quantity"),
            r.get("limit_price"),
            r.get("stop_price"),
            r,
        )
        for r in rows
    ]
    return AuditState(head, orders, positions or {}, iter(records))


def amend(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {k: v for k, v in record.items() if k not in ("prev_hash", "hash")}
    return {**body, **changes}


def test_verify_state_when_a_replace_is_refused_then_the_row_keeps_the_order_as_it_was() -> None:
    submitted = {**order_record(1), "operation": "submit"}
    refused = amend(submitted, operation="replace", order_status="blocked", quantity=5)
    records = linked_chain([submitted, refused])

    report = verify_state(state_of(records, [records[0]]))

    assert report.ok, report.findings
    assert (report.scope, report.head_compared, report.rows_compared) == ("store", True, True)


def test_verify_state_when_a_pending_replace_fails_at_the_broker_then_the_row_goes_back() -> None:
    submitted = {**order_record(1), "operation": "submit"}
    pending = amend(submitted, operation="replace", order_status="pending_replace", quantity=50)
    failed = amend(
        submitted,
        operation="replace",
        order_status="submitted",
        fail_closed_triggers=["broker_api_error"],
    )
    records = linked_chain([submitted, pending, failed])

    report = verify_state(state_of(records, [records[0]]))

    assert report.ok, report.findings


def test_verify_state_when_a_pending_replace_is_stored_then_the_terms_are_the_old_ones() -> None:
    submitted = {**order_record(1), "operation": "submit"}
    pending = amend(submitted, operation="replace", order_status="pending_replace", quantity=50)
    records = linked_chain([submitted, pending])
    row = OrderRow("ORD-2026-000001", "pending_replace", 101, 150.25, None, records[1])

    report = verify_state(AuditState((2, records[1]["hash"]), [row], {}, iter(records)))

    assert report.ok, report.findings


def test_verify_state_when_fills_are_recorded_then_positions_are_their_signed_sums() -> None:
    buy = {**order_record(1), "account": "acct", "broker_response": {"filled_quantity": 100}}
    sell = {
        **order_record(2),
        "account": "acct",
        "side": "sell",
        "broker_response": {"filled_quantity": 30},
    }
    later = amend(buy, broker_response={"status": "error"})  # reports no fill: keeps 100
    records = linked_chain([buy, sell, later])
    rows = [records[2], records[1]]

    held = verify_state(state_of(records, rows, {("acct", "AAPL"): 70.0}))
    moved = verify_state(state_of(records, rows, {("acct", "AAPL"): 40070.0, ("x", "Y"): 1.0}))

    assert held.ok, held.findings
    assert moved.findings == (
        Finding("acct/AAPL", "position_differs", 70.0, 40070.0),
        Finding("x/Y", "position_differs", 0.0, 1.0),
    )


def test_verify_state_when_a_row_or_its_order_is_missing_then_both_are_named() -> None:
    records = linked_chain([order_record(1)])
    stray = {**order_record(9), "order_status": "filled"}

    report = verify_state(state_of(records, [stray]))

    assert report.findings == (
        Finding("ORD-2026-000009", "order_not_in_chain", None, "filled"),
        Finding("ORD-2026-000001", "order_row_missing", "submitted", None),
    )


def test_verify_state_when_the_chain_is_broken_then_rows_are_not_compared() -> None:
    records = linked_chain([order_record(1), order_record(2)])
    records[0]["quantity"] = 7

    report = verify_state(state_of(records, []))

    assert report.first_break is not None
    assert report.first_break.position == 1
    assert (report.rows_compared, report.findings) == (False, ())


# --- verify_export: a file's lines, no database ---------------------------------------


def test_verify_export_when_lines_are_intact_then_ok_without_a_head() -> None:
    lines = [json.dumps(r) + "\n" for r in chain(3)] + ["\n"]

    report = verify_export(lines)

    assert report.ok
    assert report.as_dict()["scope"] == "export"
    assert (report.records, report.head_compared, report.stored_head) == (3, False, None)


def test_verify_export_when_a_line_is_not_a_json_object_then_broken_there() -> None:
    lines = [json.dumps(r) for r in chain(3)]
    lines[1] = "[1, 2"

    report = verify_export(lines)

    assert report.first_break is not None
    assert (report.first_break.position, report.first_break.reason) == (2, "not a JSON object")


def test_verify_state_when_attempts_name_an_original_then_each_is_its_own_row() -> None:
    original = {**order_record(1), "operation": "submit"}
    retry = {**original, "order_id": "ORD-2026-000002", "order_status": "rejected"}
    conflict = {**retry, "order_id": "ORD-2026-000003", "quantity": 7}
    records = linked_chain(
        [original, *(amend(a, original_order_id=original["order_id"]) for a in (retry, conflict))]
    )
    # the original's row made to show the retry's record instead of its own
    swapped = {**records[1], "order_id": original["order_id"]}

    honest = verify_state(state_of(records, records))
    edited = verify_state(state_of(records, [swapped, *records[1:]]))

    assert honest.ok, honest.findings
    assert [(f.subject, f.code) for f in edited.findings] == [
        ("ORD-2026-000001.record", "record_differs"),
        ("ORD-2026-000001.status", "column_differs"),
    ]


# --- verify_store: real orders and fills on each backend, then the database edited -------

TRADER = Actor("t", "trader")


def sql(runtime: Runtime, statement: str, **params: Any) -> None:
    store = runtime.store
    assert isinstance(store, SqlStore)
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


@pytest.fixture
def traded(runtime: Runtime, make_order: Callable[..., dict[str, Any]]) -> list[str]:
    """Two filled market buys, a filled market sell and a working limit order,
    cancelled: order ids in that order."""
    runtime.gateway.set_mode("simulation", Actor("c", "compliance"))
    ids = []
    for side, quantity in (("buy", 100), ("buy", 50), ("sell", 30)):
        market = make_order(side=side, quantity=quantity, order_type="market", limit_price=None)
        outcome = runtime.gateway.submit(market, TRADER)
        assert outcome.record["order_status"] == "filled", outcome.record
        ids.append(outcome.record["order_id"])
    working = runtime.gateway.submit(make_order(limit_price=140.0), TRADER)
    ids.append(working.record["order_id"])
    runtime.gateway.cancel(ids[-1], TRADER, "test")
    return ids


@pytest.mark.usefixtures("traded")
def test_verify_store_when_nothing_was_edited_then_ok_head_and_rows_compared(
    runtime: Runtime,
) -> None:
    report = verify_store(runtime.store)

    assert report.ok, report.findings
    assert report.records == runtime.store.audit_count()
    assert report.stored_head == (report.records, report.head)
    assert runtime.store.positions("default") == {"AAPL": 120.0}


@pytest.mark.usefixtures("traded")
def test_verify_store_when_the_tail_is_deleted_then_truncation_with_want_and_got(
    runtime: Runtime,
) -> None:
    records = list(runtime.store.audit_records())
    sql(runtime, "DELETE FROM audit_log WHERE seq > :seq", seq=len(records) - 3)

    report = verify_store(runtime.store)

    assert report.first_break is None
    assert report.findings[0] == Finding(
        "chain_head",
        "chain_truncated",
        {"records": len(records), "hash": records[-1]["hash"]},
        {"records": len(records) - 3, "hash": records[-4]["hash"]},
    )
    assert not report.ok


@pytest.mark.usefixtures("traded")
def test_verify_store_when_a_forged_record_is_appended_with_its_hash_then_past_the_head(
    runtime: Runtime,
) -> None:
    records = list(runtime.store.audit_records())
    first_order = next(r for r in records if "order_id" in r)
    forged = link({**first_order, "quantity": 1}, records[-1]["hash"])
    sql(
        runtime,
        "INSERT INTO audit_log (seq, kind, order_id, record, prev_hash, hash, created_at)"
        " VALUES (:seq, 'order', :order_id, :record, :prev, :hash, :at)",
        seq=len(records) + 1,
        order_id=forged["order_id"],
        record=json.dumps(forged),
        prev=forged["prev_hash"],
        hash=forged["hash"],
        at=datetime(2026, 11, 30, tzinfo=UTC),
    )

    report = verify_store(runtime.store)

    assert verify_chain(runtime.store.audit_records()).ok  # the links alone are fooled
    assert report.findings[0] == Finding(
        "chain_head",
        "chain_past_head",
        {"records": len(records), "hash": records[-1]["hash"]},
        {"records": len(records) + 1, "hash": forged["hash"]},
    )


def test_verify_store_when_an_orders_row_is_edited_then_its_columns_are_named(
    runtime: Runtime, traded: list[str]
) -> None:
    first = traded[0]
    sql(
        runtime,
        "UPDATE orders SET quantity = 123456, status = 'cancelled' WHERE order_id = :id",
        id=first,
    )

    report = verify_store(runtime.store)

    assert report.findings == (
        Finding(f"{first}.status", "column_differs", "filled", "cancelled"),
        Finding(f"{first}.quantity", "column_differs", 100, 123456.0),
    )


def test_verify_store_when_a_stored_record_is_edited_then_its_members_are_named(
    runtime: Runtime, traded: list[str]
) -> None:
    stored = runtime.store.order(traded[1])
    assert stored is not None
    edited = {**stored.linked, "order_status": "cancelled"}
    sql(
        runtime,
        "UPDATE orders SET record = :r WHERE order_id = :id",
        r=json.dumps(edited),
        id=traded[1],
    )

    report = verify_store(runtime.store)

    assert report.findings == (
        Finding(
            f"{traded[1]}.record",
            "record_differs",
            {"order_status": "filled"},
            {"order_status": "cancelled"},
        ),
    )


@pytest.mark.usefixtures("traded")
def test_verify_store_when_a_position_is_moved_then_that_position_is_named(
    runtime: Runtime,
) -> None:
    sql(runtime, "UPDATE positions SET quantity = quantity + 40000")

    report = verify_store(runtime.store)

    assert report.findings == (Finding("default/AAPL", "position_differs", 120.0, 40120.0),)


@pytest.mark.usefixtures("traded")
def test_audit_verify_endpoint_when_a_position_is_moved_then_not_ok_with_the_finding(
    runtime: Runtime, client: TestClient[Any], auth: dict[str, dict[str, str]]
) -> None:
    intact = client.get("/v1/audit/verify", headers=auth["auditor"]).json()
    sql(runtime, "UPDATE positions SET quantity = quantity + 40000")

    edited = client.get("/v1/audit/verify", headers=auth["auditor"]).json()

    assert intact["ok"] is True
    assert (intact["head_compared"], intact["rows_compared"]) == (True, True)
    assert intact["stored_head"] == {"seq": intact["records"], "hash": intact["head"]}
    assert edited["ok"] is False
    assert edited["first_break"] is None
    assert edited["findings"] == [
        {"subject": "default/AAPL", "code": "position_differs", "want": 120.0, "got": 40120.0}
    ]


@pytest.fixture
def retried(runtime: Runtime, traded: list[str], make_order: Callable[..., dict[str, Any]]) -> str:
    """The traded orders, then a retry and a conflict of a new order: its order id."""
    order = make_order(client_order_id="retried-1", limit_price=141.0)
    first = runtime.gateway.submit(order, TRADER)
    replay = runtime.gateway.submit(order, TRADER)
    conflict = runtime.gateway.submit({**order, "quantity": 3}, TRADER)
    assert (replay.kind, conflict.kind) == ("replayed", "conflict")
    return str(first.record["order_id"])


def test_verify_store_when_retries_and_conflicts_are_logged_then_ok(
    runtime: Runtime, retried: str
) -> None:
    report = verify_store(runtime.store)

    attempts = [r for r in runtime.store.audit_records() if r.get("original_order_id")]
    assert report.ok, report.findings
    assert [(r["order_status"], r["original_order_id"]) for r in attempts] == [
        ("rejected", retried),
        ("rejected", retried),
    ]


def test_verify_store_when_an_attempts_row_is_edited_or_deleted_then_named(
    runtime: Runtime, retried: str
) -> None:
    attempts = [r for r in runtime.store.audit_records() if r.get("original_order_id")]
    replay, conflict = (r["order_id"] for r in attempts)
    sql(runtime, "UPDATE orders SET status = 'submitted' WHERE order_id = :id", id=replay)
    sql(runtime, "DELETE FROM orders WHERE order_id = :id", id=conflict)

    report = verify_store(runtime.store)

    assert report.findings == (
        Finding(f"{replay}.status", "column_differs", "rejected", "submitted"),
        Finding(conflict, "order_row_missing", "rejected", None),
    )
