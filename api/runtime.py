"""The composition root: settings in, a wired gateway out."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.simulated import SimulatedBroker
from adapters.sql import SqlStore
from engine import Evaluator, PolicyError, load_policies
from engine.broker import BrokerAck, BrokerAdapter
from engine.checkpoints import Cadence
from engine.clock import Clock, system_clock
from engine.errors import StoreUnavailable
from engine.gateway import Gateway
from engine.gateway.compliance import ComplianceSource
from engine.gateway.outcome import Actor
from engine.policy.loader import LoadedPolicies
from engine.policy.versions import read_version
from engine.signing.standing import DevelopmentRoot

from .auth import TokenBook
from .brokers_config import BrokersConfig, build_brokers, load_brokers
from .checkpointing import Checkpointer
from .metrics import Metrics
from .service_key import service_key
from .settings import Settings

__all__ = ["Runtime"]

log = logging.getLogger("apex.runtime")

# The sweep: orders left `submitted` this long (a commit whose outcome the writer
# could not know, a replica that died mid-order) are resolved with their broker,
# and a broker that could not be reconciled is tried again.
SWEEP_EVERY_S = 10.0
STALE_AFTER_S = 60.0
RECONCILE_EVERY_S = 300.0


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
    checkpointer: Checkpointer | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        clock: Clock = system_clock,
        brokers: Mapping[str, BrokerAdapter] | None = None,
        *,
        recover: bool = True,
        verify: bool | None = None,
    ) -> Runtime:
        """Open (and migrate) the store, load the policies, wire the brokers, and
        (`recover`) reconcile every working order with its broker before anything
        else: until that succeeds a broker takes no new order.

        Raises `PolicyError` when the policy set is invalid: nothing can be
        approved without it, so the service does not start. Tools that only read
        or change controls pass `recover=False`: the running service owns recovery.

        `verify` (default: as `recover`): verify the compliance configuration now
        and record it in the chain; until then, or when it fails, no order passes
        the compliance checks that need it (a tool that judges nothing skips it).
        """
        if settings.database_url.startswith("sqlite"):
            settings.home.mkdir(parents=True, exist_ok=True)
        loaded = load_policies(settings.policies)
        # brokers.yaml is checked before anything is opened: a bad one stops here
        configured = load_brokers(settings.brokers) if brokers is None else None
        evaluator = Evaluator(loaded, clock)
        store = SqlStore(settings.database_url)
        store.migrate()
        metrics = Metrics()
        keep_version(store, settings.policies, loaded, clock)
        if configured is not None:
            brokers = {
                "simulation": SimulatedBroker(
                    clock,
                    seed=settings.sim_seed,
                    slippage_bps=settings.sim_slippage_bps,
                    journal=store.journal("simulated"),
                )
            }
            try:  # paper and live from brokers.yaml (docs/brokers.md)
                brokers |= build_brokers(
                    configured, os.environ, clock=clock, journal=store.journal,
                    seed=settings.sim_seed, slippage_bps=settings.sim_slippage_bps,
                    session_log=store.session_log,
                )  # fmt: skip
            except Exception:
                store.close()
                raise
        assert brokers is not None
        source = ComplianceSource(
            settings.policies, settings.keys, DevelopmentRoot.open(settings.home)
        )
        gateway = Gateway(
            store, evaluator, brokers, clock, listener=metrics.event, compliance=source,
            loaded=loaded,
        )  # fmt: skip
        if configured is not None:
            _follow(gateway, configured, brokers)
        if recover if verify is None else verify:
            try:
                gateway.verify_on_start()
            except StoreUnavailable as exc:
                log.warning("could not verify the compliance configuration (%s)", exc)
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
            last_full = time.monotonic()
            while not self._stop.wait(every_s):
                try:
                    # expiry, or a newer version accepted by another replica
                    self.gateway.recheck_compliance()
                except StoreUnavailable as exc:
                    log.warning("the compliance recheck cannot reach the store (%s)", exc)
                except Exception:
                    log.exception("the compliance recheck failed; it runs again")
                self._poll_brokers()
                try:
                    # every working order with its broker every RECONCILE_EVERY_S (a
                    # fill the broker made while a stream was down shows here);
                    # otherwise only orders of unknown outcome and unready brokers
                    full = time.monotonic() - last_full >= RECONCILE_EVERY_S
                    self.gateway.recover(stale_after_s=None if full else STALE_AFTER_S)
                    if full:
                        last_full = time.monotonic()
                except StoreUnavailable as exc:
                    # the database is down: one line per pass, not a traceback; the
                    # pool reconnects on its own once it answers again
                    log.warning("the recovery sweep cannot reach the store (%s); retrying", exc)
                except Exception:
                    log.exception("the recovery sweep failed; it runs again")

        self._sweeper = threading.Thread(target=sweep, name="apex-sweep", daemon=True)
        self._sweeper.start()

    def start_checkpointing(self) -> None:
        """Sign the chain head in the background with the service key, and on
        `close` (the service only: api/checkpointing.py)."""
        if self.checkpointer is None:
            cadence = Cadence(self.settings.checkpoint_records, self.settings.checkpoint_seconds)
            key = service_key(self.settings.home)
            self.checkpointer = Checkpointer(self.store, key, self.clock, cadence)
            self.checkpointer.start()

    def reload(self, actor: Actor, trigger: str = "sighup") -> str:
        """Load the policy directory again and put it in force if its configuration
        verifies (SIGHUP to `serve`; the API's reload does the same). One line says
        what happened; the chain has the verification record."""
        try:
            loaded = load_policies(self.settings.policies)
        except PolicyError as exc:
            line = f"reload refused: the policy set is invalid; the loaded one stays:\n{exc}"
            log.error(line)
            return line
        keep_version(self.store, self.settings.policies, loaded, self.clock)
        try:
            standing = self.gateway.reload(loaded, actor, trigger)
        except StoreUnavailable as exc:
            line = f"reload refused: the store cannot be reached ({exc}); the loaded set stays"
            log.error(line)
            return line
        if standing.in_force:
            line = f"reload: policy set {loaded.policies.policy_digest} in force ({standing.trust})"
            log.info(line)
        else:
            line = f"reload refused: {standing.code}: {standing.message}; the set in force stays"
            log.error(line)
        return line

    def _poll_brokers(self) -> None:
        """A broker without an update stream (Alpaca here) is polled on every
        sweep: each order it reports changed is booked as its own report."""
        for broker in self.gateway.brokers().values():
            poll = getattr(broker, "poll", None)
            if not callable(poll) or self.gateway.connection_problem(broker) is not None:
                continue
            try:
                acks = poll()
            except Exception as exc:
                log.warning("polling %s failed (%s); polled again next sweep", broker.name, exc)
                continue
            for ack in acks:
                try:
                    self.gateway.report(ack)
                except Exception:
                    log.exception("could not book %s's report of %s", broker.name, ack.order_id)

    @property
    def sweeping(self) -> bool:
        """Whether the background sweep is running (it outlives a database outage)."""
        return self._sweeper is not None and self._sweeper.is_alive()

    def close(self, *_: Any) -> None:
        self._stop.set()
        self.gateway.shadows.drop()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        if self.checkpointer is not None:
            self.checkpointer.stop()
        for broker in self.gateway.brokers().values():
            closing = getattr(broker, "close", None)  # a broker that keeps a connection
            if callable(closing):
                try:
                    closing()
                except Exception:
                    log.exception("could not close broker %s", broker.name)
        self.store.close()


def keep_version(store: object, directory: Path, loaded: LoadedPolicies, clock: Clock) -> None:
    """Keep the texts of a set about to be put in force, by its digests, so that
    its decisions can be judged again (`apex-oms audit replay`). Best effort: a
    set that changed on disk since it was loaded, or a store that fails, is
    logged (those decisions show as `policy_version_missing`), never a refusal."""
    archive = getattr(store, "policy_archive", None)  # a store that keeps versions
    if archive is None:
        return
    version = read_version(directory, loaded)
    if version is None:
        log.warning("policy set %s changed on disk while loading; its texts are not kept",
                    loaded.policies.policy_digest)  # fmt: skip
        return
    try:
        archive().keep(version, clock())
    except Exception:
        log.exception("could not keep policy version %s", loaded.policies.policy_digest)


def _follow(
    gateway: Gateway, configured: BrokersConfig, brokers: Mapping[str, BrokerAdapter]
) -> None:
    """Wire each configured broker's updates into the gateway: a broker with an
    event stream (IB's `subscribe`) reports each change as it happens, booked as
    the broker's own report; and `position_account` maps its positions into one
    gateway account (portfolio sync at every full reconciliation)."""
    for role, section in configured.sections.items():
        broker = brokers.get(role)
        if broker is None:
            continue
        account = section.get("position_account")
        if isinstance(account, str):
            gateway.sync_positions_into(broker.name, account)
        subscribe = getattr(broker, "subscribe", None)
        if callable(subscribe):
            subscribe(_reporter(gateway, broker.name))


def _reporter(gateway: Gateway, name: str) -> Callable[[BrokerAck], None]:
    def report(ack: BrokerAck) -> None:
        try:
            gateway.report(ack)
        except Exception:
            log.exception("could not book %s's report of %s", name, ack.order_id)

    return report
