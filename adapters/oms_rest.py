"""An in-house OMS speaking our JSON-over-HTTP contract, docs/oms-rest.md (v1):
commands over HTTP with httpx, order and execution updates over a WebSocket
with the `websockets` library (SPEC section 11; issue 11).

Identity. Our order id is the OMS's `client_order_id`; every route after the
submit names the order by it. A repeated client order id is refused with the
order the OMS already holds (409), so nothing is ever taken twice.

No blind retry. A submit whose outcome is unknown (a timeout, a lost
connection, a 5xx) raises `BrokerError`; the gateway then asks `find`, a
status lookup by client order id (404: never received).

Events. The OMS numbers every change of every order, executions included, in
one gap-free sequence. The adapter books events in that order and remembers
the last sequence it booked (`booked`). The socket (`ws_url?after=<booked>`)
replays what came since and then pushes each new event; a sequence beyond
`booked + 1`, a heartbeat naming a later sequence, or a message that is not
JSON is a gap, filled from the REST cursor (`GET /v1/events?after=<booked>`)
before anything later is used. When the socket is down (refused, closed, or
silent past three heartbeats) the adapter reads the cursor instead, every
`poll_s` (0.5 s), and tries the socket again with a backoff (1 s, then 2 s); once it is back, it
resumes from `booked`. `poll()` (the service's sweep) reads the cursor too.
Whichever path brings an event first books it; the other finds its sequence
booked. An execution is booked once by its execution id: the same id again
(a duplicate the OMS sent, on either path) is counted and dropped.

Reports. An event about an order this adapter has reported (a submit's answer,
a status, a find, or its journal after a restart) becomes an ack, handed to
the `subscribe` listeners (or returned by `poll`) when its status or fills
changed; while a call of ours on that order is in flight its answer is the
report (a fill pushed first is never booked ahead of it). Each ack lists every
execution of the order with the OMS's own ids, so the gateway books each once
and guards the lifecycle itself: a fill on a cancelled order or beyond the
order's quantity is an `execution_anomaly`.

Memory. With a `BrokerJournal` (the store's, named as the broker): entry
`cursor` holds the booked sequence, `order:<client order id>` the OMS's id and
the executions booked. Each is saved before the listener books the event, so
it lands with that commit; a restarted adapter resumes from the sequence and
knows which orders are ours.

Connection. `connection_problem()` says why the OMS cannot be reached (the
cursor and the health route both failing while the socket is down); a socket
down alone is not a problem, the cursor stands in for it (`stream_state`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote as urlquote
from urllib.parse import urlsplit

import httpx
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from engine.broker import (
    BrokerAck,
    BrokerError,
    BrokerJournal,
    BrokerOrder,
    BrokerPosition,
    Capabilities,
    Fill,
)
from engine.clock import Clock, parse_utc
from engine.lifecycle import OrderStatus
from engine.models import Quote

from .base import BrokerConfigError, JsonDict, fill_from_json, fill_to_json, load_journal, text

__all__ = ["OMS_REST_CAPABILITIES", "OmsRefused", "OmsRestAdapter", "from_config"]

log = logging.getLogger(__name__)
Listener = Callable[[BrokerAck], None]

OMS_REST_CAPABILITIES = Capabilities(
    order_types=frozenset({"market", "limit", "stop"}),
    time_in_force=frozenset({"day", "gtc", "ioc", "fok"}),
    reduce_only=False,
    reduce_only_emulated=True,
    cancel=True,
    replace=True,
    history=True,
    positions=True,
    market_data=False,  # the v1 contract has no quotes
    paper=True,
    live=True,
    credentials=True,
)

S = OrderStatus
_STATUSES: dict[str, OrderStatus] = {
    "new": S.ACCEPTED,
    "partially_filled": S.PARTIALLY_FILLED,
    "filled": S.FILLED,
    "pending_cancel": S.PENDING_CANCEL,
    "canceled": S.CANCELLED,
    "expired": S.EXPIRED,
    "pending_replace": S.PENDING_REPLACE,
    "rejected": S.BLOCKED,
}
_KEYS = frozenset({"adapter", "base_url", "ws_url", "token_env", "timeout_s"})
_DEFAULT_TIMEOUT_S = 10.0
_PAGE = 500
_CURSOR_KEY = "cursor"
_ORDER_KEY = "order:"
_MESSAGE_CHARS = 160
_SILENCE_BEATS = 3.0  # heartbeats missed before the socket is taken as dead
_BACKOFF_MAX_S = 2.0
_STOP_S = 5.0


class OmsRefused(BrokerError):
    """The OMS answered 4xx: it did not do what was asked (the outcome is known).
    `raw`: its HTTP status, error code and message, and the order it holds."""

    def __init__(self, message: str, raw: dict[str, object]) -> None:
        super().__init__(message)
        self.raw = raw


@dataclass
class _Held:
    """What this adapter knows of one order: the OMS's newest view of it and the
    executions booked (by id, in booking order)."""

    order: Mapping[str, object] | None
    fills: dict[str, Fill]
    oms_order_id: str = ""


class OmsRestAdapter:
    """The broker port over docs/oms-rest.md (v1)."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        clock: Clock,
        ws_url: str | None = None,
        timeout_s: float = _DEFAULT_TIMEOUT_S,
        name: str = "oms_rest",
        role: str = "paper",
        journal: BrokerJournal | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.name = name
        self.role = role
        self.capabilities = OMS_REST_CAPABILITIES
        self.base_url = base_url.rstrip("/")
        self.ws_url = ws_url
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._clock = clock
        self._token = token
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
        )
        self._lock = threading.Lock()  # the state below
        self._report_lock = threading.RLock()  # one booking path at a time (socket, poll)
        self._held: dict[str, _Held] = {}  # by client order id
        self._last: dict[str, tuple[OrderStatus, float]] = {}  # what was last reported
        self._busy: set[str] = set()  # orders with a call of ours in flight
        self.booked = 0  # the last sequence booked
        self._journal = journal
        self._saved_fills: dict[str, int] = {}
        if journal is not None:
            self._restore(journal)
        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._socket: ClientConnection | None = None
        self._stop = threading.Event()
        self.stream_state = "off" if ws_url is None else "stopped"
        self._rest_problem: str | None = None
        # counters a test or an operator can read
        self.connections = 0  # sockets opened
        self.gaps = 0  # gaps noticed on the socket, filled from the cursor
        self.garbled = 0  # socket messages that were not readable
        self.duplicates = 0  # executions delivered again under an id already booked
        self.unreadable = 0  # events the cursor gave that could not be read: passed over

    def __repr__(self) -> str:  # never the token
        return f"OmsRestAdapter(name={self.name!r}, role={self.role!r}, base_url={self.base_url!r})"

    # --- orders -----------------------------------------------------------------------

    def submit(self, order: BrokerOrder) -> BrokerAck:
        body: JsonDict = {
            "client_order_id": order.order_id,
            "account": order.account,
            "symbol": order.symbol,
            "side": order.side,
            "order_type": order.order_type,
            "quantity": order.quantity,
            "limit_price": order.limit_price,
            "stop_price": order.stop_price,
            "time_in_force": order.time_in_force,
        }
        what = f"submit of {order.order_id!r}"
        try:
            return self._acting(order.order_id, what, "POST", "/v1/orders", body)
        except OmsRefused as refused:
            detail = f"{self.name} refused the order (want: HTTP 201, got: {refused})"
            return BrokerAck(order.order_id, "", S.BLOCKED, detail=detail, raw=refused.raw)

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        self._owned(order_id, broker_order_id)
        path = f"/v1/orders/{_path(order_id)}/cancel"
        return self._acting(order_id, f"cancel of {order_id!r}", "POST", path)

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        self._owned(order.order_id, broker_order_id)
        body: JsonDict = {
            "quantity": order.quantity,
            "limit_price": order.limit_price,
            "stop_price": order.stop_price,
            "time_in_force": order.time_in_force,
        }
        path = f"/v1/orders/{_path(order.order_id)}/replace"
        return self._acting(order.order_id, f"replace of {order.order_id!r}", "POST", path, body)

    def _acting(
        self, cid: str, what: str, method: str, path: str, body: JsonDict | None = None
    ) -> BrokerAck:
        """A call that changes an order. While it is in flight the stream books
        that order's events but reports none of them: the call's answer, built
        from the newest view held (theirs included), is the report, as IB's
        adapter does; otherwise a fill pushed before the answer could be booked
        ahead of it and the answer then look like a step back."""
        with self._lock:
            self._busy.add(cid)
        try:
            answer = self._call(method, path, what, body)
        except BaseException:
            with self._lock:
                self._busy.discard(cid)
            raise
        with self._report_lock:  # no event is booked between the answer and the discard
            try:
                return self._report(self._order(answer, what, cid))
            finally:
                with self._lock:
                    self._busy.discard(cid)

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        found = self._lookup(order_id)
        if found is None:
            raise BrokerError(
                f"{self.name}: order {order_id!r} is not known", code="order_not_found"
            )
        self._same(order_id, broker_order_id, found)
        return self._report(found)

    def find(self, order_id: str) -> BrokerAck | None:
        found = self._lookup(order_id)
        return None if found is None else self._report(found)

    def order_history(self) -> list[BrokerAck]:
        acks: list[BrokerAck] = []
        offset: int | None = 0
        while offset is not None:
            page = self._call("GET", f"/v1/orders?offset={offset}&limit={_PAGE}", "order history")
            listed = _list(page, "orders", self._unparseable)
            for item in listed:
                acks.append(self._ack(self._merge(self._order(item, "order history"))))
            nxt = page.get("next_offset")
            offset = nxt if isinstance(nxt, int) and nxt > offset and listed else None
        return acks

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        """The OMS has its own market: a quote only prompts a read of the cursor."""
        return self.poll()

    def poll(self) -> list[BrokerAck]:
        """Book every event after the last one booked, from the REST cursor; the
        acks of our orders that changed (the caller books them)."""
        with self._report_lock:
            return self._catch_up()

    # --- account ---------------------------------------------------------------------

    def positions(self, account: str) -> dict[str, float]:
        return {s: p.quantity for s, p in self.held_positions(account).items()}

    def held_positions(self, account: str) -> dict[str, BrokerPosition]:
        """The positions, each with its `price` (docs/oms-rest.md: a number > 0;
        absent or null: unknown). Any other price is an unparseable answer, as a
        bad quantity is: nothing of it is taken."""
        answer = self._call("GET", f"/v1/positions?account={_path(account)}", "positions")
        out: dict[str, BrokerPosition] = {}
        for item in _list(answer, "positions", self._unparseable):
            try:
                symbol, quantity = text(item, "symbol"), _number(item, "quantity")
                price = _price(item, "price")
            except ValueError as exc:
                raise self._unparseable("positions", f"a position ({exc})") from exc
            if abs(quantity) > 1e-9:
                out[symbol] = BrokerPosition(quantity, price)
        return dict(sorted(out.items()))

    def account(self, account: str) -> dict[str, object]:
        found = self._call("GET", "/v1/account", "account")
        return {
            "account": account,
            "broker": self.name,
            "id": str(found.get("id", "")),
            "status": str(found.get("status", "")),
            "currency": found.get("currency"),
            "buying_power": found.get("buying_power"),
        }

    def check_credentials(self) -> bool:
        """The health route with our token: 401 is a wrong token."""
        try:
            self._call("GET", "/v1/health", "health")
        except OmsRefused as refused:
            if refused.raw.get("http_status") == 401:
                return False
            raise
        return True

    def quote(self, symbol: str) -> Quote | None:
        return None  # no quotes in the v1 contract (market_data False)

    def connection_problem(self) -> str | None:
        """Why the OMS cannot be reached now (None: it can). A socket down alone is
        not a problem: the cursor stands in for it."""
        with self._lock:
            return self._rest_problem

    def stream_status(self) -> dict[str, object]:
        """The event stream, for people (`GET /v1/brokers`, member `stream`): its
        state (`streaming`, `polling`: the socket is down and the cursor stands
        in, `stopped`, `off`: no `ws_url`), the last sequence booked and the
        counters. Information only: a socket down does not stop new orders."""
        with self._lock:
            return {
                "state": self.stream_state,
                "booked": self.booked,
                "connections": self.connections,
                "gaps": self.gaps,
                "garbled": self.garbled,
                "duplicates": self.duplicates,
                "unreadable": self.unreadable,
            }

    # --- the stream --------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(ack)` (on the stream's thread) for every change of an
        order of ours the OMS reports. Starts the stream's thread on the first
        call: the socket, or the cursor while the socket is down. Without `ws_url`
        it does nothing (the sweep's `poll` brings the updates)."""
        if self.ws_url is None:
            return
        with self._lock:
            if self._stop.is_set():
                return
            self._listeners.append(listener)
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._stream_forever, name=f"{self.name}-stream", daemon=True
            )
        self._thread.start()

    def close(self) -> None:
        """Stop the stream and its thread, and the HTTP client (idempotent)."""
        self._stop.set()
        with self._lock:
            sock, thread = self._socket, self._thread
        if sock is not None:
            try:
                sock.close()
            except Exception as exc:  # closing a socket that failed already
                log.debug("%s: closing the socket: %s", self.name, exc)
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_S)
            if thread.is_alive():
                log.warning("%s: the stream's thread did not stop in time", self.name)
        self._http.close()
        self.stream_state = "off" if self.ws_url is None else "stopped"

    def _stream_forever(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
                failures = 0
            except (OSError, WebSocketException, TimeoutError, BrokerError) as exc:
                failures += 1
                if not self._stop.is_set():
                    log.info("%s: socket down (%s); reading the cursor", self.name, _why(exc))
            except Exception:
                failures += 1
                log.exception("%s: the stream failed; reading the cursor", self.name)
            finally:
                with self._lock:
                    self._socket = None
            if self._stop.is_set():
                break
            self.stream_state = "polling"
            self._fallback(min(self.poll_s * 2 ** min(failures, 6), _BACKOFF_MAX_S))

    def _fallback(self, wait_s: float) -> None:
        """While the socket is down: book from the cursor every `poll_s` until it is
        time to try the socket again (`wait_s`, backing off)."""
        until = time.monotonic() + wait_s
        while not self._stop.is_set():
            self._poll_cursor()
            left = until - time.monotonic()
            if left <= 0 or self._stop.wait(min(self.poll_s, left)):
                return

    def _poll_cursor(self) -> None:
        try:
            self._deliver(self.poll())
            with self._lock:
                self._rest_problem = None
        except BrokerError as exc:
            problem = None
            if exc.code in ("timeout", "broker_unreachable") or "HTTP 5" in str(exc):
                problem = f"{self.name}: neither the socket nor the REST cursor answers ({exc})"
            with self._lock:
                self._rest_problem = problem
            log.warning("%s: reading the cursor failed (%s)", self.name, exc)
        except Exception:
            log.exception("%s: reading the cursor failed", self.name)

    def _listen(self) -> None:
        """One socket session: open it from the booked sequence, book what it brings
        (filling gaps from the cursor), until it closes or falls silent."""
        assert self.ws_url is not None
        sep = "&" if "?" in self.ws_url else "?"
        url = f"{self.ws_url}{sep}after={self.booked}"
        sock = connect(
            url,
            additional_headers={"Authorization": f"Bearer {self._token}"},
            open_timeout=self.timeout_s,
            close_timeout=1.0,
        )
        with self._lock:
            self._socket = sock
            self._rest_problem = None
            self.connections += 1
        if self._stop.is_set():
            sock.close()
            return
        self.stream_state = "streaming"
        silence_s = self.timeout_s
        with sock:
            while not self._stop.is_set():
                raw = sock.recv(timeout=silence_s)  # TimeoutError: silent, dead
                message = self._read(raw)
                if message is None:  # not readable: whatever it was, the cursor has it
                    self._deliver(self.poll())
                    continue
                kind = message.get("type")
                if kind == "hello":
                    beat = message.get("heartbeat_s")
                    if isinstance(beat, int | float) and not isinstance(beat, bool) and beat > 0:
                        silence_s = max(_SILENCE_BEATS * float(beat), 0.5)
                elif kind == "heartbeat":
                    self._after_beat(message)
                elif kind in ("order", "execution"):
                    self._deliver(self._on_event(message))

    def _read(self, raw: str | bytes) -> Mapping[str, object] | None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.garbled += 1
            log.warning("%s: a socket message is not readable (%r)", self.name, _clip(str(raw)))
            return None
        return message

    def _after_beat(self, message: Mapping[str, object]) -> None:
        """A heartbeat naming a later sequence than booked: events were
        lost on the way; the cursor has them."""
        last = message.get("last_sequence")
        if isinstance(last, int) and not isinstance(last, bool) and last > self.booked:
            self.gaps += 1
            self._deliver(self.poll())

    def _on_event(self, event: Mapping[str, object]) -> list[BrokerAck]:
        with self._report_lock:
            sequence = event.get("sequence")
            if not isinstance(sequence, int) or isinstance(sequence, bool):
                self.garbled += 1
                return self._catch_up()
            if sequence <= self.booked:
                return []  # booked already (from the cursor)
            acks: list[BrokerAck] = []
            if sequence > self.booked + 1:
                self.gaps += 1
                log.warning("%s: sequence gap (want: %d, got: %d); reading the cursor",
                            self.name, self.booked + 1, sequence)  # fmt: skip
                acks.extend(self._catch_up())
                if sequence <= self.booked:
                    return acks
            try:
                acks.extend(self._book([event], strict=True))
            except BrokerError as exc:
                self.garbled += 1
                log.warning("%s: socket event %d unreadable (%s); reading the cursor",
                            self.name, sequence, exc)  # fmt: skip
                acks.extend(self._catch_up())
            return acks

    def _deliver(self, acks: list[BrokerAck]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for ack in acks:
            for listener in listeners:
                try:
                    listener(ack)
                except Exception:
                    log.exception("%s: a listener failed on %s", self.name, ack.order_id)

    # --- booking events -------------------------------------------------------------------

    def _catch_up(self) -> list[BrokerAck]:
        """Book every event after `booked` from the cursor (under the report lock)."""
        acks: list[BrokerAck] = []
        while True:
            page = self._call("GET", f"/v1/events?after={self.booked}&limit={_PAGE}", "events")
            events = _list(page, "events", self._unparseable)
            if not events:
                return acks
            acks.extend(self._book(events))
            if page.get("has_more") is not True:
                return acks

    def _book(self, events: list[Mapping[str, object]], *, strict: bool = False) -> list[BrokerAck]:
        """Book events in sequence order: each order's newest view and each new
        execution, then the booked sequence; the acks of our orders that changed.
        An event that cannot be read raises when `strict` (the socket's: the
        cursor is asked for it), else it is logged, counted and passed over (the
        cursor's own copy: waiting would stop every later event; the order's
        next event and the reconciliation carry its state)."""
        changed: dict[str, BrokerAck] = {}
        for event in sorted(events, key=lambda e: _seq(e.get("sequence"))):
            sequence = _seq(event.get("sequence"))
            if sequence <= self.booked:
                continue
            if sequence > self.booked + 1:
                # the OMS skipped numbers in its own cursor: nothing to wait for
                log.warning("%s: the cursor skips from %d to %d", self.name, self.booked, sequence)
            try:
                cid, held = self._take(event, sequence)
            except BrokerError as exc:
                if strict:
                    raise
                self.unreadable += 1
                log.error("%s: event %d passed over, unreadable (%s)", self.name, sequence, exc)
                self.booked = sequence
                continue
            self.booked = sequence
            with self._lock:  # a call of ours in flight on it answers for it
                last = None if cid in self._busy else self._last.get(cid)
            if last is not None:
                ack = self._ack(held)
                if (ack.status, ack.filled_quantity) != last:
                    changed[cid] = ack
        self._save_cursor()
        for cid, ack in changed.items():
            self._persist(cid)
            with self._lock:
                self._last[cid] = (ack.status, ack.filled_quantity)
        return list(changed.values())

    def _take(self, event: Mapping[str, object], sequence: int) -> tuple[str, _Held]:
        """One event's order and execution, merged into what is held."""
        order = event.get("order")
        if not isinstance(order, dict):
            raise self._unparseable(f"event {sequence}", "an event carrying its order")
        cid = text(self._order(order, f"event {sequence}"), "client_order_id")
        status = order.get("status")
        if status not in _STATUSES:
            raise self._unparseable(f"event {sequence}", f"a known status, got {status!r}")
        execution = event.get("execution")
        if isinstance(execution, dict):  # first: the order lists it too
            with self._lock:
                fresh = self._held.setdefault(cid, _Held(None, {}))
            self._add_fill(fresh, execution, f"event {sequence}")
        return cid, self._merge(order)

    def _merge(self, order: Mapping[str, object]) -> _Held:
        """Keep the OMS's newest view of the order (by its `sequence`) and add each
        execution it lists that is not booked yet."""
        cid = text(order, "client_order_id")
        with self._lock:
            held = self._held.setdefault(cid, _Held(None, {}))
            before = held.order
            if before is None or _seq(order.get("sequence")) >= _seq(before.get("sequence")):
                held.order = order
            held.oms_order_id = str(order.get("order_id") or held.oms_order_id)
        listed = order.get("executions")
        if not isinstance(listed, list):
            raise self._unparseable(f"order {cid!r}", "executions (a list)")
        for execution in listed:
            if not isinstance(execution, dict):
                raise self._unparseable(f"order {cid!r}", "executions (objects)")
            self._add_fill(held, execution, f"order {cid!r}", listed=True)
        return held

    def _add_fill(
        self, held: _Held, execution: Mapping[str, object], what: str, listed: bool = False
    ) -> None:
        try:
            fill = Fill(
                quantity=_number(execution, "quantity"),
                price=_number(execution, "price"),
                at=parse_utc(text(execution, "executed_at")),
                execution_id=text(execution, "execution_id"),
            )
        except ValueError as exc:
            raise self._unparseable(what, f"an execution ({exc})") from exc
        with self._lock:
            if fill.execution_id in held.fills:
                if not listed:  # an event bringing an execution already booked
                    self.duplicates += 1
                    log.info("%s: execution %s delivered again: booked once",
                             self.name, fill.execution_id)  # fmt: skip
                return
            held.fills[fill.execution_id] = fill

    def _report(self, order: Mapping[str, object]) -> BrokerAck:
        """The ack of an order a call of ours just read; from now on it is ours."""
        held = self._merge(order)
        cid = text(order, "client_order_id")
        ack = self._ack(held)
        self._persist(cid)
        with self._lock:
            self._last[cid] = (ack.status, ack.filled_quantity)
        return ack

    def _ack(self, held: _Held) -> BrokerAck:
        with self._lock:
            order, fills = held.order, tuple(held.fills.values())
        assert order is not None
        cid = text(order, "client_order_id")
        raw_status = order.get("status")
        status = _STATUSES.get(raw_status) if isinstance(raw_status, str) else None
        if status is None:
            raise self._unparseable(f"order {cid!r}", f"a known status, got {raw_status!r}")
        count = order.get("replace_count")
        if isinstance(count, int) and count > 0 and status == S.ACCEPTED:
            status = S.REPLACED
        filled = sum((f.quantity for f in fills), 0.0)
        average = (
            round(sum((f.quantity * f.price for f in fills), 0.0) / filled, 8) if filled else None
        )
        detail = ""
        if status == S.BLOCKED:
            reason = order.get("reject_reason")
            detail = (
                f"{self.name} rejected the order (want: an accepted order, got: rejected: {reason})"
            )
        return BrokerAck(
            order_id=cid,
            broker_order_id=str(order.get("order_id") or ""),
            status=status,
            filled_quantity=round(filled, 9),
            average_price=average,
            fills=fills,
            detail=detail,
            raw={"oms_order_id": order.get("order_id"), "oms_status": raw_status},
        )

    # --- lookups ------------------------------------------------------------------------

    def _lookup(self, order_id: str) -> Mapping[str, object] | None:
        try:
            found = self._call("GET", f"/v1/orders/{_path(order_id)}", f"lookup of {order_id!r}")
        except OmsRefused as refused:
            if refused.raw.get("http_status") == 404:
                return None
            raise
        return self._order(found, f"lookup of {order_id!r}", order_id)

    def _owned(self, order_id: str, broker_order_id: str) -> None:
        """A cancel or replace names the order by client id; the broker id must
        be the one the OMS gave it (never act on another order)."""
        with self._lock:
            held = self._held.get(order_id)
            known = held.oms_order_id if held is not None else ""
        if known and broker_order_id and known != broker_order_id:
            raise BrokerError(
                f"{self.name}: order {broker_order_id} was not sent as {order_id!r} "
                f"(want: {known!r}, got: {broker_order_id!r})",
                code="order_not_found",
            )

    def _same(self, order_id: str, broker_order_id: str, found: Mapping[str, object]) -> None:
        got = str(found.get("order_id") or "")
        if broker_order_id and got != broker_order_id:
            raise BrokerError(
                f"{self.name}: order {order_id!r} is not {broker_order_id} "
                f"(want: {broker_order_id!r}, got: {got!r})",
                code="order_not_found",
            )

    def _order(self, value: object, what: str, cid: str | None = None) -> Mapping[str, object]:
        """An order as the OMS sent it; `cid`: the one asked about (an answer about
        another order is never taken for it: its fills would be booked to ours)."""
        if not isinstance(value, dict):
            raise self._unparseable(what, f"an order, got {type(value).__name__}")
        try:
            got = text(value, "client_order_id")
            text(value, "status")
        except ValueError as exc:
            raise self._unparseable(what, f"an order ({exc})") from exc
        if cid is not None and got != cid:
            raise self._unparseable(what, f"the order {cid!r}, got the order {_clip(got)!r}")
        return value

    # --- memory ---------------------------------------------------------------------------

    def _save_cursor(self) -> None:
        self._save(_CURSOR_KEY, {"sequence": self.booked})

    def _persist(self, cid: str) -> None:
        """Save an order of ours (its OMS id and executions) unless saved already."""
        if self._journal is None:
            return
        with self._lock:
            held = self._held.get(cid)
            if held is None:
                return
            fills = list(held.fills.values())
            oms_id = held.oms_order_id
            if cid in self._saved_fills and self._saved_fills[cid] >= len(fills):
                return
        entry: JsonDict = {"oms_order_id": oms_id, "fills": [fill_to_json(f) for f in fills]}
        self._save(_ORDER_KEY + cid, entry)
        with self._lock:
            self._saved_fills[cid] = len(fills)

    def _save(self, key: str, value: JsonDict) -> None:
        if self._journal is None:
            return
        try:
            self._journal.save(key, value)
        except Exception as exc:
            raise BrokerError(
                f"{self.name}: could not save its memory ({type(exc).__name__}: {exc})",
                code="journal_unavailable",
            ) from exc

    def _restore(self, journal: BrokerJournal) -> None:
        for key, value in load_journal(self.name, journal).items():
            try:
                if key == _CURSOR_KEY:
                    sequence = value.get("sequence")
                    if not isinstance(sequence, int) or isinstance(sequence, bool):
                        raise ValueError(f"sequence (want: an integer, got: {sequence!r})")
                    self.booked = sequence
                    continue
                if not key.startswith(_ORDER_KEY):
                    raise ValueError(f"key (want: {_CURSOR_KEY} or {_ORDER_KEY}..., got: {key!r})")
                oms_id = text(value, "oms_order_id")
                listed = value.get("fills")
                if not isinstance(listed, list) or not all(isinstance(f, dict) for f in listed):
                    raise ValueError(f"fills (want: a list of fills, got: {type(listed).__name__})")
                fills = [fill_from_json(f) for f in listed]
            except (ValueError, KeyError, TypeError) as exc:
                raise BrokerError(
                    f"{self.name}: journal entry {key!r} is unreadable ({exc})",
                    code="journal_unreadable",
                ) from exc
            cid = key.removeprefix(_ORDER_KEY)
            self._held[cid] = _Held(None, {f.execution_id: f for f in fills}, oms_id)
            self._saved_fills[cid] = len(fills)
            # ours: its next event is reported (the gateway books only what is new)
            self._last[cid] = (S.SUBMITTED, -1.0)

    # --- calls ------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, what: str, body: JsonDict | None = None
    ) -> dict[str, Any]:
        """One HTTP call with the client's timeout; every failure is a BrokerError
        with the OMS's words (a 4xx an `OmsRefused`)."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise BrokerError(
                f"{self.name} {what}: no answer within {self.timeout_s:g}s (timeout)",
                code="timeout",
            ) from exc
        except httpx.HTTPError as exc:
            raise BrokerError(
                f"{self.name} {what}: connection lost ({type(exc).__name__})",
                code="broker_unreachable",
            ) from exc
        except RuntimeError as exc:  # httpx: the client was closed (the adapter closed)
            raise BrokerError(f"{self.name} {what}: the adapter is closed", code="closed") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        status = response.status_code
        if status >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            words = _clip(str(message if message is not None else response.text))
            line = f"HTTP {status} {words!r}" + ("" if code is None else f" (code {code})")
            raw: dict[str, object] = {"http_status": status, "code": code, "message": words}
            if isinstance(data, dict) and isinstance(data.get("order"), dict):
                raw["order"] = {k: data["order"].get(k) for k in ("order_id", "status")}
            if 400 <= status < 500 and status != 408:
                raise OmsRefused(f"{self.name} {what}: {line}", raw)
            raise BrokerError(f"{self.name} {what}: {line}")
        if not isinstance(data, dict):
            raise self._unparseable(what, f"a JSON object, got: {_clip(response.text)[:60]!r}")
        return data

    def _unparseable(self, what: str, want: str) -> BrokerError:
        return BrokerError(
            f"{self.name} {what}: unparseable reply (want: {want})", code="unparseable_reply"
        )


# --- configuration ------------------------------------------------------------------------


def from_config(
    section: Mapping[str, object],
    env: Mapping[str, str],
    *,
    role: str,
    clock: Clock,
    journal: Callable[[str], BrokerJournal] | None = None,
) -> OmsRestAdapter:
    """An adapter from a brokers.yaml section: `base_url` (http(s)), optional
    `ws_url` (ws(s); without it, polling only), `token_env` (the NAME of the
    environment variable holding the bearer token), optional `timeout_s`.
    `journal` gives the store's journal of a name: the adapter's is its broker
    name (`oms_rest-<role>`). Does not connect."""
    for key in section:
        if key not in _KEYS:
            raise BrokerConfigError(
                f"{role}.{key}", f"unknown key for adapter oms_rest (want: one of {sorted(_KEYS)})"
            )
    if role not in ("paper", "live"):
        raise BrokerConfigError(role, f"want: paper or live, got: {role!r}")
    base_url = section.get("base_url")
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise BrokerConfigError(f"{role}.base_url", f"want: an http(s) URL, got: {base_url!r}")
    ws_url = section.get("ws_url")
    if ws_url is not None:
        ws_parts = urlsplit(ws_url) if isinstance(ws_url, str) else None
        if ws_parts is None or ws_parts.scheme not in ("ws", "wss") or not ws_parts.hostname:
            raise BrokerConfigError(f"{role}.ws_url", f"want: a ws(s) URL, got: {ws_url!r}")
    name = section.get("token_env")
    if not isinstance(name, str) or not name:
        raise BrokerConfigError(
            f"{role}.token_env", f"want: the name of an environment variable, got: {name!r}"
        )
    token = env.get(name)
    if not token:  # the variable's name only, never a value
        raise BrokerConfigError(f"{role}.token_env", f"environment variable {name} is not set")
    timeout = section.get("timeout_s", _DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise BrokerConfigError(f"{role}.timeout_s", f"want: seconds in (0, 300], got: {timeout!r}")
    return OmsRestAdapter(
        base_url=str(base_url),
        token=token,
        clock=clock,
        ws_url=None if ws_url is None else str(ws_url),
        timeout_s=float(timeout),
        name=f"oms_rest-{role}",
        role=role,
        journal=None if journal is None else journal(f"oms_rest-{role}"),
    )


# --- small helpers ----------------------------------------------------------------------------


def _path(value: str) -> str:
    return urlquote(value, safe="")


def _seq(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(data: Mapping[str, object], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} (want: a finite number, got: {value!r})")
    return float(value)


def _price(data: Mapping[str, object], key: str) -> float | None:
    """An optional price: absent or null is None, else a finite number > 0."""
    if data.get(key) is None:
        return None
    price = _number(data, key)
    if price <= 0:
        raise ValueError(f"{key} (want: a number > 0 or null, got: {price!r})")
    return price


def _list(
    data: Mapping[str, object], key: str, unparseable: Callable[[str, str], BrokerError]
) -> list[Mapping[str, object]]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise unparseable(key, f"a list of objects under {key!r}")
    return cast(list[Mapping[str, object]], value)


def _why(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "silent past its heartbeat"
    return f"{type(exc).__name__}: {_clip(str(exc))}"


def _clip(line: str) -> str:
    line = " ".join(line.split())
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."
