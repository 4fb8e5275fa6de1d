"""One exception root for the engine; every fault carries a stable code."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ApexError",
    "EngineFault",
    "InvalidArgument",
    "OrderUnknown",
    "PolicyError",
    "PolicyIssue",
    "StoreUnavailable",
    "fault",
]


def fault(exc: BaseException) -> str:
    """An exception as a record's reason shows it: its type and the first line
    of its message, at most 200 characters."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ApexError(Exception):
    """Root of every error the engine raises on purpose."""

    code = "apex_error"


class EngineFault(ApexError, RuntimeError):
    """Something inside evaluation, or inside our own machinery, went wrong; an
    order it touches must be blocked."""

    code = "engine_error"


class InvalidArgument(ApexError, ValueError):
    """A value we were given cannot be used (a setting, a stored entry, a call's
    argument); the message names it, with want and got."""

    code = "invalid_argument"


class OrderUnknown(ApexError, KeyError):
    """No order with this id is held."""

    code = "order_unknown"


@dataclass(frozen=True)
class PolicyIssue:
    """One problem found while loading policies, located as precisely as we can."""

    code: str
    message: str
    file: str
    line: int | None = None
    rule_id: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        rule = f" [{self.rule_id}]" if self.rule_id else ""
        return f"{where}{rule}: {self.code}: {self.message}"


class PolicyError(ApexError):
    """The policy set is invalid; carries every issue found, not only the first."""

    code = "policy_invalid"

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class StoreUnavailable(ApexError):
    """The store could not be read or written (the database is down, a connection
    dropped, a statement failed); the driver's error is the cause."""

    code = "store_unavailable"
