"""One exception root for the engine; every fault carries a stable code."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ApexError", "EngineFault", "PolicyError", "PolicyIssue", "StoreUnavailable"]


class ApexError(Exception):
    """Root of every error the engine raises on purpose."""

    code = "apex_error"


class EngineFault(ApexError):
    """Something inside evaluation went wrong; the order must be blocked."""

    code = "engine_error"


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
