"""The Alpaca adapter in the broker contract suite: a fake Alpaca on 127.0.0.1
(tests/fakes/alpaca.py) holding the contract's quote, and adapters on it over
alpaca-py's real clients. A second `connect()` is a restart: a new adapter on
the same broker and the same journal (as the service gives it the store's), so
the fill steps it reported are kept.

`fake_and_connect` gives the fake too: bench/brokers.py sets its quote."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from adapters.alpaca import AlpacaAdapter
from adapters.base import MemoryJournal
from engine.broker import BrokerAdapter
from tests.fakes.alpaca import FakeAlpaca

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def fixed_clock() -> datetime:
    return NOW


@contextmanager
def fake_and_connect() -> Iterator[tuple[FakeAlpaca, Callable[[], AlpacaAdapter]]]:
    with FakeAlpaca() as fake:
        fake.set_quote("AAPL", bid=99.0, ask=101.0, last=100.0)
        journal = MemoryJournal()

        def connect() -> AlpacaAdapter:
            return AlpacaAdapter(
                key_id=fake.key_id,
                secret_key=fake.secret_key,
                base_url=fake.url,
                data_url=fake.url,
                clock=fixed_clock,
                timeout_s=2.0,
                journal=journal,
            )

        yield fake, connect


@contextmanager
def alpaca() -> Iterator[Callable[[], BrokerAdapter]]:
    with fake_and_connect() as (_, connect):
        yield connect
