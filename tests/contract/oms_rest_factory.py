"""The oms_rest adapter in the broker contract suite: a fake OMS on 127.0.0.1
(tests/fakes/oms_rest.py, written from docs/oms-rest.md) holding the contract's
quote, and adapters on it over httpx. A second `connect()` is a restart: a new
adapter on the same OMS and the same journal, as the service gives it the
store's.

`fake_and_connect` gives the fake too: bench/brokers.py drives fills and the
socket with it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from adapters.base import MemoryJournal
from adapters.oms_rest import OmsRestAdapter
from engine.broker import BrokerAdapter
from tests.fakes.oms_rest import FakeOms

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def fixed_clock() -> datetime:
    return NOW


@contextmanager
def fake_and_connect() -> Iterator[tuple[FakeOms, Callable[[], OmsRestAdapter]]]:
    with FakeOms() as fake:
        fake.set_quote("AAPL", bid=99.0, ask=101.0)
        journal = MemoryJournal()
        adapters: list[OmsRestAdapter] = []

        def connect() -> OmsRestAdapter:
            adapter = OmsRestAdapter(
                base_url=fake.url,
                ws_url=fake.ws_url,
                token=fake.token,
                clock=fixed_clock,
                timeout_s=2.0,
                journal=journal,
            )
            adapters.append(adapter)
            return adapter

        try:
            yield fake, connect
        finally:
            for adapter in adapters:
                adapter.close()


@contextmanager
def oms_rest() -> Iterator[Callable[[], BrokerAdapter]]:
    with fake_and_connect() as (_, connect):
        yield connect
