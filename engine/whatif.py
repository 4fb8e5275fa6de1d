"""Recorded decisions judged again: under a candidate policy set (`policy
whatif`, the shadow), or under the set that judged them (`audit replay`).

Each judged decision's record keeps what it was judged on (engine/judged.py);
`rejudge` rebuilds the request, the state and the time from it and asks an
evaluator, then takes the one step the gateway adds after the policies (an
approved submit with no broker is blocked, `no_broker`). Under the set that
judged it, that reproduces the record's results, triggers and reasons exactly;
a difference is a finding.

What a candidate is judged on is what the order was judged on: the state as it
was (positions, flow counts under the windows then in force, the compliance
facts of the configuration then in force, so a candidate is judged on its rules
and parameters, not on its signatures). A verdict that changes is reported with
the rules responsible: those of the candidate that block an order the record
approved, those of the record that no longer block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .audit import Finding
from .clock import parse_utc
from .judged import JUDGED_ON, decision_verdict, rejudge, responsible, verdict
from .policy.decision import Decision
from .policy.evaluator import Evaluator

__all__ = [
    "Change",
    "DecisionReplay",
    "WhatIf",
    "decisions",
    "replay_decisions",
    "whatif",
]


def decisions(
    records: Iterable[Mapping[str, Any]],
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Mapping[str, Any]]:
    """The judged decisions among `records` whose time lies in [since, until]."""
    for record in records:
        if "kind" in record or JUDGED_ON not in record:
            continue
        if since is not None or until is not None:
            try:
                at = parse_utc(str(record.get("timestamp")))
            except ValueError:
                continue
            if (since is not None and at < since) or (until is not None and at > until):
                continue
        yield record


@dataclass(frozen=True)
class Change:
    order_id: str
    from_: str
    to: str
    rules: list[str]
    operation: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "from": self.from_, "to": self.to, "rules": self.rules}


@dataclass
class WhatIf:
    """`policy whatif`'s answer: how many decisions were judged again, each one
    whose verdict changes, and per rule how many it turns each way."""

    replayed: int = 0
    changed: list[Change] = field(default_factory=list)
    by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    # decisions whose kept inputs do not read (order id: why): not replayed
    unreadable: dict[str, str] = field(default_factory=dict)

    def add(self, change: Change) -> None:
        self.changed.append(change)
        key = "newly_blocked" if change.to == "blocked" else "newly_approved"
        for rule in change.rules:
            counts = self.by_rule.setdefault(rule, {"newly_blocked": 0, "newly_approved": 0})
            counts[key] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            "changed": [change.as_dict() for change in self.changed],
            "by_rule": {rule: dict(self.by_rule[rule]) for rule in sorted(self.by_rule)},
        }


def whatif(records: Iterable[Mapping[str, Any]], candidate: Evaluator) -> WhatIf:
    """Judge each recorded decision under `candidate`; every changed verdict."""
    report = WhatIf()
    for record in records:
        order_id = str(record.get("order_id"))
        try:
            decision = rejudge(candidate, record)
        except ValueError as exc:
            report.unreadable[order_id] = str(exc).splitlines()[0]
            continue
        report.replayed += 1
        was, now = verdict(record), decision_verdict(decision)
        if was != now:
            rules = responsible(record, decision, now)
            operation = str(record.get("operation") or "")
            report.add(Change(order_id, was, now, rules, operation))
    return report


@dataclass
class DecisionReplay:
    """`audit replay`'s answer: decisions judged again under their own versions."""

    replayed: int = 0
    versions: int = 0
    findings: list[Finding] = field(default_factory=list)
    # order records no decision can be rebuilt from (an order's later records such
    # as fills and cancels, records written before records kept what they were
    # judged on, refused requests, retries): not replayed
    not_judged: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "replayed": self.replayed,
            "versions": self.versions,
            "not_judged": self.not_judged,
            "findings": [finding.as_dict() for finding in self.findings],
        }


# (policy digest, compliance digest) -> its evaluator; raises LookupError (why)
# when the version is not kept or cannot be loaded again
EvaluatorFor = Callable[[str, str], Evaluator]


def replay_decisions(
    records: Iterable[Mapping[str, Any]], evaluator_for: EvaluatorFor
) -> DecisionReplay:
    """Judge every recorded decision again under the version that judged it: each
    one must give the record's results, triggers and reasons."""
    report = DecisionReplay()
    evaluators: dict[tuple[str, str], Evaluator | str] = {}
    for record in records:
        if "kind" in record or not isinstance(record.get("order_id"), str):
            continue
        if JUDGED_ON not in record:
            report.not_judged += 1
            continue
        order_id = str(record["order_id"])
        key = (str(record.get("policy_digest")), str(record.get("compliance_digest")))
        evaluator = evaluators.get(key)
        if evaluator is None:
            try:
                evaluator = evaluators[key] = evaluator_for(*key)
            except LookupError as exc:
                evaluator = evaluators[key] = str(exc.args[0] if exc.args else exc)
        if isinstance(evaluator, str):
            want = {"policy_digest": key[0], "compliance_digest": key[1]}
            report.findings.append(Finding(order_id, "policy_version_missing", want, evaluator))
            continue
        report.replayed += 1
        try:
            decision = rejudge(evaluator, record)
        except ValueError as exc:
            detail = str(exc).splitlines()[0]
            report.findings.append(Finding(order_id, "inputs_unreadable", "judged_on", detail))
            continue
        finding = _compare(order_id, record, decision)
        if finding is not None:
            report.findings.append(finding)
    report.versions = sum(1 for e in evaluators.values() if not isinstance(e, str))
    return report


def _compare(order_id: str, record: Mapping[str, Any], decision: Decision) -> Finding | None:
    want = {
        "risk_check_results": dict(record.get("risk_check_results") or {}),
        "fail_closed_triggers": list(record.get("fail_closed_triggers") or []),
        "reasons": list(record.get("reasons") or []),
    }
    got = {
        "risk_check_results": dict(decision.results),
        "fail_closed_triggers": list(decision.triggers),
        "reasons": [reason.as_dict() for reason in decision.reasons],
    }
    if want == got:
        return None
    keys = [k for k in want if want[k] != got[k]]
    code = (
        "verdict_differs" if verdict(record) != decision_verdict(decision) else "decision_differs"
    )
    return Finding(order_id, code, {k: want[k] for k in keys}, {k: got[k] for k in keys})
