"""Threads for the gateway's blocking calls, answered on the event loop.

The gateway blocks (database, broker), so its calls leave the event loop. A
`loop.run_in_executor` hand-off passes through a concurrent future chained to an
asyncio one; here a call is a tuple on a queue and its answer one
`call_soon_threadsafe` onto an asyncio future, which costs less CPU per request
on the one core the server's event loop and its threads share.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

__all__ = ["GatewayThreads"]

_T = TypeVar("_T")
_Job = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    contextvars.Context,
    Callable[..., Any],
    tuple[Any, ...],
]


class GatewayThreads:
    def __init__(self, size: int, name: str = "apex-gateway") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, call: Callable[..., _T], *args: Any) -> _T:
        """`call(*args)` on a worker thread. If the awaiting task is cancelled (the
        client went away), the call still runs to its end: an order it sent is logged."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        # the call sees the caller's context variables (the request id its records carry)
        self._jobs.put((loop, future, contextvars.copy_context(), call, args))
        return await future

    def close(self) -> None:
        """Finish the calls already queued, then stop the threads."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, context, call, args = job
            try:
                result = context.run(call, *args)
            except BaseException as exc:  # handed to the awaiting handler, not lost here
                _answer(loop, future, _fail, exc)
            else:
                _answer(loop, future, _succeed, result)


def _answer(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    settle: Callable[[asyncio.Future[Any], Any], None],
    value: Any,
) -> None:
    with suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
        loop.call_soon_threadsafe(settle, future, value)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
