"""Signing and verifying the compliance configuration: every attack on the
signatures fails with its exact code and message, and a threshold of trusted
signatures verifies (also with OpenSSL alone)."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.canonical import canonical_json, sha256_hex
from engine.policy.loader import rules_digest
from engine.signing import (
    KeyFileError,
    Signer,
    Trust,
    TrustFileError,
    key_id,
    load_trust,
    public_pem,
    save_trust,
)
from engine.signing.pin import PinError, pin_policy_digest
from engine.signing.verify import (
    PayloadError,
    SigFileError,
    VerifyReport,
    payload_of,
    pinned_digest,
    sign,
    verify,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SIGNED_AT = "2026-12-01T12:00:00Z"
PIN = "sha256:" + "ab" * 32
YAML = f"""# test configuration
version: 4
expires: "2027-01-31T00:00:00Z"
policy_digest: "{PIN}"
risk:
  max_order_quantity: 10000   # shares
""".encode()

# fixed keys, so that key ids are stable across runs
KEYS = {
    name: Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    for seed, name in enumerate(("alice", "bob", "carol", "mallory"), start=1)
}
KEYID = {name: key_id(key.public_key()) for name, key in KEYS.items()}


def write_trust(
    keys_dir: Path, threshold: int, names: tuple[str, ...], revoked: tuple[str, ...] = ()
) -> Trust:
    keys_dir.mkdir(parents=True, exist_ok=True)
    signers = []
    for name in names:
        (keys_dir / f"{name}.pem").write_bytes(public_pem(KEYS[name].public_key()))
        signers.append(Signer(name=name, keyid=KEYID[name], pem=f"{name}.pem"))
    revoked_ids = tuple(KEYID[name] for name in revoked)
    save_trust(keys_dir, Trust(threshold=threshold, signers=tuple(signers), revoked=revoked_ids))
    return load_trust(keys_dir)


def signed(*names: str, yaml: bytes = YAML) -> dict[str, Any]:
    sig_file: dict[str, Any] | None = None
    for name in names:
        sig_file, _ = sign(sig_file, yaml, KEYS[name], name, NOW)
    assert sig_file is not None
    return sig_file


def entry(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A signature by `name` over any payload, made by hand."""
    sig = KEYS[name].sign(canonical_json(payload))
    return {
        "keyid": KEYID[name],
        "signer": name,
        "signed_at": SIGNED_AT,
        "sig": base64.b64encode(sig).decode(),
    }


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@dataclass
class World:
    """The inputs of one verification, as a case leaves them."""

    tmp: Path
    yaml: bytes = YAML
    sig_file: dict[str, Any] | str | None = None
    trust: Trust | KeyFileError | TrustFileError | None = None
    now: datetime = NOW
    accepted_version: int | None = 4
    loaded_digest: str | None = PIN
    extra: dict[str, str] = field(default_factory=dict)

    def run(self) -> VerifyReport:
        trust = self.trust
        if trust is None:  # alice, bob and carol; two must sign
            trust = write_trust(self.tmp / "keys", 2, ("alice", "bob", "carol"))
        return verify(
            self.yaml, self.sig_file, trust, self.now, self.accepted_version, self.loaded_digest
        )


def _sha(data: bytes) -> str:
    return sha256_hex(data)


# --- the cases ------------------------------------------------------------------------


def valid_two_of_three(w: World) -> None:
    w.sig_file = signed("alice", "bob")


def valid_three_of_three(w: World) -> None:
    w.sig_file = signed("alice", "bob", "carol")


def valid_despite_an_untrusted_extra_signature(w: World) -> None:
    w.sig_file = signed("alice", "mallory", "bob")


def valid_without_the_optional_checks(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.accepted_version = None
    w.loaded_digest = None


def yaml_flipped_byte(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.yaml = YAML.replace(b"10000", b"10001")
    w.extra["got"] = _sha(w.yaml)


def signature_flipped_byte(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    sig = base64.b64decode(w.sig_file["signatures"][0]["sig"])
    w.sig_file["signatures"][0]["sig"] = base64.b64encode(flip(sig, 10)).decode()


def sig_missing_field(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    del w.sig_file["signatures"][0]["sig"]


def payload_missing_field(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    del w.sig_file["payload"]["version"]


def sig_file_missing_signatures(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    del w.sig_file["signatures"]


def payload_wrong_type(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.sig_file["payload"]["version"] = "4"


def keyid_wrong_type(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.sig_file["signatures"][1]["keyid"] = 7


def sig_not_base64(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.sig_file["signatures"][0]["sig"] = "not*base64!"


def sig_wrong_length(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.sig_file["signatures"][0]["sig"] = base64.b64encode(b"\x00" * 63).decode()


def keyid_not_hex(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.sig_file["signatures"][0]["keyid"] = "ALICE"


def sig_file_not_json(w: World) -> None:
    w.sig_file = '{"payload": '


def unknown_key_id(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.sig_file["signatures"][0]["keyid"] = "00" * 32


def untrusted_key(w: World) -> None:
    w.sig_file = signed("alice", "mallory")


def revoked_key(w: World) -> None:
    w.trust = write_trust(w.tmp / "keys", 2, ("alice", "bob", "carol"), revoked=("carol",))
    w.sig_file = signed("alice", "carol")


def same_signature_twice(w: World) -> None:
    w.sig_file = signed("alice")
    w.sig_file["signatures"].append(copy.deepcopy(w.sig_file["signatures"][0]))


def past_expires(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.now = datetime(2027, 1, 31, tzinfo=UTC)


def older_version(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.accepted_version = 5


def wrong_policy_digest(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.loaded_digest = "sha256:" + "cd" * 32


def rule_file_edited_after_signing(w: World) -> None:
    policies = w.tmp / "policies"
    policies.mkdir()
    rules = policies / "limits.yaml"
    rules.write_text("rules: []\n")
    w.yaml = pin_policy_digest(YAML, rules_digest(policies))
    w.sig_file = signed("alice", "bob", yaml=w.yaml)
    w.extra["want"] = rules_digest(policies)
    rules.write_text("rules: []  # edited\n")
    w.loaded_digest = rules_digest(policies)


def unpinned_configuration(w: World) -> None:
    w.yaml = YAML.replace(f'policy_digest: "{PIN}"\n'.encode(), b"")
    w.sig_file = signed("alice", "bob", yaml=w.yaml)


def payload_version_not_the_yamls(w: World) -> None:
    payload = {**payload_of(YAML), "version": 5}
    w.sig_file = {
        "payload": payload,
        "signatures": [entry("alice", payload), entry("bob", payload)],
    }


def payload_expires_not_the_yamls(w: World) -> None:
    payload = {**payload_of(YAML), "expires": "2099-01-01T00:00:00Z"}
    w.sig_file = {
        "payload": payload,
        "signatures": [entry("alice", payload), entry("bob", payload)],
    }


def no_signature_file(w: World) -> None:
    w.sig_file = None


def malformed_pem(w: World) -> None:
    keys = w.tmp / "keys"
    write_trust(keys, 2, ("alice", "bob", "carol"))
    (keys / "bob.pem").write_text(
        "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"
    )
    try:
        load_trust(keys)
    except KeyFileError as exc:
        w.trust = exc
    w.sig_file = signed("alice", "bob")


def trust_threshold_above_signers(w: World) -> None:
    keys = w.tmp / "keys"
    write_trust(keys, 1, ("alice",))
    (keys / "trust.yaml").write_text(
        (keys / "trust.yaml").read_text().replace("threshold: 1", "threshold: 3")
    )
    try:
        load_trust(keys)
    except TrustFileError as exc:
        w.trust = exc
    w.sig_file = signed("alice", "bob")


def yaml_without_version(w: World) -> None:
    w.sig_file = signed("alice", "bob")
    w.yaml = YAML.replace(b"version: 4\n", b"")


@dataclass(frozen=True)
class Case:
    build: Callable[[World], None]
    findings: Callable[[World], list[tuple[str, str]]]
    exit_code: int
    valid: tuple[str, ...] = ()


A, B, C, M = KEYID["alice"], KEYID["bob"], KEYID["carol"], KEYID["mallory"]
YAML_SHA = _sha(YAML)


def none(w: World) -> list[tuple[str, str]]:
    return []


CASES: dict[str, Case] = {
    "valid: 2 of 3": Case(valid_two_of_three, none, 0, ("alice", "bob")),
    "valid: 3 of 3": Case(valid_three_of_three, none, 0, ("alice", "bob", "carol")),
    "valid: an untrusted extra signature does not count": Case(
        valid_despite_an_untrusted_extra_signature,
        lambda w: [("key_untrusted", f"key {M} (signer 'mallory') is not a trusted signer")],
        0,
        ("alice", "bob"),
    ),
    "valid: no accepted version or loaded digest to compare": Case(
        valid_without_the_optional_checks, none, 0, ("alice", "bob")
    ),
    "a flipped byte in the YAML": Case(
        yaml_flipped_byte,
        lambda w: [
            (
                "payload_mismatch",
                "payload config_sha256 does not match compliance.yaml "
                f"(want: {YAML_SHA}, got: {w.extra['got']})",
            )
        ],
        1,
        ("alice", "bob"),
    ),
    "a flipped byte in a signature": Case(
        signature_flipped_byte,
        lambda w: [
            (
                "signature_invalid",
                f"signatures[0] by key {A} (signer 'alice') does not verify over the payload",
            ),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        1,
        ("bob",),
    ),
    "a signature with a missing field": Case(
        sig_missing_field,
        lambda w: [
            ("sig_file_malformed", "signatures[0]: missing field 'sig'"),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        2,
        ("bob",),
    ),
    "a payload with a missing field": Case(
        payload_missing_field,
        lambda w: [
            ("sig_file_malformed", "payload: missing field 'version'"),
            ("threshold_not_met", "2 of 3 needed, 0 valid"),
        ],
        2,
    ),
    "a signature file without signatures": Case(
        sig_file_missing_signatures,
        lambda w: [
            ("sig_file_malformed", "missing field 'signatures'"),
            ("threshold_not_met", "2 of 3 needed, 0 valid"),
        ],
        2,
    ),
    "a payload field of the wrong type": Case(
        payload_wrong_type,
        lambda w: [
            ("sig_file_malformed", "payload.version: wrong type (want: integer, got: string)"),
            ("threshold_not_met", "2 of 3 needed, 0 valid"),
        ],
        2,
    ),
    "a key id of the wrong type": Case(
        keyid_wrong_type,
        lambda w: [
            ("sig_file_malformed", "signatures[1].keyid: wrong type (want: string, got: integer)"),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        2,
        ("alice",),
    ),
    "a sig that is not base64": Case(
        sig_not_base64,
        lambda w: [
            ("sig_file_malformed", "signatures[0].sig: not base64"),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        2,
        ("bob",),
    ),
    "a sig of the wrong length": Case(
        sig_wrong_length,
        lambda w: [
            ("sig_file_malformed", "signatures[0].sig: wrong length (want: 64 bytes, got: 63)"),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        2,
        ("bob",),
    ),
    "a key id that is not 64 hex": Case(
        keyid_not_hex,
        lambda w: [
            (
                "sig_file_malformed",
                "signatures[0].keyid: not a key id (want: 64 lowercase hex, got: 'ALICE')",
            ),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        2,
        ("bob",),
    ),
    "a signature file that is not JSON": Case(
        sig_file_not_json,
        lambda w: [
            ("sig_file_malformed", "not JSON: Expecting value: line 1 column 13 (char 12)"),
            ("threshold_not_met", "2 of 3 needed, 0 valid"),
        ],
        2,
    ),
    "an unknown key id": Case(
        unknown_key_id,
        lambda w: [
            ("key_untrusted", f"key {'00' * 32} (signer 'alice') is not a trusted signer"),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        1,
        ("bob",),
    ),
    "a signature by an untrusted key": Case(
        untrusted_key,
        lambda w: [
            ("key_untrusted", f"key {M} (signer 'mallory') is not a trusted signer"),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        1,
        ("alice",),
    ),
    "a signature by a revoked key": Case(
        revoked_key,
        lambda w: [
            ("key_revoked", f"key {C} (signer 'carol') is revoked; its signature does not count"),
            ("threshold_not_met", "2 of 2 needed, 1 valid"),
        ],
        1,
        ("alice",),
    ),
    "the same signature twice": Case(
        same_signature_twice,
        lambda w: [
            (
                "key_counted_twice",
                f"key {A} (signer 'alice') signed again in signatures[1] "
                "(first in signatures[0]); a key counts once",
            ),
            ("threshold_not_met", "2 of 3 needed, 1 valid"),
        ],
        1,
        ("alice",),
    ),
    "a configuration past expires": Case(
        past_expires,
        lambda w: [("expired", "expired at 2027-01-31T00:00:00Z (now: 2027-01-31T00:00:00Z)")],
        1,
        ("alice", "bob"),
    ),
    "an older version": Case(
        older_version, lambda w: [("rollback", "version 4 < accepted 5")], 1, ("alice", "bob")
    ),
    "a policy_digest that is not the loaded rules'": Case(
        wrong_policy_digest,
        lambda w: [
            (
                "policy_digest_mismatch",
                f"policy digest mismatch (want: {PIN}, got: {'sha256:' + 'cd' * 32})",
            )
        ],
        1,
        ("alice", "bob"),
    ),
    "a rule file edited after signing": Case(
        rule_file_edited_after_signing,
        lambda w: [
            (
                "policy_digest_mismatch",
                f"policy digest mismatch (want: {w.extra['want']}, got: {w.loaded_digest})",
            )
        ],
        1,
        ("alice", "bob"),
    ),
    "a configuration that pins no policy digest": Case(
        unpinned_configuration,
        lambda w: [
            ("policy_digest_mismatch", f"policy digest mismatch (want: none pinned, got: {PIN})")
        ],
        1,
        ("alice", "bob"),
    ),
    "a signed version that is not the YAML's": Case(
        payload_version_not_the_yamls,
        lambda w: [
            ("payload_mismatch", "payload version does not match compliance.yaml (want: 5, got: 4)")
        ],
        1,
        ("alice", "bob"),
    ),
    "a signed expires that is not the YAML's": Case(
        payload_expires_not_the_yamls,
        lambda w: [
            (
                "payload_mismatch",
                "payload expires does not match compliance.yaml "
                "(want: 2099-01-01T00:00:00Z, got: 2027-01-31T00:00:00Z)",
            )
        ],
        1,
        ("alice", "bob"),
    ),
    "no signature file": Case(
        no_signature_file,
        lambda w: [
            ("unsigned", "no signature file (compliance.sig.json)"),
            ("threshold_not_met", "2 of 3 needed, 0 valid"),
        ],
        1,
    ),
    "a malformed PEM in the keys directory": Case(
        malformed_pem,
        lambda w: [
            (
                "key_file_malformed",
                f"{w.tmp / 'keys' / 'bob.pem'}: key_file_malformed: "
                "not a PUBLIC KEY (SubjectPublicKeyInfo) PEM",
            )
        ],
        2,
    ),
    "a trust file whose threshold exceeds its signers": Case(
        trust_threshold_above_signers,
        lambda w: [
            (
                "key_file_malformed",
                f"{w.tmp / 'keys' / 'trust.yaml'}:2: trust_threshold_invalid: threshold 3 > 1 "
                "trusted signer(s); add or trust more keys, or lower the threshold "
                "(1 <= threshold <= 1)",
            )
        ],
        2,
    ),
    "a YAML without a version": Case(
        yaml_without_version,
        lambda w: [
            ("config_malformed", "compliance.yaml: version must be an integer >= 1 (got: None)")
        ],
        2,
        ("alice", "bob"),
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_verify_when_given_the_case_then_exactly_its_findings(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    world = World(tmp_path)
    case.build(world)

    report = world.run()

    assert [(f.code, f.message) for f in report.findings] == case.findings(world)
    assert report.exit_code == case.exit_code
    assert report.ok is (case.exit_code == 0)
    assert report.valid_signers == case.valid


def test_verify_when_a_finding_is_about_one_key_then_it_names_the_key(tmp_path: Path) -> None:
    world = World(tmp_path)
    untrusted_key(world)

    report = world.run()

    assert [(f.code, f.keyid) for f in report.findings] == [
        ("key_untrusted", M),
        ("threshold_not_met", None),
    ]
    assert [(s.keyid, s.name, s.result) for s in report.signatures] == [
        (A, "alice", "valid"),
        (M, None, "key_untrusted"),
    ]


def test_verify_report_when_dumped_then_json_with_every_field(tmp_path: Path) -> None:
    world = World(tmp_path)
    signature_flipped_byte(world)

    data = json.loads(json.dumps(world.run().to_json()))

    assert data["ok"] is False
    assert data["valid_signers"] == ["bob"]
    assert (data["threshold"], data["trusted"], data["version"]) == (2, 3, 4)
    assert data["config_sha256"] == YAML_SHA
    assert data["policy_digest"] == PIN
    assert [f["code"] for f in data["findings"]] == ["signature_invalid", "threshold_not_met"]
    assert data["findings"][0]["keyid"] == A


def test_verify_when_the_trust_is_empty_then_nothing_is_enough(tmp_path: Path) -> None:
    report = verify(YAML, signed("alice"), load_trust(tmp_path / "nokeys"), NOW, None, PIN)

    assert [(f.code, f.message) for f in report.findings] == [
        ("key_untrusted", f"key {A} (signer 'alice') is not a trusted signer"),
        ("threshold_not_met", "1 of 0 needed, 0 valid"),
    ]


# --- payload --------------------------------------------------------------------------


def test_payload_of_when_shipped_shape_then_sha_version_and_expires() -> None:
    assert payload_of(YAML) == {
        "config_sha256": YAML_SHA,
        "version": 4,
        "expires": "2027-01-31T00:00:00Z",
    }


def test_payload_of_when_expires_unquoted_or_in_another_zone_then_utc_text() -> None:
    unquoted = b"version: 1\nexpires: 2027-01-31T01:00:00+01:00\n"

    assert payload_of(unquoted)["expires"] == "2027-01-31T00:00:00Z"


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (b"version: 1\nversion: 2\nexpires: '2027-01-31T00:00:00Z'\n",
         "compliance.yaml: key 'version' appears twice (line 2)"),
        (b"version: true\nexpires: '2027-01-31T00:00:00Z'\n",
         "compliance.yaml: version must be an integer >= 1 (got: True)"),
        (b"version: 1\nexpires: 2027-01-31\n",
         "compliance.yaml: expires must be an ISO-8601 time with a zone "
         "(got: datetime.date(2027, 1, 31))"),
        (b"version: 1\nexpires: '2027-01-31T00:00:00'\n",
         "compliance.yaml: expires must be an ISO-8601 time with a zone "
         "(got: '2027-01-31T00:00:00')"),
        (b"- 1\n", "compliance.yaml is not a mapping"),
    ],
    ids=["duplicate version", "boolean version", "date expires", "expires without zone", "list"],
)  # fmt: skip
def test_payload_of_when_yaml_unusable_then_payload_error(yaml: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        payload_of(yaml)

    assert str(caught.value) == message


def test_pinned_digest_when_pinned_or_not() -> None:
    assert pinned_digest(YAML) == PIN
    assert pinned_digest(b"version: 1\nexpires: '2027-01-31T00:00:00Z'\n") is None


# --- sign -----------------------------------------------------------------------------


def test_sign_when_first_then_payload_and_one_signature_over_its_canonical_json() -> None:
    sig_file, dropped = sign(None, YAML, KEYS["alice"], "alice", NOW)

    assert dropped == []
    assert sig_file["payload"] == payload_of(YAML)
    assert sig_file["signatures"] == [entry("alice", payload_of(YAML))]


def test_sign_when_the_yaml_changed_then_old_signatures_dropped_and_returned() -> None:
    old = signed("alice", "bob")
    changed = YAML.replace(b"version: 4", b"version: 5")

    new, dropped = sign(old, changed, KEYS["carol"], "carol", NOW)

    assert dropped == old["signatures"]
    assert new["payload"]["version"] == 5
    assert [s["signer"] for s in new["signatures"]] == ["carol"]


def test_sign_when_the_same_key_signs_again_then_its_signature_is_replaced() -> None:
    old = signed("alice", "bob")

    new, dropped = sign(old, YAML, KEYS["alice"], "alice", NOW)

    assert dropped == []
    assert [s["signer"] for s in new["signatures"]] == ["bob", "alice"]


def test_sign_when_the_signature_file_is_malformed_then_refused() -> None:
    old = signed("alice")
    old["signatures"][0]["sig"] = "not*base64!"

    with pytest.raises(SigFileError) as caught:
        sign(old, YAML, KEYS["bob"], "bob", NOW)

    assert caught.value.problems == ("signatures[0].sig: not base64",)


# --- pin ------------------------------------------------------------------------------


def test_pin_when_a_pin_exists_then_only_its_value_changes_and_its_comment_stays() -> None:
    text = YAML.replace(f'"{PIN}"'.encode(), f'"{PIN}"  # keep me'.encode())
    new = "sha256:" + "cd" * 32

    pinned = pin_policy_digest(text, new)

    assert pinned == text.replace(PIN.encode(), new.encode())


def test_pin_when_no_pin_then_one_line_after_expires() -> None:
    text = b"# head\nversion: 1\nexpires: '2027-01-31T00:00:00Z'  # end\nrisk: {}\n"

    pinned = pin_policy_digest(text, PIN)

    assert pinned.decode().splitlines() == [
        "# head",
        "version: 1",
        "expires: '2027-01-31T00:00:00Z'  # end",
        f'policy_digest: "{PIN}"  # the rule files it approves (apex-oms compliance pin)',
        "risk: {}",
    ]


def test_pin_when_already_pinned_then_the_same_bytes() -> None:
    assert pin_policy_digest(YAML, PIN) == YAML


@pytest.mark.parametrize(
    ("text", "digest", "message"),
    [
        (YAML, "sha256:short", "not a policy digest (want: sha256:<64 hex>, got: 'sha256:short')"),
        (b"version: 1\npolicy_digest: >\n  sha256:x\n", "sha256:" + "cd" * 32,
         "line 2: policy_digest is not a one-line value; write it as "
         '`policy_digest: "sha256:..."`'),
        (b"version: [\n", "sha256:" + "cd" * 32,
         "compliance.yaml: line 2: did not find expected node content"),
        (b"version: 1\npolicy_digest:\n  sha256:x\n", "sha256:" + "cd" * 32,
         "pinning would change more than the policy_digest line; edit it by hand"),
    ],
    ids=["bad digest", "block scalar", "not YAML", "value on the next line"],
)  # fmt: skip
def test_pin_when_it_cannot_be_one_line_then_refused(
    text: bytes, digest: str, message: str
) -> None:
    with pytest.raises(PinError) as caught:
        pin_policy_digest(text, digest)

    assert str(caught.value) == message


# --- OpenSSL --------------------------------------------------------------------------


def test_openssl_when_given_payload_json_and_sig_bin_then_verifies_one_signature(
    tmp_path: Path,
) -> None:
    """SPEC section 12: an auditor checks a signature without our code."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl must be installed: SPEC section 12 depends on it"
    sig_file = signed("alice")
    (tmp_path / "alice.pem").write_bytes(public_pem(KEYS["alice"].public_key()))
    # what an auditor writes with jq or a few lines of any language
    (tmp_path / "payload.json").write_bytes(canonical_json(sig_file["payload"]))
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(sig_file["signatures"][0]["sig"]))
    command = [
        openssl, "pkeyutl", "-verify", "-pubin", "-inkey", "alice.pem", "-rawin",
        "-in", "payload.json", "-sigfile", "sig.bin",
    ]  # fmt: skip

    good = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    (tmp_path / "payload.json").write_bytes(canonical_json({**sig_file["payload"], "version": 5}))
    bad = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)

    assert (good.returncode, good.stdout.strip()) == (0, "Signature Verified Successfully")
    assert bad.returncode == 1
    assert "Signature Verification Failure" in bad.stdout
