"""Shadow mode: a candidate policy set judging every order beside the enforced
one, off the order's path, changing nothing.

Each judged decision's record, once committed, is handed to the shadow
(`offer`): a non-blocking put on a bounded queue, so the order waits for no
shadow work. The bound on the delay an order sees is that put (microseconds);
when the queue is full the decision is dropped for the shadow and counted
(`shadow_dropped`), never waited for. One worker thread rebuilds each decision
from its record (engine/judged.py, as `policy whatif` does) and judges it under
the shadow set; a verdict that differs from the record's is appended to the
chain as its own record (kind `shadow_difference`) and counted. Any failure of
the shadow (a rule that errors, an evaluator that raises, a store that refuses
the difference) is logged and counted (`shadow_error`) and reaches no order:
the enforced decision was committed before the shadow saw it.

The bound on shadow sets: the rules engine never frees a compiled ruleset for
good, and the evaluator's cache retires the oldest compiled version once it
holds 16 (engine/policy/evaluator.py), so the service compiles at most
`SHADOW_LIMIT` distinct shadow sets over its life (loading one it loaded before
costs nothing). The next distinct one is refused (`ShadowLimitReached`); a
restart resets the count. Kept well below the cache's size, so shadows can
never push the enforced set out of it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from ..clock import Clock, format_utc
from ..errors import fault
from ..judged import decision_verdict, rejudge, responsible, verdict
from ..policy.decision import Decision
from ..policy.evaluator import Evaluator
from ..policy.loader import LoadedPolicies
from ..ports import Store, Writer
from ._records import event
from .outcome import Actor

__all__ = ["QUEUE_SIZE", "SHADOW_LIMIT", "Shadow", "ShadowLimitReached", "Shadows"]

log = logging.getLogger("apex.shadow")

SHADOW_LIMIT = 4  # distinct shadow sets a service compiles over its life
QUEUE_SIZE = 1024  # decisions waiting for the shadow; beyond, dropped and counted
RECENT = 100  # differences kept in memory for GET /v1/policies/shadow

_STOP: Any = object()

Tell = Callable[[str, Mapping[str, Any]], None]


class ShadowLimitReached(Exception):
    """The service has compiled as many distinct shadow sets as it may."""


class Shadow:
    """One candidate set judging beside the enforced one, on its own thread."""

    def __init__(
        self,
        evaluator: Evaluator,
        store: Store,
        clock: Clock,
        tell: Tell,
        actor: Actor,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.evaluator = evaluator
        self._store = store
        self._clock = clock
        self._tell = tell
        self.loaded_by = actor.id
        self.loaded_at = format_utc(clock())
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stopped = threading.Event()
        self.judged = 0
        self.differences = 0
        self.dropped = 0
        self.errors = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._thread = threading.Thread(target=self._run, name="apex-shadow", daemon=True)
        self._thread.start()

    # --- the order's side: one put that never waits ---------------------------------

    def offer(self, record: Mapping[str, Any]) -> None:
        if self._stopped.is_set():
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            self._tell("shadow_dropped", {})

    # --- the worker -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP or self._stopped.is_set():
                    return
                self._judge(item)
            except Exception as exc:
                self.errors += 1
                log.error("the shadow failed on %s: %s", _order_id(item), fault(exc))
                self._tell("shadow_error", {})
            finally:
                self._queue.task_done()

    def _judge(self, record: Mapping[str, Any]) -> None:
        decision = rejudge(self.evaluator, record)
        was, now = verdict(record), decision_verdict(decision)
        if was != now:
            self._record_difference(record, decision, was, now)
        # counted once its difference, if any, is in the chain: a reader that sees
        # `judged` cover an order also sees that order's difference
        self.judged += 1
        self._tell("shadow_judged", {})

    def _record_difference(
        self, record: Mapping[str, Any], decision: Decision, was: str, now: str
    ) -> None:
        policy = self.evaluator.policy.policies
        difference = event(
            "shadow_difference",
            self._clock(),
            "shadow",
            order_id=record.get("order_id"),
            operation=record.get("operation"),
            decided_at=record.get("timestamp"),
            decision_hash=record.get("hash"),
            **{"from": was, "to": now},
            rules=responsible(record, decision, now),
            shadow_policy_digest=policy.policy_digest,
            shadow_compliance_digest=policy.compliance_digest,
            shadow_triggers=list(decision.triggers),
            shadow_reasons=[reason.as_dict() for reason in decision.reasons],
        )
        difference.pop("request_id", None)  # the worker serves no request
        at = self._clock()

        def work(w: Writer) -> dict[str, Any]:
            return w.append(difference, "shadow_difference", at)

        linked = self._store.transact(work)
        self.differences += 1
        self.recent.append(linked)
        self._tell("shadow_difference", linked)

    # --- control ----------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Stop judging; what is still queued is not judged."""
        self._stopped.set()
        with suppress(queue.Full):  # full: the worker sees `_stopped` at its next item
            self._queue.put_nowait(_STOP)
        self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Whether every decision offered so far was judged within `timeout` (tests,
        and a caller that wants the differences of what it just sent)."""
        done = self._queue.all_tasks_done
        with done:
            return done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout)

    def view(self) -> dict[str, Any]:
        policy = self.evaluator.policy.policies
        return {
            "policy_digest": policy.policy_digest,
            "compliance_digest": policy.compliance_digest,
            "files": list(policy.files),
            "rules": len(policy.rules),
            "loaded_at": self.loaded_at,
            "loaded_by": self.loaded_by,
            "judged": self.judged,
            "differences": self.differences,
            "dropped": self.dropped,
            "errors": self.errors,
            "queued": self._queue.qsize(),
        }


class Shadows:
    """The gateway's shadow slot: at most one shadow at a time, at most `limit`
    distinct sets compiled over the service's life."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        tell: Tell,
        install: Callable[[Shadow | None], None],
        limit: int = SHADOW_LIMIT,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._store = store
        self._clock = clock
        self._tell = tell
        self._install = install
        self.limit = limit
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._compiled: dict[tuple[str, str], Evaluator] = {}
        self.current: Shadow | None = None

    @property
    def loads(self) -> int:
        """Distinct shadow sets compiled so far."""
        return len(self._compiled)

    def load(self, loaded: LoadedPolicies, actor: Actor) -> Shadow:
        """Judge beside the enforced set under `loaded` from now on (replacing the
        shadow there is); `ShadowLimitReached` when it would be one set too many."""
        key = (loaded.policies.policy_digest, loaded.policies.compliance_digest)
        with self._lock:
            evaluator = self._compiled.get(key)
            if evaluator is None:
                if len(self._compiled) >= self.limit:
                    raise ShadowLimitReached(
                        f"this service has compiled {len(self._compiled)} shadow sets, its"
                        f" limit (want: at most {self.limit}); the rules engine never frees"
                        " one: restart the service to load another"
                    )
                evaluator = self._compiled[key] = Evaluator(loaded, self._clock)
            shadow = Shadow(evaluator, self._store, self._clock, self._tell, actor, self.queue_size)
            old, self.current = self.current, shadow
            self._install(shadow)
        if old is not None:
            old.stop()
        return shadow

    def drop(self) -> Shadow | None:
        """Stop the shadow; the one dropped (None: there was none)."""
        with self._lock:
            old, self.current = self.current, None
            self._install(None)
        if old is not None:
            old.stop()
        return old


def _order_id(item: Any) -> Any:
    return item.get("order_id") if isinstance(item, Mapping) else None
