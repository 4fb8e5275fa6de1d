"""What a decision was judged on, kept in its record (`judged_on`) so that it can
be judged again, exactly: under its own policy version (`apex-oms audit replay`
shows the verdict is reproduced) or under a candidate set (`policy whatif`, the
shadow).

A decision is a pure function of the order request, the engine state and the
time (`Evaluator.evaluate(order, state, now)`). The record already holds the
time (`timestamp`, to the microsecond) and most of the request; `judged_on`
adds the rest, compactly:

- `request`: the members of the request as the client sent it that the record
  does not already hold with the same value (`time_in_force`, `context`, ...).
  The context is kept as sent, not as parsed, so that the quote's digest (which
  `data_hash` is checked against) is the one the client's bytes gave.
- `state`: the engine state, without the members at their defaults (the mode,
  the trading state, the kill switch, the positions and flow counts read under
  the chain lock, the broker's facts, the compliance facts, the account's book).

Only records of judged decisions carry it: evaluations, submits and replaces
that the policies ran on. A request that could not be read, a retry, or an
order blocked before the policies could run (the state could not be read) has
nothing to judge again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .clock import parse_utc
from .models import EngineState, OrderRequest
from .policy.decision import Decision, Reason, sort_triggers
from .policy.evaluator import Evaluator

__all__ = [
    "JUDGED_ON",
    "Judged",
    "decision_verdict",
    "judged_on",
    "no_broker",
    "rebuild",
    "rejudge",
    "responsible",
    "verdict",
]

JUDGED_ON = "judged_on"

# request members an order record holds under the same name and meaning
_IN_RECORD = (
    "client_order_id",
    "account",
    "symbol",
    "side",
    "quantity",
    "order_type",
    "limit_price",
    "stop_price",
    "reduce_only",
    "decision_reason",
    "short_sale",
    "locate_id",
)


def judged_on(
    raw: Mapping[str, Any], record: Mapping[str, Any], state: EngineState
) -> dict[str, Any]:
    """The `judged_on` member of `record`, the decision on request `raw` in `state`."""
    request = {
        key: value
        for key, value in raw.items()
        if not (key in _IN_RECORD and key in record and _same(record[key], value))
    }
    return {"request": request, "state": state.model_dump(mode="json", exclude_defaults=True)}


def _same(kept: Any, sent: Any) -> bool:
    """150 and 150.0 are the same price (the record writes whole floats as ints);
    a flag is the same only as the same flag."""
    if isinstance(kept, bool) or isinstance(sent, bool):
        return kept is sent
    return bool(kept == sent)


@dataclass(frozen=True)
class Judged:
    """A decision's inputs, rebuilt from its record."""

    order: OrderRequest
    state: EngineState
    now: datetime
    operation: str
    mode: str


def rebuild(record: Mapping[str, Any]) -> Judged:
    """The inputs of the decision `record` holds; raises `ValueError` (or a pydantic
    `ValidationError`, a `ValueError`) when the record has none or they do not read."""
    kept = record.get(JUDGED_ON)
    if not isinstance(kept, Mapping):
        raise ValueError("the record keeps no judged_on")
    request, state = kept.get("request"), kept.get("state")
    if not isinstance(request, Mapping) or not isinstance(state, Mapping):
        raise ValueError("judged_on: want request and state objects")
    data = {key: record[key] for key in _IN_RECORD if record.get(key) is not None}
    data.update(request)
    timestamp = record.get("timestamp")
    if not isinstance(timestamp, str):
        raise ValueError("the record has no timestamp")
    return Judged(
        order=OrderRequest.model_validate(data),
        state=EngineState.model_validate(state),
        now=parse_utc(timestamp),
        operation=str(record.get("operation") or "evaluate"),
        mode=str(record.get("mode") or "research"),
    )


def verdict(record: Mapping[str, Any]) -> str:
    """`approved` or `blocked`: what the decision of `record` was."""
    return "blocked" if record.get("fail_closed_triggers") else "approved"


def decision_verdict(decision: Decision) -> str:
    return "blocked" if decision.triggers or not decision.approved else "approved"


def no_broker(decision: Decision, mode: str) -> Decision:
    """Fail closed should a policy set ever approve an order no broker can take (the
    gateway's one step after the policies, on a submit)."""
    reason = Reason("gateway", "fail", "NO_BROKER", "broker_capability", f"no broker for {mode}")
    return dataclasses.replace(
        decision,
        status="blocked",
        triggers=sort_triggers({*decision.triggers, "broker_capability"}),
        reasons=(*decision.reasons, reason),
    )


def rejudge(evaluator: Evaluator, record: Mapping[str, Any]) -> Decision:
    """The decision `evaluator` gives the order of `record`, in the state and at the
    time it was judged, with the gateway's step after the policies (an approved
    submit with no broker is blocked); `ValueError` when the record keeps no
    readable inputs."""
    judged = rebuild(record)
    decision = evaluator.evaluate(judged.order, judged.state, judged.now)
    if judged.operation == "submit" and decision.approved and judged.state.broker is None:
        decision = no_broker(decision, judged.mode)
    return decision


def responsible(record: Mapping[str, Any], decision: Decision, to: str) -> list[str]:
    """The rules a changed verdict is owed to: the new decision's that block an order
    the record approved, or the record's that blocked an order now approved."""
    if to == "blocked":
        checks = [reason.check for reason in decision.reasons]
    else:
        reasons = record.get("reasons") or []
        checks = [str(r.get("check")) for r in reasons if isinstance(r, Mapping)]
    return list(dict.fromkeys(checks))
