"""Order requests and the trading state they are judged against (SPEC section 6).

Every model is frozen and forbids unknown keys. Strict mode keeps a string
from silently becoming a number; bounds keep every number finite and small
enough that no derived value overflows what the rules engine can compare. The
bounds are those of `engine.limits`, which also size the store's columns. No
text may hold a control character (NUL included) or a lone surrogate: such a
value cannot be stored by every backend, hashed as UTF-8 or shown safely.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .canonical import sha256_digest
from .limits import (
    COMMENT_LENGTH,
    DIGEST_LENGTH,
    IDENTIFIER_LENGTH,
    LABEL_LENGTH,
    MAX_PRICE,
    MAX_PROTOCOLS,
    MAX_QUANTITY,
    MAX_SIGNAL,
    REASON_LENGTH,
    SYMBOL_LENGTH,
)

__all__ = [
    "MAX_PRICE",
    "MAX_QUANTITY",
    "BrokerFacts",
    "ComplianceFacts",
    "EngineState",
    "FlowCounts",
    "Mode",
    "Operation",
    "OrderContext",
    "OrderRequest",
    "Quote",
    "RecentOrder",
    "TradingState",
    "Trust",
    "WorkingOrder",
    "comment_problem",
]

_Strict = ConfigDict(frozen=True, extra="forbid", strict=True)

# C0 and C1 controls (NUL, newline, escape, ...), DEL, and lone surrogates
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _printable(value: str) -> str:
    found = _UNPRINTABLE.search(value)
    if found is not None:
        code = ord(found.group())
        raise ValueError(f"control character U+{code:04X} at position {found.start()}")
    return value


def comment_problem(text: str) -> str | None:
    """Why a free-text reason (a control change's, a cancel's) cannot be kept, or
    None: the same printable rule as an order's text, and `COMMENT_LENGTH`."""
    if len(text) > COMMENT_LENGTH:
        return f"at most {COMMENT_LENGTH} characters (got {len(text)})"
    try:
        _printable(text)
    except ValueError as exc:
        return str(exc)
    return None


Price = Annotated[float, Field(gt=0, le=MAX_PRICE, allow_inf_nan=False)]
Quantity = Annotated[float, Field(gt=0, le=MAX_QUANTITY, allow_inf_nan=False)]
Signal = Annotated[float, Field(ge=-MAX_SIGNAL, le=MAX_SIGNAL, allow_inf_nan=False)]
Timestamp = Annotated[AwareDatetime, Field(strict=False)]
Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop"]
TimeInForce = Literal["day", "gtc", "ioc", "fok", "opg", "cls"]
# the patterns exclude every control character (pydantic's regex engine reads $
# as the end of the text: no trailing newline slips through)
Symbol = Annotated[
    str,
    Field(max_length=SYMBOL_LENGTH, pattern=rf"^[A-Z][A-Z0-9.\-/]{{0,{SYMBOL_LENGTH - 1}}}$"),
]
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=IDENTIFIER_LENGTH, pattern=r"^[A-Za-z0-9._:\-]+$"),
]
Printable = AfterValidator(_printable)
Digest = Annotated[str, Field(max_length=DIGEST_LENGTH), Printable]
Label = Annotated[str, Field(max_length=LABEL_LENGTH), Printable]
ProtocolName = Annotated[str, Field(min_length=1, max_length=LABEL_LENGTH), Printable]
Reason = Annotated[str, Field(max_length=REASON_LENGTH), Printable]


class Quote(BaseModel):
    model_config = _Strict

    bid: Price | None = None
    ask: Price | None = None
    last: Price | None = None
    timestamp: Timestamp | None = None


class OrderContext(BaseModel):
    """Market and model context sent with the order; every part may be missing,
    and a check whose input is missing does not pass."""

    model_config = _Strict

    quote: Quote | None = None
    # a negative volatility is out of its domain: volatility_domain_check denies it
    # with its own reason, as entropy_domain_check does for entropy
    volatility: Signal | None = None
    regime: Label | None = None
    entropy: Signal | None = None
    drift: Signal | None = None
    as_of: Timestamp | None = None
    data_hash: Digest | None = None
    protocols_fired: Annotated[list[ProtocolName], Field(max_length=MAX_PROTOCOLS)] = Field(
        default_factory=list
    )
    protocol_hash: Digest | None = None

    # The digest of the quote exactly as the client sent it: re-serialising the
    # parsed model would turn 150 into 150.0 and change the hash.
    _quote_digest: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_quote_digest(
        cls, data: Any, handler: ModelWrapValidatorHandler[OrderContext]
    ) -> OrderContext:
        context = handler(data)
        if isinstance(data, dict) and isinstance(data.get("quote"), dict):
            context._quote_digest = sha256_digest(data["quote"])
        elif context.quote is not None and context._quote_digest is None:
            context._quote_digest = sha256_digest(
                context.quote.model_dump(mode="json", exclude_none=True)
            )
        return context

    @property
    def quote_digest(self) -> str | None:
        return self._quote_digest


class OrderRequest(BaseModel):
    model_config = _Strict

    client_order_id: Identifier
    account: Identifier = "default"
    symbol: Symbol
    side: Side
    quantity: Quantity
    order_type: OrderType
    limit_price: Price | None = Field(default=None, validate_default=True)
    stop_price: Price | None = Field(default=None, validate_default=True)
    time_in_force: TimeInForce = "day"
    reduce_only: bool = False
    decision_reason: Reason = "unspecified"
    context: OrderContext = Field(default_factory=OrderContext)
    # Reg SHO: a sell marked short, and the borrow located for it (the policies'
    # short_sale_check decides when a sell must be marked and carry a locate)
    short_sale: bool = Field(default=False, validate_default=True)
    locate_id: Identifier | None = Field(default=None, validate_default=True)

    @field_validator("short_sale", "locate_id")
    @classmethod
    def _short_sale_is_a_sell(cls, value: object, info: ValidationInfo) -> object:
        # a buy cannot be short: refused as bad input (422 naming the field), not
        # judged, since no policy could make sense of it
        if info.data.get("side") == "buy" and value not in (False, None):
            raise ValueError(f"{info.field_name} is allowed only on a sell (got a buy)")
        return value

    @field_validator("limit_price", "stop_price")
    @classmethod
    def _price_matches_order_type(cls, value: float | None, info: ValidationInfo) -> float | None:
        # a field validator (not a model one) so the error names the price field and is
        # reported together with every other bad field
        order_type = info.data.get("order_type")
        needed = {"limit": "limit_price", "stop": "stop_price"}.get(str(order_type))
        if order_type is None:
            return value
        if info.field_name == needed and value is None:
            raise ValueError(f"{info.field_name} is required for a {order_type} order")
        if info.field_name != needed and value is not None:
            raise ValueError(f"{info.field_name} is not allowed on a {order_type} order")
        return value


class RecentOrder(BaseModel):
    """An order the account sent recently: feeds the rate and duplicate checks."""

    model_config = _Strict

    client_order_id: Identifier | None = None
    account: Identifier = "default"
    symbol: Symbol
    side: Side
    quantity: Quantity
    order_type: OrderType
    limit_price: Price | None = None
    stop_price: Price | None = None
    at: Timestamp


class WorkingOrder(BaseModel):
    """One of the account's orders still working at the broker, as the credit and
    self-match checks see it: what is left of it and its prices. `price` values
    it: its limit or stop price, or for a market order the touch it was judged
    at (None: unknown, which makes the open notional missing, so it blocks)."""

    model_config = _Strict

    order_id: Annotated[str, Field(min_length=1, max_length=32)]
    symbol: Symbol
    side: Side
    order_type: OrderType
    quantity: Annotated[float, Field(ge=0, le=MAX_QUANTITY, allow_inf_nan=False)]
    limit_price: Price | None = None
    stop_price: Price | None = None
    price: Price | None = None


class FlowCounts(BaseModel):
    """The flow figures, when the caller counted them itself (the gateway asks its
    database) instead of listing every recent order."""

    model_config = _Strict

    orders_in_window: Annotated[int, Field(ge=0)]
    duplicate_recent: bool


Operation = Literal["evaluate", "submit", "replace"]
Mode = Literal["research", "simulation", "paper", "live"]
TradingState = Literal["active", "reducing", "halted"]


class BrokerFacts(BaseModel):
    """The broker an order would be routed to in the current mode, as the gateway
    sees it: its capabilities and whether it may take new orders now."""

    model_config = _Strict

    name: Annotated[str, Field(min_length=1, max_length=32)]
    order_types: list[OrderType]
    time_in_force: list[TimeInForce]
    reduce_only: bool
    cancel: bool = True
    replace: bool = True
    # connected, credentials valid, and every order of unknown outcome resolved
    ready: bool = True
    # its own quote is the reference the client's quote is checked against
    reference_quotes: bool = False


Trust = Literal["signed", "development", "none"]


class ComplianceFacts(BaseModel):
    """The compliance configuration in force, as its last verification left it, and
    the live unlock: the facts of the compliance checks (SPEC section 3). Each
    `*_note` says why its condition fails, for the record's reason (want/got,
    `2 of 3 needed, 1 valid`). The defaults describe a verified configuration, so
    that `policy test` and a dry run judge the rules, not the signatures."""

    model_config = _Strict

    # signatures meet the threshold of trusted keys (or the development root's)
    verified: bool = True
    verified_note: Annotated[str, Field(max_length=COMMENT_LENGTH)] = ""
    # the configuration's policy_digest pins the rules being judged
    digest_ok: bool = True
    digest_note: Annotated[str, Field(max_length=COMMENT_LENGTH)] = ""
    # `expires` of the configuration in force (None: judged elsewhere, never expires here)
    expires: Timestamp | None = None
    # who vouches for it: threshold signatures, the development root, or nobody
    trust: Trust = "signed"
    # the modes it allows (None: every mode)
    modes: list[Mode] | None = None
    # the live unlock was walked and every live requirement still holds
    live_unlocked: bool = False
    live_note: Annotated[str, Field(max_length=COMMENT_LENGTH)] = (
        "the live unlock has not been walked"
    )


class EngineState(BaseModel):
    """What the engine knows beyond the order: positions, recent flow, the mode,
    the trading states and the kill switch, the broker, and who is asking. The
    gateway supplies every field; the defaults describe a dry run in research mode."""

    model_config = _Strict

    positions: dict[str, Annotated[float, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)]] = Field(
        default_factory=dict
    )
    recent_orders: list[RecentOrder] = Field(default_factory=list)
    omega_active: bool = False
    omega_reason: str | None = None
    flow: FlowCounts | None = None
    operation: Operation = "evaluate"
    mode: Mode = "research"
    # the account's trading state: the stricter of the account's own and the global one
    trading_state: TradingState = "active"
    # the broker of the current mode; None when the mode routes to none
    broker: BrokerFacts | None = None
    # the accounts the actor is bound to; None: no binding beyond allowed_accounts
    actor_accounts: list[Identifier] | None = None
    # the compliance configuration in force and the live unlock
    compliance: ComplianceFacts = Field(default_factory=ComplianceFacts)
    # the routed broker's own latest quote for the symbol (None: it has none, or
    # could not be asked), when the broker's quotes are a reference
    broker_quote: Quote | None = None
    # the account's book beyond the symbol (the credit and self-match checks): its
    # working orders (the one being replaced left out), the mark of each symbol it
    # holds (its last execution price, or the broker's price from a position sync),
    # and the notional executed on the trading day so far.
    # The defaults describe an empty, flat account.
    working_orders: list[WorkingOrder] = Field(default_factory=list)
    marks: dict[str, Price] = Field(default_factory=dict)
    executed_notional_today: Annotated[
        float, Field(ge=0, le=MAX_QUANTITY * MAX_PRICE, allow_inf_nan=False)
    ] = 0.0

    def position(self, account: str, symbol: str) -> float:
        """Signed position; keys are `SYMBOL` or `ACCOUNT:SYMBOL`."""
        value = self.positions.get(f"{account}:{symbol}", self.positions.get(symbol, 0.0))
        return float(value)

    def account_positions(self, account: str) -> dict[str, float]:
        """Every position of `account` by symbol (keys `SYMBOL` or `ACCOUNT:SYMBOL`;
        the account's own key wins)."""
        out = {k: float(v) for k, v in self.positions.items() if ":" not in k}
        prefix = f"{account}:"
        for key, value in self.positions.items():
            if key.startswith(prefix):
                out[key[len(prefix) :]] = float(value)
        return out
