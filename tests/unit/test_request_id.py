"""The request id in records (SPEC section 7, optional `request_id`): present only
when a request is being served, never carried from an earlier request into a
new record, and seen by the gateway's threads and by group-committed work
whichever thread runs it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from adapters.sql._group import _Work
from api._threads import GatewayThreads
from engine.audit import link
from engine.gateway._records import event
from engine.records import REQUEST_ID, OrderRecord, current_request_id

AT = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
STORED = {"timestamp": "2026-11-30T15:00:00Z", "order_status": "submitted", "order_id": "ORD-1"}


@contextmanager
def serving(request_id: str) -> Iterator[None]:
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def test_record_when_no_request_is_served_then_it_has_no_request_id_key() -> None:
    record = OrderRecord.from_dict(STORED)
    assert "request_id" not in record.as_dict()
    assert "request_id" not in record.evolve(order_status="accepted").as_dict()
    assert "request_id" not in event("mode_changed", AT, "cli", mode="simulation")


def test_record_when_read_back_then_its_request_id_is_kept() -> None:
    stored = {**STORED, "request_id": "req-1"}
    assert OrderRecord.from_dict(stored).as_dict()["request_id"] == "req-1"


def test_record_when_evolved_while_serving_another_request_then_it_names_that_one() -> None:
    earlier = OrderRecord.from_dict({**STORED, "request_id": "req-1"})
    with serving("req-2"):
        assert earlier.evolve(order_status="cancelled").request_id == "req-2"
        assert event("omega_invoked", AT, "t1")["request_id"] == "req-2"
    # the sweeper's records (no request) never claim an earlier request's id
    assert earlier.evolve(order_status="filled").request_id is None


def test_record_when_it_has_no_request_id_then_its_hash_is_as_before() -> None:
    """A record written with no request hashes exactly as it did before request
    ids existed (the hash below is the one the code of commit 47153c8 gives)."""
    linked = link(OrderRecord.from_dict(STORED).as_dict(), "sha256:" + "0" * 64)
    assert linked["hash"] == (
        "sha256:08680938b601db6d5388ee819710664cf7ce02c19fa51958f5836eb3853b8689"
    )


def test_gateway_threads_when_a_call_runs_then_it_sees_the_callers_request_id() -> None:
    threads = GatewayThreads(2)

    async def call() -> str | None:
        with serving("req-async"):
            return await threads.run(current_request_id)

    try:
        assert asyncio.run(call()) == "req-async"
    finally:
        threads.close()


def test_group_commit_when_another_thread_leads_then_work_runs_in_its_queuers_context() -> None:
    seen: list[Any] = []
    with serving("req-queued"):
        work = _Work(lambda writer: seen.append((writer, current_request_id())))
    leader = threading.Thread(target=work.run, args=("writer",))
    leader.start()
    leader.join()
    assert seen == [("writer", "req-queued")]
