"""The service's checkpoint writer: a background thread that signs the chain head
every `APEX_CHECKPOINT_RECORDS` records and every `APEX_CHECKPOINT_SECONDS`
seconds, and once more on shutdown (engine/checkpoints.py decides, under the
chain lock, whether one is due)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.checkpoints import Cadence, due_by_time, kept_sequence, write_checkpoint
from engine.clock import Clock
from engine.errors import StoreUnavailable
from engine.ports import CHECKPOINT_SETTING, Store

__all__ = ["Checkpointer"]

log = logging.getLogger("apex.checkpoints")
POLL_S = 1.0  # how often the head is read (one small SELECT)


class Checkpointer:
    def __init__(
        self, store: Store, key: Ed25519PrivateKey, clock: Clock, cadence: Cadence
    ) -> None:
        self.store = store
        self.key = key
        self.clock = clock
        self.cadence = cadence
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False  # the store is unreachable: warned once until it answers
        self._started = clock()  # with no checkpoint yet, the time counts from here

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="apex-checkpoints", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> dict[str, Any] | None:
        """Stop the thread and sign the head a last time if anything was appended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.write(final=True)

    def write(self, *, final: bool = False) -> dict[str, Any] | None:
        """One checkpoint if due (`final`: if anything was appended); never raises."""
        try:
            cadence = None if final else self.cadence
            linked = write_checkpoint(self.store, self.key, self.clock(), cadence, self._started)
        except StoreUnavailable as exc:
            self._warn(exc)
            return None
        except Exception:
            log.exception("writing a checkpoint failed; it is tried again")
            return None
        self._down = False
        if linked is not None:
            log.info("checkpoint of record %d signed", linked["sequence"])
        return linked

    def _run(self) -> None:
        poll = min(POLL_S, self.cadence.seconds)
        while not self._stop.wait(poll):
            if self._due():
                self.write()

    def _due(self) -> bool:
        """A cheap look before taking the chain lock: the head and the kept checkpoint."""
        try:
            head = self.store.chain_head()
            last = self.store.setting(CHECKPOINT_SETTING)
        except StoreUnavailable as exc:
            self._warn(exc)
            return False
        except Exception:
            log.exception("reading the chain head failed; it is tried again")
            return False
        self._down = False
        signed = kept_sequence(last)
        since = (head[0] if head else 0) - (signed + 1 if signed is not None else 0)
        if since <= 0:
            return False  # nothing appended since the last checkpoint
        return since >= self.cadence.records or due_by_time(
            last, self.clock(), self.cadence, self._started
        )

    def _warn(self, exc: StoreUnavailable) -> None:
        if not self._down:
            log.warning("the checkpoint writer cannot reach the store (%s); retrying", exc)
        self._down = True
