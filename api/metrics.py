"""Prometheus metrics: decisions by outcome and trigger, request latency,
unauthenticated requests and connections refused over capacity; and the
decision log, one JSON line per decision (logger `apex.decision`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from engine.records import REQUEST_ID

from ._logging import log_fields

__all__ = ["Metrics"]

decision_log = logging.getLogger("apex.decision")

_SHADOW = {"shadow_judged": "judged", "shadow_dropped": "dropped", "shadow_error": "error"}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "apex_decisions", "Order decisions by operation and outcome",
            ["operation", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.triggers = Counter(
            "apex_fail_closed_triggers", "Fail-closed triggers raised",
            ["trigger"], registry=self.registry,
        )  # fmt: skip
        self.anomalies = Counter(
            "apex_execution_anomalies", "Broker reports the lifecycle did not expect",
            ["anomaly"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "apex_request_seconds", "Request handling time", ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )  # fmt: skip
        # counted by the access log; never in the chain (anyone could grow it)
        self.unauthenticated = Counter(
            "apex_unauthenticated", "Requests answered 401 (no, unknown, revoked or expired token)",
            registry=self.registry,
        )  # fmt: skip
        self.over_capacity = Counter(
            "apex_connections_over_capacity",
            "Connections answered 503 over_capacity and closed (api/server.py)",
            registry=self.registry,
        )  # fmt: skip
        # the shadow policy set (engine/gateway/shadow.py)
        self.shadow = Counter(
            "apex_shadow_decisions",
            "Decisions handed to the shadow set, by what became of them: judged, dropped"
            " (its queue was full), error (it failed; no order is affected)",
            ["result"], registry=self.registry,
        )  # fmt: skip
        self.shadow_differences = Counter(
            "apex_shadow_differences",
            "Shadow verdicts that differ from the enforced one (each a shadow_difference"
            " record), by the shadow's verdict",
            ["to"], registry=self.registry,
        )  # fmt: skip

    def event(self, what: str, record: Mapping[str, Any]) -> None:
        """The gateway's listener: what it committed beyond decisions."""
        if what == "execution_anomaly":
            self.anomalies.labels(str(record.get("anomaly", "unknown"))).inc()
        elif what in _SHADOW:
            self.shadow.labels(_SHADOW[what]).inc()
        elif what == "shadow_difference":
            self.shadow_differences.labels(str(record.get("to", "unknown"))).inc()

    def decision(
        self,
        operation: str,
        outcome: str,
        triggers: list[str],
        record: Mapping[str, Any] | None = None,
    ) -> None:
        """Count a decision and log it: one line, never the order's body."""
        self.decisions.labels(operation, outcome).inc()
        for trigger in triggers:
            self.triggers.labels(trigger).inc()
        if not decision_log.isEnabledFor(logging.INFO):
            return
        record = record or {}
        fields = {
            "operation": operation,
            "outcome": outcome,
            "order_id": record.get("order_id"),
            "client_order_id": record.get("client_order_id"),
            "order_status": record.get("order_status"),
            "triggers": triggers,
            "request_id": REQUEST_ID.get(),
        }
        log_fields(decision_log, f"{operation} {outcome} {fields['order_id']}", fields)

    def render(self) -> bytes:
        return generate_latest(self.registry)
