"""The FIX adapter in the broker contract suite: the fake FIX acceptor on
127.0.0.1 (tests/fakes/fix_acceptor, written apart from the adapter) holding the
contract's quote, and adapters on it. A second `connect()` is a restart: the
previous adapter logs out first, and the new one comes back on the same journal
and the same FIX session log (sequence numbers and messages), as the service
gives it the store's; the fake logs out a session whose numbers went back.

`fake_and_connect` gives the fake too, and takes the session log to share (a
store's, where the suite's is in memory): bench/brokers.py drives fills with it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

from adapters.base import MemoryJournal, MemorySessionLog
from adapters.oms_fix import OmsFixAdapter
from engine.broker import BrokerAdapter, SessionLog
from tests.fakes.fix_acceptor import FakeFixAcceptor

Connect = Callable[[], BrokerAdapter]
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def fixed_clock() -> datetime:
    return NOW


@contextmanager
def fake_and_connect(
    session_log: SessionLog | None = None, *, mass_status: bool = False, positions: bool = False
) -> Iterator[tuple[FakeFixAcceptor, Callable[[], OmsFixAdapter]]]:
    """The fake acceptor and `connect`; `session_log`: the one every adapter of
    this fake shares (default: a new one in memory)."""
    with FakeFixAcceptor(
        sender_comp_id="OMS", target_comp_id="APEX", mass_status=mass_status, positions=positions
    ) as fake:
        fake.set_quote("AAPL", bid=99.0, ask=101.0, last=100.0)
        journal = MemoryJournal()
        shared = session_log if session_log is not None else MemorySessionLog()
        adapters: list[OmsFixAdapter] = []

        def connect() -> OmsFixAdapter:
            for old in adapters:
                old.close()
            adapter = OmsFixAdapter(
                host=fake.host,
                port=fake.port,
                sender_comp_id="APEX",
                target_comp_id="OMS",
                clock=fixed_clock,
                journal=journal,
                session_log=shared,
                request_timeout_s=5.0,
                mass_status=mass_status,
                positions=positions,
            )
            adapters.append(adapter)
            return adapter

        try:
            yield fake, connect
        finally:
            for adapter in adapters:
                adapter.close()


def _factory(
    mass_status: bool = False, positions: bool = False
) -> Callable[[], AbstractContextManager[Connect]]:
    def oms_fix() -> Iterator[Connect]:
        with fake_and_connect(mass_status=mass_status, positions=positions) as (_, connect):
            yield connect

    return contextmanager(oms_fix)


oms_fix = _factory()
oms_fix_mass_status = _factory(mass_status=True, positions=True)
