"""What the gateway answers: an `Outcome` whose `kind` the API maps to a status
(one table, `api/`), and who asks: an `Actor`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ApexError

__all__ = ["SYSTEM", "Actor", "ModeRefused", "Outcome", "OutcomeKind", "StateRefused"]

OutcomeKind = Literal[
    "evaluated",  # dry run answered (approved or not: the record says)
    "routed",  # sent to the broker and accepted by it (or its outcome booked)
    "pending",  # the broker took a cancel or replace; its confirmation is pending
    "blocked",  # denied by a policy
    "rejected",  # invalid input
    "conflict",  # client_order_id reused with another body
    "replayed",  # same client_order_id and body: the original record
    "broker_error",  # the broker call failed or refused; blocked
    "audit_unavailable",  # the audit log could not be written; nothing sent
    "not_found",  # no such order, or not one this actor may see
    "not_open",  # cancel/replace of an order that is not working
]


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    record: dict[str, Any]
    replayed_kind: OutcomeKind | None = None


@dataclass(frozen=True)
class Actor:
    """Who acts: a token id (or `cli`, `system`), its role, and the accounts it
    is bound to. `accounts=None`: every account in the compliance configuration's
    `allowed_accounts` at the time of each request."""

    id: str
    role: str = "trader"
    accounts: frozenset[str] | None = None

    @classmethod
    def of(cls, id: str, role: str, accounts: Collection[str] | None = None) -> Actor:
        return cls(id, role, frozenset(accounts) if accounts is not None else None)

    @property
    def oversees(self) -> bool:
        """Compliance and admin act on any account's orders."""
        return self.role in ("compliance", "admin")

    def may_trade(self, account: str | None, allowed: Collection[str]) -> bool:
        """Submit, cancel and replace for this account: traders (their accounts) and
        admin; compliance acts on orders through `oversees`, auditors never."""
        if self.role == "admin":
            return True
        if self.role != "trader":
            return False
        accounts = self.accounts if self.accounts is not None else allowed
        return account is not None and account in accounts

    def may_see(self, account: str | None, allowed: Collection[str]) -> bool:
        return self.oversees or self.role == "auditor" or self.may_trade(account, allowed)


SYSTEM = Actor("system", "admin")


class ModeRefused(ApexError):
    """A mode change whose requirements are not met; `missing` says which."""

    code = "mode_requirements_not_met"

    def __init__(self, mode: str, missing: list[str]) -> None:
        super().__init__(f"cannot enter {mode}: " + "; ".join(missing))
        self.mode = mode
        self.missing = missing


class StateRefused(ApexError):
    """A trading-state change that is not allowed (unknown state or scope)."""

    code = "invalid_trading_state"
