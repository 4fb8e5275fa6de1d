"""The IB adapter in the broker contract suite: a fake TWS on 127.0.0.1 with the
contract's quote, and adapters on it. A second `connect()` is a restart: the
previous adapter is closed first, because TWS refuses a client id already
connected (error 326), as a restarted process would find its old socket gone.

`fake_and_connect` gives the fake too: bench/brokers.py sets its quote."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from adapters.ib import IBAdapter
from engine.broker import BrokerAdapter
from tests.fakes.tws import FakeTWS

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
ACCOUNT = "DU123"


def fixed_clock() -> datetime:
    return NOW


@contextmanager
def fake_and_connect() -> Iterator[tuple[FakeTWS, Callable[[], IBAdapter]]]:
    fake = FakeTWS(accounts=(ACCOUNT,), quotes={"AAPL": (99.0, 101.0, 100.0)}, clock=fixed_clock)
    adapters: list[IBAdapter] = []

    def connect() -> IBAdapter:
        for old in adapters:
            old.close()
        adapter = IBAdapter(
            host="127.0.0.1",
            port=fake.port,
            client_id=17,
            account=ACCOUNT,
            clock=fixed_clock,
            request_timeout_s=2.0,
        )
        adapters.append(adapter)
        return adapter

    with fake:
        try:
            yield fake, connect
        finally:
            for adapter in adapters:
                adapter.close()


@contextmanager
def ib() -> Iterator[Callable[[], BrokerAdapter]]:
    with fake_and_connect() as (_, connect):
        yield connect
