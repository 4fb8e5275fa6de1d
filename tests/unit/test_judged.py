"""Judging recorded decisions again (engine/judged.py, engine/whatif.py): a record
keeps what its decision was judged on, compactly and exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.audit import Finding
from engine.canonical import canonical_json
from engine.gateway._records import judged, order_record
from engine.judged import rebuild, rejudge
from engine.models import BrokerFacts, EngineState, OrderRequest
from engine.policy.evaluator import Evaluator
from engine.whatif import decisions, replay_decisions, whatif
from tests.conftest import NOW

STATE = EngineState(
    positions={"default:AAPL": 40.0},
    mode="simulation",
    operation="submit",
    broker=BrokerFacts(
        name="simulated",
        order_types=["limit", "market", "stop"],
        time_in_force=["day", "gtc"],
        reduce_only=True,
    ),
)


def recorded(evaluator: Evaluator, raw: dict[str, Any], state: EngineState = STATE) -> Any:
    """The record the gateway writes for `raw` judged in `state`, as stored and read."""
    decision = evaluator.evaluate(raw, state, NOW)
    record = order_record(decision, operation="submit", mode=state.mode, actor="t", order_id="O-1")
    text = canonical_json(judged(record, raw, state).as_dict())
    return json.loads(text)


def test_a_record_keeps_only_what_it_does_not_already_hold(
    evaluator: Evaluator, approved_order: Any
) -> None:
    raw = approved_order(quantity=100.0)

    kept = recorded(evaluator, raw)["judged_on"]

    assert sorted(kept["request"]) == ["context", "time_in_force"]
    assert kept["request"]["context"] == raw["context"]  # as sent: its digest is the client's
    assert kept["state"] == {
        "positions": {"default:AAPL": 40.0},
        "operation": "submit",
        "mode": "simulation",
        "broker": {
            "name": "simulated",
            "order_types": ["limit", "market", "stop"],
            "time_in_force": ["day", "gtc"],
            "reduce_only": True,
        },
    }


def test_rebuild_gives_back_the_request_the_state_and_the_instant(
    evaluator: Evaluator, approved_order: Any
) -> None:
    raw = approved_order(quantity=100.0)  # the record writes 100: the same quantity

    again = rebuild(recorded(evaluator, raw))

    assert again.order == OrderRequest.model_validate(raw)
    assert again.order.context.quote_digest == OrderRequest.model_validate(raw).context.quote_digest
    assert (again.state, again.now) == (STATE, NOW)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="approved"),
        pytest.param({"quantity": 20_000}, id="over-the-limits"),
        pytest.param({"context": {"data_hash": "sha256:" + "0" * 64}}, id="bad-data-hash"),
        pytest.param({"order_type": "market", "limit_price": None}, id="market"),
    ],
)
def test_rejudged_under_its_own_set_a_decision_is_reproduced_exactly(
    evaluator: Evaluator, approved_order: Any, changes: dict[str, Any]
) -> None:
    raw = approved_order()
    if "context" in changes:
        raw["context"].update(changes.pop("context"))
    raw.update(changes)
    record = recorded(evaluator, raw)

    decision = rejudge(evaluator, record)

    assert dict(decision.results) == record["risk_check_results"]
    assert list(decision.triggers) == record["fail_closed_triggers"]
    assert [r.as_dict() for r in decision.reasons] == record["reasons"]
    assert replay_decisions([record], lambda *_: evaluator).findings == []


def test_replay_when_a_record_says_otherwise_than_its_rules_then_a_verdict_finding(
    evaluator: Evaluator, approved_order: Any
) -> None:
    record = recorded(evaluator, approved_order())
    record["fail_closed_triggers"] = ["risk_denied"]

    report = replay_decisions([record], lambda *_: evaluator)

    assert report.findings == [
        Finding("O-1", "verdict_differs", {"fail_closed_triggers": ["risk_denied"]},
                {"fail_closed_triggers": []}),
    ]  # fmt: skip


def test_replay_when_the_version_is_not_kept_then_one_finding_per_decision(
    evaluator: Evaluator, approved_order: Any
) -> None:
    record = recorded(evaluator, approved_order())

    def missing(*_: str) -> Evaluator:
        raise LookupError("the policy version is not kept in the store")

    report = replay_decisions([record, {**record, "order_id": "O-2"}], missing)

    assert [(f.subject, f.code) for f in report.findings] == [
        ("O-1", "policy_version_missing"),
        ("O-2", "policy_version_missing"),
    ]
    assert (report.replayed, report.ok) == (0, False)


def test_whatif_counts_each_changed_verdict_to_its_rules(
    evaluator: Evaluator, approved_order: Any
) -> None:
    records = [
        recorded(evaluator, approved_order(quantity=q, client_order_id=f"c-{q}"))
        for q in (100, 20_000)
    ]
    records[0]["fail_closed_triggers"] = ["risk_denied"]  # as if another set had blocked it
    records[0]["reasons"] = [{"check": "max_quantity_check"}]
    not_judged = {"order_id": "O-9", "timestamp": records[0]["timestamp"]}

    report = whatif(decisions([*records, not_judged, {"kind": "mode_changed"}]), evaluator)

    assert report.as_dict() == {
        "replayed": 2,
        "changed": [
            {"order_id": "O-1", "from": "blocked", "to": "approved",
             "rules": ["max_quantity_check"]},
        ],
        "by_rule": {"max_quantity_check": {"newly_blocked": 0, "newly_approved": 1}},
    }  # fmt: skip


def test_decisions_outside_the_window_are_not_replayed(
    evaluator: Evaluator, approved_order: Any
) -> None:
    record = recorded(evaluator, approved_order())
    later = NOW.replace(year=2027)

    assert list(decisions([record], since=later)) == []
    assert list(decisions([record], until=NOW)) == [record]
