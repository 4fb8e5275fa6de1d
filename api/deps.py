"""What handlers are given, by name, through `Provide` (see `app.py`). Each is
marked a dependency whose value is not validated per request: they are our own
objects, the same for every request but the actor."""

from __future__ import annotations

from typing import Any, TypeAlias

from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from engine.clock import Clock
from engine.gateway import Gateway
from engine.gateway.outcome import Actor
from engine.ports import Store

from ._threads import GatewayThreads
from .intake import Intake
from .metrics import Metrics
from .settings import Settings

__all__ = [
    "ActorDep",
    "ClockDep",
    "GatewayDep",
    "InlineDep",
    "IntakeDep",
    "MetricsDep",
    "SettingsDep",
    "StoreDep",
    "ThreadsDep",
    "constant",
]

GatewayDep: TypeAlias = NamedDependency[SkipValidation[Gateway]]
StoreDep: TypeAlias = NamedDependency[SkipValidation[Store]]
SettingsDep: TypeAlias = NamedDependency[SkipValidation[Settings]]
MetricsDep: TypeAlias = NamedDependency[SkipValidation[Metrics]]
ClockDep: TypeAlias = NamedDependency[SkipValidation[Clock]]
ThreadsDep: TypeAlias = NamedDependency[SkipValidation[GatewayThreads]]
IntakeDep: TypeAlias = NamedDependency[SkipValidation[Intake]]
InlineDep: TypeAlias = NamedDependency[SkipValidation[bool]]  # evaluate on the event loop (SQLite)
ActorDep: TypeAlias = NamedDependency[SkipValidation[Actor]]  # who the guard let in


def constant(value: Any) -> Provide:
    """A dependency that is the same object for every request."""

    def provide() -> Any:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)
