"""A custom OMS or a broker's order desk over FIX 4.4, as the initiator (SPEC
section 11; issue 11; docs/oms-fix.md).

The broker port is synchronous; the session (adapters/fix_session.py) runs on
an event loop of this adapter's own, in a daemon thread, and every port call is
a coroutine sent to it with a deadline. Orders are the application layer here;
what is remembered of each is in adapters/fix_orders.py.

Identity. ClOrdID (11) of a new order is the gate's order id; a cancel or a
replace sends a new ClOrdID derived from it, with OrigClOrdID (41) the current
one and OrderID (37) once known. The broker order id we report is the
counterparty's OrderID from its first answer. A gate order id already sent (in
memory, or found in the durable FIX message log) is refused before anything is
sent: nothing is sent twice.

Calls wait for the answering ExecutionReport (or OrderCancelReject, session
Reject, BusinessMessageReject) for `request_timeout_s`. A submit that got no
answer raises `BrokerError` (outcome unknown), which the gateway resolves with
`find`: an OrderStatusRequest (35=H) answered with an ExecutionReport 150=I, or
"unknown order" (39=8, 103=5) -> None. A submit or replace that was answered is
followed by an OrderStatusRequest too, so that fills the counterparty made at
once are in the ack. A refusal (ExecType 8) is a `blocked` ack with the
counterparty's words; a session Reject (35=3) or BusinessMessageReject (35=j)
of a request is a `BrokerError` (`broker_api_error`) with its text.

Updates. Reports of orders outside a call of ours (a resting order filling, a
fill after a cancel) go to `subscribe` listeners. On every logon the orders
held open are asked for with OrderStatusRequest (or one OrderMassStatusRequest
35=AF when `mass_status: true`), and changes told the same way.

Positions come from the executions booked here (journal-backed) unless
`positions: true`, when they are asked with RequestForPositions (35=AN).
No market data: `quote()` is None.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar, cast

from engine.broker import (
    BrokerAck,
    BrokerError,
    BrokerJournal,
    BrokerOrder,
    BrokerPosition,
    Capabilities,
    SessionLog,
)
from engine.clock import Clock, system_clock
from engine.lifecycle import OrderStatus
from engine.models import OrderType, Quote, Side, TimeInForce

from .base import BrokerConfigError, MemoryJournal, MemorySessionLog, load_journal, order_to_json
from .fix_codec import FixMessage, Framer, decimal, fix_time, quantity_text
from .fix_orders import ORDER_KEY, BookedOrder
from .fix_session import FixSession, SessionSettings, text_of

__all__ = ["OMS_FIX_CAPABILITIES", "OmsFixAdapter", "from_config"]

log = logging.getLogger("apex.broker.oms_fix")

OMS_FIX_CAPABILITIES = Capabilities(
    order_types=frozenset({"market", "limit", "stop"}),
    time_in_force=frozenset({"day", "gtc", "ioc", "fok", "opg", "cls"}),
    # FIX 4.4 has no reduce-only for equities: the gate proves the order only
    # reduces the position (reduce_only_check) and sends it as a plain order
    reduce_only=False,
    reduce_only_emulated=True,
    cancel=True,
    replace=True,
    history=True,
    positions=True,
    market_data=False,
    paper=True,
    live=True,
    credentials=True,
)

S = OrderStatus
_T = TypeVar("_T")
_EPSILON = 1e-9
_SIDES = {"buy": "1", "sell": "2"}
_SELL_SHORT = "5"  # Side (54): a sale marked short (Reg SHO)
_LOCATE_FIRM = "8"  # PartyRole (452): Locate/Lending Firm (for short-sales), FIX 4.4
_ORD_TYPES = {"market": "1", "limit": "2", "stop": "3"}
_TIF = {"day": "0", "gtc": "1", "opg": "2", "ioc": "3", "fok": "4", "cls": "7"}
_KEYS = frozenset(
    {"adapter", "host", "port", "sender_comp_id", "target_comp_id", "heartbeat_s",
     "mass_status", "positions"}
)  # fmt: skip
_UNKNOWN_ORDER = "5"  # OrdRejReason: unknown order

Listener = Callable[[BrokerAck], None]
Waiter = tuple[Callable[[FixMessage], bool], "asyncio.Future[FixMessage]"]


class OmsFixAdapter:
    """The broker port over one FIX 4.4 session (one SenderCompID/TargetCompID)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender_comp_id: str,
        target_comp_id: str,
        clock: Clock,
        name: str = "oms_fix",
        heartbeat_s: float = 30.0,
        mass_status: bool = False,
        positions: bool = False,
        journal: BrokerJournal | None = None,
        session_log: SessionLog | None = None,
        request_timeout_s: float = 5.0,
        logon_timeout_s: float = 5.0,
        reconnect_min_s: float = 0.25,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.name = name
        self.capabilities = OMS_FIX_CAPABILITIES
        self.mass_status, self.ask_positions = mass_status, positions
        self.settings = SessionSettings(
            host=host, port=port, sender_comp_id=sender_comp_id, target_comp_id=target_comp_id,
            heartbeat_s=heartbeat_s, logon_timeout_s=logon_timeout_s,
            reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s,
        )  # fmt: skip
        self._clock = clock
        self._timeout = request_timeout_s
        self._journal = journal if journal is not None else MemoryJournal()
        self.session_log = session_log if session_log is not None else MemorySessionLog()
        self._session: FixSession | None = None
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._book: dict[str, BookedOrder] = {}
        self._by_cl: dict[str, str] = {}  # any ClOrdID of ours -> gate order id
        self._waiters: list[Waiter] = []
        self._busy: set[str] = set()  # gate order ids with a call of ours in flight
        self._changed: set[str] = set()  # ... whose order changed meanwhile
        self._call_lock: asyncio.Lock | None = None
        self._listeners: list[Listener] = []
        self._requests = 0
        self.foreign_reports = 0  # ExecutionReports of orders we never sent: not booked
        self._dispatch = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"{name}-events"
        )

    # --- the loop ---------------------------------------------------------------------

    def _start(self) -> FixSession:
        with self._start_lock:
            if self._session is not None:
                return self._session
            if self._closing:
                raise BrokerError(f"{self.name}: the adapter is closed")
            for key, entry in load_journal(self.name, self._journal).items():
                if key.startswith(ORDER_KEY):
                    self._remember(BookedOrder.from_json(entry))
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
            self._thread.start()
            self._loop = loop
            session = FixSession(
                # SendingTime is the wall clock's (a counterparty checks it against its
                # own); the gate's clock stamps orders (TransactTime) and fills
                self.settings, self.session_log, system_clock, name=self.name,
                on_message=self._on_message, on_logon=self._on_logon, on_down=self._on_down,
            )  # fmt: skip
            self._session = session

            async def first() -> None:
                self._call_lock = asyncio.Lock()
                await session.start()

            try:
                self._submit_to_loop(first()).result(self.settings.logon_timeout_s * 3 + 1)
            except Exception as exc:
                log.warning("%s: first logon failed: %s", self.name, exc)
            return session

    def _submit_to_loop(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, make: Callable[[], Coroutine[Any, Any, _T]], what: str) -> _T:
        """Run `make()` on the loop, one call at a time, within a deadline."""
        self._start()

        async def call() -> _T:
            assert self._call_lock is not None
            async with self._call_lock:
                return await make()

        try:
            return self._submit_to_loop(call()).result(self._timeout * 4 + 2)
        except BrokerError:
            raise
        except concurrent.futures.TimeoutError as exc:
            raise BrokerError(
                f"{self.name}: timeout: {what} got no answer", code="timeout"
            ) from exc
        except Exception as exc:
            raise BrokerError(f"{self.name}: {what} failed: {_words(exc)}") from exc

    def close(self) -> None:
        """Log out, stop the loop and its thread (idempotent)."""
        with self._start_lock:
            self._closing = True
            loop, thread, session = self._loop, self._thread, self._session
            self._loop = None
        if loop is not None and thread is not None and session is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(session), loop).result(
                    self.settings.logon_timeout_s + 5
                )
            except Exception:
                log.exception("%s: shutdown", self.name)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
        self._dispatch.shutdown(wait=True)

    async def _shutdown(self, session: FixSession) -> None:
        await session.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def connection_problem(self) -> str | None:
        """Why the session is not logged on now; None when it is."""
        return self._start().problem

    @property
    def connections(self) -> int:
        """Logons so far: a service that sees it grow knows the session came back."""
        return 0 if self._session is None else self._session.connections

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(ack)` (on a thread of its own) for every change the
        counterparty reports of an order outside a call of ours."""
        self._listeners.append(listener)

    # --- the session's callbacks ------------------------------------------------------

    def _on_message(self, message: FixMessage) -> None:
        msg_type = text_of(message, 35)
        if msg_type == "8":
            self._on_report(message)
        for predicate, future in list(self._waiters):
            if future.done():
                continue
            try:
                if predicate(message):
                    future.set_result(message)
            except Exception as exc:
                future.set_exception(exc)

    def _on_report(self, report: FixMessage) -> None:
        booked = self._owner(report)
        if booked is None:
            # kept in the FIX message log (`brokers fix-log`) as received; nothing booked
            self.foreign_reports += 1
            log.warning("%s: an ExecutionReport of an order we never sent (11=%s, 37=%s, "
                        "150=%s): not booked", self.name, text_of(report, 11),
                        text_of(report, 37), text_of(report, 150))  # fmt: skip
            return
        if _unknown(report):
            return  # an OrderStatusRequest's "never heard of it": judged by the caller
        if booked.apply(report, self._clock(), self.name):
            self._save(booked)
            if booked.order.order_id in self._busy:
                self._changed.add(booked.order.order_id)
            elif self._listeners:
                self._tell(booked.ack(consume=True))

    def _on_down(self, problem: str) -> None:
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(BrokerError(f"{self.name}: {problem} before an answer"))
        self._waiters.clear()

    async def _on_logon(self) -> None:
        """Ask for every order held open: what changed while we were away."""
        open_orders = [b for b in self._book.values() if b.working]
        if not open_orders:
            return
        try:
            if self.mass_status:
                await self._mass_status()
            else:
                for booked in open_orders:
                    await self._status(booked)
        except BrokerError as exc:
            log.warning("%s: resolving open orders after logon failed: %s", self.name, exc)

    def _release(self, order_id: str, answered: bool) -> None:
        """A call on the order ended. What the counterparty changed meanwhile is in
        the call's answer, or, when the call failed, told to the listeners."""
        self._busy.discard(order_id)
        if order_id in self._changed:
            self._changed.discard(order_id)
            booked = self._book.get(order_id)
            if not answered and booked is not None and self._listeners:
                self._tell(booked.ack(consume=True))

    def _tell(self, ack: BrokerAck) -> None:
        for listener in list(self._listeners):
            self._dispatch.submit(_tell, listener, ack)

    def _owner(self, report: FixMessage) -> BookedOrder | None:
        """The order a report is about: by its ClOrdID (11), one derived from ours
        (`<order id>.<n>`, a counter a crash lost), or OrigClOrdID (41); by OrderID
        (37) only when it names no ClOrdID. A ClOrdID that is not ours is another
        order's report: never booked into one of ours, whatever its OrderID."""
        cl = text_of(report, 11)
        for candidate in (cl, text_of(report, 41)):
            order_id = self._by_cl.get(candidate)
            if order_id is None and "." in candidate:
                base, _, n = candidate.rpartition(".")
                order_id = base if n.isdigit() and base in self._book else None
            if order_id is not None:
                return self._book.get(order_id)
        broker_id = text_of(report, 37)
        if broker_id and not cl:
            return next((b for b in self._book.values() if b.broker_order_id == broker_id), None)
        return None

    def _remember(self, booked: BookedOrder) -> None:
        self._book[booked.order.order_id] = booked
        for cl in [*booked.chain, *booked.pending]:
            self._by_cl[cl] = booked.order.order_id

    def _save(self, booked: BookedOrder) -> None:
        try:
            self._journal.save(ORDER_KEY + booked.order.order_id, booked.to_json())
        except Exception as exc:
            raise BrokerError(
                f"{self.name}: could not save {booked.order.order_id} ({_words(exc)})",
                code="journal_unavailable",
            ) from exc

    # --- requests and their answers ---------------------------------------------------

    def _need_session(self) -> FixSession:
        session = self._session
        if session is None or session.problem is not None:
            problem = "not started" if session is None else session.problem
            raise BrokerError(f"{self.name}: not connected ({problem})")
        return session

    async def _request(
        self,
        msg_type: str,
        fields: list[tuple[int, str]],
        cl_ord_id: str | None,
        answered: Callable[[FixMessage], bool],
        what: str,
    ) -> FixMessage:
        """Send one request and wait for its answer; a session Reject (3) or a
        BusinessMessageReject (j) of it raises `BrokerError` with the peer's text."""
        session = self._need_session()
        future: asyncio.Future[FixMessage] = asyncio.get_running_loop().create_future()
        seq_box: list[int] = []

        def matches(message: FixMessage) -> bool:
            kind = text_of(message, 35)
            if kind in ("3", "j") and seq_box and text_of(message, 45) == str(seq_box[0]):
                return True
            if kind == "j" and cl_ord_id and text_of(message, 379) == cl_ord_id:
                return True
            return answered(message)

        entry: Waiter = (matches, future)
        self._waiters.append(entry)
        try:
            seq_box.append(session.send(msg_type, fields, cl_ord_id))
            try:
                answer = await asyncio.wait_for(future, self._timeout)
            except TimeoutError as exc:
                raise BrokerError(
                    f"{self.name}: timeout: no answer to {what} within {self._timeout:g}s",
                    code="timeout",
                ) from exc
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
        kind = text_of(answer, 35)
        if kind in ("3", "j"):
            name = "session Reject" if kind == "3" else "BusinessMessageReject"
            said = text_of(answer, 58) or "no reason given"
            raise BrokerError(f"{self.name}: {name} of {what}: {said}")
        return answer

    async def _status(self, booked: BookedOrder) -> FixMessage:
        """OrderStatusRequest (35=H) for one order; its ExecutionReport (150=I)."""
        self._requests += 1
        request_id = f"{booked.order.order_id}:H{self._requests}"
        fields = [(790, request_id), (11, booked.cl_ord_id)]
        if booked.broker_order_id:
            fields.append((37, booked.broker_order_id))
        fields += _instrument(booked.order)
        chain = set(booked.chain)

        def answered(message: FixMessage) -> bool:
            if text_of(message, 35) != "8" or text_of(message, 150) != "I":
                return False
            return text_of(message, 790) == request_id or text_of(message, 11) in chain

        return await self._request(
            "H", fields, None, answered, f"the status of {booked.order.order_id}"
        )

    async def _settle(self, booked: BookedOrder) -> None:
        """Ask for the status once more, so that what the counterparty did at once
        (an immediate fill) is in the answer; no answer leaves it as it is."""
        if booked.working:
            try:
                await self._status(booked)
            except BrokerError as exc:
                log.info("%s: status after the call: %s", self.name, exc)

    async def _mass_status(self) -> None:
        """OrderMassStatusRequest (35=AF, all orders): the reports until LastRptRequested."""
        self._requests += 1
        request_id = f"AF{self._requests}"

        def answered(message: FixMessage) -> bool:
            return text_of(message, 584) == request_id and (
                text_of(message, 912) == "Y" or text_of(message, 35) != "8"
            )

        await self._request(
            "AF", [(584, request_id), (585, "7")], None, answered, "the mass status"
        )

    # --- the broker port --------------------------------------------------------------

    def submit(self, order: BrokerOrder) -> BrokerAck:
        return self._call(lambda: self._submit(order), f"submit of {order.order_id}")

    def cancel(self, order_id: str, broker_order_id: str) -> BrokerAck:
        return self._call(lambda: self._cancel(order_id), f"cancel of {order_id}")

    def replace(self, broker_order_id: str, order: BrokerOrder) -> BrokerAck:
        return self._call(lambda: self._replace(order), f"replace of {order.order_id}")

    def order_status(self, order_id: str, broker_order_id: str) -> BrokerAck:
        async def status() -> BrokerAck:
            booked = self._known(order_id)
            if booked is None:
                raise BrokerError(f"order {order_id!r} was never sent to {self.name}",
                                  code="order_not_found")  # fmt: skip
            await self._status(booked)
            return booked.ack(consume=True)

        return self._call(status, f"status of {order_id}")

    def find(self, order_id: str) -> BrokerAck | None:
        async def find() -> BrokerAck | None:
            booked = self._known(order_id)
            if booked is None:
                return None  # not in the durable log of what we sent: never sent
            answer = await self._status(booked)
            if _unknown(answer) and not booked.ord_status:
                return None
            return booked.ack(consume=True)

        return self._call(find, f"lookup of {order_id}")

    def order_history(self) -> list[BrokerAck]:
        async def history() -> list[BrokerAck]:
            if self.mass_status and self._session is not None and self._session.problem is None:
                await self._mass_status()
            return [b.ack() for b in sorted(self._book.values(), key=lambda b: b.number)]

        return self._call(history, "order history")

    def positions(self, account: str) -> dict[str, float]:
        """Net quantity by symbol of `account`: asked of the counterparty with
        RequestForPositions when `positions: true`, else summed from the
        executions booked here."""
        if self.ask_positions:
            return {s: p.quantity for s, p in self.held_positions(account).items()}
        self._start()
        held: dict[str, float] = {}
        for booked in list(self._book.values()):  # a copy: the loop's thread adds to it
            if booked.order.account != account:
                continue
            sign = 1.0 if booked.order.side == "buy" else -1.0
            held[booked.order.symbol] = held.get(booked.order.symbol, 0.0) + sign * booked.filled
        return {s: q for s, q in sorted(held.items()) if abs(q) > _EPSILON}

    def held_positions(self, account: str) -> dict[str, BrokerPosition]:
        """The positions, each with the SettlPrice (730) of its PositionReports when
        the counterparty is asked (`positions: true`) and the price is a finite
        decimal > 0, the same in every report of the symbol; otherwise none (the
        executions booked here priced the holding already)."""
        if self.ask_positions:
            return self._call(lambda: self._positions(account), "positions")
        return {s: BrokerPosition(q) for s, q in self.positions(account).items()}

    def account(self, account: str) -> dict[str, object]:
        session = self._start()
        status = "logged on" if session.problem is None else f"not connected ({session.problem})"
        return {"id": self.settings.sender_comp_id, "account_number": account or "-",
                "status": status}  # fmt: skip

    def check_credentials(self) -> bool:
        """The counterparty accepted our Logon (SenderCompID, TargetCompID)."""
        return self._start().problem is None

    def quote(self, symbol: str) -> Quote | None:
        return None  # no market data over this session

    def on_quote(self, symbol: str, quote: Quote) -> list[BrokerAck]:
        return []  # the counterparty's market is its own

    # --- what each call does, on the loop ---------------------------------------------

    def _known(self, order_id: str) -> BookedOrder | None:
        """The order from memory, or rebuilt from the NewOrderSingle in the FIX
        message log (sent before a crash that lost the journal's entry)."""
        booked = self._book.get(order_id)
        if booked is not None:
            return booked
        sent = [m for m in self.session_log.sent_for(order_id) if m.msg_type == "D"]
        if not sent:
            return None
        frames = Framer().feed(sent[0].message)
        message = frames[0].message if frames else None
        if message is None:
            return None
        booked = BookedOrder.new(_order_of(message), len(self._book) + 1)
        self._remember(booked)
        return booked

    async def _submit(self, order: BrokerOrder) -> BrokerAck:
        used = self._known(order.order_id)
        if used is not None:
            return _refused(
                order.order_id,
                f"client order id already sent (want: a new order id, got: {order.order_id!r}, "
                f"OrderID {used.broker_order_id or 'not known yet'})",
            )
        invalid = _invalid(order)
        if invalid is not None:
            return _refused(order.order_id, invalid)
        self._need_session()
        booked = BookedOrder.new(order, len(self._book) + 1)
        self._remember(booked)
        self._save(booked)
        cl = order.order_id

        def answered(message: FixMessage) -> bool:
            return (
                text_of(message, 35) == "8" and text_of(message, 11) == cl and not _unknown(message)
            )

        self._busy.add(cl)
        answered_ok = False
        try:
            await self._request("D", _new_order(order, cl, self._clock), cl, answered,
                                f"the order {cl}")  # fmt: skip
            await self._settle(booked)
            answered_ok = True
        finally:
            self._release(cl, answered_ok)
        self._save(booked)
        return booked.ack(consume=True)

    def _working(self, order_id: str, verb: str) -> BookedOrder:
        booked = self._known(order_id)
        if booked is None:
            raise BrokerError(f"order {order_id!r} was never sent to {self.name}",
                              code="order_not_found")  # fmt: skip
        status = booked.status
        if status not in (S.ACCEPTED, S.PARTIALLY_FILLED, S.REPLACED, S.PENDING_REPLACE):
            raise BrokerError(
                f"order {order_id!r} cannot be {verb} (want: a working order, got: {status})"
            )
        return booked

    async def _cancel(self, order_id: str) -> BrokerAck:
        booked = self._working(order_id, "cancelled")
        self._need_session()
        cl = booked.next_cl_ord_id()
        self._by_cl[cl] = order_id
        self._save(booked)
        order = booked.order
        fields = [(11, cl), (41, booked.cl_ord_id)]
        if booked.broker_order_id:
            fields.append((37, booked.broker_order_id))
        fields += [(1, order.account), (55, order.symbol), (54, _side(order)),
                   (60, fix_time(self._clock())), (38, quantity_text(order.quantity))]  # fmt: skip

        def answered(message: FixMessage) -> bool:
            kind = text_of(message, 35)
            if kind == "9":
                return text_of(message, 11) == cl
            return (
                kind == "8" and text_of(message, 11) == cl and text_of(message, 150) in ("4", "6")
            )

        self._busy.add(order_id)
        refused = True
        try:
            answer = await self._request("F", fields, cl, answered, f"the cancel of {order_id}")
            if text_of(answer, 35) == "9":
                said = text_of(answer, 58) or "no reason given"
                raise BrokerError(f"{self.name} refused the cancel of {order_id}: {said}")
            refused = False
        finally:
            self._release(order_id, not refused)
        self._save(booked)
        return booked.ack(consume=True)

    async def _replace(self, order: BrokerOrder) -> BrokerAck:
        booked = self._working(order.order_id, "replaced")
        invalid = _invalid(order)
        if invalid is not None:
            raise BrokerError(f"{self.name} cannot take the replace of {order.order_id}: {invalid}")
        self._need_session()
        cl = booked.next_cl_ord_id()
        booked.pending[cl] = order_to_json(order)
        self._by_cl[cl] = order.order_id
        self._save(booked)
        fields = [(11, cl), (41, booked.cl_ord_id)]
        if booked.broker_order_id:
            fields.append((37, booked.broker_order_id))
        fields += _new_order(order, cl, self._clock)[1:]

        def answered(message: FixMessage) -> bool:
            kind = text_of(message, 35)
            if kind == "9":
                return text_of(message, 11) == cl
            return (
                kind == "8"
                and text_of(message, 11) == cl
                and text_of(message, 150) in ("5", "E", "8")
            )

        self._busy.add(order.order_id)
        try:
            answer = await self._request(
                "G", fields, cl, answered, f"the replace of {order.order_id}"
            )
            if text_of(answer, 35) == "9" or text_of(answer, 150) == "8":
                booked.pending.pop(cl, None)
                said = text_of(answer, 58) or "no reason given"
                raise BrokerError(f"{self.name} refused the replace of {order.order_id}: {said}")
            await self._settle(booked)
            answered_ok = True
        finally:
            self._save(booked)
            self._release(order.order_id, answered_ok)
        return booked.ack(consume=True)

    async def _positions(self, account: str) -> dict[str, BrokerPosition]:
        """RequestForPositions (35=AN): the ack (AO), then one PositionReport (AP)
        per instrument until the count the ack announced or LastRptRequested."""
        self._requests += 1
        request_id = f"AN{self._requests}"
        now = self._clock()
        reports: list[FixMessage] = []
        expected: list[int] = []

        def collect(message: FixMessage) -> bool:
            kind = text_of(message, 35)
            if text_of(message, 710) != request_id:
                return False
            if kind == "AO":
                expected.append(int(text_of(message, 727, "0") or 0))
                if text_of(message, 728, "0") != "0" or expected[0] == 0:
                    return True
            elif kind == "AP":
                reports.append(message)
                if text_of(message, 912) == "Y":
                    return True
            return bool(expected) and len(reports) >= expected[0] > 0

        fields = [(710, request_id), (724, "0"), (1, account), (581, "1"),
                  (715, now.strftime("%Y%m%d")), (60, fix_time(now))]  # fmt: skip
        answer = await self._request("AN", fields, None, collect, "the positions")
        if text_of(answer, 35) == "AO" and text_of(answer, 728, "0") not in ("0", "2"):
            said = text_of(answer, 58) or f"PosReqResult {text_of(answer, 728)}"
            raise BrokerError(f"{self.name}: the positions were refused: {said}")
        held: dict[str, float] = {}
        prices: dict[str, set[float | None]] = {}
        for report in reports:
            long_qty = decimal(report.get(704)) or 0.0
            short_qty = decimal(report.get(705)) or 0.0
            symbol = text_of(report, 55)
            held[symbol] = held.get(symbol, 0.0) + long_qty - short_qty
            prices.setdefault(symbol, set()).add(decimal(report.get(730)))
        return {
            s: BrokerPosition(q, _settl_price(prices[s]))
            for s, q in sorted(held.items())
            if abs(q) > _EPSILON
        }


# --- messages ---------------------------------------------------------------------------


def _settl_price(prices: set[float | None]) -> float | None:
    """The one SettlPrice a symbol's reports gave, when it is > 0 (a report
    without one, or reports that differ, give none)."""
    if len(prices) != 1:
        return None
    (price,) = prices
    return price if price is not None and price > 0 else None


def _instrument(order: BrokerOrder) -> list[tuple[int, str]]:
    return [(1, order.account), (55, order.symbol), (54, _side(order))]


def _side(order: BrokerOrder) -> str:
    """Side (54): 1 buy, 2 sell, 5 sell short (a sale the gate marked short)."""
    return _SELL_SHORT if order.side == "sell" and order.short_sale else _SIDES[order.side]


def _locate(order: BrokerOrder) -> list[tuple[int, str]]:
    """A short sale's locate, in standard FIX 4.4 tags: LocateReqd (114) N with the
    locate named as the Locate/Lending Firm party (453=1, 448 the locate id,
    447=D proprietary, 452=8); without one, 114=Y (the broker is to locate)."""
    if order.side != "sell" or not order.short_sale:
        return []
    if not order.locate_id:
        return [(114, "Y")]
    return [(114, "N"), (453, "1"), (448, order.locate_id), (447, "D"), (452, _LOCATE_FIRM)]


def _new_order(order: BrokerOrder, cl: str, clock: Clock) -> list[tuple[int, str]]:
    """NewOrderSingle's body (11 first: a replace swaps it for its own 11 and 41)."""
    fields = [(11, cl), (1, order.account), (21, "1"), (55, order.symbol),
              (54, _side(order)), (60, fix_time(clock())),
              (38, quantity_text(order.quantity)), (40, _ORD_TYPES[order.order_type])]  # fmt: skip
    if order.order_type == "limit" and order.limit_price is not None:
        fields.append((44, _price(order.limit_price)))
    if order.order_type == "stop" and order.stop_price is not None:
        fields.append((99, _price(order.stop_price)))
    fields.append((59, _TIF[order.time_in_force]))
    return fields + _locate(order)


def _order_of(message: FixMessage) -> BrokerOrder:
    """The order a NewOrderSingle from our log sent."""
    sides = {v: k for k, v in _SIDES.items()} | {_SELL_SHORT: "sell"}
    types = {v: k for k, v in _ORD_TYPES.items()}
    tifs = {v: k for k, v in _TIF.items()}
    order_type = types.get(text_of(message, 40), "market")
    return BrokerOrder(
        order_id=text_of(message, 11),
        account=text_of(message, 1),
        symbol=text_of(message, 55),
        side=cast(Side, sides.get(text_of(message, 54), "buy")),
        quantity=decimal(message.get(38)) or 0.0,
        order_type=cast(OrderType, order_type),
        limit_price=decimal(message.get(44)),
        stop_price=decimal(message.get(99)),
        time_in_force=cast(TimeInForce, tifs.get(text_of(message, 59), "day")),
        short_sale=text_of(message, 54) == _SELL_SHORT,
        # ours carries one party, the locate firm (its first 448 is the locate id)
        locate_id=(text_of(message, 448) or None)
        if text_of(message, 452) == _LOCATE_FIRM
        else None,
    )


def _price(value: float) -> str:
    return quantity_text(round(value, 8))


def _unknown(report: FixMessage) -> bool:
    """An ExecutionReport that answers an OrderStatusRequest with "unknown order"."""
    return (
        text_of(report, 150) == "I"
        and text_of(report, 39) == "8"
        and text_of(report, 103) == _UNKNOWN_ORDER
    )


def _refused(order_id: str, detail: str) -> BrokerAck:
    return BrokerAck(order_id, "", S.BLOCKED, detail=detail)


def _invalid(order: BrokerOrder) -> str | None:
    if not (order.quantity > 0):
        return f"quantity must be positive (want: > 0, got: {order.quantity})"
    if order.order_type not in _ORD_TYPES:
        want = sorted(_ORD_TYPES)
        return f"order type not supported (want: one of {want}, got: {order.order_type!r})"
    if order.time_in_force not in _TIF:
        want = sorted(_TIF)
        return f"time in force not supported (want: one of {want}, got: {order.time_in_force!r})"
    if order.order_type == "limit" and order.limit_price is None:
        return "limit price missing (want: a limit price for a limit order, got: none)"
    if order.order_type == "stop" and order.stop_price is None:
        return "stop price missing (want: a stop price for a stop order, got: none)"
    return None


def _words(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _tell(listener: Listener, ack: BrokerAck) -> None:
    try:
        listener(ack)
    except Exception:
        log.exception("a listener failed on %s", ack.order_id)


# --- configuration ----------------------------------------------------------------------


def from_config(
    section: Mapping[str, object],
    env: Mapping[str, str],
    *,
    role: str,
    clock: Clock,
    journal: Callable[[str], BrokerJournal] | None = None,
    session_log: Callable[[str], SessionLog] | None = None,
) -> OmsFixAdapter:
    """An adapter from a brokers.yaml section (SPEC section 11): `host`, `port`,
    `sender_comp_id`, `target_comp_id`, optional `heartbeat_s` (30), `mass_status`
    and `positions` (false). No credential: the counterparty knows us by our
    CompIDs (and its network rules). Does not connect."""
    for key in section:
        if key not in _KEYS:
            raise BrokerConfigError(
                f"{role}.{key}", f"unknown key for adapter oms_fix (want: one of {sorted(_KEYS)})"
            )
    host = section.get("host")
    if not isinstance(host, str) or not host.strip():
        raise BrokerConfigError(f"{role}.host", f"want: a host name, got: {_kind(host)}")
    port = section.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BrokerConfigError(f"{role}.port", f"want: an integer in 1..65535, got: {_kind(port)}")
    ids = {}
    for key in ("sender_comp_id", "target_comp_id"):
        value = section.get(key)
        if (
            not isinstance(value, str)
            or not value.strip()
            or not value.isprintable()
            or "\x01" in value
        ):
            raise BrokerConfigError(
                f"{role}.{key}", f"want: a CompID (printable text), got: {_kind(value)}"
            )
        ids[key] = value
    heartbeat = section.get("heartbeat_s", 30)
    if (
        isinstance(heartbeat, bool)
        or not isinstance(heartbeat, int | float)
        or not 1 <= heartbeat <= 3600
    ):
        raise BrokerConfigError(
            f"{role}.heartbeat_s", f"want: seconds in 1..3600, got: {_kind(heartbeat)}"
        )
    flags = {}
    for key in ("mass_status", "positions"):
        value = section.get(key, False)
        if not isinstance(value, bool):
            raise BrokerConfigError(f"{role}.{key}", f"want: true or false, got: {_kind(value)}")
        flags[key] = value
    name = f"oms_fix-{role}"
    return OmsFixAdapter(
        host=host, port=port, sender_comp_id=ids["sender_comp_id"],
        target_comp_id=ids["target_comp_id"], clock=clock, name=name,
        heartbeat_s=float(heartbeat), mass_status=flags["mass_status"],
        positions=flags["positions"],
        journal=journal(name) if journal is not None else None,
        session_log=session_log(name) if session_log is not None else None,
    )  # fmt: skip


def _kind(value: object) -> str:
    """What a wrong value is, never the value."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number out of range"
    if isinstance(value, str):
        return "empty text" if not value.strip() else "text"
    return type(value).__name__
