"""What handlers are given through `Provide` (see `app.py`): the services, one
object for every request. Who calls is `request.user`, the `Actor` the route's
guard let in.

One dependency, not one per service: Litestar (2.25) resolves sibling
dependencies concurrently, each on a new task, which cost an evaluation about
100 µs of CPU in a measurement with six of them (more than the whole HTTP layer
took before), while a single dependency is read in a few µs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from litestar import Request
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

__all__ = ["Call", "Services", "ServicesDep", "provide"]


@dataclass(frozen=True, slots=True)
class Services:
    gateway: Gateway
    store: Store
    settings: Settings
    metrics: Metrics
    clock: Clock
    threads: GatewayThreads  # where the gateway's blocking calls run
    intake: Intake  # reads request bodies
    inline_evaluation: bool  # evaluate on the event loop (SQLite: README, "Benchmarks")


ServicesDep: TypeAlias = NamedDependency[SkipValidation[Services]]
Call: TypeAlias = Request[Actor, Any, Any]  # a request whose guard set `user`


def provide(services: Services) -> Provide:
    def services_() -> Services:
        return services

    return Provide(services_, use_cache=True, sync_to_thread=False)
