"""The compliance configuration in force: verified on start and before every
reload, rechecked for expiry and for a newer accepted version while the
service runs, and written to the audit chain each time (kind `verification`).

The policy set and the verdict on its configuration are swapped together
(`InForce`), so a decision is judged by one set and one verdict. Only a
verified configuration is put in force by a reload: a candidate that fails is
refused with its reason and the set in force stays. A reload also rereads the
trust root, so a revoked key stops counting at once: when the configuration in
force no longer verifies under the new trust, it goes out of force and a
verification record says so.

The highest version ever accepted is kept in the store (`compliance.accepted_version`,
written in the transaction that appends the verification record, under the
chain head's lock), so an older signed configuration is refused after a newer
one was accepted, across restarts and across replicas.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..clock import format_utc
from ..models import ComplianceFacts
from ..policy.evaluator import Evaluator
from ..policy.loader import LoadedPolicies
from ..ports import Store, Writer
from ..signing.standing import ACCEPTED_VERSION, DevelopmentRoot, Standing, judge
from ._records import event
from .outcome import Actor

__all__ = ["ComplianceSource", "InForce", "Verifier", "describe", "recorded", "unjudged"]

log = logging.getLogger("apex.compliance")


@dataclass(frozen=True)
class ComplianceSource:
    """Where the configuration's signatures and the trust root are read."""

    policies: Path
    keys: Path
    development: DevelopmentRoot | None = None


@dataclass(frozen=True)
class InForce:
    """The policy set that judges orders and the verdict on its configuration."""

    evaluator: Evaluator
    loaded: LoadedPolicies | None
    standing: Standing


def unjudged(loaded: LoadedPolicies | None, evaluator: Evaluator) -> Standing:
    """The standing of a gateway built with no compliance source (a library user, a
    unit test): the rules are judged, the configuration is taken as the
    development root would take it, so live can never be entered on its word."""
    config = evaluator.policy.config
    digest = evaluator.policy.policies.policy_digest
    facts = ComplianceFacts(
        expires=config.expires,
        trust="development",
        modes=list(config.modes) if config.modes is not None else None,
    )
    return Standing(
        in_force=True,
        trust="development",
        code=None,
        message="not verified: this gateway has no compliance source (library use)",
        version=config.version,
        expires=config.expires,
        config_sha256=None,
        policy_digest=digest,
        loaded_policy_digest=digest,
        signers=(),
        threshold=0,
        facts=facts,
    )


def pending(standing: Standing) -> Standing:
    """Not verified yet (the store could not be reached at start): out of force,
    fail closed; the sweep verifies again."""
    return replace(
        standing.lapsed(NOT_VERIFIED, "the configuration has not been verified yet"),
        trust="none",
        facts=standing.facts.model_copy(
            update={
                "verified": False,
                "trust": "none",
                "verified_note": "not_verified: the configuration has not been verified yet",
            }
        ),
    )


NOT_VERIFIED = "not_verified"


class Verifier:
    """Verifies configurations for the gateway and keeps the one in force."""

    def __init__(self, desk: Any, source: ComplianceSource | None) -> None:
        self._desk = desk
        self._source = source
        self._lock = threading.Lock()
        if source is not None:
            current: InForce = desk.in_force
            desk.in_force = replace(current, standing=pending(current.standing))

    @property
    def source(self) -> ComplianceSource | None:
        return self._source

    def verify(
        self,
        loaded: LoadedPolicies,
        trigger: str,
        actor: Actor,
        kept: Standing | None = None,
        record: bool = True,
    ) -> Standing:
        """Judge `loaded`'s configuration against the trust root and the store's
        accepted version; append the verification record, and raise the accepted
        version when a signed configuration is accepted, in one transaction."""
        source = self._source
        if source is None:
            return unjudged(loaded, self._desk.evaluator)

        def verdict(accepted: int | None, now: datetime) -> Standing:
            return judge(
                loaded, source.policies, source.keys, source.development, now, accepted, kept
            )

        return recorded(self._desk.store, self._desk.clock(), actor, trigger, verdict, record)

    def start(self, actor: Actor, loaded: LoadedPolicies | None) -> Standing:
        """Verify the configuration of the set the gateway was built with."""
        with self._lock:
            current: InForce = self._desk.in_force
            if loaded is None or self._source is None:
                return current.standing
            standing = self.verify(loaded, "start", actor)
            self._desk.in_force = InForce(current.evaluator, loaded, standing)
            return standing

    def reload(
        self, loaded: LoadedPolicies, evaluator: Evaluator, actor: Actor, trigger: str
    ) -> Standing:
        """Put `loaded` in force if its configuration verifies; otherwise keep the set
        in force, which goes out of force itself if it no longer verifies under the
        trust root as it is now (a revoked key, a lowered count of signers)."""
        with self._lock:
            candidate = self.verify(loaded, trigger, actor)
            current: InForce = self._desk.in_force
            if candidate.in_force or self._source is None:
                self._desk.in_force = InForce(evaluator, loaded, candidate)
                return candidate
            if current.loaded is not None and current.standing.in_force:
                again = self.verify(current.loaded, trigger, actor, current.standing, record=False)
                if not again.in_force:
                    again = self.verify(current.loaded, "trust", actor, current.standing)
                    self._desk.in_force = replace(current, standing=again)
            return candidate

    def recheck(self, actor: Actor) -> Standing | None:
        """The sweep's check of the configuration in force: its expiry, and a newer
        version accepted elsewhere (another replica). Records a lapse once."""
        with self._lock:
            current: InForce = self._desk.in_force
            standing = current.standing
            if self._source is None or current.loaded is None:
                return None
            if standing.code == NOT_VERIFIED:  # the store was down at start
                again = self.verify(current.loaded, "start", actor)
                self._desk.in_force = replace(current, standing=again)
                return again
            if not standing.in_force:
                return None
            now = self._desk.clock()
            accepted = _version(self._desk.store.setting(ACCEPTED_VERSION))
            newer = accepted is not None and (standing.version or 0) < accepted
            if not standing.expired(now) and not newer:
                return None
            again = self.verify(current.loaded, "expiry" if not newer else "version", actor,
                                standing)  # fmt: skip
            self._desk.in_force = replace(current, standing=again)
            return again


def recorded(
    store: Store,
    now: datetime,
    actor: Actor,
    trigger: str,
    verdict: Callable[[int | None, datetime], Standing],
    record: bool = True,
) -> Standing:
    """`verdict(accepted_version, now)` under the chain head's lock, with its
    verification record appended and, when a signed configuration is accepted,
    the accepted version raised, in one transaction: two replicas verifying at once
    are judged one after the other."""

    def work(w: Writer) -> Standing:
        accepted = _version(w.setting(ACCEPTED_VERSION))
        standing = verdict(accepted, now)
        if record:
            linked = w.append(_verification(standing, trigger, actor, now), "verification", now)
            standing = replace(standing, record=linked)
        version = standing.version if standing.in_force and standing.trust == "signed" else None
        if version is not None and (accepted is None or version > accepted):
            w.set_setting(ACCEPTED_VERSION, version, now)
        return standing

    return store.transact(work)


def _version(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _verification(standing: Standing, trigger: str, actor: Actor, now: datetime) -> dict[str, Any]:
    return event("verification", now, actor.id, trigger=trigger, **standing.record)


def describe(standing: Standing, now: datetime) -> str | None:
    """Why orders are blocked by the configuration in force, None when it is in force."""
    if standing.in_force and not standing.expired(now):
        return None
    if standing.in_force and standing.expires is not None:
        return f"compliance: expired: expired at {format_utc(standing.expires)}"
    return f"compliance: {standing.code}: {standing.message}"
