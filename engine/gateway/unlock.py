"""The live unlock (SPEC section 3): five steps, in order, each a chain record
(kind `unlock_step`), taken by compliance officers only.

1. `access`: a compliance officer opens the configuration in force;
2. `acknowledge`: it is signed by the threshold of trusted officers, valid,
   not expired (the development root never counts);
3. `risk`: the risk engine is fully armed (`armed`);
4. `credentials`: the live broker's credential check succeeded (the simulated
   broker never counts);
5. `enable`: a separate call with the confirmation `ENABLE LIVE TRADING`;
   every requirement is checked again at that instant and the mode becomes
   `live` (a `mode_changed` record too).

The walk is kept in the store (setting `unlock.walk`) under the configuration
it was taken for (its sha256 and version), so it survives restarts and every
replica shares it. Live holds (`live_status`, asked for every order in live
mode) only while the walk is complete for the configuration in force and the
four requirements hold now: manual enable (step 5), a signed, valid, unexpired
configuration, credentials validated within `CREDENTIALS_MAX_AGE_S`, the risk
engine armed. A lapse blocks orders at once (the compliance checks judge
`live_unlocked`); `review` then voids the walk from the lapsed step on, with a
record (outcome `void`), so that live stays locked until it is walked again even
if the requirement comes back: on start, after each reload, and in the sweep.
The sweep also refreshes the credential check while the walk is complete (every
`REFRESH_AFTER_S`), so live does not lapse by itself; a failed refresh voids
steps 4 and 5. Leaving live clears step 5: entering live again is step 5.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..clock import format_utc, parse_utc
from ..errors import ApexError, fault
from ..limits import COMMENT_LENGTH
from ..policy.required import REQUIRED_CHECK_IDS
from ..ports import Controls, Writer
from ..signing.standing import Standing
from ._records import event
from .compliance import NOT_VERIFIED, InForce
from .outcome import SYSTEM, Actor

__all__ = [
    "CONFIRMATION",
    "CREDENTIALS_MAX_AGE_S",
    "REFRESH_AFTER_S",
    "SHIPPED_CHECKS",
    "STEPS",
    "WALK",
    "LiveUnlock",
    "UnlockInvalid",
    "UnlockRefused",
    "armed",
    "parse_step",
]

log = logging.getLogger("apex.unlock")

STEPS = ("access", "acknowledge", "risk", "credentials", "enable")
CONFIRMATION = "ENABLE LIVE TRADING"
# credentials validated longer ago than this do not count for live
CREDENTIALS_MAX_AGE_S = 15 * 60
# the sweep checks the live broker's credentials again once the last check is this old
REFRESH_AFTER_S = 5 * 60
WALK = "unlock.walk"  # the store setting
# how long one process trusts its copy of the walk (another replica's step shows
# within this; this process's own steps at once)
CACHE_S = 1.0

# Every check the product ships (the rule ids of policies/, the packaged set).
# "Fully armed" needs each of them in the set that judges orders: a signed
# configuration may approve a set that drops one, but live is not entered on
# it. Like REQUIRED_CHECKS this list is code; a test keeps it equal to the
# shipped policy directory.
SHIPPED_CHECKS: frozenset[str] = frozenset({
    "restricted_symbol_check", "account_check", "omega_check", "mode_check",
    "compliance_signature_check", "policy_digest_check", "compliance_expiry_check",
    "compliance_mode_check", "live_trust_check", "live_mode_check", "trading_halted_check",
    "trading_reducing_check", "account_permission_check", "broker_check",
    "broker_ready_check", "broker_capability_check", "data_hash_check",
    "quote_freshness_check", "quote_consistency_check", "broker_quote_check", "volatility_check",
    "volatility_domain_check", "spread_check", "regime_check", "entropy_check",
    "entropy_domain_check", "drift_check", "signal_freshness_check",
    "duplicate_order_check", "order_rate_check", "session_hours_check",
    "max_quantity_check", "min_quantity_check", "whole_shares_check", "tick_size_check",
    "max_notional_check", "price_collar_check", "max_position_check", "reduce_only_check",
    "protocol_hash_check", "required_protocols_check", "market_collar_check",
    "open_notional_check", "gross_exposure_check", "daily_notional_check",
    "self_match_check", "short_sale_check",
})  # fmt: skip

# the step from which each requirement's lapse voids the walk
_VOIDS_FROM = {"signed_config": 1, "risk_armed": 3, "credentials": 4, "manual_enable": 5}


class UnlockRefused(ApexError):
    """A step whose condition does not hold; it was recorded as refused."""

    code = "unlock_refused"

    def __init__(self, step: int, reason: str, record: Mapping[str, Any]) -> None:
        super().__init__(f"step {step} ({STEPS[step - 1]}) refused: {reason}")
        self.step = step
        self.reason = reason
        self.record = dict(record)


class UnlockInvalid(ApexError):
    """A step asked for wrongly (unknown step, missing confirmation): nothing recorded
    here; `field` names what is wrong."""

    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_step(value: object) -> int:
    """A step by number (1-5, or its text) or by name."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(STEPS):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and 1 <= int(text) <= len(STEPS):
            return int(text)
        if text in STEPS:
            return STEPS.index(text) + 1
    raise UnlockInvalid(
        "step", f"step must be 1-5 or one of {', '.join(STEPS)} (got: {str(value)[:40]!r})"
    )


@dataclass(frozen=True)
class Walk:
    """The walk as stored: the configuration it is taken under, each step done
    (step name -> {step, actor, at, hash}), the last credential check, and why it
    was voided last."""

    config_sha256: str | None = None
    version: int | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    credentials_at: datetime | None = None
    broker: str | None = None
    void: dict[str, Any] | None = None

    @classmethod
    def of(cls, value: Any) -> Walk:
        """The stored value; an unreadable one is an empty walk that says so (fail
        closed: nothing counts as done)."""
        if value is None:
            return cls()
        try:
            steps = {str(k): dict(v) for k, v in dict(value["steps"]).items() if k in STEPS}
            at = value.get("credentials_at")
            version = value.get("version")
            return cls(
                config_sha256=value.get("config_sha256"),
                version=version if isinstance(version, int) else None,
                steps=steps,
                credentials_at=parse_utc(at) if isinstance(at, str) else None,
                broker=value.get("broker"),
                void=dict(value["void"]) if value.get("void") else None,
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            return cls(void={"reason": f"the stored walk is unreadable ({fault(exc)})"})

    def to_json(self) -> dict[str, Any]:
        at = self.credentials_at
        return {
            "config_sha256": self.config_sha256,
            "version": self.version,
            "steps": self.steps,
            "credentials_at": format_utc(at) if at is not None else None,
            "broker": self.broker,
            "void": self.void,
        }

    def under(self, standing: Standing) -> bool:
        return (self.config_sha256, self.version) == (standing.config_sha256, standing.version)

    def done(self, step: int) -> bool:
        return STEPS[step - 1] in self.steps

    def next_step(self) -> int | None:
        for number in range(1, len(STEPS) + 1):
            if not self.done(number):
                return number
        return None

    def cut(self, first: int, void: dict[str, Any] | None = None) -> Walk:
        """Steps `first`.. undone (and the credential check with step 4)."""
        keep = {n: s for n, s in self.steps.items() if STEPS.index(n) + 1 < first}
        return Walk(
            config_sha256=self.config_sha256,
            version=self.version,
            steps=keep,
            credentials_at=self.credentials_at if first > 4 else None,
            broker=self.broker if first > 4 else None,
            void=void if void is not None else self.void,
        )


@dataclass(frozen=True)
class Requirement:
    name: str
    ok: bool
    why: str

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "why": self.why}


def armed(in_force: InForce) -> list[str]:
    """Why the risk engine is not fully armed (empty: it is). Armed means: the set
    that judges orders is the one whose configuration is verified and in force, so
    every parameter comes from it (the evaluator was compiled from that set and its
    configuration; the configuration pins those rules); every required check and
    every shipped check is in it, so none is bypassed (a rule cannot be switched
    off other than by deleting it)."""
    standing, evaluator, loaded = in_force.standing, in_force.evaluator, in_force.loaded
    problems = []
    if not standing.in_force:
        problems.append(
            f"the parameters are not from a verified configuration ({standing.code}: "
            f"{standing.message})"
        )
    elif not standing.facts.digest_ok or standing.policy_digest != standing.loaded_policy_digest:
        problems.append(
            f"the configuration does not pin the loaded rules (want: {standing.policy_digest},"
            f" got: {standing.loaded_policy_digest})"
        )
    judging = evaluator.policy.policies
    if loaded is None:
        problems.append("no verified policy set is loaded (this gateway has no compliance source)")
    elif (
        judging.policy_digest != loaded.policies.policy_digest
        or judging.compliance_digest != loaded.policies.compliance_digest
    ):
        problems.append(
            f"the rules judging orders are not the verified set (want: "
            f"{loaded.policies.policy_digest}, got: {judging.policy_digest})"
        )
    ids = {rule.id for rule in judging.rules}
    for label, wanted in (("required", REQUIRED_CHECK_IDS), ("shipped", SHIPPED_CHECKS)):
        missing = sorted(set(wanted) - ids)
        if missing:
            problems.append(f"{label} checks missing: {', '.join(missing)}")
    return problems


def _simulated(broker: Any) -> bool:
    """The in-process simulator, however it is named or where it is mapped."""
    module = type(broker).__module__ or ""
    return (
        broker.name == "simulated"
        or module.split(".")[-1] == "simulated"
        or getattr(broker, "simulated", False) is True
    )


def _clip(text: str) -> str:
    return text if len(text) <= COMMENT_LENGTH else text[: COMMENT_LENGTH - 3] + "..."


class LiveUnlock:
    """The walk, its steps, and whether live holds now. `verifier`: the gateway's
    `Verifier` (a step that judges the configuration verifies it afresh, recorded
    with trigger `unlock`)."""

    def __init__(self, desk: Any, verifier: Any, max_age_s: float = CREDENTIALS_MAX_AGE_S) -> None:
        self._desk = desk
        self._verifier = verifier
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._generation = 0
        self._cached: tuple[float, Walk] | None = None
        self._armed: tuple[InForce, list[str]] | None = None

    # --- reading ----------------------------------------------------------------------

    def walk(self) -> Walk:
        """The stored walk, from this process's copy when it is under `CACHE_S` old."""
        with self._lock:
            cached, generation = self._cached, self._generation
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        walk = Walk.of(self._desk.store.setting(WALK))
        with self._lock:
            if generation == self._generation:
                self._cached = (time.monotonic(), walk)
        return walk

    def _forget(self) -> None:
        with self._lock:
            self._generation += 1
            self._cached = None

    def _armed_problems(self, in_force: InForce) -> list[str]:
        cached = self._armed
        if cached is not None and cached[0] is in_force:
            return cached[1]
        problems = armed(in_force)
        self._armed = (in_force, problems)
        return problems

    def requirements(
        self, walk: Walk, in_force: InForce, now: datetime, standing: Standing | None = None
    ) -> list[Requirement]:
        """The four live requirements at `now`, each with why it fails."""
        standing = standing or in_force.standing
        out = [Requirement("manual_enable", walk.done(5),
                           "live was enabled (step 5)" if walk.done(5)
                           else "live has not been enabled (step 5)")]  # fmt: skip
        out.append(Requirement("signed_config", *self._signed(standing, now)))
        out.append(Requirement("credentials", *self._credentials(walk, now)))
        problems = self._armed_problems(in_force)
        out.append(Requirement("risk_armed", not problems, "; ".join(problems) or "armed"))
        return out

    def _signed(self, standing: Standing, now: datetime) -> tuple[bool, str]:
        if not standing.in_force:
            return False, f"the configuration is not in force ({standing.code}: {standing.message})"
        if standing.trust != "signed":
            return False, (
                f"the configuration is trusted as {standing.trust!r}, not signed by the "
                "threshold of trusted officers"
            )
        if standing.expires is not None and standing.expired(now):
            return False, f"the configuration expired at {format_utc(standing.expires)}"
        return True, f"version {standing.version} signed by {', '.join(standing.signers)}"

    def _credentials(self, walk: Walk, now: datetime) -> tuple[bool, str]:
        broker = self._desk.broker_for("live")
        if broker is None:
            return False, "no broker is configured for live"
        if _simulated(broker):
            return False, f"{broker.name}: the simulated broker never counts for live"
        if walk.credentials_at is None or walk.broker != broker.name:
            return False, f"{broker.name} credentials have not been validated (step 4)"
        age = (now - walk.credentials_at).total_seconds()
        if age > self.max_age_s:
            return False, (
                f"{broker.name} credentials were validated at {format_utc(walk.credentials_at)}, "
                f"more than {int(self.max_age_s)} s ago"
            )
        return True, f"{broker.name} credentials validated at {format_utc(walk.credentials_at)}"

    def _void_reason(self, walk: Walk, standing: Standing) -> str | None:
        """Why the stored walk does not count for the configuration in force (None
        also when that configuration is not verified yet: the requirements say so)."""
        if walk.steps and standing.config_sha256 is not None and not walk.under(standing):
            return (
                f"the walk was taken under configuration {walk.config_sha256} version "
                f"{walk.version}; the configuration in force is {standing.config_sha256} "
                f"version {standing.version}"
            )
        return None

    def live_status(self, standing: Standing) -> tuple[bool, str]:
        """Whether live holds under `standing` now, and if not the first reason why."""
        try:
            walk = self.walk()
        except Exception as exc:  # fail closed: an unreadable walk unlocks nothing
            return False, _clip(f"the live unlock cannot be read: {fault(exc)}")
        void = self._void_reason(walk, standing)
        if void is not None:
            return False, _clip(f"the live unlock is void: {void}")
        pending = walk.next_step()
        if pending is not None:
            why = f"; last voided: {walk.void['reason']}" if walk.void else ""
            text = f"the live unlock is not complete: step {pending} ({STEPS[pending - 1]}) pending"
            return False, _clip(text + why)
        in_force = self._desk.in_force
        for requirement in self.requirements(walk, in_force, self._desk.clock(), standing):
            if not requirement.ok:
                return False, _clip(f"{requirement.name}: {requirement.why}")
        return True, "the live unlock holds: every live requirement is met"

    def missing(self) -> list[str]:
        """What entering live through a mode change lacks (empty: live holds)."""
        standing = self._desk.in_force.standing
        unlocked, note = self.live_status(standing)
        if unlocked:
            return []
        return [f"{note} (walk it: POST /v1/unlock/{{step}}, or apex-oms unlock step N)"]

    def status(self) -> dict[str, Any]:
        """`GET /v1/unlock`: each step, the requirements, whether live holds."""
        in_force = self._desk.in_force
        standing, now = in_force.standing, self._desk.clock()
        walk = Walk.of(self._desk.store.setting(WALK))
        void = self._void_reason(walk, standing)
        counted = Walk(void=walk.void) if void is not None else walk
        unlocked, note = self.live_status(standing)
        steps = []
        for number, name in enumerate(STEPS, start=1):
            done = counted.steps.get(name)
            steps.append({
                "step": number,
                "name": name,
                "status": "done" if done else "pending",
                "actor": done.get("actor") if done else None,
                "at": done.get("at") if done else None,
            })  # fmt: skip
        return {
            "unlocked": unlocked,
            "note": note,
            "mode": self._desk.store.controls().mode,
            "configuration": {
                "config_sha256": standing.config_sha256,
                "version": standing.version,
                "trust": standing.trust,
                "in_force": standing.in_force,
                "expires": format_utc(standing.expires) if standing.expires else None,
                "signers": list(standing.signers),
            },
            "walk": {
                "config_sha256": walk.config_sha256,
                "version": walk.version,
                "void": {"reason": void} if void is not None else walk.void,
            },
            "steps": steps,
            "next_step": counted.next_step(),
            "requirements": [r.view() for r in self.requirements(counted, in_force, now)],
            "credentials_max_age_s": int(self.max_age_s),
            "confirmation": CONFIRMATION,
        }

    # --- the steps --------------------------------------------------------------------

    def perform(self, step: int | str, actor: Actor, confirm: str | None = None) -> dict[str, Any]:
        """Take step `step` as `actor`: the `unlock_step` record when done; raises
        `UnlockRefused` (after recording the refusal) when its condition fails,
        `UnlockInvalid` for a bad request (nothing recorded)."""
        step = parse_step(step)  # a number or a name
        if step == 5 and confirm != CONFIRMATION:
            got = "nothing" if confirm is None else repr(str(confirm)[:40])
            raise UnlockInvalid("confirm", f"step 5 needs confirm = {CONFIRMATION!r} (got: {got})")
        if actor.role != "compliance":
            # the API refuses other roles before this; the engine holds the line too
            raise UnlockInvalid("(role)", f"role {actor.role!r} may not take unlock steps")
        in_force = self._desk.in_force
        standing = in_force.standing
        walk = Walk.of(self._desk.store.setting(WALK))
        now = self._desk.clock()
        fields: dict[str, Any] = {}
        reason = self._order(step, walk, standing)
        cut_from = step
        if reason is not None:
            cut_from = 1 if walk.steps and not walk.under(standing) else len(STEPS) + 1
        elif step == 1:
            fields = {
                "signers": list(standing.signers),
                "threshold": standing.threshold,
                "trust": standing.trust,
                "expires": format_utc(standing.expires) if standing.expires else None,
                "policy_digest": standing.policy_digest,
            }
        elif step == 2:
            reason, fields = self._acknowledge(in_force, actor, now)
        elif step == 3:
            problems = self._armed_problems(in_force)
            reason = "; ".join(problems) or None
            fields = {"checks": len(in_force.evaluator.policy.policies.rules),
                      "policy_digest": standing.loaded_policy_digest}  # fmt: skip
        elif step == 4:
            reason, fields = self._check_credentials()
        else:
            reason, fields = self._enable_check(walk, in_force, actor, now)
        return self._write(step, actor, now, standing, walk, reason, cut_from, fields)

    def _order(self, step: int, walk: Walk, standing: Standing) -> str | None:
        if step == 1:
            return None
        void = self._void_reason(walk, standing)
        if void is not None:
            return f"the walk is void ({void}); start again at step 1"
        for before in range(1, step):
            if not walk.done(before):
                return f"step {before} ({STEPS[before - 1]}) must be done first"
        return None

    def _fresh(self, in_force: InForce, actor: Actor) -> Standing | None:
        loaded = in_force.loaded
        if loaded is None or self._verifier.source is None:
            return None
        standing: Standing = self._verifier.verify(loaded, "unlock", actor, in_force.standing)
        return standing

    def _acknowledge(
        self, in_force: InForce, actor: Actor, now: datetime
    ) -> tuple[str | None, dict[str, Any]]:
        """The configuration in force is signed by the threshold, and verifies again
        now against the trust root as it is (a verification record, trigger `unlock`)."""
        ok, why = self._signed(in_force.standing, now)
        if not ok:
            return why, {}
        fresh = self._fresh(in_force, actor)
        if fresh is None:
            return "this gateway has no compliance source to verify against", {}
        if fresh.config_sha256 != in_force.standing.config_sha256:
            return "the configuration on disk is not the one in force; reload first", {}
        ok, why = self._signed(fresh, now)
        if not ok:
            return f"verified again now: {why}", {}
        return None, {
            "signers": list(fresh.signers),
            "threshold": fresh.threshold,
            "verification": fresh.record.get("hash"),
        }

    def _check_credentials(self) -> tuple[str | None, dict[str, Any]]:
        broker = self._desk.broker_for("live")
        if broker is None:
            return "no broker is configured for live", {"broker": None}
        fields: dict[str, Any] = {"broker": broker.name}
        if _simulated(broker):
            return f"{broker.name}: the simulated broker never counts for live", fields
        try:
            valid = broker.check_credentials()
        except Exception as exc:
            return f"{broker.name} credential check failed: {fault(exc)}", fields
        if valid is not True:
            return f"{broker.name} credentials are not valid", fields
        return None, fields

    def _enable_check(
        self, walk: Walk, in_force: InForce, actor: Actor, now: datetime
    ) -> tuple[str | None, dict[str, Any]]:
        """Every requirement, at this instant (the configuration verified again)."""
        fresh = self._fresh(in_force, actor)
        if fresh is None:
            return "this gateway has no compliance source to verify against", {}
        if fresh.config_sha256 != in_force.standing.config_sha256:
            return "the configuration on disk is not the one in force; reload first", {}
        checked = [Requirement("manual_enable", True, "confirmed")]
        for requirement in self.requirements(walk, in_force, now)[1:]:
            checked.append(requirement)
        ok, why = self._signed(fresh, now)
        checked.append(Requirement("signed_config_now", ok, f"verified again now: {why}"))
        fields = {"requirements": [r.view() for r in checked],
                  "verification": fresh.record.get("hash")}  # fmt: skip
        failed = [r for r in checked if not r.ok]
        return ("; ".join(f"{r.name}: {r.why}" for r in failed) or None), fields

    def _write(
        self,
        step: int,
        actor: Actor,
        now: datetime,
        standing: Standing,
        walk: Walk,
        reason: str | None,
        cut_from: int,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        name = STEPS[step - 1]
        refusal: list[str] = []

        def work(w: Writer) -> dict[str, Any]:
            current = Walk.of(w.setting(WALK))  # under the chain lock: the walk of record
            why, cut = reason, cut_from
            if why is None and current != walk:  # changed since it was judged
                why = self._order(step, current, standing)
                cut = len(STEPS) + 1
            refusal[:] = [why] if why is not None else []
            record = w.append(
                event("unlock_step", now, actor.id, step=step, name=name,
                      outcome="done" if why is None else "refused", reason=_clip(why or ""),
                      role=actor.role, config_sha256=standing.config_sha256,
                      version=standing.version, **fields),
                "unlock", now,
            )  # fmt: skip
            if why is not None:
                if any(STEPS.index(n) + 1 >= cut for n in current.steps):
                    void = {"reason": _clip(f"step {step} refused: {why}"),
                            "at": format_utc(now), "actor": actor.id}  # fmt: skip
                    w.set_setting(WALK, current.cut(cut, void).to_json(), now)
                return record
            w.set_setting(WALK, self._advanced(current, step, standing, record, now, fields), now)
            if step == 5:
                controls = w.controls()
                w.set_controls(Controls("live", controls.states), now)
                mode = event("mode_changed", now, actor.id, previous=controls.mode, mode="live",
                             reason="live unlock step 5: enabled explicitly",
                             unlock_step=record["hash"])  # fmt: skip
                w.append(mode, "mode", now)
            return record

        try:
            record: dict[str, Any] = self._desk.store.transact(work)
        finally:
            self._forget()
        if refusal:
            raise UnlockRefused(step, refusal[0], record)
        return record

    @staticmethod
    def _advanced(
        walk: Walk,
        step: int,
        standing: Standing,
        record: Mapping[str, Any],
        now: datetime,
        fields: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The walk with `step` done: step 1 under another configuration starts a new
        walk; a step done again keeps the later ones (step 4 again refreshes the
        credential check without leaving live)."""
        if step == 1 and (not walk.under(standing) or not walk.steps):
            walk = Walk(standing.config_sha256, standing.version)
        done = {"step": step, "actor": record["actor"], "at": format_utc(now),
                "hash": record["hash"]}  # fmt: skip
        steps = {**walk.steps, STEPS[step - 1]: done}
        at, broker = walk.credentials_at, walk.broker
        if step == 4:
            at, broker = now, fields["broker"]
        return Walk(walk.config_sha256, walk.version, steps, at, broker, walk.void).to_json()

    # --- lapses -----------------------------------------------------------------------

    def leave_live(self, w: Writer, now: datetime) -> None:
        """Inside the mode change that leaves live: step 5 is undone (entering live
        again is a new explicit enable)."""
        walk = Walk.of(w.setting(WALK))
        if walk.done(5):
            w.set_setting(WALK, walk.cut(5).to_json(), now)
        self._forget()

    def review(self, actor: Actor = SYSTEM, refresh: bool = False) -> dict[str, Any] | None:
        """Void the walk from the first lapsed requirement on (a record, outcome `void`),
        so a lapse keeps live locked until the unlock is walked again; `refresh` (the
        sweep): check the live broker's credentials again when the last check is
        `REFRESH_AFTER_S` old. The record written, if any."""
        walk = self.walk()
        in_force = self._desk.in_force
        standing, now = in_force.standing, self._desk.clock()
        if not walk.steps or standing.code == NOT_VERIFIED:  # unknown is not a lapse
            return None
        lapse = self._lapse(walk, in_force, now)
        if lapse is None and refresh and walk.done(4):
            at = walk.credentials_at
            if at is None or (now - at).total_seconds() >= REFRESH_AFTER_S:
                return self._refresh(walk, standing, actor, now)
        if lapse is None:
            return None
        first, why = lapse
        return self._void(walk, standing, actor, now, first, why)

    def _lapse(self, walk: Walk, in_force: InForce, now: datetime) -> tuple[int, str] | None:
        void = self._void_reason(walk, in_force.standing)
        if void is not None:
            return 1, void
        for requirement in self.requirements(walk, in_force, now):
            first = _VOIDS_FROM[requirement.name]
            # a requirement counts from the step that establishes it
            if not requirement.ok and walk.done(first if first != 1 else 2):
                return first, f"{requirement.name}: {requirement.why}"
        return None

    def _refresh(
        self, walk: Walk, standing: Standing, actor: Actor, now: datetime
    ) -> dict[str, Any] | None:
        reason, fields = self._check_credentials()
        if reason is not None:
            return self._void(walk, standing, actor, now, 4, f"credentials: {reason}")

        def work(w: Writer) -> dict[str, Any] | None:
            current = Walk.of(w.setting(WALK))
            if current != walk:  # changed meanwhile: the next sweep looks again
                return None
            record = w.append(
                event("unlock_step", now, actor.id, step=4, name="credentials", outcome="done",
                      reason="", role=actor.role, trigger="sweep",
                      config_sha256=standing.config_sha256, version=standing.version, **fields),
                "unlock", now,
            )  # fmt: skip
            fresh = Walk(current.config_sha256, current.version, current.steps, now,
                         fields["broker"], current.void)  # fmt: skip
            w.set_setting(WALK, fresh.to_json(), now)
            return record

        try:
            return self._desk.store.transact(work)  # type: ignore[no-any-return]
        finally:
            self._forget()

    def _void(
        self, walk: Walk, standing: Standing, actor: Actor, now: datetime, first: int, why: str
    ) -> dict[str, Any] | None:
        def work(w: Writer) -> dict[str, Any] | None:
            current = Walk.of(w.setting(WALK))
            if current != walk:
                return None
            record = w.append(
                event("unlock_step", now, actor.id, step=first, name=STEPS[first - 1],
                      outcome="void", reason=_clip(why), role=actor.role,
                      config_sha256=standing.config_sha256, version=standing.version,
                      walk_config_sha256=walk.config_sha256, walk_version=walk.version),
                "unlock", now,
            )  # fmt: skip
            void = {"reason": _clip(why), "at": format_utc(now), "actor": actor.id}
            w.set_setting(WALK, walk.cut(first, void).to_json(), now)
            return record

        try:
            record: dict[str, Any] | None = self._desk.store.transact(work)
        finally:
            self._forget()
        if record is not None:
            log.warning("live unlock void from step %d: %s", first, why)
        return record
