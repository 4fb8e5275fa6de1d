"""`apex-oms keys generate|threshold|revoke|list`, in-process, in temporary
APEX_HOME and APEX_KEYS directories (never the repository's keys/)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine.signing import key_id, load_private_pem, load_public_pem, load_trust
from tests.integration.cli_support import Run, run_main, use_home

ROOT = Path(__file__).resolve().parents[2]
OK, USAGE = 0, 2


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    home = use_home(tmp_path, monkeypatch, ROOT / "policies")
    keys = tmp_path / "keys"
    monkeypatch.setenv("APEX_KEYS", str(keys))
    return home, keys


def keys(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    return run_main(capsys, ("keys", *argv))


def test_generate_prints_the_key_id_alone_and_trusts_the_new_signer(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    home, keys_dir = dirs
    run = keys(capsys, "generate", "--name", "alice")
    assert run.code == OK, run.err
    keyid = run.out.strip()
    assert run.out == keyid + "\n" and len(keyid) == 64
    private = home / "private" / "alice.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert key_id(load_private_pem(private, None).public_key()) == keyid
    assert key_id(load_public_pem(keys_dir / "alice.pem")) == keyid
    trust = load_trust(keys_dir)
    assert (trust.threshold, [(s.name, s.keyid, s.pem) for s in trust.signers]) == (
        1,
        [("alice", keyid, "alice.pem")],
    )
    assert "NOT encrypted" in run.err


def test_generate_with_a_passphrase_encrypts_the_private_key(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, _ = dirs
    monkeypatch.setenv("ALICE_PASSPHRASE", "correct horse battery staple")
    run = keys(capsys, "generate", "--name", "alice", "--passphrase-env", "ALICE_PASSPHRASE")
    assert run.code == OK, run.err
    private = home / "private" / "alice.pem"
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    key = load_private_pem(private, b"correct horse battery staple")
    assert key_id(key.public_key()) == run.out.strip()


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_generate_refuses_a_passphrase_variable_that_is_unset_or_empty(
    capsys: pytest.CaptureFixture[str],
    dirs: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
) -> None:
    home, keys_dir = dirs
    if value is None:
        monkeypatch.delenv("NO_SUCH_PASSPHRASE", raising=False)
    else:
        monkeypatch.setenv("NO_SUCH_PASSPHRASE", value)
    run = keys(capsys, "generate", "--name", "alice", "--passphrase-env", "NO_SUCH_PASSPHRASE")
    assert run.code == USAGE
    assert "--passphrase-env NO_SUCH_PASSPHRASE: the variable is unset or empty" in run.err
    assert not (home / "private").exists() and not keys_dir.exists()


def test_generate_refuses_a_name_already_listed_and_keeps_the_key(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    home, _ = dirs
    assert keys(capsys, "generate", "--name", "alice").code == OK
    before = (home / "private" / "alice.pem").read_bytes()
    run = keys(capsys, "generate", "--name", "alice")
    assert run.code == USAGE
    assert run.out == ""
    assert "a signer named 'alice' is already listed" in run.err
    assert (home / "private" / "alice.pem").read_bytes() == before


def test_generate_refuses_a_bad_name(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    run = keys(capsys, "generate", "--name", "../evil")
    assert run.code == USAGE
    assert "key_name_invalid" in run.err


def test_generate_refuses_when_the_trust_file_is_unusable_and_writes_no_key(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    home, keys_dir = dirs
    keys_dir.mkdir()
    (keys_dir / "trust.yaml").write_text("threshold: 1\nquorum: 2\n")
    run = keys(capsys, "generate", "--name", "alice")
    assert run.code == USAGE
    assert run.err == f"apex-oms: {keys_dir / 'trust.yaml'}:2: trust_file_malformed: " \
        "quorum: Extra inputs are not permitted\n"  # fmt: skip
    assert not (home / "private" / "alice.pem").exists()


def test_threshold_two_after_two_keys_and_never_above_the_trusted_signers(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    _, keys_dir = dirs
    assert keys(capsys, "generate", "--name", "alice").code == OK
    early = keys(capsys, "threshold", "2")
    assert early.code == USAGE
    assert "threshold 2 > 1 trusted signer(s)" in early.err
    assert "generate the keys first" in early.err
    assert load_trust(keys_dir).threshold == 1
    assert keys(capsys, "generate", "--name", "bob").code == OK
    run = keys(capsys, "threshold", "2")
    assert run.code == OK, run.err
    assert load_trust(keys_dir).threshold == 2
    for bad in ("0", "-1", "3"):
        refused = keys(capsys, "threshold", bad)
        assert refused.code == USAGE, bad
    assert keys(capsys, "threshold", "two").code == USAGE  # argparse: not an integer
    assert load_trust(keys_dir).threshold == 2


def test_revoke_marks_the_key_and_warns_when_the_threshold_can_no_longer_be_met(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    _, keys_dir = dirs
    alice = keys(capsys, "generate", "--name", "alice").out.strip()
    keys(capsys, "generate", "--name", "bob")
    assert keys(capsys, "threshold", "2").code == OK
    run = keys(capsys, "revoke", alice.upper())  # a key id is read in either case
    assert run.code == OK, run.err
    assert f"revoked alice ({alice})" in run.err
    assert "threshold 2 > 1 trusted signer(s)" in run.err
    trust = load_trust(keys_dir, check_threshold=False)
    assert trust.revoked == (alice,)
    assert trust.status_of(alice) == "revoked"
    again = keys(capsys, "revoke", alice)
    assert again.code == OK and "already revoked" in again.err
    assert load_trust(keys_dir, check_threshold=False).revoked == (alice,)
    # lowering the threshold is the repair; verification may use the file again
    assert keys(capsys, "threshold", "1").code == OK
    assert load_trust(keys_dir).threshold == 1


@pytest.mark.parametrize(
    ("keyid", "message"),
    [
        ("ab" * 32, "no signer has key id " + "ab" * 32),
        ("abc", "KEYID: want 64 hex digits, got 'abc'"),
        ("zz" * 32, "KEYID: want 64 hex digits"),
    ],
    ids=["unknown", "short", "not hex"],
)
def test_revoke_of_an_unknown_or_malformed_key_id_is_exit_2(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path], keyid: str, message: str
) -> None:
    _, keys_dir = dirs
    keys(capsys, "generate", "--name", "alice")
    before = (keys_dir / "trust.yaml").read_bytes()
    run = keys(capsys, "revoke", keyid)
    assert run.code == USAGE
    assert message in run.err
    assert (keys_dir / "trust.yaml").read_bytes() == before


def test_list_json_is_exactly_threshold_and_signers_with_status(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    alice = keys(capsys, "generate", "--name", "alice").out.strip()
    bob = keys(capsys, "generate", "--name", "bob").out.strip()
    carol = keys(capsys, "generate", "--name", "carol").out.strip()
    keys(capsys, "threshold", "2")
    keys(capsys, "revoke", bob)
    run = keys(capsys, "list", "--json")
    assert run.code == OK, run.err
    assert json.loads(run.out) == {
        "threshold": 2,
        "signers": [
            {"name": "alice", "keyid": alice, "status": "trusted"},
            {"name": "bob", "keyid": bob, "status": "revoked"},
            {"name": "carol", "keyid": carol, "status": "trusted"},
        ],
    }
    assert run.err == ""


def test_list_table_shows_every_signer_and_the_threshold(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    _, keys_dir = dirs
    alice = keys(capsys, "generate", "--name", "alice").out.strip()
    run = keys(capsys, "list")
    assert run.code == OK
    lines = run.out.splitlines()
    assert lines[0].split() == ["name", "status", "keyid"]
    assert lines[2].split() == ["alice", "trusted", alice]
    assert f"threshold 1 of 1 trusted signer(s) ({keys_dir / 'trust.yaml'})" in run.out


def test_list_of_no_trust_file_is_an_empty_trust(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    run = keys(capsys, "list", "--json")
    assert run.code == OK
    assert json.loads(run.out) == {"threshold": 1, "signers": []}


def test_list_of_a_tampered_trust_file_is_exit_2_naming_it(
    capsys: pytest.CaptureFixture[str], dirs: tuple[Path, Path]
) -> None:
    _, keys_dir = dirs
    keys(capsys, "generate", "--name", "alice")
    keys(capsys, "generate", "--name", "bob")
    # swap alice's public key for bob's: the key id no longer matches its PEM
    (keys_dir / "alice.pem").write_bytes((keys_dir / "bob.pem").read_bytes())
    run = keys(capsys, "list")
    assert run.code == USAGE
    assert run.out == ""
    assert "trust_keyid_mismatch" in run.err
    assert str(keys_dir / "trust.yaml") in run.err


def test_keys_without_an_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert keys(capsys).code == USAGE


def test_apex_keys_defaults_to_keys_in_the_working_directory(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_home(tmp_path, monkeypatch, ROOT / "policies")
    monkeypatch.delenv("APEX_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)
    run = keys(capsys, "generate", "--name", "alice")
    assert run.code == OK, run.err
    assert (tmp_path / "keys" / "alice.pem").is_file()
    assert (tmp_path / "keys" / "trust.yaml").is_file()


def test_concurrent_generates_each_land_in_the_trust_file(tmp_path: Path) -> None:
    # separate processes, as two officers' shells are: the lock on the keys
    # directory keeps every signer, whatever the interleaving
    env = {
        **os.environ,
        "APEX_HOME": str(tmp_path / "home"),
        "APEX_KEYS": str(tmp_path / "keys"),
        "APEX_DATABASE_URL": f"sqlite:///{tmp_path / 'home' / 'apex.db'}",
    }
    names = [f"officer-{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "api.cli", "keys", "generate", "--name", name],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    printed: dict[str, str] = {}
    for name, proc in zip(names, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == OK, err
        printed[name] = out.strip()
    trust = load_trust(tmp_path / "keys")
    assert {s.name: s.keyid for s in trust.signers} == printed
