"""The service enforces the signed compliance configuration (issue 9, item 4, 5, 9):
verified on start and on every reload, out of force the instant it expires, a
rollback refused across restarts and replicas, a revoked key counting no more
after a reload, and every verification in the chain. Never an approval while
no valid configuration is in force."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from adapters.sql import SqlStore
from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from tests.conftest import FixedClock, OrderBuilder, StartRuntime, role_tokens
from tests.signing_support import Officers, officers


@dataclass
class Service:
    runtime: Runtime
    client: TestClient[Any]
    auth: dict[str, dict[str, str]]

    def get(self, path: str, role: str = "admin", **kw: Any) -> Any:
        return self.client.get(path, headers=self.auth[role], **kw)

    def post(self, path: str, role: str = "trader", **kw: Any) -> Any:
        return self.client.post(path, headers=self.auth[role], **kw)

    def evaluate(self, order: dict[str, Any]) -> dict[str, Any]:
        response = self.post("/v1/orders/evaluate", json=order)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def reload(self) -> Any:
        return self.post("/v1/policies/reload", "compliance")

    def verifications(self) -> list[dict[str, Any]]:
        page = self.get("/v1/compliance/verifications", "auditor", params={"limit": 1000})
        assert page.status_code == 200, page.text
        records: list[dict[str, Any]] = page.json()["verifications"]
        return records


@pytest.fixture
def serve(start_runtime: StartRuntime) -> Iterator[Any]:
    @contextmanager
    def run(team: Officers) -> Iterator[Service]:
        runtime = start_runtime(policies=team.policies, keys=team.keys)
        with TestClient(create_app(runtime)) as client:
            tokens = role_tokens(runtime)
            auth = {r: {"Authorization": f"Bearer {t}"} for r, t in tokens.items()}
            yield Service(runtime, client, auth)

    yield run


def codes(record: dict[str, Any]) -> list[str]:
    return [r["code"] for r in record["reasons"]]


def blocked_by_compliance(record: dict[str, Any], *want: str) -> None:
    assert record["order_status"] == "blocked", record
    assert "compliance_failure" in record["fail_closed_triggers"]
    assert set(want) <= set(codes(record)), codes(record)


# --- start --------------------------------------------------------------------------


def test_start_when_signed_by_the_threshold_then_in_force_approves_and_records_each_key(
    serve: Any, tmp_path: Path, make_order: OrderBuilder
) -> None:
    team = officers(tmp_path)
    with serve(team) as svc:
        record = svc.evaluate(make_order())
        view = svc.get("/v1/compliance", "compliance").json()
        ready = svc.client.get("/readyz")
        (start,) = svc.verifications()

    assert record["order_status"] == "evaluated"
    assert record["compliance_version"] == 1
    assert (view["in_force"], view["trust"], view["signers"]) == (True, "signed", ["alice", "bob"])
    assert view["trust_root"]["threshold"] == 2
    assert [s["status"] for s in view["trust_root"]["signers"]] == ["trusted"] * 3
    assert view["verification"]["hash"] == start["hash"]
    assert ready.status_code == 200 and ready.json()["compliance"]["trust"] == "signed"
    assert (start["trigger"], start["outcome"], start["code"], start["trust"]) == (
        "start", "valid", None, "signed")  # fmt: skip
    assert [(s["signer"], s["keyid"], s["result"]) for s in start["signatures"]] == [
        ("alice", team.keyid("alice"), "valid"),
        ("bob", team.keyid("bob"), "valid"),
    ]
    assert start["payload"]["version"] == 1 and len(start["config_sha256"]) == 64


def test_start_when_a_byte_of_the_yaml_flipped_after_signing_then_every_order_blocked_and_not_ready(
    serve: Any, tmp_path: Path, make_order: OrderBuilder
) -> None:
    team = officers(tmp_path)
    text = team.config.read_text("utf-8").replace(
        "max_order_quantity: 10000", "max_order_quantity: 90000"
    )
    team.config.write_text(text, "utf-8")
    with serve(team) as svc:
        record = svc.evaluate(make_order())
        submit = svc.post("/v1/orders", json=make_order())
        ready = svc.client.get("/readyz")
        (start,) = svc.verifications()

    blocked_by_compliance(record, "COMPLIANCE_NOT_VERIFIED")
    reason = next(r for r in record["reasons"] if r["code"] == "COMPLIANCE_NOT_VERIFIED")
    assert "payload_mismatch" in reason["detail"] and "config_sha256" in reason["detail"]
    assert submit.status_code == 403
    assert ready.status_code == 503
    assert any(r.startswith("compliance: payload_mismatch") for r in ready.json()["reasons"])
    assert (start["outcome"], start["code"], start["in_force"]) == (
        "invalid", "payload_mismatch", False)  # fmt: skip


def test_start_when_a_rule_file_is_edited_after_signing_then_digest_mismatch_with_want_and_got(
    serve: Any, tmp_path: Path, make_order: OrderBuilder
) -> None:
    team = officers(tmp_path)
    pinned = team.config.read_text("utf-8").split("policy_digest:")[1].split()[0].strip("\"'")
    rules = team.policies / "order_limits.yaml"
    rules.write_text(rules.read_text("utf-8") + "\n# edited after signing\n", "utf-8")
    with serve(team) as svc:
        record = svc.evaluate(make_order())
        loaded = svc.get("/v1/policies").json()["policy_digest"]

    blocked_by_compliance(record, "POLICY_DIGEST_MISMATCH")
    assert codes(record) == ["POLICY_DIGEST_MISMATCH"]  # the signatures themselves hold
    (reason,) = record["reasons"]
    assert f"want: {pinned}" in reason["detail"] and f"got: {loaded}" in reason["detail"]


def test_start_when_keys_are_set_up_but_the_configuration_is_unsigned_then_blocked_unsigned(
    serve: Any, tmp_path: Path, make_order: OrderBuilder
) -> None:
    team = officers(tmp_path, signed_by=())
    with serve(team) as svc:
        record = svc.evaluate(make_order())
        view = svc.get("/v1/compliance", "auditor").json()

    blocked_by_compliance(record, "COMPLIANCE_NOT_VERIFIED")
    assert (view["in_force"], view["trust"], view["code"]) == (False, "none", "unsigned")


def test_start_when_one_signature_of_the_threshold_is_by_an_untrusted_key_then_threshold_not_met(
    serve: Any, tmp_path: Path, make_order: OrderBuilder
) -> None:
    team = officers(tmp_path)
    team.trust(2, "alice", "carol")  # bob's key is no longer trusted
    with serve(team) as svc:
        record = svc.evaluate(make_order())
        (start,) = svc.verifications()

    blocked_by_compliance(record, "COMPLIANCE_NOT_VERIFIED")
    assert start["code"] == "threshold_not_met"
    assert "2 of 2 needed, 1 valid" in start["message"]
    assert [s["result"] for s in start["signatures"]] == ["valid", "key_untrusted"]


# --- while running --------------------------------------------------------------------


def test_expiry_when_the_clock_passes_expires_then_blocked_at_once_and_one_expiry_record(
    serve: Any, tmp_path: Path, make_order: OrderBuilder, clock: FixedClock
) -> None:
    team = officers(tmp_path)
    team.set_version(1, expires="2026-11-30T15:00:10Z")
    team.pin()
    team.sign("alice", "bob", fresh=True)
    with serve(team) as svc:
        before = svc.evaluate(make_order())
        clock.advance(10)
        after = svc.evaluate(make_order())
        ready = svc.client.get("/readyz")
        first = svc.runtime.gateway.recheck_compliance()
        again = svc.runtime.gateway.recheck_compliance()
        records = svc.verifications()

    assert before["order_status"] == "evaluated"
    blocked_by_compliance(after, "COMPLIANCE_EXPIRED")
    assert codes(after) == ["COMPLIANCE_EXPIRED"]
    assert "expired at 2026-11-30T15:00:10Z" in after["reasons"][0]["detail"]
    assert ready.status_code == 503
    assert first is not None and first.code == "expired"
    assert again is None  # recorded once
    assert [(r["trigger"], r["code"]) for r in records] == [("start", None), ("expiry", "expired")]


def test_reload_when_a_newer_version_is_signed_then_in_force_and_the_older_refused_ever_after(
    serve: Any, tmp_path: Path, make_order: OrderBuilder
) -> None:
    team = officers(tmp_path)
    old_yaml, old_sig = team.config.read_bytes(), team.sig_file.read_bytes()
    team.set_version(2)
    team.sign("alice", "carol", fresh=True)
    with serve(team) as svc:
        assert svc.get("/v1/compliance", "compliance").json()["version"] == 2
        team.config.write_bytes(old_yaml)
        team.sig_file.write_bytes(old_sig)
        refused = svc.reload()
        still = svc.evaluate(make_order())
    with serve(team) as svc:  # a restart on the same store with version 1 on disk
        restarted = svc.evaluate(make_order())
        view = svc.get("/v1/compliance", "compliance").json()

    body = refused.json()
    assert (refused.status_code, body["code"], body["finding"]) == (
        422, "compliance_invalid", "rollback")  # fmt: skip
    assert "version 1 < accepted 2" in body["detail"]
    assert still["order_status"] == "evaluated" and still["compliance_version"] == 2
    blocked_by_compliance(restarted, "COMPLIANCE_NOT_VERIFIED")
    assert (view["in_force"], view["code"]) == (False, "rollback")


def test_reload_when_a_signer_is_revoked_then_the_configuration_in_force_lapses_with_a_record(
    serve: Any, tmp_path: Path, make_order: OrderBuilder
) -> None:
    team = officers(tmp_path)
    with serve(team) as svc:
        assert svc.evaluate(make_order())["order_status"] == "evaluated"
        team.trust(2, revoked=("bob",))
        refused = svc.reload()
        record = svc.evaluate(make_order())
        records = svc.verifications()
        team.sign("carol")  # rotation: a third officer signs in bob's place
        accepted = svc.reload()
        restored = svc.evaluate(make_order())

    assert (refused.status_code, refused.json()["finding"]) == (422, "threshold_not_met")
    blocked_by_compliance(record, "COMPLIANCE_NOT_VERIFIED")
    assert [(r["trigger"], r["in_force"]) for r in records] == [
        ("start", True), ("reload", False), ("trust", False)]  # fmt: skip
    revoked = records[1]["signatures"][1]
    assert (revoked["signer"], revoked["result"]) == ("bob", "key_revoked")
    assert accepted.status_code == 200
    assert accepted.json()["compliance"]["signers"] == ["alice", "carol"]
    assert restored["order_status"] == "evaluated"


def test_reload_when_the_new_set_does_not_verify_then_422_and_the_set_in_force_judges_on(
    serve: Any, tmp_path: Path, make_order: OrderBuilder
) -> None:
    team = officers(tmp_path)
    with serve(team) as svc:
        digest = svc.get("/v1/policies").json()["policy_digest"]
        rules = team.policies / "order_limits.yaml"
        rules.write_text(rules.read_text("utf-8").replace("gt: {param", "ge: {param", 1))
        refused = svc.reload()
        after = svc.get("/v1/policies").json()["policy_digest"]
        record = svc.evaluate(make_order())

    assert (refused.status_code, refused.json()["finding"]) == (422, "policy_digest_mismatch")
    assert after == digest
    assert record["order_status"] == "evaluated"


def test_replicas_when_one_accepts_a_newer_version_then_the_other_leaves_the_older_at_its_recheck(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    team = officers(tmp_path)
    one = start_runtime(policies=team.policies, keys=team.keys)
    team2 = officers(tmp_path / "newer")
    team2.private = team.private
    for name in team.private:
        (team2.keys / f"{name}.pem").write_bytes((team.keys / f"{name}.pem").read_bytes())
    team2.trust(2)
    team2.set_version(3)
    team2.pin()
    team2.sign("alice", "bob", fresh=True)
    two = start_runtime(policies=team2.policies, keys=team2.keys)

    lapsed = one.gateway.recheck_compliance()

    assert two.gateway.standing.in_force and two.gateway.standing.version == 3
    assert lapsed is not None
    assert (lapsed.in_force, lapsed.code) == (False, "rollback")
    assert "version 1 < accepted 3" in lapsed.message


# --- development trust ------------------------------------------------------------------


def test_development_when_no_signer_is_configured_then_in_force_as_development_never_for_live(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    runtime = start_runtime()
    standing = runtime.gateway.standing
    root = (tmp_path / "development" / "root.pem").stat()

    assert (standing.in_force, standing.trust) == (True, "development")
    assert standing.record["trigger"] == "start"
    assert standing.record["development_key"]["keyid"] == standing.record["signatures"][0]["keyid"]
    assert oct(root.st_mode & 0o777) == "0o600"
    facts = runtime.gateway._desk.compliance_facts(standing, "live")
    assert (facts.trust, facts.live_unlocked) == ("development", False)


# --- attacks: none ever yields an approval ------------------------------------------------


@contextmanager
def _on_sqlite(team: Officers, tmp_path: Path, clock: FixedClock) -> Iterator[Service]:
    settings = Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'apex.db'}",
        policies=team.policies,
        keys=team.keys,
    )
    runtime = Runtime.start(settings, clock=clock)
    try:
        with TestClient(create_app(runtime)) as client:
            tokens = role_tokens(runtime)
            auth = {r: {"Authorization": f"Bearer {t}"} for r, t in tokens.items()}
            yield Service(runtime, client, auth)
    finally:
        runtime.close()


def _flip_yaml(team: Officers) -> None:
    data = bytearray(team.config.read_bytes())
    data[data.index(b"max_spread_bps: 25") + len("max_spread_bps: 2")] = ord("9")
    team.config.write_bytes(bytes(data))


def _flip_sig(team: Officers) -> None:
    import base64
    import json

    sig = json.loads(team.sig_file.read_bytes())
    raw = bytearray(base64.b64decode(sig["signatures"][0]["sig"]))
    raw[10] ^= 0x01
    sig["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    team.sig_file.write_text(json.dumps(sig), "utf-8")


def _edit_sig(change: Any) -> Any:
    def attack(team: Officers) -> None:
        import json

        sig = json.loads(team.sig_file.read_bytes())
        change(sig)
        team.sig_file.write_text(json.dumps(sig), "utf-8")

    return attack


def _untrusted(team: Officers) -> None:
    team.trust(1, "carol")  # only carol is trusted; alice and bob signed


def _revoked(team: Officers) -> None:
    team.trust(2, revoked=("bob",))


def _same_twice(team: Officers) -> None:
    import json

    sig = json.loads(team.sig_file.read_bytes())
    sig["signatures"] = [sig["signatures"][0]] * 2
    team.sig_file.write_text(json.dumps(sig), "utf-8")


def _expired(team: Officers) -> None:
    team.set_version(1, expires="2026-11-01T00:00:00Z")
    team.pin()
    team.sign("alice", "bob", fresh=True)


def _foreign_pin(team: Officers) -> None:
    text = team.config.read_text("utf-8")
    pinned = text.split("policy_digest:")[1].split()[0]
    team.config.write_text(text.replace(pinned, '"sha256:' + "ab" * 32 + '"'), "utf-8")
    team.sign("alice", "bob", fresh=True)


def _rule_edited(team: Officers) -> None:
    rules = team.policies / "market_risk.yaml"
    rules.write_text(rules.read_text("utf-8") + "\n", "utf-8")


def _bad_pem(team: Officers) -> None:
    (team.keys / "bob.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n", "utf-8")


def _rsa_pem(team: Officers) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (team.keys / "bob.pem").write_bytes(pem)


def _threshold_high(team: Officers) -> None:
    text = (team.keys / "trust.yaml").read_text("utf-8")
    (team.keys / "trust.yaml").write_text(text.replace("threshold: 2", "threshold: 4"), "utf-8")


def _threshold_zero(team: Officers) -> None:
    text = (team.keys / "trust.yaml").read_text("utf-8")
    (team.keys / "trust.yaml").write_text(text.replace("threshold: 2", "threshold: 0"), "utf-8")


ATTACKS: list[tuple[str, Any, str, str]] = [
    ("flipped-byte-in-yaml", _flip_yaml, "COMPLIANCE_NOT_VERIFIED", "payload_mismatch"),
    ("flipped-byte-in-signature", _flip_sig, "COMPLIANCE_NOT_VERIFIED", "threshold_not_met"),
    ("sig-missing-field", _edit_sig(lambda s: s["signatures"][0].pop("sig")),
     "COMPLIANCE_NOT_VERIFIED", "sig_file_malformed"),
    ("sig-wrong-type", _edit_sig(lambda s: s["payload"].update(version="1")),
     "COMPLIANCE_NOT_VERIFIED", "sig_file_malformed"),
    ("sig-not-base64", _edit_sig(lambda s: s["signatures"][0].update(sig="%%%")),
     "COMPLIANCE_NOT_VERIFIED", "sig_file_malformed"),
    ("sig-unknown-keyid", _edit_sig(lambda s: s["signatures"][0].update(keyid="cd" * 32)),
     "COMPLIANCE_NOT_VERIFIED", "threshold_not_met"),
    ("untrusted-signers", _untrusted, "COMPLIANCE_NOT_VERIFIED", "threshold_not_met"),
    ("revoked-signer", _revoked, "COMPLIANCE_NOT_VERIFIED", "threshold_not_met"),
    ("same-signature-twice", _same_twice, "COMPLIANCE_NOT_VERIFIED", "threshold_not_met"),
    ("expired", _expired, "COMPLIANCE_EXPIRED", "expired"),
    ("pin-not-the-loaded-rules", _foreign_pin, "POLICY_DIGEST_MISMATCH", "policy_digest_mismatch"),
    ("rule-file-edited-after-signing", _rule_edited, "POLICY_DIGEST_MISMATCH",
     "policy_digest_mismatch"),
    ("malformed-pem", _bad_pem, "COMPLIANCE_NOT_VERIFIED", "key_file_malformed"),
    ("wrong-type-pem", _rsa_pem, "COMPLIANCE_NOT_VERIFIED", "key_file_malformed"),
    ("threshold-above-signers", _threshold_high, "COMPLIANCE_NOT_VERIFIED", "key_file_malformed"),
    ("threshold-below-one", _threshold_zero, "COMPLIANCE_NOT_VERIFIED", "key_file_malformed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("attack", "check_code", "finding"), [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS]
)
def test_attack_when_the_service_starts_on_it_then_every_order_blocked_with_its_reason(
    tmp_path: Path,
    make_order: OrderBuilder,
    clock: FixedClock,
    attack: Any,
    check_code: str,
    finding: str,
) -> None:
    # the files are judged the same on any store: each attack runs on SQLite
    team = officers(tmp_path)
    attack(team)
    with _on_sqlite(team, tmp_path, clock) as svc:
        svc.post("/v1/mode", "compliance", json={"mode": "simulation", "reason": "attack"})
        evaluated = svc.evaluate(make_order())
        submitted = svc.post("/v1/orders", json=make_order())
        view = svc.get("/v1/compliance", "auditor").json()
        (start,) = svc.verifications()

    blocked_by_compliance(evaluated, check_code)
    assert submitted.status_code == 403
    assert submitted.json()["order_status"] == "blocked"
    assert view["in_force"] is False
    assert finding in [f["code"] for f in start["findings"]] or start["code"] == finding
    assert start["outcome"] == "invalid"


# --- compliance verify against the service's store ---------------------------------------


def test_cli_verify_when_the_service_has_a_store_then_rollback_judged_and_the_verdict_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.cli_support import run_main, use_home

    team = officers(tmp_path)
    team.set_version(1, expires="2099-12-31T00:00:00Z")  # judged on the real clock here
    team.pin()
    team.sign("alice", "bob", fresh=True)
    use_home(tmp_path, monkeypatch, team.policies)
    monkeypatch.setenv("APEX_KEYS", str(team.keys))
    settings = Settings.from_env()
    runtime = Runtime.start(settings, clock=FixedClock())  # the service's store exists now
    runtime.close()
    argv = ("compliance", "verify", "--json", str(team.policies))

    valid = run_main(capsys, argv)
    store = SqlStore(settings.database_url)
    try:
        store.transact(lambda w: w.set_setting("compliance.accepted_version", 2, FixedClock()()))
    finally:
        store.close()
    rolled_back = run_main(capsys, argv)
    offline = run_main(capsys, (*argv[:3], "--offline", str(team.policies)))
    store = SqlStore(settings.database_url)
    try:
        records = [r for _, r in store.audit_of_kind("verification", 0, 100)]
    finally:
        store.close()

    assert valid.code == 0 and json.loads(valid.out)["recorded_in"] is not None
    assert rolled_back.code == 1
    assert [f["code"] for f in json.loads(rolled_back.out)["findings"]] == ["rollback"]
    assert offline.code == 0 and json.loads(offline.out)["recorded_in"] is None
    assert [(r["trigger"], r["actor"], r["outcome"], r["code"]) for r in records] == [
        ("start", "system", "valid", None),
        ("cli", "cli", "valid", None),
        ("cli", "cli", "invalid", "rollback"),
    ]
