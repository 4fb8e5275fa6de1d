"""Signed audit checkpoints (issue 9, item 6): when the service writes one, what it
signs, and what `audit verify` finds when a log is cut short or a checkpoint is
forged. The keys are made here; the stores are real (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import logging
import multiprocessing
import os
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.sql import SqlStore
from api.checkpointing import Checkpointer
from api.service_key import load_service_key, service_key, service_key_path
from api.settings import Settings
from engine.audit import GENESIS, link
from engine.audit_replay import verify_state, verify_store
from engine.canonical import canonical_json
from engine.checkpoints import Cadence, message, new_checkpoint, write_checkpoint
from engine.errors import InvalidArgument, StoreUnavailable
from engine.ports import CHECKPOINT_SETTING, AuditState
from engine.signing.keys import KeyFileError, key_id
from tests.conftest import FixedClock

KEY = Ed25519PrivateKey.generate()
KEYS = {key_id(KEY.public_key()): KEY.public_key()}


def append(store: SqlStore, clock: FixedClock, count: int = 1) -> None:
    for _ in range(count):
        record = {"kind": "mode_changed", "timestamp": clock().isoformat(), "actor": "t"}
        store.transact(lambda w, r=record: w.append(r, "mode", clock()))


def kinds(store: SqlStore) -> list[str]:
    return [str(r.get("kind")) for r in store.audit_records()]


# --- when one is written ---------------------------------------------------------


def test_write_when_n_records_were_appended_then_signs_the_head_with_its_sequence(
    sql_store: SqlStore, clock: FixedClock
) -> None:
    cadence = Cadence(records=3, seconds=3600)
    append(sql_store, clock, 2)
    early = write_checkpoint(sql_store, KEY, clock(), cadence, started=clock())
    append(sql_store, clock, 1)

    written = write_checkpoint(sql_store, KEY, clock(), cadence, started=clock())

    assert early is None
    assert written is not None
    records = list(sql_store.audit_records())
    assert (written["sequence"], written["head_hash"]) == (3, records[2]["hash"])
    assert records[3] == written
    assert sql_store.setting(CHECKPOINT_SETTING) == written
    signed = message(3, records[2]["hash"], written["timestamp"])
    assert signed == canonical_json(
        {"sequence": 3, "hash": records[2]["hash"], "time": written["timestamp"]}
    )
    KEY.public_key().verify(base64.b64decode(written["sig"]), signed)  # raises if not


def test_write_when_t_seconds_passed_with_one_record_appended_then_written(
    sql_store: SqlStore, clock: FixedClock
) -> None:
    cadence = Cadence(records=1000, seconds=60)
    started = clock()
    append(sql_store, clock)
    clock.advance(59)
    too_soon = write_checkpoint(sql_store, KEY, clock(), cadence, started)
    clock.advance(1)

    written = write_checkpoint(sql_store, KEY, clock(), cadence, started)

    assert too_soon is None
    assert written is not None and written["sequence"] == 1


def test_write_when_nothing_was_appended_since_the_last_then_none_even_at_shutdown(
    sql_store: SqlStore, clock: FixedClock
) -> None:
    append(sql_store, clock)
    first = write_checkpoint(sql_store, KEY, clock(), None)
    clock.advance(3600)

    idle = write_checkpoint(sql_store, KEY, clock(), Cadence(1, 1.0))
    final = write_checkpoint(sql_store, KEY, clock(), None)
    empty_chain = write_checkpoint(sql_store, KEY, clock(), None)

    assert first is not None
    assert (idle, final, empty_chain) == (None, None, None)
    assert kinds(sql_store) == ["mode_changed", "checkpoint"]


def test_checkpointer_when_running_then_writes_by_count_and_on_stop_but_not_while_idle(
    sql_store: SqlStore,
) -> None:
    writer = Checkpointer(sql_store, KEY, datetime.now().astimezone, Cadence(3, 3600))
    writer.start()
    clock = FixedClock()
    try:
        append(sql_store, clock, 3)
        deadline = time.monotonic() + 10
        while "checkpoint" not in kinds(sql_store) and time.monotonic() < deadline:
            time.sleep(0.1)
        after_count = kinds(sql_store)
        time.sleep(2.5)  # idle: two polls, nothing appended
        idle = kinds(sql_store)
        append(sql_store, clock, 1)
    finally:
        final = writer.stop()

    assert after_count == ["mode_changed"] * 3 + ["checkpoint"]
    assert idle == after_count
    assert final is not None and final["sequence"] == 5
    assert kinds(sql_store)[-1] == "checkpoint"
    assert not writer.running


class _DownStore:
    """A store whose every read and write fails, as in a database outage."""

    def __getattr__(self, name: str) -> Any:
        def fail(*_: Any, **__: Any) -> Any:
            raise StoreUnavailable("connection refused")

        return fail


def test_checkpointer_when_the_store_is_down_then_one_warning_and_it_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = Checkpointer(_DownStore(), KEY, FixedClock(), Cadence(1, 0.2))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="apex.checkpoints"):
        writer.start()
        time.sleep(1.0)
        alive = writer.running
        final = writer.stop()

    warnings = [r.getMessage() for r in caplog.records if r.name == "apex.checkpoints"]
    assert alive
    assert final is None
    assert warnings == [
        "the checkpoint writer cannot reach the store (connection refused); retrying"
    ]


# --- what audit verify finds -------------------------------------------------------


def chain(*bodies: dict[str, Any]) -> list[dict[str, Any]]:
    records, previous = [], GENESIS
    for body in bodies:
        linked = link(body, previous)
        records.append(linked)
        previous = linked["hash"]
    return records


def event(n: int) -> dict[str, Any]:
    return {"kind": "mode_changed", "timestamp": f"2026-11-27T10:00:0{n}Z", "actor": "t"}


def signed_chain(**changes: Any) -> list[dict[str, Any]]:
    """Two events, a checkpoint of the second (with `changes`), one more event."""
    first = chain(event(1), event(2))
    at = datetime.fromisoformat("2026-11-27T10:00:03+00:00")
    checkpoint = {**new_checkpoint((2, first[1]["hash"]), at, KEY), **changes}
    return chain(event(1), event(2), checkpoint, event(4))


def state_of(records: list[dict[str, Any]], kept: Any = None) -> AuditState:
    head = (len(records), records[-1]["hash"]) if records else None
    return AuditState(head, [], {}, iter(records), checkpoint=kept)


def findings(report: Any) -> list[tuple[str, str]]:
    return [(f.subject, f.code) for f in report.findings]


def test_verify_when_checkpoints_are_intact_then_ok_and_counted() -> None:
    records = signed_chain()

    report = verify_state(state_of(records, kept=records[2]), KEYS)

    assert (report.ok, report.checkpoints, report.notes) == (True, 1, ())
    assert report.as_dict()["checkpoints"] == 1


def flip_sig(sig: str) -> str:
    raw = bytearray(base64.b64decode(sig))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        pytest.param({"sig": "FLIP"}, "checkpoint_signature_invalid", id="flipped-sig-byte"),
        pytest.param(
            {"head_hash": "sha256:" + "1" * 64}, "checkpoint_signature_invalid", id="head-hash"
        ),
        pytest.param({"sequence": 1}, "checkpoint_signature_invalid", id="sequence"),
        pytest.param({"keyid": "ab" * 32}, "checkpoint_key_unknown", id="other-key"),
        pytest.param({"sig": "not base64!"}, "checkpoint_signature_invalid", id="not-base64"),
    ],
)
def test_verify_when_a_checkpoint_is_forged_and_relinked_then_named_by_its_sequence(
    changes: dict[str, Any], code: str
) -> None:
    if changes.get("sig") == "FLIP":
        changes = {"sig": flip_sig(signed_chain()[2]["sig"])}
    records = signed_chain(**changes)

    report = verify_state(state_of(records, kept=records[2]), KEYS)

    assert report.first_break is None  # the forger recomputed every hash
    sequence = records[2]["sequence"]
    assert (f"checkpoint {sequence} (record 3)", code) in findings(report)
    assert not report.ok


def test_verify_when_a_checkpoint_signs_a_record_not_just_before_it_then_head_mismatch() -> None:
    early = chain(event(1))
    at = datetime.fromisoformat("2026-11-27T10:00:03+00:00")
    moved = new_checkpoint((1, early[0]["hash"]), at, KEY)  # a true signature, out of place
    records = chain(event(1), event(2), moved)

    report = verify_state(state_of(records, kept=records[2]), KEYS)

    assert findings(report) == [("checkpoint 1 (record 3)", "checkpoint_head_mismatch")]


def test_verify_when_the_tail_after_the_kept_checkpoint_is_cut_then_chain_ends_before_it() -> None:
    records = signed_chain()
    kept = records[2]  # signs record 2; the checkpoint itself is record 3
    cut = records[:1]  # the head moved back with it: only the kept checkpoint tells

    report = verify_state(state_of(cut, kept=kept), KEYS)

    assert ("kept checkpoint 2", "chain_ends_before_checkpoint") in findings(report)
    assert report.as_dict()["findings"][0]["got"] == {"records": 1}


def test_verify_when_the_kept_checkpoint_is_not_the_chains_last_then_kept_differs() -> None:
    records = signed_chain()
    older = chain(event(1))  # a kept checkpoint rolled back to an older, true one
    at = datetime.fromisoformat("2026-11-27T10:00:00+00:00")
    kept = link(new_checkpoint((1, older[0]["hash"]), at, KEY), GENESIS)

    report = verify_state(state_of(records, kept=kept), KEYS)

    assert findings(report) == [("kept checkpoint 1", "checkpoint_kept_differs")]


def test_verify_when_a_given_checkpoint_is_past_the_chain_then_ends_before_it() -> None:
    records = signed_chain()
    at = datetime.fromisoformat("2026-11-27T10:00:09+00:00")
    given = new_checkpoint((9, "sha256:" + "2" * 64), at, KEY)

    report = verify_state(state_of(records, kept=records[2]), KEYS, given)

    assert findings(report) == [("given checkpoint 9", "chain_ends_before_checkpoint")]


def test_verify_when_no_service_key_is_known_then_a_note_not_a_finding() -> None:
    records = signed_chain()

    report = verify_state(state_of(records, kept=records[2]), None)

    assert report.ok
    assert report.notes == ("1 checkpoint signatures not checked: no service key given",)


def test_verify_store_when_the_kept_checkpoint_outlives_a_deleted_tail_then_named(
    sql_store: SqlStore, clock: FixedClock
) -> None:
    append(sql_store, clock, 3)
    written = write_checkpoint(sql_store, KEY, clock(), None)
    assert written is not None
    # the tail is cut in the chain rows and the head, as an intruder would
    with sql_store.writing() as w:
        w.cursor.execute("DELETE FROM audit_log WHERE seq >= 3")  # type: ignore[attr-defined]
        w.cursor.execute(  # type: ignore[attr-defined]
            "UPDATE chain_head SET seq = 2, hash = (SELECT hash FROM audit_log WHERE seq = 2)"
        )

    report = verify_store(sql_store, KEYS)

    assert findings(report) == [("kept checkpoint 3", "chain_ends_before_checkpoint")]


# --- the service key --------------------------------------------------------------


def test_service_key_when_first_made_then_0600_in_a_0700_directory_and_reused(
    tmp_path: Path,
) -> None:
    first = service_key(tmp_path)
    again = service_key(tmp_path)

    path = service_key_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert key_id(first.public_key()) == key_id(again.public_key())
    public = load_service_key(tmp_path)
    assert public is not None and key_id(public) == key_id(first.public_key())
    assert [p.name for p in path.parent.iterdir()] == ["service.pem"]  # no drafts left


def test_load_service_key_when_none_yet_then_none_and_nothing_created(tmp_path: Path) -> None:
    assert load_service_key(tmp_path) is None
    assert not (tmp_path / "private").exists()


def test_service_key_when_the_file_is_group_readable_then_refused(tmp_path: Path) -> None:
    service_key(tmp_path)
    os.chmod(service_key_path(tmp_path), 0o640)

    with pytest.raises(KeyFileError) as refused:
        service_key(tmp_path)

    assert refused.value.code == "key_file_permissions"


def _start(home: str, queue: Any) -> None:
    queue.put(key_id(service_key(Path(home)).public_key()))


def test_service_key_when_four_processes_start_at_once_then_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_start, args=(str(tmp_path), queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    ids = {queue.get(timeout=5) for _ in workers}
    assert len(ids) == 1
    public = load_service_key(tmp_path)
    assert public is not None and ids == {key_id(public)}


# --- settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("APEX_CHECKPOINT_RECORDS", "0", "APEX_CHECKPOINT_RECORDS: want an integer > 0, got '0'"),
        ("APEX_CHECKPOINT_RECORDS", "1.5", "APEX_CHECKPOINT_RECORDS: want an integer > 0"),
        ("APEX_CHECKPOINT_SECONDS", "-1", "APEX_CHECKPOINT_SECONDS: want a number of seconds > 0"),
        ("APEX_CHECKPOINT_SECONDS", "nan", "APEX_CHECKPOINT_SECONDS: want a number of seconds"),
    ],
)
def test_settings_when_a_checkpoint_setting_is_bad_then_refused_naming_it(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match="^" + message.replace("(", r"\(")):
        Settings.from_env({"APEX_HOME": "/tmp/x", variable: value})


def test_settings_when_unset_then_1000_records_and_60_seconds() -> None:
    settings = Settings.from_env({"APEX_HOME": "/tmp/x"})
    given = Settings.from_env(
        {"APEX_HOME": "/tmp/x", "APEX_CHECKPOINT_RECORDS": "5", "APEX_CHECKPOINT_SECONDS": "0.5"}
    )

    assert (settings.checkpoint_records, settings.checkpoint_seconds) == (1000, 60.0)
    assert (given.checkpoint_records, given.checkpoint_seconds) == (5, 0.5)
