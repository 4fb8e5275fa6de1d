"""The composition root: settings in, a wired gateway out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adapters.simulated import SimulatedBroker
from adapters.sql.store import Store
from engine import Evaluator, load_policies
from engine.broker import BrokerAdapter
from engine.clock import Clock, system_clock
from engine.gateway.core import Gateway

from .auth import TokenBook
from .metrics import Metrics
from .settings import Settings

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings
    store: Store
    gateway: Gateway
    tokens: TokenBook
    metrics: Metrics
    clock: Clock

    @classmethod
    def start(
        cls,
        settings: Settings,
        clock: Clock = system_clock,
        brokers: Mapping[str, BrokerAdapter] | None = None,
    ) -> Runtime:
        """Open (and migrate) the store, load the policies, wire the brokers.

        Raises `PolicyError` when the policy set is invalid: nothing can be
        approved without it, so the service does not start.
        """
        if settings.database_url.startswith("sqlite"):
            settings.home.mkdir(parents=True, exist_ok=True)
        evaluator = Evaluator(load_policies(settings.policies), clock)
        store = Store(settings.database_url)
        store.migrate()
        if brokers is None:
            brokers = {
                "simulation": SimulatedBroker(
                    clock, seed=settings.sim_seed, slippage_bps=settings.sim_slippage_bps
                )
            }
        gateway = Gateway(store, evaluator, brokers, clock)
        return cls(settings, store, gateway, TokenBook(store), Metrics(), clock)

    def close(self) -> None:
        self.store.close()
