"""What every part of the gateway shares: the store, the policies in force, the
brokers, the clock, and the brokers that may not take new orders yet."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..broker import BrokerAdapter
from ..clock import Clock
from ..errors import fault
from ..models import BrokerFacts, ComplianceFacts, EngineState, Operation, OrderRequest, Quote
from ..policy.evaluator import Evaluator
from ..policy.loader import LoadedPolicies
from ..ports import Snapshot, Store
from ..signing.standing import Standing
from .compliance import InForce, unjudged
from .outcome import Actor

__all__ = ["MODES", "Desk", "Listener", "connection_problem"]

log = logging.getLogger("apex.gateway")

MODES = ("research", "simulation", "paper", "live")
_SEVERITY = {"active": 0, "reducing": 1, "halted": 2}

# Told of what happened after it was committed: ("execution_anomaly", record), ...
Listener = Callable[[str, Mapping[str, Any]], None]


class Desk:
    def __init__(
        self,
        store: Store,
        evaluator: Evaluator,
        brokers: Mapping[str, BrokerAdapter],
        clock: Clock,
        listener: Listener | None = None,
        loaded: LoadedPolicies | None = None,
    ) -> None:
        """`brokers` maps a routing mode (simulation, paper, live) to its adapter.
        `loaded`: the set `evaluator` was compiled from, whose configuration the
        gateway verifies (without it, the rules judge alone: `unjudged`)."""
        self.store = store
        # the policy set and the verdict on its configuration, swapped as one
        self.in_force = InForce(evaluator, loaded, unjudged(loaded, evaluator))
        self.brokers = dict(brokers)
        self.clock = clock
        self._listener = listener
        self._lock = threading.Lock()
        # broker name -> why it may not take new orders (orders of unknown outcome)
        self._unready: dict[str, str] = {
            b.name: "orders of unknown outcome not yet resolved (recovery has not run)"
            for b in self.brokers.values()
        }
        self._facts: dict[tuple[str, bool], BrokerFacts] = {}
        # broker name -> its last reconciliation in this process (GET /v1/brokers)
        self.reconciled: dict[str, dict[str, Any]] = {}
        # broker name -> the gateway account its positions are synced into (portfolio)
        self.position_accounts: dict[str, str] = {}
        # whether any broker's quotes are a reference (else no quote is ever asked)
        self._references = any(b.capabilities.quotes_are_reference for b in self.brokers.values())

    @property
    def evaluator(self) -> Evaluator:
        return self.in_force.evaluator

    # --- the live unlock ---------------------------------------------------------------

    # the live unlock's verdict (engine/gateway/unlock.py), set by the gateway
    live_check: Callable[[Standing], tuple[bool, str]] | None = None

    def live_status(self, standing: Standing) -> tuple[bool, str]:
        """Whether the live unlock holds under `standing`, and if not, why."""
        if self.live_check is None:
            return False, "the live unlock has not been walked"
        return self.live_check(standing)

    def compliance_facts(self, standing: Standing, mode: str) -> ComplianceFacts:
        """The facts of the compliance checks for one order in `mode`."""
        if mode != "live":
            return standing.facts
        unlocked, note = self.live_status(standing)
        return standing.facts.model_copy(update={"live_unlocked": unlocked, "live_note": note})

    # --- brokers ---------------------------------------------------------------

    def broker_for(self, mode: str) -> BrokerAdapter | None:
        return self.brokers.get(mode)

    def broker_named(self, name: str | None) -> BrokerAdapter | None:
        for broker in self.brokers.values():
            if broker.name == name:
                return broker
        return None

    def unready(self) -> dict[str, str]:
        with self._lock:
            return dict(self._unready)

    def set_ready(self, name: str, why_not: str | None) -> None:
        with self._lock:
            if why_not is None:
                self._unready.pop(name, None)
            else:
                self._unready[name] = why_not

    def broker_facts(self, broker: BrokerAdapter | None) -> BrokerFacts | None:
        if broker is None:
            return None
        problem = connection_problem(broker)
        if problem is not None:
            # disconnected: no new order until it is back and reconciled (the sweep)
            self.set_ready(broker.name, f"disconnected: {problem}")
        ready = broker.name not in self._unready
        key = (broker.name, ready)
        facts = self._facts.get(key)
        if facts is None:
            caps = broker.capabilities
            facts = self._facts[key] = BrokerFacts(
                name=broker.name,
                order_types=sorted(caps.order_types),  # type: ignore[arg-type]
                time_in_force=sorted(caps.time_in_force),  # type: ignore[arg-type]
                # emulated: the policies' reduce_only_check proves the order only
                # reduces the position, and it is sent without the flag (submit.py)
                reduce_only=caps.reduce_only or caps.reduce_only_emulated,
                cancel=caps.cancel,
                replace=caps.replace,
                ready=ready,
                reference_quotes=caps.quotes_are_reference,
            )
        return facts

    # --- what a decision is judged against ---------------------------------------

    def allowed_accounts(self) -> list[str]:
        allowed = self.evaluator.policy.config.param("compliance.allowed_accounts")
        return [str(a) for a in allowed] if isinstance(allowed, list) else []

    def engine_state(
        self,
        order: OrderRequest,
        snap: Snapshot,
        actor: Actor,
        operation: Operation,
        standing: Standing | None = None,
        broker_quote: tuple[str, Quote | None] | None = None,
    ) -> EngineState:
        """What `order` is judged against; `standing`: the verdict on the configuration
        of the set that judges it (read with its evaluator, from one `in_force`).
        `broker_quote`: (broker name, its quote) asked before the transaction; a
        quote of another broker than the mode's (the mode changed since) is none."""
        controls = snap.controls
        state = max(
            controls.state_of("global"), controls.state_of(order.account), key=_SEVERITY.__getitem__
        )
        mode = controls.mode if controls.mode in MODES else "live"  # unknown: the strictest
        # traders trade their accounts (None: every allowed one), admin any; no
        # other role trades at all, whatever reaches the gateway
        accounts: frozenset[str] | None = frozenset()
        if actor.role == "admin":
            accounts = None
        elif actor.role == "trader":
            accounts = actor.accounts
        broker = self.broker_for(mode)
        quote = None
        if broker_quote is not None and broker is not None and broker_quote[0] == broker.name:
            quote = broker_quote[1]
        positions = {f"{order.account}:{s}": q for s, q in snap.positions.items()}
        positions[f"{order.account}:{order.symbol}"] = snap.position
        return EngineState.model_construct(
            positions=positions,
            recent_orders=[],
            omega_active=controls.omega_active,
            omega_reason=None,
            flow=snap.flow,
            operation=operation,
            mode=mode,
            trading_state=state,
            broker=self.broker_facts(broker),
            actor_accounts=sorted(accounts) if accounts is not None else None,
            compliance=self.compliance_facts(standing or self.in_force.standing, mode),
            broker_quote=quote,
            working_orders=list(snap.working),
            marks=dict(snap.marks),
            executed_notional_today=snap.executed_today,
        )

    def reference_quote(self, symbol: str) -> tuple[str, Quote | None] | None:
        """The quote of the broker of the current mode, when its quotes are a
        reference: asked before the judging transaction, never under the chain
        lock (the transaction uses it only if the mode's broker is still the one
        asked). A broker that cannot answer gives no quote: the check errors,
        which blocks. Nothing is read when no broker's quotes are a reference."""
        if not self._references:
            return None
        try:
            broker = self.broker_for(self.store.controls().mode)
        except Exception:
            return None  # the store is down: the transaction will say so
        if broker is None or not broker.capabilities.quotes_are_reference:
            return None
        try:
            return broker.name, broker.quote(symbol)
        except Exception as exc:
            log.warning("broker %s: no quote for %s (%s)", broker.name, symbol, fault(exc))
            return broker.name, None

    # the shadow policy set (engine/gateway/shadow.py), set by the gateway: it is
    # handed each judged decision after its record is committed, and never waits
    shadow: Any = None

    def shadow_offer(self, record: Mapping[str, Any]) -> None:
        """Hand a committed decision to the shadow, if one is loaded. Never raises and
        never blocks: the shadow judges off the order's path (a bounded queue)."""
        shadow = self.shadow
        if shadow is None or "judged_on" not in record:
            return
        try:
            shadow.offer(record)
        except Exception:
            log.exception("the shadow could not take a decision; the order is unaffected")

    def tell(self, what: str, record: Mapping[str, Any]) -> None:
        if self._listener is None:
            return
        try:
            self._listener(what, record)
        except Exception:
            log.exception("listener failed on %s", what)


def connection_problem(broker: BrokerAdapter) -> str | None:
    """Why a broker that keeps a connection (IB, FIX, a socket) is not connected
    now, None when it is, or has no connection to keep. An adapter says so with an
    optional `connection_problem()` method; one that raises is taken as down."""
    probe = getattr(broker, "connection_problem", None)
    if probe is None:
        return None
    try:
        answer = probe()
    except Exception as exc:
        return f"the connection check failed: {fault(exc)}"
    return answer if isinstance(answer, str) and answer else None
