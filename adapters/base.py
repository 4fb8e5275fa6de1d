"""What broker adapters share: the JSON form of the broker port's values, and a
journal in memory.

A broker that lives in our process (the simulator) keeps its memory in a
`BrokerJournal` (engine/broker.py) as plain JSON values with times as ISO-8601
UTC text, so the store can keep them as text and a person can read them. The
readers check every field and raise `ValueError` naming the field, with want
and got, so a damaged entry is refused rather than guessed at.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import cast

from engine.broker import (
    BrokerAdapter,
    BrokerError,
    BrokerJournal,
    BrokerOrder,
    Fill,
    LoggedMessage,
)
from engine.clock import format_utc, parse_utc
from engine.errors import InvalidArgument
from engine.models import OrderType, Quote, Side, TimeInForce

__all__ = [
    "AdapterFactory",
    "BrokerConfigError",
    "JsonDict",
    "MemoryJournal",
    "MemorySessionLog",
    "choice",
    "fill_from_json",
    "fill_to_json",
    "flag",
    "integer",
    "load_journal",
    "mapping",
    "number",
    "optional_number",
    "optional_text",
    "order_from_json",
    "order_to_json",
    "quote_from_json",
    "quote_to_json",
    "sequence",
    "text",
]

JsonDict = dict[str, object]


class BrokerConfigError(InvalidArgument):
    """A broker's section of brokers.yaml cannot be used: `field` names the key
    (`paper.base_url`, `live.key_id_env`), `message` says why. Never holds a
    credential's value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# Every real adapter module (`adapters/alpaca.py`, `adapters/ib.py`, ...) exposes
#     from_config(section, env, *, role, clock) -> BrokerAdapter
# `section`: its mapping in brokers.yaml (`adapter:` included); `env`: the
# environment to read the credentials it names from; `role`: "paper" or
# "live"; raises BrokerConfigError naming the field. It does not connect:
# `check_credentials()` is the first call that reaches the broker. A module
# whose adapter keeps memory across restarts also takes `journal` (a factory:
# journal name -> BrokerJournal) and opens the one of its broker name.
AdapterFactory = Callable[..., BrokerAdapter]

_SIDES = frozenset({"buy", "sell"})
_ORDER_TYPES = frozenset({"market", "limit", "stop"})
_TIMES_IN_FORCE = frozenset({"day", "gtc", "ioc", "fok", "opg", "cls"})


def load_journal(name: str, journal: BrokerJournal) -> dict[str, dict[str, object]]:
    """Every entry of broker `name`'s journal (a restart); `BrokerError`
    (`journal_unavailable`) when the store cannot give it."""
    try:
        return journal.load()
    except Exception as exc:
        raise BrokerError(
            f"{name}: could not load its memory ({type(exc).__name__}: {exc})",
            code="journal_unavailable",
        ) from exc


class MemoryJournal:
    """A `BrokerJournal` in memory, for tests and demos.

    Values are kept as JSON text: a value that is not plain JSON fails at `save`
    as it would in the store, and nobody can change a saved entry through a
    reference kept to the dict. `saves` counts the calls to `save`.
    """

    def __init__(self) -> None:
        self._entries: dict[str, str] = {}
        self._lock = threading.Lock()
        self.saves = 0

    def load(self) -> dict[str, dict[str, object]]:
        with self._lock:
            entries = dict(self._entries)
        return {key: json.loads(text) for key, text in entries.items()}

    def save(self, key: str, value: dict[str, object]) -> None:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
        with self._lock:
            self._entries[key] = text
            self.saves += 1


class MemorySessionLog:
    """A `SessionLog` (engine/broker.py) in memory, for tests and demos: one FIX
    session's sequence numbers and messages. Share one between two adapters to
    play a restart. `writes` counts the durable writes a store would make."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = (1, 1)
        self._messages: list[tuple[int, LoggedMessage]] = []  # (epoch, message)
        self._epoch = 0
        self.writes = 0

    def sequences(self) -> tuple[int, int]:
        with self._lock:
            return self._next

    def sent(
        self, seq: int, msg_type: str, message: bytes, at: datetime, cl_ord_id: str | None = None
    ) -> None:
        with self._lock:
            self._messages.append(
                (self._epoch, LoggedMessage("out", seq, msg_type, message, at, cl_ord_id))
            )
            self._next = (max(self._next[0], seq + 1), self._next[1])
            self.writes += 1

    def received(
        self, seq: int, msg_type: str, message: bytes, at: datetime, next_in: int | None
    ) -> None:
        with self._lock:
            self._messages.append((self._epoch, LoggedMessage("in", seq, msg_type, message, at)))
            if next_in is not None:
                self._next = (self._next[0], next_in)
            self.writes += 1

    def reset(self, next_out: int, next_in: int) -> None:
        with self._lock:
            self._next = (next_out, next_in)
            self._epoch += 1
            self.writes += 1

    def outgoing(self, begin: int, end: int) -> list[LoggedMessage]:
        with self._lock:
            first: dict[int, LoggedMessage] = {}
            for epoch, m in self._messages:
                if epoch == self._epoch and m.direction == "out" and begin <= m.seq <= end:
                    first.setdefault(m.seq, m)
        return [first[seq] for seq in sorted(first)]

    def sent_for(self, cl_ord_id: str) -> list[LoggedMessage]:
        with self._lock:
            return [
                m for _, m in self._messages if m.direction == "out" and m.cl_ord_id == cl_ord_id
            ]

    def tail(self, limit: int) -> list[LoggedMessage]:
        with self._lock:
            return [m for _, m in self._messages[-limit:]] if limit > 0 else []


# --- writers ------------------------------------------------------------------------


def quote_to_json(quote: Quote) -> JsonDict:
    return {
        "bid": quote.bid,
        "ask": quote.ask,
        "last": quote.last,
        "timestamp": None if quote.timestamp is None else format_utc(quote.timestamp),
    }


def order_to_json(order: BrokerOrder) -> JsonDict:
    return {
        "order_id": order.order_id,
        "account": order.account,
        "symbol": order.symbol,
        "side": order.side,
        "quantity": order.quantity,
        "order_type": order.order_type,
        "limit_price": order.limit_price,
        "stop_price": order.stop_price,
        "time_in_force": order.time_in_force,
        "reduce_only": order.reduce_only,
        "quote": None if order.quote is None else quote_to_json(order.quote),
        # Reg SHO marks, present only when set (entries written before them read the same)
        **({"short_sale": True} if order.short_sale else {}),
        **({"locate_id": order.locate_id} if order.locate_id else {}),
    }


def fill_to_json(fill: Fill) -> JsonDict:
    return {
        "execution_id": fill.execution_id,
        "quantity": fill.quantity,
        "price": fill.price,
        "at": format_utc(fill.at),
    }


# --- readers ------------------------------------------------------------------------


def quote_from_json(data: Mapping[str, object]) -> Quote:
    stamp = optional_text(data, "timestamp")
    return Quote(
        bid=optional_number(data, "bid"),
        ask=optional_number(data, "ask"),
        last=optional_number(data, "last"),
        timestamp=None if stamp is None else parse_utc(stamp),
    )


def order_from_json(data: Mapping[str, object]) -> BrokerOrder:
    quote = data.get("quote")
    return BrokerOrder(
        order_id=text(data, "order_id"),
        account=text(data, "account"),
        symbol=text(data, "symbol"),
        side=cast(Side, choice(data, "side", _SIDES)),
        quantity=number(data, "quantity"),
        order_type=cast(OrderType, choice(data, "order_type", _ORDER_TYPES)),
        limit_price=optional_number(data, "limit_price"),
        stop_price=optional_number(data, "stop_price"),
        time_in_force=cast(TimeInForce, choice(data, "time_in_force", _TIMES_IN_FORCE)),
        reduce_only=flag(data, "reduce_only"),
        quote=None if quote is None else quote_from_json(mapping(data, "quote")),
        short_sale=data.get("short_sale") is not None and flag(data, "short_sale"),
        locate_id=optional_text(data, "locate_id"),
    )


def fill_from_json(data: Mapping[str, object]) -> Fill:
    return Fill(
        quantity=number(data, "quantity"),
        price=number(data, "price"),
        at=parse_utc(text(data, "at")),
        execution_id=text(data, "execution_id"),
    )


def text(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} (want: text, got: {value!r})")
    return value


def optional_text(data: Mapping[str, object], key: str) -> str | None:
    return None if data.get(key) is None else text(data, key)


def number(data: Mapping[str, object], key: str) -> float:
    value = data.get(key)
    # bool is an int to Python, never a quantity or a price to us
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{key} (want: a finite number, got: {value!r})")
    return float(value)


def optional_number(data: Mapping[str, object], key: str) -> float | None:
    return None if data.get(key) is None else number(data, key)


def integer(data: Mapping[str, object], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{key} (want: an integer, got: {value!r})")
    return value


def flag(data: Mapping[str, object], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{key} (want: true or false, got: {value!r})")
    return value


def choice(data: Mapping[str, object], key: str, allowed: frozenset[str]) -> str:
    value = text(data, key)
    if value not in allowed:
        raise InvalidArgument(f"{key} (want: one of {sorted(allowed)}, got: {value!r})")
    return value


def mapping(data: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{key} (want: an object, got: {value!r})")
    return cast(Mapping[str, object], value)


def sequence(data: Mapping[str, object], key: str) -> list[object]:
    value = data.get(key)
    if not isinstance(value, list):
        raise InvalidArgument(f"{key} (want: a list, got: {value!r})")
    return cast(list[object], value)
