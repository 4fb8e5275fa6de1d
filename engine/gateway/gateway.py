"""The order gateway's one entry point: what the API and the CLI call.

It knows no HTTP and no SQL: it returns an `Outcome` whose `kind` the API maps
to a status code, and reaches storage and brokers through the ports
(`engine/ports.py`, `engine/broker.py`). The work is done by one part per job:
`submit` (evaluate, submit, route), `amend` (cancel, replace, market data),
`controls` (mode, trading states, the Omega directive), `executions` (broker
truth and anomalies), `recovery` (reconciliation on start and after).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..broker import BrokerAck, BrokerAdapter
from ..clock import Clock, system_clock
from ..lifecycle import OPEN
from ..models import Quote
from ..policy.evaluator import Evaluator
from ..policy.loader import LoadedPolicies
from ..ports import Store
from ..signing.standing import Standing
from .amend import Amendments
from .brokers import BrokerChecks
from .compliance import ComplianceSource, InForce, Verifier, describe
from .controls import ControlPanel
from .desk import Desk, Listener, connection_problem
from .executions import Applied, Executions
from .outcome import SYSTEM, Actor, Outcome
from .recovery import Recovery
from .shadow import Shadows
from .submit import Orders
from .unlock import LiveUnlock

__all__ = ["Gateway"]

log = logging.getLogger("apex.gateway")


class Gateway:
    def __init__(
        self,
        store: Store,
        evaluator: Evaluator,
        brokers: Mapping[str, BrokerAdapter],
        clock: Clock = system_clock,
        listener: Listener | None = None,
        compliance: ComplianceSource | None = None,
        loaded: LoadedPolicies | None = None,
    ) -> None:
        """`brokers` maps a routing mode (simulation, paper, live) to its adapter.
        Brokers take no new order until `recover` has reconciled them.
        `compliance` and `loaded` (the set `evaluator` was compiled from): where the
        configuration's signatures and trust root are; `verify_on_start` verifies
        it. Without them the rules judge alone, and live can never be entered."""
        self.store = store
        self._desk = Desk(store, evaluator, brokers, clock, listener, loaded)
        self._verifier = Verifier(self._desk, compliance)
        self._executions = Executions(self._desk)
        self._orders = Orders(self._desk, self._executions)
        self._amend = Amendments(self._desk, self._executions, self._orders)
        self._unlock = LiveUnlock(self._desk, self._verifier)
        self._desk.live_check = self._unlock.live_status
        self._checks = BrokerChecks(self._desk)
        self._controls = ControlPanel(self._desk, self._unlock, self._checks)
        self._recovery = Recovery(self._desk, self._executions)
        # the shadow policy set (shadow.py): handed each judged decision after commit
        self.shadows = Shadows(store, clock, self._desk.tell, self._install_shadow)

    # --- policies, brokers, readiness ----------------------------------------------

    @property
    def evaluator(self) -> Evaluator:
        return self._desk.evaluator

    def use_evaluator(self, evaluator: Evaluator) -> None:
        """Swap the rules in force, keeping the verdict on the configuration (tools
        and tests; the service reloads through `reload`, which verifies)."""
        self._desk.in_force = replace(self._desk.in_force, evaluator=evaluator)

    def _install_shadow(self, shadow: Any) -> None:
        self._desk.shadow = shadow

    # --- the compliance configuration ----------------------------------------------

    @property
    def in_force(self) -> InForce:
        """The policy set in force and the verdict on its configuration, as one."""
        return self._desk.in_force

    @property
    def standing(self) -> Standing:
        """The verdict on the configuration in force."""
        return self._desk.in_force.standing

    @property
    def compliance_source(self) -> ComplianceSource | None:
        return self._verifier.source

    def verify_on_start(self, actor: Actor = SYSTEM) -> Standing:
        """Verify the configuration the gateway was built with, and record it (and
        void the live unlock if it no longer holds for it)."""
        standing = self._verifier.start(actor, self._desk.in_force.loaded)
        self._review_unlock(actor)
        return standing

    def reload(self, loaded: LoadedPolicies, actor: Actor, trigger: str = "reload") -> Standing:
        """Put a new policy set in force if its configuration verifies; its standing
        either way (`in_force` false: refused, the set in force stays). A live unlock
        that no longer holds is voided."""
        standing = self._verifier.reload(loaded, Evaluator(loaded, self._desk.clock), actor,
                                         trigger)  # fmt: skip
        self._review_unlock(actor)
        return standing

    def _review_unlock(self, actor: Actor) -> None:
        """Void a live unlock that no longer holds. A failure here changes nothing
        that was done: live_status blocks orders on its own, the sweep voids later."""
        try:
            self._unlock.review(actor)
        except Exception:
            log.exception("the live unlock could not be reviewed; the sweep tries again")

    def verify(self, loaded: LoadedPolicies, actor: Actor, trigger: str = "cli") -> Standing:
        """Verify a configuration and record it, changing nothing in force."""
        return self._verifier.verify(loaded, trigger, actor)

    def recheck_compliance(self) -> Standing | None:
        """Expiry, or a newer version accepted elsewhere: the sweep's check; then the
        live unlock's (a lapse voids it; the live broker's credentials are checked
        again when the last check is getting old)."""
        standing = self._verifier.recheck(SYSTEM)
        self._unlock.review(SYSTEM, refresh=True)
        return standing

    @property
    def unlock(self) -> LiveUnlock:
        """The live unlock: its steps, its status (SPEC section 3)."""
        return self._unlock

    def broker_for(self, mode: str) -> BrokerAdapter | None:
        return self._desk.broker_for(mode)

    def brokers(self) -> dict[str, BrokerAdapter]:
        """Routing mode -> its broker (simulation, and paper and live when configured)."""
        return dict(self._desk.brokers)

    def broker_named(self, name: str) -> BrokerAdapter | None:
        return self._desk.broker_named(name)

    def check_broker(self, mode: str, actor: Actor, account: str = "") -> dict[str, Any]:
        """Validate `mode`'s broker's credentials and read its account; recorded
        (`broker_check`, and the setting paper's entry reads)."""
        return self._checks.check(mode, actor, account)

    def broker_status(self, broker: BrokerAdapter) -> dict[str, Any]:
        """Whether a broker takes new orders (and why not), its last credential check
        and its last reconciliation in this process (GET /v1/brokers)."""
        why_not = self._desk.unready().get(broker.name)
        return {
            "ready": why_not is None,
            "why_not": why_not,
            "last_check": self._checks.last(broker),
            "last_reconciliation": self._desk.reconciled.get(broker.name),
        }

    def readiness(self) -> list[str]:
        """Why the gateway is not ready (empty: ready)."""
        reasons = [f"broker {name}: {why}" for name, why in sorted(self._desk.unready().items())]
        problem = describe(self.standing, self._desk.clock())
        return [problem, *reasons] if problem is not None else reasons

    def recover(self, stale_after_s: float | None = None) -> list[dict[str, Any]]:
        return self._recovery.recover(SYSTEM, stale_after_s)

    def connection_problem(self, broker: BrokerAdapter) -> str | None:
        """Why a broker that keeps a connection is down now (None: it is up)."""
        return connection_problem(broker)

    def sync_positions_into(self, broker_name: str, account: str) -> None:
        """Each full reconciliation sets `account`'s positions to the broker's (its
        truth), one `position_sync` record per change."""
        self._desk.position_accounts[broker_name] = account

    # --- orders ---------------------------------------------------------------

    def evaluate(self, raw: Any, actor: Actor) -> Outcome:
        return self._orders.evaluate(raw, actor)

    def submit(self, raw: Any, actor: Actor) -> Outcome:
        return self._orders.submit(raw, actor)

    def reject(
        self,
        operation: str,
        errors: list[tuple[str, str]],
        actor: Actor,
        *,
        request: Any = None,
        about: str | None = None,
        route: str | None = None,
    ) -> Outcome:
        """Log an attempt refused before any order was judged (`Orders.reject`)."""
        return self._orders.reject(
            operation, errors, actor, request=request, about=about, route=route
        )

    def cancel(self, order_id: str, actor: Actor, reason: str = "") -> Outcome:
        return self._amend.cancel(order_id, actor, reason)

    def replace(self, order_id: str, changes: Any, actor: Actor) -> Outcome:
        return self._amend.replace(order_id, changes, actor)

    def order(self, order_id: str, actor: Actor) -> dict[str, Any] | None:
        stored = self._amend.visible(order_id, actor)
        return (stored.linked or stored.record.as_dict()) if stored is not None else None

    def list_orders(self, actor: Actor, **filters: Any) -> list[dict[str, Any]]:
        accounts = None
        if actor.role == "trader":
            accounts = (
                actor.accounts if actor.accounts is not None else self._desk.allowed_accounts()
            )
        return self.store.list_orders(accounts=accounts, **filters)

    def broker_history(
        self,
        broker: BrokerAdapter,
        actor: Actor,
        status: str | None = None,
        account: str | None = None,
    ) -> list[dict[str, Any]]:
        """`broker`'s own order history (raises `BrokerError`), each order with the
        account our record of it names; a trader sees only its accounts' orders (an
        order the gateway never placed has no account, so no trader sees it)."""
        allowed = self._desk.allowed_accounts()
        rows = []
        for ack in broker.order_history():
            stored = self.store.order(ack.order_id) if ack.order_id else None
            owner = stored.account if stored is not None else None
            if actor.role == "trader" and not actor.may_see(owner, allowed):
                continue
            if (status is not None and ack.status != status) or (
                account is not None and owner != account
            ):
                continue
            rows.append({
                "order_id": ack.order_id, "broker_order_id": ack.broker_order_id,
                "status": str(ack.status), "filled_quantity": ack.filled_quantity,
                "average_price": ack.average_price, "detail": ack.detail, "account": owner,
            })  # fmt: skip
        return rows

    def report(self, ack: BrokerAck) -> Applied:
        """Book a broker's own report about one of our orders (a stream update, a
        late fill): broker truth, checked against the lifecycle (anomalies)."""
        operation = "fill" if ack.fills else "report"
        return self._executions.apply(ack.order_id, ack, "broker", operation)

    def market_quote(self, symbol: str, quote: Quote, actor: Actor) -> list[dict[str, Any]]:
        return self._amend.market_quote(symbol, quote, actor)

    # --- controls ---------------------------------------------------------------

    def mode(self) -> str:
        return self._controls.mode()

    def requirements(self, mode: str) -> list[str]:
        return self._controls.requirements(mode)

    def set_mode(self, mode: str, actor: Actor, reason: str = "") -> dict[str, Any]:
        return self._controls.set_mode(mode, actor, reason)

    def omega(self) -> dict[str, Any]:
        return self._controls.omega()

    def invoke_omega(self, actor: Actor, reason: str, cancel_open: bool = False) -> dict[str, Any]:
        record = self._controls.invoke_omega(actor, reason, cancel_open)
        if cancel_open:
            self._cancel_open(actor, f"Omega directive: {reason}")
        return record

    def clear_omega(self, actor: Actor, reason: str) -> dict[str, Any]:
        return self._controls.clear_omega(actor, reason)

    def trading_states(self) -> dict[str, Any]:
        return self._controls.trading_states()

    def set_trading_state(
        self, scope: str, state: str, actor: Actor, reason: str
    ) -> dict[str, Any]:
        return self._controls.set_trading_state(scope, state, actor, reason)

    def _cancel_open(self, actor: Actor, reason: str) -> None:
        for stored in self.store.orders_in(OPEN):
            outcome = self._amend.cancel(stored.order_id, actor, reason)
            if outcome.kind not in ("routed", "pending", "not_open"):
                log.error("Omega: could not cancel %s (%s)", stored.order_id, outcome.kind)
