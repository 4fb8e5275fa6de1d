"""The composition root: settings in, a wired gateway out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.simulated import SimulatedBroker
from adapters.sql import SqlStore
from engine import Evaluator, load_policies
from engine.broker import BrokerAdapter
from engine.clock import Clock, system_clock
from engine.errors import StoreUnavailable
from engine.gateway import Gateway

from .auth import TokenBook
from .metrics import Metrics
from .settings import Settings

__all__ = ["Runtime"]

log = logging.getLogger("apex.runtime")

# The sweep: orders left `submitted` this long (a commit whose outcome the writer
# could not know, a replica that died mid-order) are resolved with their broker,
# and a broker that could not be reconciled is tried again.
SWEEP_EVERY_S = 10.0
STALE_AFTER_S = 60.0


@dataclass
class Runtime:
    settings: Settings
    store: SqlStore
    gateway: Gateway
    tokens: TokenBook
    metrics: Metrics
    clock: Clock
    _stop: threading.Event = field(default_factory=threading.Event)
    _sweeper: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        clock: Clock = system_clock,
        brokers: Mapping[str, BrokerAdapter] | None = None,
        *,
        recover: bool = True,
    ) -> Runtime:
        """Open (and migrate) the store, load the policies, wire the brokers, and
        (`recover`) reconcile every working order with its broker before anything
        else: until that succeeds a broker takes no new order.

        Raises `PolicyError` when the policy set is invalid: nothing can be
        approved without it, so the service does not start. Tools that only read
        or change controls pass `recover=False`: the running service owns recovery.
        """
        if settings.database_url.startswith("sqlite"):
            settings.home.mkdir(parents=True, exist_ok=True)
        evaluator = Evaluator(load_policies(settings.policies), clock)
        store = SqlStore(settings.database_url)
        store.migrate()
        metrics = Metrics()
        if brokers is None:
            brokers = {
                "simulation": SimulatedBroker(
                    clock,
                    seed=settings.sim_seed,
                    slippage_bps=settings.sim_slippage_bps,
                    journal=store.journal("simulated"),
                )
            }
        gateway = Gateway(store, evaluator, brokers, clock, listener=metrics.event)
        if recover:
            try:
                gateway.recover()
            except Exception:
                # not ready, and says why (readiness): the sweep tries again
                log.exception("recovery on start failed")
        return cls(settings, store, gateway, TokenBook(store, clock), metrics, clock)

    def start_sweeping(self, every_s: float = SWEEP_EVERY_S) -> None:
        """Resolve stale orders and unready brokers in the background (the service)."""
        if self._sweeper is not None:
            return

        def sweep() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.gateway.recover(stale_after_s=STALE_AFTER_S)
                except StoreUnavailable as exc:
                    # the database is down: one line per pass, not a traceback; the
                    # pool reconnects on its own once it answers again
                    log.warning("the recovery sweep cannot reach the store (%s); retrying", exc)
                except Exception:
                    log.exception("the recovery sweep failed; it runs again")

        self._sweeper = threading.Thread(target=sweep, name="apex-sweep", daemon=True)
        self._sweeper.start()

    @property
    def sweeping(self) -> bool:
        """Whether the background sweep is running (it outlives a database outage)."""
        return self._sweeper is not None and self._sweeper.is_alive()

    def close(self, *_: Any) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        self.store.close()
