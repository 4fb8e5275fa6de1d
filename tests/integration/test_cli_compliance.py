"""`apex-oms compliance pin|sign|verify` on a copy of the shipped policies, with
keys made here (never the repository's keys/ or policies/)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine import load_policies, validate_policies
from engine.policy.loader import rules_digest
from engine.signing import Signer, Trust, key_id, public_pem, save_trust
from tests.integration.cli_support import Run, run_main, use_home

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
BEFORE_EXPIRY = "2026-12-01T00:00:00Z"  # the shipped configuration expires 2027-01-31


@dataclass(frozen=True)
class Setup:
    policies: Path
    keys: Path
    private: Path
    keyid: dict[str, str]

    def key(self, name: str) -> str:
        return str(self.private / f"{name}.pem")


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """A copy of the policies, and alice, bob and carol trusted with threshold 2."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, policies)
    use_home(tmp_path, monkeypatch, policies)
    keys, private = tmp_path / "keys", tmp_path / "private"
    monkeypatch.setenv("APEX_KEYS", str(keys))
    keys.mkdir()
    private.mkdir(mode=0o700)
    signers, keyid = [], {}
    for name in ("alice", "bob", "carol"):
        key = Ed25519PrivateKey.generate()
        write_private(private / f"{name}.pem", key)
        (keys / f"{name}.pem").write_bytes(public_pem(key.public_key()))
        keyid[name] = key_id(key.public_key())
        signers.append(Signer(name=name, keyid=keyid[name], pem=f"{name}.pem"))
    save_trust(keys, Trust(threshold=2, signers=tuple(signers)))
    return Setup(policies, keys, private, keyid)


def write_private(path: Path, key: Ed25519PrivateKey, passphrase: bytes | None = None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    return run_main(capsys, ("compliance", *argv))


def verify_json(
    capsys: pytest.CaptureFixture[str], setup: Setup, *extra: str
) -> tuple[int, dict[str, Any]]:
    run = cli(capsys, "verify", "--json", "--at", BEFORE_EXPIRY, *extra, str(setup.policies))
    return run.code, json.loads(run.out)


def codes(report: dict[str, Any]) -> list[str]:
    return [f["code"] for f in report["findings"]]


def sign_all(capsys: pytest.CaptureFixture[str], setup: Setup, *names: str) -> None:
    for name in names:
        run = cli(capsys, "sign", "--key", setup.key(name), str(setup.policies))
        assert run.code == 0, run.err


def test_pin_sign_and_verify_when_two_of_three_sign_then_valid(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    pin = cli(capsys, "pin", str(setup.policies))
    sign_all(capsys, setup, "alice")
    one = cli(capsys, "verify", "--at", BEFORE_EXPIRY, str(setup.policies))
    sign_all(capsys, setup, "bob")
    two = cli(capsys, "verify", "--at", BEFORE_EXPIRY, str(setup.policies))

    assert pin.code == 0
    assert pin.out == (
        f"{setup.policies / 'compliance.yaml'}: policy_digest {rules_digest(setup.policies)}\n"
    )
    assert one.code == 1
    assert "threshold_not_met  -      2 of 3 needed, 1 valid" in one.out
    assert one.out.endswith("INVALID: threshold_not_met\n")
    assert two.code == 0
    assert two.out.endswith("VALID: 2 of 3 needed, 2 valid (alice, bob)\n")


def test_verify_json_when_valid_then_the_report(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "pin", str(setup.policies))
    sign_all(capsys, setup, "alice", "carol")

    code, report = verify_json(capsys, setup)

    assert code == 0
    assert report["ok"] is True
    assert report["valid_signers"] == ["alice", "carol"]
    assert report["findings"] == []
    assert report["policy_digest"] == rules_digest(setup.policies)
    assert [s["keyid"] for s in report["signatures"]] == [
        setup.keyid["alice"],
        setup.keyid["carol"],
    ]


def test_verify_when_no_directory_given_then_apex_policies(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "pin")
    sign_all(capsys, setup, "alice", "bob")

    run = cli(capsys, "verify", "--at", BEFORE_EXPIRY)

    assert run.code == 0
    assert f"configuration: {setup.policies / 'compliance.yaml'}" in run.out


def test_pin_when_run_then_one_line_added_and_the_set_still_loads(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    path = setup.policies / "compliance.yaml"
    before = path.read_text().splitlines()

    first = cli(capsys, "pin", str(setup.policies))
    after = path.read_text().splitlines()
    again = cli(capsys, "pin", str(setup.policies))

    digest = rules_digest(setup.policies)
    added = [line for line in after if line not in before]
    assert added == [
        f'policy_digest: "{digest}"  # the rule files it approves (apex-oms compliance pin)'
    ]
    assert [line for line in after if line not in added] == before
    assert first.code == 0
    assert again.out == f"{path}: policy_digest already {digest}\n"
    loaded = load_policies(setup.policies)
    assert loaded.config.policy_digest == loaded.policies.policy_digest == digest


def test_pin_when_signed_then_says_the_signatures_no_longer_count(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    sign_all(capsys, setup, "alice", "bob")

    pin = cli(capsys, "pin", str(setup.policies))
    code, report = verify_json(capsys, setup)

    assert "sign the old file and no longer count" in pin.out
    assert code == 1
    assert codes(report) == ["payload_mismatch"]
    assert report["findings"][0]["message"].startswith("payload config_sha256 does not match")


def test_sign_when_the_yaml_changed_then_names_the_dropped_signatures(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "pin", str(setup.policies))
    sign_all(capsys, setup, "alice", "bob")
    path = setup.policies / "compliance.yaml"
    path.write_text(path.read_text().replace("version: 1", "version: 2"))

    run = cli(capsys, "sign", "--key", setup.key("carol"), str(setup.policies))
    code, report = verify_json(capsys, setup)

    assert run.code == 0
    assert (
        "compliance.yaml changed since the last signing: dropped 2 signature(s) over the "
        f"old payload: alice ({setup.keyid['alice']}), bob ({setup.keyid['bob']})"
    ) in run.out
    assert code == 1
    assert report["version"] == 2
    assert codes(report) == ["threshold_not_met"]


def test_verify_when_a_rule_file_is_edited_after_signing_then_policy_digest_mismatch(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "pin", str(setup.policies))
    sign_all(capsys, setup, "alice", "bob")
    signed_digest = rules_digest(setup.policies)
    rules = setup.policies / "order_limits.yaml"
    rules.write_text(rules.read_text() + "# edited after signing\n")

    run = cli(capsys, "verify", "--at", BEFORE_EXPIRY, str(setup.policies))

    assert run.code == 1
    assert (
        f"policy_digest_mismatch  -      policy digest mismatch (want: {signed_digest}, "
        f"got: {rules_digest(setup.policies)})"
    ) in run.out
    # the edited set still loads: the rules are judged on their own
    assert validate_policies(setup.policies) == []


def test_verify_when_expired_then_exit_1_with_the_time(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "pin", str(setup.policies))
    sign_all(capsys, setup, "alice", "bob")

    run = cli(capsys, "verify", "--at", "2027-02-01T00:00:00Z", str(setup.policies))

    assert run.code == 1
    assert "expired at 2027-01-31T00:00:00Z (now: 2027-02-01T00:00:00Z)" in run.out


def test_verify_when_unsigned_then_exit_1(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "pin", str(setup.policies))

    code, report = verify_json(capsys, setup)

    assert code == 1
    assert codes(report) == ["unsigned", "threshold_not_met"]


def test_verify_when_the_signature_file_is_not_json_then_exit_2(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "pin", str(setup.policies))
    (setup.policies / "compliance.sig.json").write_text("{not json")

    run = cli(capsys, "verify", "--at", BEFORE_EXPIRY, str(setup.policies))
    sign = cli(capsys, "sign", "--key", setup.key("alice"), str(setup.policies))

    assert run.code == 2
    assert "sig_file_malformed" in run.out
    assert run.out.endswith("UNUSABLE INPUT: sig_file_malformed, threshold_not_met\n")
    assert sign.code == 2
    assert "sig_file_malformed: not JSON" in sign.err
    assert (setup.policies / "compliance.sig.json").read_text() == "{not json"


def test_verify_when_a_public_key_file_is_malformed_then_exit_2(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "pin", str(setup.policies))
    sign_all(capsys, setup, "alice", "bob")
    (setup.keys / "bob.pem").write_text("garbage\n")

    code, report = verify_json(capsys, setup)

    assert code == 2
    assert codes(report) == ["key_file_malformed"]
    assert report["findings"][0]["message"] == (
        f"{setup.keys / 'bob.pem'}: key_file_malformed: not a PUBLIC KEY (SubjectPublicKeyInfo) PEM"
    )


def test_sign_when_the_private_key_is_readable_by_others_then_refused(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(setup.key("alice"), 0o644)

    run = cli(capsys, "sign", "--key", setup.key("alice"), str(setup.policies))

    assert run.code == 2
    assert f"{setup.key('alice')}: key_file_permissions: mode 0644" in run.err
    assert not (setup.policies / "compliance.sig.json").exists()


def test_sign_when_the_key_is_encrypted_then_the_passphrase_from_the_environment(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dave = Ed25519PrivateKey.generate()
    write_private(setup.private / "dave.pem", dave, b"s3cret")
    monkeypatch.setenv("DAVE_PASSPHRASE", "s3cret")

    unset = cli(capsys, "sign", "--key", str(setup.private / "dave.pem"), str(setup.policies))
    run = cli(
        capsys,
        "sign",
        "--key",
        str(setup.private / "dave.pem"),
        "--passphrase-env",
        "DAVE_PASSPHRASE",
        str(setup.policies),
    )

    assert unset.code == 2
    assert "key_passphrase" in unset.err
    assert run.code == 0
    # dave is not in the trust file: signed anyway, with a warning, as the key file's name
    assert f"key {key_id(dave.public_key())} is not in the trust file" in run.err
    assert "as dave, key" in run.out


def test_policy_set_when_compliance_yaml_names_modes_then_loads_and_a_bad_mode_is_an_issue(
    setup: Setup,
) -> None:
    path = setup.policies / "compliance.yaml"
    text = path.read_text()
    path.write_text(text.replace("version: 1\n", "version: 1\nmodes: [research, simulation]\n"))
    modes = load_policies(setup.policies).config.modes
    path.write_text(text.replace("version: 1\n", "version: 1\nmodes: [research, moon]\n"))
    issues = validate_policies(setup.policies)
    path.write_text(text.replace("version: 1\n", 'version: 1\npolicy_digest: "sha256:12"\n'))
    bad_pin = validate_policies(setup.policies)

    assert modes == ["research", "simulation"]
    assert [(i.code, i.line) for i in issues] == [("wrong_type", 5)]
    assert issues[0].message.startswith("modes.1: Input should be 'research'")
    assert [(i.code, i.line) for i in bad_pin] == [("wrong_type", 5)]
    assert bad_pin[0].message.startswith("policy_digest: String should match pattern")
