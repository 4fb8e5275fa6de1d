"""Group commit: many threads' writes in one transaction.

`transact(work)` queues `work`; whichever waiting thread holds no lock becomes
the leader and runs every queued piece of work in one transaction, then wakes
the others with their results. Under load one lock, one chain-head update and
one commit serve many orders, and each waiting thread wakes once.

A piece of work that fails (or whose buffered writes fail when they are
flushed) takes the batch's transaction down with it; the batch is then run
again one piece per transaction, so that only the failing piece fails, and no
piece is ever committed twice (each retry starts from a rolled-back
transaction). Two failures are not retried: a transaction that could not
begin (nothing ran; every piece fails), and a COMMIT that failed (it may have
landed; running the pieces again could write a second record of one attempt,
so every piece fails).
"""

from __future__ import annotations

import contextvars
import copy
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

from engine.errors import EngineFault

__all__ = ["MAX_BATCH", "GroupCommit", "Transactions"]

MAX_BATCH = 256  # pieces of work per group-committed transaction
_T = TypeVar("_T")
_W = TypeVar("_W")


class Transactions(Protocol[_W]):
    """The transactions the group runs, one at a time."""

    def begin(self) -> _W:
        """A new transaction; if this raises, nothing has run."""
        ...

    def finish(self, writer: _W) -> None:
        """Write what the transaction buffered (before COMMIT)."""
        ...

    def commit(self, writer: _W) -> None:
        """COMMIT; if this raises, the transaction may or may not have landed."""
        ...

    def rollback(self, writer: _W) -> None: ...


class GroupCommit(Generic[_W]):
    def __init__(self, transactions: Transactions[_W], max_batch: int = MAX_BATCH) -> None:
        self._tx = transactions
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: deque[_Work[Any, _W]] = deque()
        self._leading = False

    def transact(self, work: Callable[[_W], _T]) -> _T:
        """Run `work` in a write transaction, group-committed with whatever other
        threads queued meanwhile; its result, or its exception."""
        item: _Work[_T, _W] = _Work(work)
        if self._take_turn(item):
            batch: list[_Work[Any, _W]] = [item]
            try:
                with self._mutex:
                    while self._queue and len(batch) < self._max_batch and self._queue[0].work:
                        batch.append(self._queue.popleft())
                self._run(batch)
            finally:
                for other in batch[1:]:
                    if not other.done:  # only if _run itself was interrupted
                        other.fail(EngineFault("the write batch was abandoned"))
                    other.wake.release()
                self._pass_turn()
        return item.outcome()

    @contextmanager
    def writing(self) -> Iterator[_W]:
        """One write transaction of the caller's own (no group commit)."""
        with self.turn():
            writer = self._tx.begin()
            try:
                yield writer
                self._tx.finish(writer)
            except BaseException:
                self._tx.rollback(writer)
                raise
            self._tx.commit(writer)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """The writer's turn, once every batch queued before has run."""
        self._take_turn(_Work(None))
        try:
            yield
        finally:
            self._pass_turn()

    def _take_turn(self, item: _Work[Any, _W]) -> bool:
        """Wait until this thread may write (True), or until a leader has done
        `item`'s work (False). One wake-up per waiting thread, no stampede."""
        with self._mutex:
            if not self._leading:
                self._leading = True
                return True
            self._queue.append(item)
        item.wake.acquire()
        return not item.done

    def _pass_turn(self) -> None:
        """Hand the writer's turn to the first thread still waiting, or free it."""
        with self._mutex:
            following = self._queue.popleft() if self._queue else None
            if following is None:
                self._leading = False
        if following is not None:
            following.wake.release()

    def _run(self, batch: list[_Work[Any, _W]]) -> None:
        """Every piece in one transaction; if a piece fails, each in its own."""
        try:
            writer = self._tx.begin()
        except Exception as exc:
            _fail_all(batch, exc)
            return
        try:
            results = [item.run(writer) for item in batch]
            self._tx.finish(writer)
        except Exception as exc:
            self._tx.rollback(writer)
            if len(batch) == 1:
                batch[0].fail(exc)
            else:
                for item in batch:
                    self._run([item])
            return
        except BaseException:
            self._tx.rollback(writer)
            raise
        try:
            self._tx.commit(writer)
        except Exception as exc:
            _fail_all(batch, exc)
            return
        for item, result in zip(batch, results, strict=True):
            item.succeed(result)


def _fail_all(batch: list[_Work[Any, Any]], error: Exception) -> None:
    """Every piece fails with `error`; each thread raises its own copy, since a
    raise adds the raising thread's frames to the instance's traceback."""
    batch[0].fail(error)
    for item in batch[1:]:
        try:
            alike = copy.copy(error)
        except Exception:  # an exception that cannot be rebuilt from its args
            item.fail(error)
            continue
        alike.__cause__ = error.__cause__
        alike.__traceback__ = None
        item.fail(alike)


class _Work(Generic[_T, _W]):
    """One queued piece of work and, once its batch is done, its outcome. `wake`
    is held until the waiting thread may go on: its work is done, or it writes next.
    No work (None): a thread that wants the writer's turn for itself. The work
    runs in the context of the thread that queued it (its context variables,
    such as the request id its records carry), whichever thread leads."""

    __slots__ = ("context", "done", "error", "result", "wake", "work")

    def __init__(self, work: Callable[[_W], _T] | None) -> None:
        self.work = work
        self.context = contextvars.copy_context()
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()

    def run(self, writer: _W) -> _T:
        if self.work is None:
            raise EngineFault("a turn-only entry was put in a write batch")
        return self.context.run(self.work, writer)

    def succeed(self, result: Any) -> None:
        self.result, self.done = result, True

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True

    def outcome(self) -> _T:
        if self.error is not None:
            raise self.error
        result: _T = self.result
        return result
