"""Prometheus metrics: decisions by outcome and trigger, request latency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["Metrics"]


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

    def event(self, what: str, record: Mapping[str, Any]) -> None:
        """The gateway's listener: what it committed beyond decisions."""
        if what == "execution_anomaly":
            self.anomalies.labels(str(record.get("anomaly", "unknown"))).inc()

    def decision(self, operation: str, outcome: str, triggers: list[str]) -> None:
        self.decisions.labels(operation, outcome).inc()
        for trigger in triggers:
            self.triggers.labels(trigger).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
