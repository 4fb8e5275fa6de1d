"""`apex-oms demo` (in-process): every fail-closed trigger of SPEC section 4
appears, each blocked step with its reasons' codes and details, the two faults
say how they were caused, and the audit chain verifies."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.cli import main
from engine.policy.decision import TRIGGER_ORDER

ROOT = Path(__file__).resolve().parents[2]

# SPEC section 4, "Fail-closed triggers (names are part of the interface)"
SPEC_TRIGGERS = {
    "risk_denied",
    "omega_directive",
    "drift_entropy_unsafe",
    "data_integrity_mismatch",
    "protocol_mismatch",
    "broker_api_error",
    "compliance_failure",
    "mode_research",
    "broker_capability",
    "engine_error",
}

# step -> (HTTP status, order status, triggers, reason codes)
BLOCKED_STEPS = {
    "submit in research mode": (403, "blocked", "mode_research", {"MODE_RESEARCH"}),
    "blocked: risk_denied (spread)": (403, "blocked", "risk_denied", {"SPREAD_TOO_WIDE"}),
    "blocked: drift_entropy_unsafe": (403, "blocked", "drift_entropy_unsafe", {"ENTROPY_TOO_HIGH"}),
    "blocked: data_integrity_mismatch": (
        403,
        "blocked",
        "data_integrity_mismatch",
        {"DATA_HASH_MISMATCH"},
    ),
    "blocked: protocol_mismatch": (403, "blocked", "protocol_mismatch", {"PROTOCOL_HASH_MISMATCH"}),
    "blocked: compliance_failure": (403, "blocked", "compliance_failure", {"SYMBOL_RESTRICTED"}),
    "blocked: broker_capability (opg)": (
        403,
        "blocked",
        "broker_capability",
        {"BROKER_CANNOT_TAKE"},
    ),
    "blocked: broker_api_error": (502, "blocked", "broker_api_error", {"BROKER_API_ERROR"}),
    "blocked: engine_error": (403, "blocked", "engine_error", {"STATE_UNAVAILABLE"}),
    "blocked: omega_directive": (
        403,
        "blocked",
        "omega_directive",
        {"OMEGA_DIRECTIVE_IN_FORCE", "TRADING_HALTED"},
    ),
}


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(ROOT)  # the demo reads ./policies (its database is a scratch one)
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def demo_json() -> dict[str, Any]:
    """One run of `apex-oms demo --json`, shared by the assertions on it."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.chdir(ROOT)
        code = main(["demo", "--json"])
    logging.disable(logging.NOTSET)
    assert code == 0
    return dict(json.loads(out.getvalue()))


def test_spec_triggers_when_compared_with_the_engine_then_they_are_the_same_ten() -> None:
    assert set(TRIGGER_ORDER) == SPEC_TRIGGERS


def test_demo_json_when_run_then_every_spec_trigger_appears(demo_json: dict[str, Any]) -> None:
    shown = {t for step in demo_json["steps"] for t in step["triggers"].split(",") if t}

    assert shown == SPEC_TRIGGERS


@pytest.mark.parametrize("name", sorted(BLOCKED_STEPS))
def test_demo_json_when_a_step_is_blocked_then_it_shows_its_trigger_and_reason_codes(
    demo_json: dict[str, Any], name: str
) -> None:
    http, status, trigger, codes = BLOCKED_STEPS[name]
    (step,) = [s for s in demo_json["steps"] if s["step"] == name]

    assert (step["http"], step["status"], step["triggers"]) == (http, status, trigger)
    assert {r["code"] for r in step["reasons"]} == codes
    assert all(r["detail"] for r in step["reasons"])
    assert step["order_id"].startswith("ORD-")


def test_demo_json_when_faults_are_caused_then_each_says_how(demo_json: dict[str, Any]) -> None:
    steps = {s["step"]: s for s in demo_json["steps"]}
    broker, engine = steps["blocked: broker_api_error"], steps["blocked: engine_error"]

    assert "fault injection" in broker["how"]
    assert "did not reach the broker (injected)" in broker["reasons"][0]["detail"]
    assert "unreadable" in engine["how"]
    assert engine["reasons"][0]["detail"].startswith("ValueError: ")
    assert [s["step"] for s in demo_json["steps"] if s["how"]] == [
        "blocked: broker_api_error",
        "blocked: engine_error",
    ]


def test_demo_json_when_run_then_every_step_answers_as_scripted(
    demo_json: dict[str, Any],
) -> None:
    steps = [(s["step"], s["http"], s["status"]) for s in demo_json["steps"]]

    assert steps == [
        ("evaluate in research mode", 200, "evaluated"),
        ("submit in research mode", 403, "blocked"),
        ("enter simulation mode", 200, "simulation"),
        ("market buy fills", 201, "filled"),
        ("limit buy rests", 201, "accepted"),
        ("replace: new limit", 200, "replaced"),
        ("quote crosses: filled", 200, "filled"),
        ("limit sell rests", 201, "accepted"),
        ("cancel it", 200, "cancelled"),
        ("blocked: risk_denied (spread)", 403, "blocked"),
        ("blocked: drift_entropy_unsafe", 403, "blocked"),
        ("blocked: data_integrity_mismatch", 403, "blocked"),
        ("blocked: protocol_mismatch", 403, "blocked"),
        ("blocked: compliance_failure", 403, "blocked"),
        ("blocked: broker_capability (opg)", 403, "blocked"),
        ("blocked: broker_api_error", 502, "blocked"),
        ("blocked: engine_error", 403, "blocked"),
        ("invalid: limit without price", 422, "rejected"),
        ("omega directive invoked", 200, "omega in force"),
        ("blocked: omega_directive", 403, "blocked"),
        ("omega directive cleared", 200, "omega cleared"),
    ]


def test_demo_json_when_run_then_the_audit_chain_verifies_after_the_faults(
    demo_json: dict[str, Any],
) -> None:
    assert demo_json["audit"]["ok"] is True


def test_demo_when_run_for_people_then_exit_0_with_codes_details_and_causes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["demo"])

    out = capsys.readouterr().out
    assert code == 0
    for trigger in SPEC_TRIGGERS:
        assert trigger in out
    for _, _, _, codes in BLOCKED_STEPS.values():
        for reason_code in codes:
            assert reason_code in out
    assert "spread_bps=" in out  # a detail, not only the code
    assert "How the faults were caused" in out
    assert "\naudit chain OK: " in out
