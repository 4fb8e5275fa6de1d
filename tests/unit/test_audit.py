"""The audit chain exactly as SPEC section 7 defines it, recomputed here with
nothing but hashlib and json, and every way of breaking it named."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.audit import GENESIS, link, link_text, record_hash, verify_chain


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
