"""The order lifecycle: one status enum and one transition table (SPEC section 7).

The gateway, the store and every broker adapter use these names. Every change
of an order's status goes through `transition`: a change the table allows is
routine; any other is still booked as the broker reported it (broker truth
wins) but is named as an anomaly, which the gateway records in the chain.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "OPEN",
    "TERMINAL",
    "TRANSITIONS",
    "UNRESOLVED",
    "OrderStatus",
    "allowed",
]


class OrderStatus(StrEnum):
    EVALUATED = "evaluated"  # an approved dry run; never routed
    BLOCKED = "blocked"  # denied by a policy, or the broker refused or failed
    REJECTED = "rejected"  # invalid input
    SUBMITTED = "submitted"  # approved and logged; the broker call is under way
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELLED = "cancelled"
    PENDING_REPLACE = "pending_replace"
    REPLACED = "replaced"
    EXPIRED = "expired"


S = OrderStatus

# Working at a broker (or possibly so): cancel and replace apply, fills may come.
OPEN: frozenset[OrderStatus] = frozenset(
    {S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.PENDING_REPLACE, S.REPLACED}
)
# Whose outcome at the broker we do not know: resolved with the broker on start.
UNRESOLVED: frozenset[OrderStatus] = frozenset({S.SUBMITTED, S.PENDING_CANCEL, S.PENDING_REPLACE})
TERMINAL: frozenset[OrderStatus] = frozenset(S) - OPEN

_WORKING = (S.ACCEPTED, S.PARTIALLY_FILLED, S.REPLACED)
_ENDS = (S.FILLED, S.CANCELLED, S.EXPIRED)

# from -> the statuses it may move to. A status may always stay what it is
# (a repeated report), except that a repeated fill report is judged by quantity.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.SUBMITTED: frozenset({*_WORKING, *_ENDS, S.BLOCKED, S.PENDING_CANCEL}),
    S.ACCEPTED: frozenset({*_WORKING, *_ENDS, S.PENDING_CANCEL, S.PENDING_REPLACE}),
    S.PARTIALLY_FILLED: frozenset({*_WORKING, *_ENDS, S.PENDING_CANCEL, S.PENDING_REPLACE}),
    S.REPLACED: frozenset({*_WORKING, *_ENDS, S.PENDING_CANCEL, S.PENDING_REPLACE}),
    # a fill may overtake a cancel or a replace; a refused cancel or replace
    # leaves the order working
    S.PENDING_CANCEL: frozenset({*_WORKING, *_ENDS}),
    S.PENDING_REPLACE: frozenset({*_WORKING, *_ENDS, S.PENDING_CANCEL}),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
    S.BLOCKED: frozenset(),
    S.REJECTED: frozenset(),
    S.EVALUATED: frozenset(),
}


def allowed(before: OrderStatus, after: OrderStatus) -> bool:
    """Whether the table allows `before` -> `after` (staying put is allowed)."""
    return before == after or after in TRANSITIONS[before]
