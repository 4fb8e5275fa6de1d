"""What-if replay (issue 12, item 7): a recorded flow judged again under the set
that judged it reproduces every verdict (`audit replay`), and under a candidate
(`policy whatif`) reports exactly the verdicts that change."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.runtime import Runtime
from tests.conftest import POLICIES, FixedClock, copy_policies
from tests.integration.cli_support import Run, run_main

OrderBuilder = Callable[..., dict[str, Any]]


def _headers(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def _use_store(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> None:
    """Point the CLI at the service's store, as an operator's shell would."""
    monkeypatch.setenv("APEX_HOME", str(runtime.settings.home))
    monkeypatch.setenv("APEX_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("APEX_POLICIES", str(POLICIES))


def candidate(tmp_path: Path, name: str, **params: int) -> Path:
    """A copy of the shipped set with some `risk.*` parameters changed."""
    directory = copy_policies(tmp_path / name)
    config = directory / "compliance.yaml"
    text = config.read_text("utf-8")
    for key, value in params.items():
        text, count = re.subn(rf"(?m)^(  {key}:) *[^#\n]*", rf"\g<1> {value} ", text)
        assert count == 1, key
    config.write_text(text, "utf-8")
    return directory


def record_flow(
    client: TestClient[Any], tokens: dict[str, str], make_order: OrderBuilder, clock: FixedClock
) -> dict[str, str]:
    """Orders of several kinds through the API: name -> order id."""
    trader = _headers(tokens, "trader")
    mode = {"mode": "simulation", "reason": "test"}
    assert client.post("/v1/mode", json=mode, headers=_headers(tokens, "compliance")).is_success
    ids: dict[str, str] = {}

    def send(name: str, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
        clock.advance(2)  # past the throttle's window and the duplicate window's reach
        answer = client.post(path, json=body, headers=trader)
        assert answer.status_code == status, answer.text
        record: dict[str, Any] = answer.json().get("record", answer.json())
        ids[name] = record["order_id"]
        return record

    send("evaluated_100", "/v1/orders/evaluate", make_order(quantity=100), 200)
    send("resting_100", "/v1/orders", make_order(quantity=100), 201)
    send("submitted_200", "/v1/orders", make_order(quantity=200, limit_price=150.3), 201)
    send("submitted_300", "/v1/orders", make_order(quantity=300, order_type="market",
                                                   limit_price=None), 201)  # fmt: skip
    send("blocked_12000", "/v1/orders", make_order(quantity=12000), 403)
    clock.advance(2)
    fresh = make_order()["context"]  # quoted now
    replaced = client.post(
        f"/v1/orders/{ids['resting_100']}/replace",
        json={"quantity": 250, "context": fresh},
        headers=trader,
    )
    assert replaced.status_code in (200, 202), replaced.text
    return ids


def judged_records(runtime: Runtime) -> list[dict[str, Any]]:
    return [r for r in runtime.store.audit_records() if "judged_on" in r]


def test_a_recorded_flow_replayed_under_the_enforced_set_reproduces_every_verdict(
    runtime: Runtime,
    client: TestClient[Any],
    tokens: dict[str, str],
    make_order: OrderBuilder,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record_flow(client, tokens, make_order, clock)
    judged = judged_records(runtime)
    _use_store(monkeypatch, runtime)

    run = run_main(capsys, ("audit", "replay", "--json"))
    text = run_main(capsys, ("audit", "replay"))

    report = json.loads(run.out)
    assert (run.code, report["ok"], report["findings"]) == (0, True, [])
    # evaluate, 4 submits and the replace: each judged decision once
    assert report["replayed"] == len(judged) == 6
    assert report["versions"] == 1
    assert text.code == 0
    assert text.out.startswith("decision replay OK: 6 recorded decisions judged again under 1")


def test_audit_replay_when_a_decision_was_not_what_its_rules_give_then_a_finding(
    runtime: Runtime,
    client: TestClient[Any],
    tokens: dict[str, str],
    make_order: OrderBuilder,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A version kept under a set's digests whose rules judge otherwise (a swapped
    row) cannot pass: loading it again gives other digests, a finding per order."""
    record_flow(client, tokens, make_order, clock)
    archive = runtime.store.policy_archive()
    record = judged_records(runtime)[0]
    kept = archive.get(record["policy_digest"], record["compliance_digest"])
    assert kept is not None
    with runtime.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE policy_versions SET compliance = compliance || '\n# x\n'")
    _use_store(monkeypatch, runtime)

    run = run_main(capsys, ("audit", "replay", "--json"))

    report = json.loads(run.out)
    assert (run.code, report["ok"], report["replayed"]) == (1, False, 0)
    assert {f["code"] for f in report["findings"]} == {"policy_version_missing"}
    assert "digests differ" in report["findings"][0]["got"]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_whatif_with_a_lower_quantity_limit_reports_exactly_the_orders_it_would_block(
    runtime: Runtime,
    client: TestClient[Any],
    tokens: dict[str, str],
    make_order: OrderBuilder,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ids = record_flow(client, tokens, make_order, clock)
    lower = candidate(tmp_path, "lower", max_order_quantity=150)
    _use_store(monkeypatch, runtime)

    run = run_main(capsys, ("policy", "whatif", str(lower), "--json"))

    report = json.loads(run.out)
    assert run.code == 0, run.err
    assert report == {
        "replayed": 6,
        "changed": [
            {"order_id": ids[name], "from": "approved", "to": "blocked",
             "rules": ["max_quantity_check"]}
            for name in ("submitted_200", "submitted_300")
        ] + [
            {"order_id": ids["resting_100"], "from": "approved", "to": "blocked",
             "rules": ["max_quantity_check"]}  # its replace, to 250 shares
        ],
        "by_rule": {"max_quantity_check": {"newly_blocked": 3, "newly_approved": 0}},
    }  # fmt: skip


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_whatif_with_higher_limits_reports_the_blocked_order_approved_and_the_rules_that_blocked_it(
    runtime: Runtime,
    client: TestClient[Any],
    tokens: dict[str, str],
    make_order: OrderBuilder,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ids = record_flow(client, tokens, make_order, clock)
    higher = candidate(tmp_path, "higher", max_order_quantity=20000, max_order_notional=5000000)
    _use_store(monkeypatch, runtime)

    run = run_main(capsys, ("policy", "whatif", str(higher), "--json"))
    text = run_main(capsys, ("policy", "whatif", str(higher)))

    report = json.loads(run.out)
    assert report["changed"] == [
        {"order_id": ids["blocked_12000"], "from": "blocked", "to": "approved",
         "rules": ["max_quantity_check", "max_notional_check"]},
    ]  # fmt: skip
    assert report["by_rule"] == {
        "max_notional_check": {"newly_blocked": 0, "newly_approved": 1},
        "max_quantity_check": {"newly_blocked": 0, "newly_approved": 1},
    }
    assert text.code == 0
    assert "1 would change" in text.out and ids["blocked_12000"] in text.out


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_whatif_window_selects_the_decisions_by_their_time(
    runtime: Runtime,
    client: TestClient[Any],
    tokens: dict[str, str],
    make_order: OrderBuilder,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    record_flow(client, tokens, make_order, clock)
    records = judged_records(runtime)
    _use_store(monkeypatch, runtime)
    same = copy_policies(tmp_path / "same")

    run = run_main(capsys, ("policy", "whatif", str(same), "--json",
                            "--since", records[1]["timestamp"],
                            "--until", records[3]["timestamp"]))  # fmt: skip

    assert (run.code, json.loads(run.out)) == (0, {"replayed": 3, "changed": [], "by_rule": {}})


def _refused(run: Run, code: str) -> dict[str, Any]:
    assert run.code == 2, (run.out, run.err)
    assert run.err.startswith(f"apex-oms: {code}: "), run.err
    body: dict[str, Any] = json.loads(run.out)
    assert body["error"] == code
    return body


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_whatif_refuses_bad_input_with_a_code_and_exit_2(
    runtime: Runtime,
    client: TestClient[Any],
    tokens: dict[str, str],
    make_order: OrderBuilder,
    clock: FixedClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    record_flow(client, tokens, make_order, clock)
    _use_store(monkeypatch, runtime)
    same = copy_policies(tmp_path / "same")
    broken = copy_policies(tmp_path / "broken")
    (broken / "order_limits.yaml").write_text("rules:\n  - id: Bad Id\n", "utf-8")

    def whatif(*argv: str) -> Run:
        return run_main(capsys, ("policy", "whatif", "--json", *argv))

    invalid = _refused(whatif(str(broken)), "candidate_invalid")
    assert invalid["issues"] and all(i["file"].endswith(".yaml") for i in invalid["issues"])
    _refused(whatif(str(same), "--since", "yesterday-ish"), "bad_timestamp")
    _refused(whatif(str(same), "--until", "2026-11-27T14:30:00"), "bad_timestamp")  # no zone
    _refused(
        whatif(str(same), "--since", "2026-11-28T00:00:00Z", "--until", "2026-11-27T00:00:00Z"),
        "empty_window",
    )
    _refused(whatif(str(same), "--since", "2099-01-01T00:00:00Z"), "no_records")


def test_whatif_when_no_service_ever_ran_here_then_no_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APEX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APEX_DATABASE_URL", f"sqlite:///{tmp_path / 'home' / 'apex.db'}")

    run = run_main(capsys, ("policy", "whatif", str(POLICIES), "--json"))

    _refused(run, "no_records")
    assert not (tmp_path / "home" / "apex.db").exists()
