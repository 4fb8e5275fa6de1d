"""`tools/verify_audit.py`, the auditor's standalone verifier, run as a process
of its own in isolated mode (`python -I`, from a directory outside the
project): a real export from `apex-oms serve`, a cut or rewritten export
against a checkpoint kept apart, a forged checkpoint, verification records
whose signatures are made here with keys made here, and unusable inputs."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.audit import GENESIS, link
from engine.canonical import canonical_json
from engine.checkpoints import new_checkpoint
from engine.signing.keys import key_id, public_pem
from tests.conftest import ROOT
from tests.integration.served import served
from tests.integration.test_audit_checkpoints import change_state, checkpoints, wait_for

TOOL = ROOT / "tools" / "verify_audit.py"


@dataclass
class Run:
    code: int
    out: str
    err: str


def verify_audit(cwd: Path, *argv: str | Path) -> Run:
    done = subprocess.run(
        [sys.executable, "-I", str(TOOL), *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def relink(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out, previous = [], GENESIS
    for record in records:
        linked = link(record, previous)
        out.append(linked)
        previous = linked["hash"]
    return out


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def flip(sig: str) -> str:
    raw = bytearray(base64.b64decode(sig))
    raw[7] ^= 0x80
    return base64.b64encode(bytes(raw)).decode()


def test_tool_when_read_then_it_imports_only_the_standard_library_and_cryptography() -> None:
    found = set()
    for node in ast.walk(ast.parse(TOOL.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            found.add((node.module or "").split(".")[0])

    allowed = set(sys.stdlib_module_names) | {"__future__", "cryptography"}
    assert found - allowed == set()
    assert found & {"engine", "api", "adapters", "tests"} == set()


# --- a real export -----------------------------------------------------------------


@dataclass
class Exported:
    directory: Path
    export: Path
    service_key: Path
    checkpoint: Path
    records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """A service that wrote two checkpoints by count (none on stop: nothing came
    after the second); its export,
    its public key and its latest checkpoint, as an auditor would take them."""
    tmp = tmp_path_factory.mktemp("exported")
    with served(tmp, env={"APEX_CHECKPOINT_RECORDS": "2"}) as service:
        database = service.home / "apex.db"
        change_state(service, 2)
        assert wait_for(lambda: checkpoints(database) == 1)
        change_state(service, 3)
        assert wait_for(lambda: checkpoints(database) == 2)
    auditor = tmp / "auditor"
    auditor.mkdir()
    export = auditor / "audit.jsonl"
    assert service.cli("audit", "export", "-o", str(export)).returncode == 0
    key = service.cli("audit", "pubkey")
    (auditor / "service.pem").write_text(key.stdout)
    latest = service.cli("audit", "checkpoint")
    (auditor / "checkpoint.json").write_text(latest.stdout)
    records = [json.loads(line) for line in export.read_text().splitlines()]
    yield Exported(auditor, export, auditor / "service.pem", auditor / "checkpoint.json", records)


def test_tool_when_a_real_export_is_intact_then_exit_0_with_a_summary(
    exported: Exported,
) -> None:
    run = verify_audit(
        exported.directory,
        exported.export,
        "--service-key",
        exported.service_key,
        "--checkpoint",
        exported.checkpoint,
    )

    assert run.code == 0, run.out + run.err
    assert "FINDING" not in run.out
    summary = run.out.splitlines()[-1]
    assert summary.startswith(f"{len(exported.records)} records, 2 checkpoints, ")
    assert summary.endswith(", the given checkpoint compared: 0 findings")


def test_tool_when_the_export_ends_before_the_kept_checkpoint_then_named_exit_1(
    exported: Exported,
) -> None:
    sequence = json.loads(exported.checkpoint.read_text())["sequence"]
    cut = write_lines(exported.directory / "cut.jsonl", exported.records[: sequence - 1])

    run = verify_audit(
        exported.directory, cut, "--service-key", exported.service_key,
        "--checkpoint", exported.checkpoint,
    )  # fmt: skip
    alone = verify_audit(exported.directory, cut, "--service-key", exported.service_key)

    assert run.code == 1
    assert (
        f"FINDING export ends before checkpoint {sequence}: it has {sequence - 1} records, "
        f"the checkpoint signs record {sequence}"
    ) in run.out.splitlines()
    assert alone.code == 0  # without the kept checkpoint a cut tail cannot show


def test_tool_when_the_export_was_rewritten_then_it_disagrees_with_the_kept_checkpoint(
    exported: Exported,
) -> None:
    sequence = json.loads(exported.checkpoint.read_text())["sequence"]
    edited = [dict(r) for r in exported.records]
    edited[sequence - 1]["reason"] = "rewritten"
    rewritten = write_lines(exported.directory / "rewritten.jsonl", relink(edited))

    run = verify_audit(
        exported.directory, rewritten, "--service-key", exported.service_key,
        "--checkpoint", exported.checkpoint,
    )  # fmt: skip

    assert run.code == 1
    assert any(
        line.startswith(f"FINDING export disagrees with checkpoint {sequence}: record {sequence}")
        for line in run.out.splitlines()
    ), run.out


@pytest.mark.parametrize("field", ["sig", "head_hash"])
def test_tool_when_a_checkpoint_in_the_export_is_forged_then_named_exit_1(
    exported: Exported, field: str
) -> None:
    at = next(i for i, r in enumerate(exported.records) if r.get("kind") == "checkpoint")
    record = dict(exported.records[at])
    record[field] = flip(record["sig"]) if field == "sig" else "sha256:" + "cd" * 32
    forged = write_lines(
        exported.directory / f"forged-{field}.jsonl",
        relink([*exported.records[:at], record, *exported.records[at + 1 :]]),
    )

    run = verify_audit(exported.directory, forged, "--service-key", exported.service_key)

    assert run.code == 1
    assert (
        f"FINDING record {at + 1} (checkpoint {record['sequence']}): the signature does not "
        "verify under the service key"
    ) in run.out.splitlines()


def test_tool_when_the_service_key_is_another_then_every_checkpoint_is_named(
    exported: Exported,
) -> None:
    other = exported.directory / "other.pem"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))

    run = verify_audit(exported.directory, exported.export, "--service-key", other)

    assert run.code == 1
    assert sum("not the service key" in line for line in run.out.splitlines()) == 2


# --- verification records ----------------------------------------------------------


PAYLOAD = {"config_sha256": "ab" * 32, "version": 4, "expires": "2027-01-31T00:00:00Z"}
ALICE, BOB, DEV, SERVICE = (Ed25519PrivateKey.generate() for _ in range(4))


def entry(key: Ed25519PrivateKey, signer: str, result: str = "valid") -> dict[str, Any]:
    sig = base64.b64encode(key.sign(canonical_json(PAYLOAD))).decode()
    return {
        "keyid": key_id(key.public_key()),
        "signer": signer,
        "signed_at": "2026-11-27T10:00:00Z",
        "sig": sig,
        "result": result,
    }


def verification(**changes: Any) -> dict[str, Any]:
    """A record in the shape the service writes (issue 9, item 5)."""
    return {
        "kind": "verification",
        "timestamp": "2026-11-27T10:05:00Z",
        "actor": "system",
        "trigger": "start",
        "outcome": "valid",
        "code": None,
        "message": "2 of 2 valid",
        "trust": "signed",
        "config_sha256": PAYLOAD["config_sha256"],
        "version": 4,
        "expires": PAYLOAD["expires"],
        "policy_digest": "sha256:" + "0" * 64,
        "loaded_policy_digest": "sha256:" + "0" * 64,
        "threshold": 2,
        "trusted": 2,
        "payload": PAYLOAD,
        "signatures": [entry(ALICE, "alice"), entry(BOB, "bob")],
        "development_key": None,
        "findings": [],
        "in_force": True,
        **changes,
    }


def development(**changes: Any) -> dict[str, Any]:
    dev = {
        "keyid": key_id(DEV.public_key()),
        "public_key_pem": public_pem(DEV.public_key()).decode(),
    }
    fields = {
        "trust": "development",
        "threshold": 1,
        "signatures": [entry(DEV, "development")],
        "development_key": dev,
    }
    return verification(**{**fields, **changes})


def signed_export(directory: Path, *bodies: dict[str, Any]) -> Path:
    """The records, then a checkpoint of them by SERVICE, as an export."""
    records = relink(list(bodies))
    at = datetime(2026, 11, 27, 10, 6, tzinfo=UTC)
    head = (len(records), records[-1]["hash"])
    records = relink([*records, new_checkpoint(head, at, SERVICE)])
    return write_lines(directory / "export.jsonl", records)


@pytest.fixture
def auditor(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name, key in (("alice", ALICE), ("bob", BOB)):
        (keys / f"{name}.pem").write_bytes(public_pem(key.public_key()))
    (keys / "trust.yaml").write_text("threshold: 2\n")  # read by the service, not here
    (tmp_path / "service.pem").write_bytes(public_pem(SERVICE.public_key()))
    return tmp_path


def flipped(signer: int) -> dict[str, Any]:
    signatures = verification()["signatures"]
    signatures[signer] = {**signatures[signer], "sig": flip(signatures[signer]["sig"])}
    return verification(signatures=signatures)


ALICE_ID, BOB_ID, DEV_ID = (key_id(k.public_key()) for k in (ALICE, BOB, DEV))


@pytest.mark.parametrize(
    ("record", "keys", "code", "lines"),
    [
        pytest.param(verification(), True, 0, [], id="two-of-two-valid"),
        pytest.param(
            verification(), False, 0,
            ["warning: record 1 (verification): 2 signatures not checked (no --keys)"],
            id="no-keys-not-checked",
        ),
        pytest.param(
            flipped(0), True, 1,
            [
                f"FINDING record 1 (verification): the signature by key {ALICE_ID} is "
                "recorded valid but does not verify over the payload",
                "FINDING record 1 (verification): outcome valid (signed) but 1 signatures "
                "verify under keys in the keys dir, threshold 2",
            ],
            id="tampered-signature",
        ),
        pytest.param(
            verification(payload={**PAYLOAD, "version": 5}), True, 1,
            [
                "FINDING record 1 (verification): payload version 5 differs from the record's 4",
                f"FINDING record 1 (verification): the signature by key {ALICE_ID} is "
                "recorded valid but does not verify over the payload",
                f"FINDING record 1 (verification): the signature by key {BOB_ID} is "
                "recorded valid but does not verify over the payload",
                "FINDING record 1 (verification): outcome valid (signed) but 0 signatures "
                "verify under keys in the keys dir, threshold 2",
            ],
            id="payload-rewritten",
        ),
        pytest.param(
            development(), True, 0,
            [f"note: record 1 (verification): key {DEV_ID} is a development key (not trusted)"],
            id="development-signature",
        ),
        pytest.param(
            development(trust="signed"), True, 1,
            [
                "FINDING record 1 (verification): outcome valid (signed) but 0 signatures "
                "verify under keys in the keys dir, threshold 1",
                f"note: record 1 (verification): key {DEV_ID} is a development key (not trusted)",
            ],
            id="development-passed-off-as-signed",
        ),
        pytest.param(
            verification(
                outcome="invalid", code="threshold_not_met",
                signatures=[entry(ALICE, "alice", "key_revoked"), entry(BOB, "bob")],
            ),
            True, 0,
            [f"note: record 1 (verification): the signature by key {ALICE_ID} recorded "
             "key_revoked verifies"],
            id="recorded-invalid-that-verifies-is-a-note",
        ),
    ],
)  # fmt: skip
def test_tool_when_a_verification_record_is_checked_then_exact_lines_and_exit(
    auditor: Path, record: dict[str, Any], keys: bool, code: int, lines: list[str]
) -> None:
    export = signed_export(auditor, record)
    options = ["--keys", auditor / "keys"] if keys else []

    run = verify_audit(auditor, export, "--service-key", auditor / "service.pem", *options)

    assert run.code == code, run.out + run.err
    assert run.out.splitlines()[:-1] == lines
    assert run.out.splitlines()[-1].startswith("2 records, 1 checkpoints, 1 verification records")


def test_tool_when_a_valid_signer_is_not_in_the_keys_dir_then_named(auditor: Path) -> None:
    export = signed_export(auditor, verification())
    (auditor / "keys" / "bob.pem").unlink()

    run = verify_audit(auditor, export, "--service-key", auditor / "service.pem",
                       "--keys", auditor / "keys")  # fmt: skip

    assert run.code == 1
    assert f"FINDING record 1 (verification): key {BOB_ID} not in keys dir" in run.out


# --- unusable input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-export", "unusable input: {d}/none.jsonl: cannot read the export: "),
        ("binary-export", "unusable input: {d}/binary.jsonl: cannot read the export: "),
        ("not-json-lines", "unusable input: {d}/text.jsonl: line 2 is not a JSON object"),
        ("malformed-service-key", "unusable input: {d}/bad.pem: not a PUBLIC KEY"),
        ("missing-service-key", "unusable input: {d}/none.pem: cannot read: "),
        ("malformed-key-in-dir", "unusable input: {d}/keys/broken.pem: not a PUBLIC KEY"),
        ("checkpoint-not-json", "unusable input: {d}/cp.json: cannot read the checkpoint: "),
    ],
)
def test_tool_when_an_input_is_unusable_then_exit_2_naming_it(
    auditor: Path, case: str, message: str
) -> None:
    export = signed_export(auditor, verification())
    (auditor / "binary.jsonl").write_bytes(b"\xff\xfe\x00{}")
    (auditor / "text.jsonl").write_text('{"a": 1}\nnot json\n')
    (auditor / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    (auditor / "cp.json").write_text("{not json")
    service = auditor / "service.pem"
    argv: list[str | Path] = {
        "missing-export": [auditor / "none.jsonl", "--service-key", service],
        "binary-export": [auditor / "binary.jsonl", "--service-key", service],
        "not-json-lines": [auditor / "text.jsonl", "--service-key", service],
        "malformed-service-key": [export, "--service-key", auditor / "bad.pem"],
        "missing-service-key": [export, "--service-key", auditor / "none.pem"],
        "malformed-key-in-dir": [export, "--service-key", service, "--keys", auditor / "keys"],
        "checkpoint-not-json": [
            export,
            "--service-key",
            service,
            "--checkpoint",
            auditor / "cp.json",
        ],
    }[case]
    if case == "malformed-key-in-dir":
        (auditor / "keys" / "broken.pem").write_text("garbage")

    run = verify_audit(auditor, *argv)

    assert (run.code, run.out) == (2, "")
    assert run.err.startswith(message.format(d=auditor)), run.err
