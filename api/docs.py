"""What the OpenAPI document says: the shapes of bodies and answers, and the
statuses each route can return. These types document; they validate nothing
(the gateway and the engine's models do).

Litestar documents a request body only for a handler that lets it parse the
body. Ours read their bodies themselves (see `intake.py`), so a route names
its body with `body(Model)`, an operation class that carries the model's JSON
schema, inlined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from engine.models import OrderRequest, Quote, Symbol

__all__ = [
    "AuditPage",
    "BrokerOrderPage",
    "BrokerOrderRow",
    "BrokersView",
    "CancelBody",
    "ChainReportBody",
    "CheckpointBody",
    "ComplianceStanding",
    "ComplianceView",
    "Error",
    "Health",
    "ModeBody",
    "ModeChanged",
    "ModeView",
    "OmegaBody",
    "OmegaChanged",
    "OrderPage",
    "OrderRecord",
    "PolicyView",
    "QuoteBody",
    "QuoteResult",
    "Readiness",
    "TradingStateBody",
    "TradingStateChanged",
    "TradingStates",
    "UnlockBody",
    "UnlockDone",
    "UnlockView",
    "VerificationPage",
    "body",
    "errors",
    "record",
    "record_or_error",
    "replace_schema",
]


class FieldProblem(TypedDict):
    field: str
    message: str


# Optional keys are those of a `total=False` class: `NotRequired` inside string
# annotations (this module's `from __future__ import annotations`) is not seen.


class _Record(TypedDict):
    order_id: str | None
    symbol: str | None
    timestamp: str
    side: str | None
    quantity: float | None
    order_type: str | None
    limit_price: float | None
    decision_reason: str | None
    risk_checks_run: list[str]
    risk_check_results: dict[str, str]
    fail_closed_triggers: list[str]
    order_status: str
    broker_response: dict[str, Any] | None
    client_order_id: str | None
    mode: str
    broker: str | None
    policy_digest: str
    compliance_digest: str
    actor: str | None


class OrderRecord(_Record, total=False):
    """The order log record (SPEC section 7), as logged in the audit chain."""

    prev_hash: str
    hash: str
    operation: str
    account: str | None
    stop_price: float | None
    reduce_only: bool
    reasons: list[dict[str, str]]
    errors: list[FieldProblem]
    comment: str | None
    # a refused attempt about another order (a retry, a conflict, a refused cancel
    # or replace): that order's id, and the hash of its record a retry answered with
    original_order_id: str
    original_hash: str | None
    route: str  # a refused role: the route, "POST /v1/mode"


class PolicyIssueBody(TypedDict):
    code: str
    message: str
    file: str
    line: int | None
    rule_id: str | None


class _Error(TypedDict):
    code: str
    detail: str
    errors: list[FieldProblem]


class Error(_Error, total=False):
    """Every error: a stable `code`, a human `detail`, the fields at fault;
    `record`: the attempt as logged; `missing`: unmet mode requirements;
    `issues`: what is wrong with a policy set."""

    record: dict[str, Any]
    missing: list[str]
    issues: list[PolicyIssueBody]


# --- request bodies ----------------------------------------------------------------


class CancelBody(TypedDict, total=False):
    """Optional for a trader; compliance and admin must give a reason."""

    reason: str


def replace_schema() -> dict[str, Any]:
    """A replace's body: any of an order's fields but those a replace cannot
    change (its identity: client_order_id, account, symbol, side)."""
    schema = _inline(OrderRequest.model_json_schema())
    for fixed in ("client_order_id", "account", "symbol", "side"):
        schema["properties"].pop(fixed)
    schema.pop("required", None)
    schema["title"] = "ReplaceBody"
    schema["description"] = "The fields to change; the others stay as the order has them."
    return schema


class QuoteBody(Quote):
    """A quote for one symbol."""

    symbol: Symbol


class _Mode(TypedDict):
    mode: Literal["research", "simulation", "paper", "live"]


class ModeBody(_Mode, total=False):
    reason: str


class _Reason(TypedDict):
    reason: str


class OmegaBody(_Reason, total=False):
    cancel_open_orders: bool


class TradingStateBody(TypedDict):
    scope: str  # "global" or an account id
    state: Literal["active", "reducing", "halted"]
    reason: str


class UnlockBody(TypedDict, total=False):
    """Step 5 (`enable`) needs `confirm`: exactly "ENABLE LIVE TRADING"; the other
    steps take no body (or an empty object)."""

    confirm: str


# --- answers ------------------------------------------------------------------------


class OrderPage(TypedDict):
    orders: list[OrderRecord]
    limit: int
    offset: int
    count: int


class BrokerOrderRow(TypedDict):
    """One order as the broker reports it (GET /v1/orders?source=broker)."""

    order_id: str
    broker_order_id: str
    status: str
    filled_quantity: float
    average_price: float | None
    detail: str
    account: str | None  # from our own record of the order; None: not placed through us


class BrokerOrderPage(TypedDict):
    source: str
    broker: str
    orders: list[BrokerOrderRow]
    limit: int
    offset: int
    count: int


class BrokerCapabilitiesView(TypedDict):
    order_types: list[str]
    time_in_force: list[str]
    reduce_only: bool
    reduce_only_emulated: bool
    cancel: bool
    replace: bool
    history: bool
    positions: bool
    market_data: bool
    reference_quotes: bool
    paper: bool
    live: bool
    credentials: bool


class _BrokerCheckView(TypedDict):
    at: str
    ok: bool


class BrokerCheckView(_BrokerCheckView, total=False):
    role: str
    broker: str
    account: dict[str, str]
    reason: str


class BrokerReconciliationView(TypedDict):
    at: str
    checked: int
    resolved: int
    unresolved: int
    hash: str | None


class BrokerStreamView(TypedDict):
    state: str
    booked: int
    connections: int
    gaps: int
    garbled: int
    duplicates: int
    unreadable: int


class BrokerView(TypedDict):
    mode: str
    name: str
    adapter: str
    capabilities: BrokerCapabilitiesView
    ready: bool
    why_not: str | None
    last_check: BrokerCheckView | None
    last_reconciliation: BrokerReconciliationView | None
    stream: BrokerStreamView | None


class BrokersView(TypedDict):
    mode: str
    brokers: list[BrokerView]


class QuoteResult(TypedDict):
    symbol: str
    orders_changed: list[OrderRecord]


class _Active(TypedDict):
    active: bool


class Omega(_Active, total=False):
    reason: str | None
    actor: str | None
    at: str | None


class ModeView(TypedDict):
    mode: str
    omega: Omega
    requirements: dict[str, list[str]]


class ModeChanged(TypedDict):
    mode: str
    event: dict[str, Any]


class OmegaChanged(TypedDict):
    omega: Omega
    event: dict[str, Any]


class _State(TypedDict):
    state: str


class TradingState(_State, total=False):
    reason: str | None
    actor: str | None
    at: str | None


TradingStates = TypedDict(
    "TradingStates", {"global": TradingState, "accounts": dict[str, TradingState]}
)


class TradingStateChanged(TypedDict):
    trading_state: TradingStates
    event: dict[str, Any]


class UnlockStepView(TypedDict):
    step: int
    name: Literal["access", "acknowledge", "risk", "credentials", "enable"]
    status: Literal["done", "pending"]
    actor: str | None
    at: str | None


class UnlockRequirement(TypedDict):
    name: Literal["manual_enable", "signed_config", "credentials", "risk_armed"]
    ok: bool
    why: str


class UnlockView(TypedDict):
    """`GET /v1/unlock`: whether live holds now (`unlocked`, and `note`: the first
    reason it does not), the configuration in force, the walk (the configuration it
    was taken under; `void`: why it was last voided), each step, and each live
    requirement now."""

    unlocked: bool
    note: str
    mode: str
    configuration: dict[str, Any]
    walk: dict[str, Any]
    steps: list[UnlockStepView]
    next_step: int | None
    requirements: list[UnlockRequirement]
    credentials_max_age_s: int
    confirmation: str


class UnlockDone(TypedDict):
    """A step done: its `unlock_step` record (`event`) and the unlock after it."""

    event: dict[str, Any]
    unlock: UnlockView


class RuleView(TypedDict):
    id: str
    trigger: str
    code: str
    description: str
    source: str
    line: int | None


class ComplianceStanding(TypedDict):
    """The verdict on the compliance configuration in force (`trust`: signed,
    development or none; `code`: why it is not in force)."""

    in_force: bool
    trust: str
    code: str | None
    message: str
    version: int | None
    expires: str | None
    config_sha256: str | None
    policy_digest: str | None
    loaded_policy_digest: str
    signers: list[str]
    threshold: int


class TrustedSigner(TypedDict):
    name: str
    keyid: str
    status: str


class ComplianceView(ComplianceStanding):
    """`GET /v1/compliance`: the standing, the trust file as read now, and the
    verification that put the configuration in force (or took it out)."""

    trust_root: dict[str, Any]
    verification: dict[str, Any] | None


class VerificationPage(TypedDict):
    verifications: list[dict[str, Any]]
    after: int
    limit: int
    next: int | None


class PolicyView(TypedDict):
    policy_digest: str
    compliance_digest: str
    files: list[str]
    rules: list[RuleView]
    compliance: ComplianceStanding


class AuditPage(TypedDict):
    records: list[dict[str, Any]]
    after: int
    limit: int


class ChainBreakBody(TypedDict):
    position: int
    order_id: str | None
    reason: str


class StoredHeadBody(TypedDict):
    seq: int
    hash: str


class FindingBody(TypedDict):
    subject: str  # an order's row or column, `account/symbol`, or the chain
    code: str
    want: Any
    got: Any


class _ChainReportBody(TypedDict):
    ok: bool
    records: int
    head: str
    first_break: ChainBreakBody | None


class ChainReportBody(_ChainReportBody, total=False):
    """With the store compared (the service's verification): the head and every
    stored row that differs from what the chain implies."""

    scope: str  # chain | store | export
    head_compared: bool
    stored_head: StoredHeadBody | None
    rows_compared: bool
    findings: list[FindingBody]
    checkpoints: int  # present when the chain holds signed checkpoints
    notes: list[str]  # what was not checked, and why


class CheckpointBody(TypedDict):
    """The latest signed checkpoint, a chain record (docs/audit.md): the service
    key `keyid` signed the canonical JSON of {"hash": head_hash, "sequence":
    sequence, "time": timestamp}; `sig` is that Ed25519 signature in base64."""

    kind: str  # checkpoint
    timestamp: str
    actor: str  # system
    sequence: int  # the 1-based position of the signed record
    head_hash: str  # that record's hash
    keyid: str  # hex sha256 of the service's raw public key
    sig: str
    prev_hash: str
    hash: str


class Health(TypedDict):
    status: str


class Readiness(TypedDict):
    ready: bool
    database: bool
    policy_digest: str
    reasons: list[str]
    compliance: ComplianceStanding


# --- helpers for the route decorators -----------------------------------------------

_ERROR_TEXT = {
    400: "A query or path parameter is not valid.",
    401: "No bearer token, or an unknown, revoked or expired one (`unauthorized`).",
    403: "This role may not call this route (`forbidden`); the attempt is logged (`record`).",
    404: "No such order, or not one this token may see (`not_found`).",
    409: "The request conflicts with the current state.",
    413: "The body is over the size limit (`body_too_large`); logged as a rejected attempt.",
    422: "The body or a parameter is invalid; the fields at fault are in `errors`; "
    "a refused write is logged as a rejected attempt (`record`).",
    502: "The broker failed or refused.",
    503: "The store could not be read or written (`store_unavailable`), or the attempt "
    "could not be logged (`audit_unavailable`).",
}


def errors(*statuses: int, **described: str) -> dict[int, ResponseSpec]:
    """Error answers, each with the error shape; `described`: `s409="..."`
    replaces the default text of that status. Every route behind a token reads
    the store, so 503 is always among them."""
    out = {}
    for status in sorted({*statuses, 503}):
        text = described.get(f"s{status}", _ERROR_TEXT[status])
        out[status] = ResponseSpec(data_container=Error, description=text, generate_examples=False)
    return out


def record(text: str) -> ResponseSpec:
    """A status whose body is the order record."""
    return ResponseSpec(data_container=OrderRecord, description=text, generate_examples=False)


def record_or_error(status: int, text: str) -> dict[int, ResponseSpec]:
    """A status whose body is the order record or, for another cause, an error."""
    container: Any = OrderRecord | Error
    spec = ResponseSpec(data_container=container, description=text, generate_examples=False)
    return {status: spec}


def body(model: Any, *, required: bool = True, text: str = "") -> type[Operation]:
    """An operation class that documents `model` (a type, or a JSON schema) as
    the JSON request body."""
    schema = model if isinstance(model, dict) else _inline(TypeAdapter(model).json_schema())
    request_body = RequestBody(
        content={"application/json": OpenAPIMediaType(schema=cast(Schema, schema))},
        required=required,
        description=text or None,
    )

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = request_body

    return WithBody


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$defs` references replaced by the definitions (ours
    are not recursive), so that it stands alone inside the OpenAPI document."""
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(definitions[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result
