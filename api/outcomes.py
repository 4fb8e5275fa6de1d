"""The one table from a gateway outcome to an HTTP answer.

A decision (evaluated, routed, pending, blocked, a broker's error) answers with
the order record as the body; anything else answers with the error shape and
the logged record beside it.
"""

from __future__ import annotations

from typing import Any

from litestar import Response

from engine.gateway.outcome import Outcome

from .errors import ApiError
from .metrics import Metrics

__all__ = ["STATUS", "answer"]

# kind: (status, error code; None: the body is the record)
STATUS: dict[str, tuple[int, str | None]] = {
    "evaluated": (200, None),
    "routed": (201, None),  # a submit; a cancel or a replace: 200 (below)
    "pending": (202, None),  # the broker took a cancel or replace, confirmation pending
    "blocked": (403, None),  # an evaluation: 200 (below), the record says it is blocked
    "broker_error": (502, None),
    "rejected": (422, "invalid_order"),
    "conflict": (409, "client_order_id_conflict"),
    "not_open": (409, "order_not_open"),
    "not_found": (404, "not_found"),
    "audit_unavailable": (503, "audit_unavailable"),
}
# (operation, kind): status, where the operation changes it
_BY_OPERATION = {
    ("evaluate", "blocked"): 200,
    ("cancel", "routed"): 200,
    ("replace", "routed"): 200,
}


def answer(operation: str, outcome: Outcome, metrics: Metrics) -> Response[Any]:
    """The HTTP answer to `outcome`; a replay answers as its original did."""
    kind = outcome.replayed_kind or outcome.kind
    record = outcome.record
    triggers = list(record.get("fail_closed_triggers") or [])
    metrics.decision(operation, outcome.kind, triggers, record)
    status, code = STATUS[kind]
    status = _BY_OPERATION.get((operation, kind), status)
    if code is None:
        return Response(record, status_code=status)
    errors = record.get("errors") or []
    if kind == "not_found":  # nothing was logged, and nothing may show the order exists
        raise ApiError(status, code, _detail(kind, record))
    raise ApiError(status, code, _detail(kind, record), errors, record=record)


def _detail(kind: str, record: dict[str, Any]) -> str:
    if kind == "rejected":
        return "invalid order: " + ", ".join(e["field"] for e in record.get("errors") or [])
    if kind == "conflict":
        return "client_order_id already used with a different body"
    if kind == "not_open":
        return "the order is not working at a broker"
    if kind == "not_found":
        return f"no order {record.get('order_id')}"
    if record.get("broker_response"):
        return "the broker acted on the order (see record) but its outcome could not be logged"
    return "the audit log could not be written; the order was not sent"
