"""The controls compliance holds: the mode, the trading states and the Omega
directive. Each change is written with its chain record in one transaction, so
every decision is judged either wholly before it or wholly after it.

Trading states, for the whole gateway (`global`) and per account: `active`;
`reducing` (only orders that reduce a position pass; cancels always pass);
`halted`. The Omega directive is the global `halted`: invoking it writes
`omega_invoked`, clearing it `omega_cleared`; every other change writes
`trading_state_changed`. The checks themselves are policies (`policies/`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..clock import format_utc
from ..errors import fault
from ..ports import Controls, Writer
from ._records import event
from .brokers import BrokerChecks
from .desk import MODES, Desk
from .outcome import Actor, ModeRefused, StateRefused
from .unlock import LiveUnlock

__all__ = ["ControlPanel"]

STATES = ("active", "reducing", "halted")
_ACCOUNT = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


class ControlPanel:
    def __init__(
        self, desk: Desk, unlock: LiveUnlock | None = None, checks: BrokerChecks | None = None
    ) -> None:
        """`unlock`: the live unlock, which alone decides whether live may be entered;
        `checks`: the brokers' recorded credential checks, which decide paper."""
        self._desk = desk
        self._unlock = unlock
        self._checks = checks or BrokerChecks(desk)

    # --- mode -----------------------------------------------------------------------

    def mode(self) -> str:
        return self._desk.store.controls().mode

    def requirements(self, mode: str) -> list[str]:
        """What is missing to enter `mode` (empty: it can be entered)."""
        if mode == "research":
            return []
        if mode == "live":
            if self._unlock is None:
                return ["live trading needs the compliance unlock procedure (not available here)"]
            return self._unlock.missing()
        if mode == "paper":
            # a successful `brokers check` recorded within CHECK_MAX_AGE_S: reading
            # the requirements never calls the broker (engine/gateway/brokers.py)
            return self._checks.missing(mode, self._desk.clock())
        broker = self._desk.broker_for(mode)
        if broker is None:
            return [f"no broker configured for {mode} mode"]
        try:
            valid = broker.check_credentials()
        except Exception as exc:
            return [f"{broker.name} credential check failed: {fault(exc)}"]
        return [] if valid else [f"{broker.name} credentials are not valid"]

    def set_mode(self, mode: str, actor: Actor, reason: str = "") -> dict[str, Any]:
        if mode not in MODES:
            raise ModeRefused(mode, [f"unknown mode {mode!r} (one of {', '.join(MODES)})"])
        missing = self.requirements(mode)
        if missing:
            raise ModeRefused(mode, missing)
        now = self._desk.clock()

        def work(w: Writer) -> dict[str, Any]:
            controls = w.controls()
            w.set_controls(Controls(mode, controls.states), now)
            if self._unlock is not None and controls.mode == "live" and mode != "live":
                self._unlock.leave_live(w, now)  # entering live again is a new enable
            record = event(
                "mode_changed", now, actor.id, previous=controls.mode, mode=mode, reason=reason
            )
            return w.append(record, "mode", now)

        return self._desk.store.transact(work)

    # --- trading states and the Omega directive ------------------------------------------

    def trading_states(self) -> dict[str, Any]:
        states = self._desk.store.controls().states
        active = {"state": "active", "reason": "", "actor": None, "at": None}
        return {
            "global": states.get("global", active),
            "accounts": {k: v for k, v in sorted(states.items()) if k != "global"},
        }

    def omega(self) -> dict[str, Any]:
        entry = self._desk.store.controls().states.get("global") or {}
        return {
            "active": entry.get("state") == "halted",
            "reason": entry.get("reason", ""),
            "actor": entry.get("actor"),
            "at": entry.get("at"),
        }

    def set_trading_state(
        self, scope: str, state: str, actor: Actor, reason: str
    ) -> dict[str, Any]:
        if state not in STATES:
            raise StateRefused(f"unknown trading state {state!r} (one of {', '.join(STATES)})")
        if scope != "global" and not _ACCOUNT.match(scope):
            raise StateRefused(f"scope must be `global` or an account id (got: {scope[:80]!r})")
        if not reason.strip():
            raise StateRefused("a reason is required")
        return self._change(scope, state, actor, reason, {})

    def invoke_omega(self, actor: Actor, reason: str, cancel_open: bool = False) -> dict[str, Any]:
        """Halt everything; the caller cancels working orders when asked to."""
        return self._change("global", "halted", actor, reason, {"cancel_open_orders": cancel_open})

    def clear_omega(self, actor: Actor, reason: str) -> dict[str, Any]:
        return self._change("global", "active", actor, reason, {})

    def _change(
        self, scope: str, state: str, actor: Actor, reason: str, extra: dict[str, Any]
    ) -> dict[str, Any]:
        now = self._desk.clock()

        def work(w: Writer) -> dict[str, Any]:
            controls = w.controls()
            previous = controls.state_of(scope)
            entry = {"state": state, "reason": reason, "actor": actor.id, "at": format_utc(now)}
            w.set_controls(Controls(controls.mode, {**controls.states, scope: entry}), now)
            return w.append(
                _record(scope, previous, state, actor, reason, extra, now), "state", now
            )

        return self._desk.store.transact(work)


def _record(
    scope: str,
    previous: str,
    state: str,
    actor: Actor,
    reason: str,
    extra: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    if scope == "global" and state == "halted":
        kind = "omega_invoked"
    elif scope == "global" and previous == "halted":
        kind = "omega_cleared"
    else:
        kind = "trading_state_changed"
    return event(
        kind, now, actor.id, scope=scope, previous=previous, state=state, reason=reason, **extra
    )
