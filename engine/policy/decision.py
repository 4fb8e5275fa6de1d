"""A decision is a value: every check's result, the triggers, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..clock import format_utc
from ..models import OrderRequest

__all__ = [
    "TRIGGER_ORDER",
    "CheckResult",
    "Decision",
    "FieldError",
    "Reason",
    "sort_triggers",
]

CheckResult = Literal["pass", "fail", "error"]

# SPEC section 4, in its order; records list triggers in this order.
TRIGGER_ORDER: tuple[str, ...] = (
    "risk_denied",
    "omega_directive",
    "drift_entropy_unsafe",
    "data_integrity_mismatch",
    "protocol_mismatch",
    "broker_api_error",
    "compliance_failure",
    "mode_research",
    "broker_capability",
    "engine_error",
)


def sort_triggers(triggers: set[str]) -> tuple[str, ...]:
    known = [t for t in TRIGGER_ORDER if t in triggers]
    return (*known, *sorted(triggers - set(TRIGGER_ORDER)))


@dataclass(frozen=True)
class Reason:
    """Why one check did not pass: `SPREAD_TOO_WIDE: spread_bps=42.0 > ...=25`."""

    check: str
    result: CheckResult
    code: str
    trigger: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {
            "check": self.check,
            "result": self.result,
            "code": self.code,
            "trigger": self.trigger,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        return f"{self.check}: {self.code}: {self.detail}"


@dataclass(frozen=True)
class FieldError:
    """One bad field of a rejected request, named by its path (`context.quote.bid`)."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True)
class Decision:
    status: Literal["evaluated", "blocked", "rejected"]
    evaluated_at: datetime
    policy_digest: str
    compliance_digest: str
    order: OrderRequest | None = None
    request: dict[str, Any] = field(default_factory=dict)
    checks_run: tuple[str, ...] = ()
    results: dict[str, CheckResult] = field(default_factory=dict)
    triggers: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()
    errors: tuple[FieldError, ...] = ()
    # the `version` of the compliance configuration the order was judged under
    compliance_version: int | None = None

    @property
    def approved(self) -> bool:
        return self.status == "evaluated"

    def record(
        self,
        *,
        order_id: str | None = None,
        mode: str = "research",
        broker: str | None = None,
        actor: str | None = None,
        order_status: str | None = None,
        broker_response: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The order log record of SPEC section 7, without the chain fields."""
        source = self.order.model_dump(mode="json") if self.order else self.request
        return {
            "order_id": order_id,
            "symbol": _scalar(source.get("symbol")),
            "timestamp": format_utc(self.evaluated_at),
            "side": _scalar(source.get("side")),
            "quantity": _number(source.get("quantity")),
            "order_type": _scalar(source.get("order_type")),
            "limit_price": _number(source.get("limit_price")),
            "decision_reason": _scalar(source.get("decision_reason")),
            "risk_checks_run": list(self.checks_run),
            "risk_check_results": dict(self.results),
            "fail_closed_triggers": list(self.triggers),
            "order_status": order_status or self.status,
            "broker_response": broker_response,
            "client_order_id": _scalar(source.get("client_order_id")),
            "mode": mode,
            "broker": broker,
            "policy_digest": self.policy_digest,
            "compliance_digest": self.compliance_digest,
            "actor": actor,
            # beyond the source design: what a reader needs to act on a denial
            "account": _scalar(source.get("account")),
            "stop_price": _number(source.get("stop_price")),
            "reduce_only": source.get("reduce_only") is True,
            "reasons": [r.as_dict() for r in self.reasons],
            "errors": [e.as_dict() for e in self.errors],
            "compliance_version": self.compliance_version,
            # Reg SHO: on the record only when set, as OrderRecord.as_dict keeps them
            **({"short_sale": True} if source.get("short_sale") is True else {}),
            **({"locate_id": locate} if (locate := _scalar(source.get("locate_id"))) else {}),
        }


def _scalar(value: Any) -> str | None:
    """A string of the request fit for the record: short and valid UTF-8 (a lone
    surrogate from the client would make the record impossible to hash)."""
    if not isinstance(value, str) or len(value) > 200:
        return None
    return value if _encodable(value) else None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > 2**53:
        # A huge integer from JSON fits no store column: keep it as a float, or
        # drop it like infinity when no float can hold it.
        try:
            return _number(float(value))
        except OverflowError:
            return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value
