"""The fake desk on top of the session: order entry, cancels, replaces, status,
mass status and positions, answered from the book."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import simplefix

from ._book import TERMINAL, Book, Order
from ._faults import (
    CancelReject,
    DuplicateExecution,
    Fault,
    FillAfterCancel,
    PartialFill,
    Reject,
)
from ._session import Session
from ._wire import format_utc, get, parse_number, parse_utc

__all__ = ["FakeFixAcceptor"]

Fields = list[tuple[int, str]]

_REQUIRED: dict[str, tuple[int, ...]] = {
    "D": (11, 55, 54, 60, 38, 40),
    "F": (11, 41, 55, 54, 60),
    "G": (11, 41, 55, 54, 60, 38, 40),
    "H": (11, 55, 54),
    "AF": (584, 585),
    "AN": (710, 724, 1, 581, 715, 60),
}
_SIDES = frozenset({"1", "2", "5"})
_ORD_TYPES = frozenset({"1", "2", "3", "4"})
_TIFS = frozenset({"0", "1", "2", "3", "4", "7"})


class FakeFixAcceptor(Session):
    """A FIX 4.4 acceptor with a small matching book (see the package docstring)."""

    def __init__(
        self,
        *,
        sender_comp_id: str = "OMS",
        target_comp_id: str = "APEX",
        host: str = "127.0.0.1",
        port: int = 0,
        mass_status: bool = False,
        positions: bool = False,
        decimal_quantities: bool = False,
    ) -> None:
        super().__init__(
            sender_comp_id=sender_comp_id, target_comp_id=target_comp_id, host=host, port=port
        )
        self.mass_status = mass_status
        self.positions = positions
        self.book = Book(prefix=sender_comp_id, decimal_quantities=decimal_quantities)
        # NewOrderSingles taken as new orders, per ClOrdID: a PossDup resend of a
        # known ClOrdID is not counted; a second D under a known ClOrdID without
        # PossDup is (and is rejected 103=6), so 2 means "the initiator sent it twice"
        self.new_orders: Counter[str] = Counter()
        # SettlPrice (730) of a symbol's PositionReports as set (None: left out);
        # without one, the quote's last price (0 without a quote)
        self.settl_prices: dict[str, str | None] = {}

    # --- running and what tests do --------------------------------------------------

    def start(self) -> FakeFixAcceptor:  # type: ignore[override]
        super().start()
        return self

    def __enter__(self) -> FakeFixAcceptor:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def inject(self, fault: Fault) -> None:
        self.call(lambda: self.add_fault(fault))

    def set_quote(self, symbol: str, *, bid: float, ask: float, last: float) -> None:
        """A new quote; resting orders it makes marketable (stops it triggers) fill."""

        def change() -> None:
            self.book.quotes[symbol] = (bid, ask, last)
            for order in list(self.book.orders.values()):
                if order.symbol == symbol and order.status not in TERMINAL:
                    self._work(order)

        self.call(change)

    def fill(
        self, cl_ord_id: str, quantity: float | None = None, price: float | None = None
    ) -> None:
        """Fill (part of) the working order with `cl_ord_id` in its chain, connected or not."""

        def do() -> None:
            order = self.book.find(cl_ord_id)
            if order is None or order.status in TERMINAL:
                raise ValueError(f"no working order with ClOrdID {cl_ord_id!r}")
            at = price if price is not None else self.book.touch(order) or order.price
            if at is None:
                raise ValueError(f"no price to fill {cl_ord_id!r} at")
            self._trade(order, quantity or order.leaves_qty, at)

        self.call(do)

    def hold(self, account: str, symbol: str, quantity: float) -> None:
        """A position taken outside the initiator's orders (signed)."""

        def do() -> None:
            self.book.positions[(account, symbol)] = quantity

        self.call(do)

    def set_settl_price(self, symbol: str, value: str | None) -> None:
        """What SettlPrice (730) says for the symbol, as given (None: left out)."""

        def do() -> None:
            self.settl_prices[symbol] = value

        self.call(do)

    def drop(self) -> None:
        """Close the current connection now, without a Logout."""
        self.call(lambda: self.close())

    def logout(self, text: str = "") -> None:
        """Send a Logout and wait for the initiator's: closed on its answer, or
        after one HeartBtInt without one."""

        def go() -> None:
            conn = self.conn
            if conn is None:
                return
            self.end_session(text, conn, close=False)
            assert self._loop is not None
            self._loop.call_later(conn.heartbeat_s, self.close, conn)

        self.call(go)

    def orders(self) -> dict[str, dict[str, object]]:
        return self.call(lambda: {oid: o.view() for oid, o in self.book.orders.items()})

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        if not predicate():
            raise AssertionError(f"condition not met within {timeout} s")

    # --- dispatch -------------------------------------------------------------------

    def handle_app(self, m: simplefix.FixMessage, poss_dup: bool) -> None:
        msg_type = get(m, 35) or ""
        handler = {
            "D": self._new_order,
            "F": self._cancel,
            "G": self._replace,
            "H": self._status,
            "AF": self._mass_status,
            "AN": self._positions,
        }.get(msg_type)
        if handler is None or (msg_type == "AF" and not self.mass_status):
            self.business_reject(m, "3", f"Unsupported Message Type {msg_type}")
            return
        if msg_type == "AN" and not self.positions:
            self.business_reject(m, "3", f"Unsupported Message Type {msg_type}")
            return
        if self._valid(m, msg_type):
            handler(m, poss_dup)

    def _valid(self, m: simplefix.FixMessage, msg_type: str) -> bool:
        """Required tags (371/373=1), enumerations (373=5) and formats (373=6)."""
        required = list(_REQUIRED[msg_type])
        if msg_type in ("D", "G"):
            ord_type = get(m, 40)
            required += [44] if ord_type in ("2", "4") else []
            required += [99] if ord_type in ("3", "4") else []
        for tag in required:
            if get(m, tag) in (None, ""):
                self.session_reject(m, "1", f"Required tag missing: {tag}", tag)
                return False
        if msg_type in ("D", "F", "G", "H") and get(m, 54) not in _SIDES:
            self.session_reject(m, "5", f"Side (54) want 1, 2 or 5, got {get(m, 54)}", 54)
            return False
        for tag in (38, 44, 99):
            if get(m, tag) is not None and parse_number(get(m, tag)) is None:
                self.session_reject(m, "6", f"tag {tag} is not a number: {get(m, tag)}", tag)
                return False
        transact = get(m, 60)
        if transact is not None and parse_utc(transact) is None:
            self.session_reject(m, "6", f"TransactTime (60) not a UTCTimestamp: {transact}", 60)
            return False
        return True

    # --- orders ---------------------------------------------------------------------

    def _new_order(self, m: simplefix.FixMessage, poss_dup: bool) -> None:
        cl_ord_id = get(m, 11) or ""
        known = self.book.find(cl_ord_id)
        if known is not None and poss_dup:
            return  # a resend of an order we have: never executed twice
        self.new_orders[cl_ord_id] += 1
        order = Order(
            order_id=self.book.new_order_id(),
            cl_ord_ids=[cl_ord_id],
            symbol=get(m, 55) or "",
            side=get(m, 54) or "",
            quantity=parse_number(get(m, 38)) or 0.0,
            ord_type=get(m, 40) or "",
            price=parse_number(get(m, 44)),
            stop_px=parse_number(get(m, 99)),
            tif=get(m, 59) or "0",
            account=get(m, 1) or "",
        )
        refusal = self._refuse(order, known is not None)
        if refusal is not None:
            reason, text = refusal
            order.status = "8"
            if known is None:
                self.book.orders[order.order_id] = order
            else:
                # not an order of its own: 37=NONE, so the known order is not confused
                order.order_id = "NONE"
            self.send("8", self.book.report(order, "8", text=text, reason=reason))
            self._cut_after_ack()
            return
        self.book.orders[order.order_id] = order
        self.send("8", self.book.report(order, "0"))
        self._cut_after_ack()
        self._work(order)

    def _cut_after_ack(self) -> None:
        """DisconnectMidOrder(after_ack=True): the order's first answer went out."""
        conn = self.conn
        if conn is not None and conn.close_after_ack:
            conn.close_after_ack = False
            self.close(conn)

    def _refuse(self, order: Order, duplicate: bool) -> tuple[str, str] | None:
        """(OrdRejReason, text) if the order is refused, else None."""
        if duplicate:
            return "6", f"duplicate ClOrdID {order.cl_ord_ids[0]}"
        fault = self.take(Reject)
        if fault is not None:
            return "0", fault.text
        if order.ord_type not in _ORD_TYPES:
            return "11", f"unsupported OrdType (40) {order.ord_type}"
        if order.tif not in _TIFS:
            return "11", f"unsupported TimeInForce (59) {order.tif}"
        if order.quantity <= 0:
            return "13", f"OrderQty (38) must be positive, got {order.quantity}"
        if order.ord_type == "1" and order.symbol not in self.book.quotes:
            return "0", f"no market for {order.symbol}"
        return None

    def _work(self, order: Order) -> None:
        """Fill what the market allows now; IOC/FOK that cannot are cancelled."""
        price = self.book.fill_price(order)
        if price is not None:
            partial = self.take(PartialFill)
            pieces = max(partial.pieces, 1) if partial is not None else 1
            leaves = order.leaves_qty
            whole = leaves == int(leaves) and leaves >= pieces
            size = (leaves // pieces) if whole else leaves / pieces
            for piece in range(pieces):
                last = piece == pieces - 1
                self._trade(order, order.leaves_qty if last else size, price)
        elif order.tif in ("3", "4") and order.status not in TERMINAL:
            order.status = "4"
            self.send("8", self.book.report(order, "4", text="IOC/FOK: nothing to fill now"))

    def _trade(self, order: Order, quantity: float, price: float) -> None:
        execution = self.book.execute(order, min(quantity, order.leaves_qty), price)
        report = self.book.report(order, "F", execution=execution)
        self.send("8", report)
        if self.take(DuplicateExecution) is not None:
            self.send("8", report)

    def _cancel(self, m: simplefix.FixMessage, poss_dup: bool) -> None:
        cl_ord_id, orig = get(m, 11) or "", get(m, 41) or ""
        order = self.book.find(orig, get(m, 37))
        if poss_dup and order is not None and cl_ord_id in order.cl_ord_ids:
            return  # a resend of a cancel already done
        refusal = self._cancel_refusal(order, cl_ord_id, m)
        if refusal is not None:
            self._cancel_reject(m, order, *refusal)
            return
        assert order is not None
        if self.take(FillAfterCancel) is not None:
            at = self.book.touch(order) or order.price or order.stop_px or 0.0
            self._trade(order, order.leaves_qty, at)
            self._cancel_reject(m, order, "0", "too late to cancel: the order filled")
            return
        order.status = "4"
        order.cl_ord_ids.append(cl_ord_id)
        self.send("8", self.book.report(order, "4", cl_ord_id=cl_ord_id, orig_cl_ord_id=orig))

    def _cancel_refusal(
        self, order: Order | None, cl_ord_id: str, m: simplefix.FixMessage
    ) -> tuple[str, str] | None:
        """(CxlRejReason, text) when a cancel or replace cannot go ahead."""
        if order is None:
            return "1", f"unknown order {get(m, 41)}"
        if self.book.find(cl_ord_id) is not None:
            return "6", f"duplicate ClOrdID {cl_ord_id}"
        fault = self.take(CancelReject)
        if fault is not None:
            return "2", fault.text
        if order.status in TERMINAL:
            return "0", f"too late: order {order.order_id} is already {order.status}"
        if get(m, 55) != order.symbol or get(m, 54) != order.side:
            return "2", f"symbol/side want {order.symbol}/{order.side}"
        return None

    def _cancel_reject(
        self, m: simplefix.FixMessage, order: Order | None, reason: str, text: str
    ) -> None:
        response = "1" if get(m, 35) == "F" else "2"  # CxlRejResponseTo (434)
        self.send(
            "9",
            [
                (37, order.order_id if order is not None else "NONE"),
                (11, get(m, 11) or ""),
                (41, get(m, 41) or ""),
                (39, order.status if order is not None else "8"),
                (60, format_utc(datetime.now(UTC))),
                (434, response),
                (102, reason),
                (58, text),
            ],
        )

    def _replace(self, m: simplefix.FixMessage, poss_dup: bool) -> None:
        cl_ord_id, orig = get(m, 11) or "", get(m, 41) or ""
        order = self.book.find(orig, get(m, 37))
        if poss_dup and order is not None and cl_ord_id in order.cl_ord_ids:
            return
        refusal = self._cancel_refusal(order, cl_ord_id, m)
        quantity = parse_number(get(m, 38)) or 0.0
        ord_type = get(m, 40) or ""
        if refusal is None and order is not None and quantity < order.cum_qty:
            refusal = "99", f"OrderQty {quantity} below CumQty {order.cum_qty}"
        if refusal is None and ord_type not in _ORD_TYPES:
            refusal = "2", f"unsupported OrdType (40) {ord_type}"
        if refusal is not None:
            self._cancel_reject(m, order, *refusal)
            return
        assert order is not None
        order.quantity, order.ord_type = quantity, ord_type
        order.price, order.stop_px = parse_number(get(m, 44)), parse_number(get(m, 99))
        order.tif = get(m, 59) or order.tif
        order.cl_ord_ids.append(cl_ord_id)
        if order.quantity - order.cum_qty <= 1e-9:
            order.status = "2"
        self.send("8", self.book.report(order, "5", cl_ord_id=cl_ord_id, orig_cl_ord_id=orig))
        self._work(order)

    # --- status and positions -------------------------------------------------------

    def _status(self, m: simplefix.FixMessage, poss_dup: bool) -> None:
        del poss_dup
        req_id = get(m, 790)
        extra: Fields = [(790, req_id)] if req_id else []
        order = self.book.find(get(m, 11), get(m, 37))
        if order is not None:
            self.send("8", self.book.report(order, "I", cl_ord_id=get(m, 11), extra=extra))
            return
        self.send(
            "8",
            [
                (37, "NONE"),
                (11, get(m, 11) or ""),
                (17, self.book.new_exec_id()),
                (150, "I"),
                (39, "8"),
                (55, get(m, 55) or ""),
                (54, get(m, 54) or ""),
                (151, "0"),
                (14, "0"),
                (6, "0"),
                (60, format_utc(datetime.now(UTC))),
                (103, "5"),
                (58, "unknown order"),
                *extra,
            ],
        )

    def _mass_status(self, m: simplefix.FixMessage, poss_dup: bool) -> None:
        del poss_dup
        req_id, kind = get(m, 584) or "", get(m, 585) or ""
        if kind not in ("1", "7"):
            self.business_reject(m, "0", f"MassStatusReqType (585) {kind} not supported: 1, 7")
            return
        account, symbol = get(m, 1), get(m, 55)
        chosen = [
            o
            for o in self.book.orders.values()
            if (account is None or o.account == account) and (kind == "7" or o.symbol == symbol)
        ]
        total = str(len(chosen))
        if not chosen:
            # nothing to report: one ER that says so (911=0, 37=NONE), as 4.4 leaves it open
            self.send(
                "8",
                [
                    (37, "NONE"),
                    (17, self.book.new_exec_id()),
                    (150, "I"),
                    (39, "8"),
                    (55, symbol or "[N/A]"),
                    (54, "1"),
                    (151, "0"),
                    (14, "0"),
                    (6, "0"),
                    (584, req_id),
                    (911, "0"),
                    (912, "Y"),
                    (58, "no orders"),
                ],
            )
            return
        for i, order in enumerate(chosen):
            extra: Fields = [
                (584, req_id),
                (911, total),
                (912, "Y" if i == len(chosen) - 1 else "N"),
            ]
            self.send("8", self.book.report(order, "I", extra=extra))

    def _positions(self, m: simplefix.FixMessage, poss_dup: bool) -> None:
        del poss_dup
        req_id, account = get(m, 710) or "", get(m, 1) or ""
        account_type = get(m, 581) or "1"
        business_date = get(m, 715) or ""
        report_id = self.book.new_exec_id()
        if get(m, 724) != "0":
            ack: Fields = [(721, report_id), (710, req_id), (727, "0"), (728, "4"), (729, "2")]
            self.send("AO", [*ack, (1, account), (581, account_type), (58, "PosReqType 0 only")])
            return
        held = sorted(
            (symbol, qty)
            for (owner, symbol), qty in self.book.positions.items()
            if owner == account and abs(qty) > 1e-9
        )
        result = "0" if held else "2"  # 2: no positions found that match the criteria
        self.send(
            "AO",
            [
                (721, report_id),
                (710, req_id),
                (727, str(len(held))),
                (728, result),
                (729, "0"),
                (1, account),
                (581, account_type),
            ],
        )
        for symbol, qty in held:
            last = self.book.num(self.book.quotes.get(symbol, (0.0, 0.0, 0.0))[2])
            settl = self.settl_prices.get(symbol, last)
            self.send(
                "AP",
                [
                    (721, self.book.new_exec_id()),
                    (710, req_id),
                    (727, str(len(held))),
                    (728, "0"),
                    (715, business_date),
                    (1, account),
                    (581, account_type),
                    (55, symbol),
                    *([(730, settl)] if settl is not None else []),
                    (731, "1"),
                    (734, last),
                    (702, "1"),
                    (703, "TQ"),
                    (704, self.book.num(max(qty, 0.0))),
                    (705, self.book.num(max(-qty, 0.0))),
                ],
            )
