"""The bench's order mix: mostly approved orders like SPEC section 6, some blocked.

Every order carries correct digests unless it tests a wrong one, and every case
says whether it should be approved, so a drift in the policies or the clock
shows up as a wrong mix instead of a silently different benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine import EngineState, RecentOrder
from engine.canonical import sha256_digest
from engine.clock import format_utc
from engine.models import ComplianceFacts, WorkingOrder

__all__ = ["APPROVED_WEIGHT", "NOW", "Case", "cases", "mix"]

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # Monday 10:00 in New York: session open
APPROVED_WEIGHT = 4  # each approved case appears this many times in the mix

_QUOTES: dict[str, tuple[float, float, float]] = {
    "AAPL": (150.20, 150.30, 150.25),
    "MSFT": (410.05, 410.15, 410.10),
    "NVDA": (120.00, 120.04, 120.02),
    "SPY": (579.98, 580.02, 580.00),
    "QQQ": (495.05, 495.15, 495.10),
    "JPM": (245.25, 245.35, 245.30),
    "XOM": (112.10, 112.14, 112.12),
    "TSLA": (250.10, 250.30, 250.20),
    "RSTR": (20.00, 20.02, 20.01),
}


@dataclass(frozen=True)
class Case:
    label: str
    order: dict[str, Any]
    state: EngineState
    approved: bool  # what the default policy set should decide


def _at(seconds_before: float) -> str:
    return format_utc(NOW - timedelta(seconds=seconds_before))


def _context(
    symbol: str,
    *,
    quote: tuple[float, float, float] | None = None,
    quote_age_s: float = 1.0,
    protocols: Sequence[str] = ("T01", "T07"),
    **changes: Any,
) -> dict[str, Any]:
    bid, ask, last = quote or _QUOTES[symbol]
    sent = {"bid": bid, "ask": ask, "last": last, "timestamp": _at(quote_age_s)}
    context: dict[str, Any] = {
        "quote": sent,
        "volatility": 0.23,
        "regime": "trending",
        "entropy": 0.41,
        "drift": 0.12,
        "data_hash": sha256_digest(sent),
        "protocols_fired": list(protocols),
        "protocol_hash": sha256_digest(sorted(protocols)),
    }
    context.update(changes)
    return context


def _order(
    symbol: str,
    side: str,
    quantity: float,
    order_type: str,
    price: float | None = None,
    *,
    account: str = "default",
    reduce_only: bool = False,
    time_in_force: str = "day",
    context: dict[str, Any] | None = None,
    locate_id: str | None = None,
) -> dict[str, Any]:
    order: dict[str, Any] = {
        "client_order_id": "pending",
        "account": account,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "order_type": order_type,
        "time_in_force": time_in_force,
        "reduce_only": reduce_only,
        "decision_reason": "manual_trigger",
        "context": _context(symbol) if context is None else context,
    }
    if order_type != "market":
        order[f"{order_type}_price"] = price
    if locate_id is not None:  # a short sale (Reg SHO), marked and located
        order.update(short_sale=True, locate_id=locate_id)
    return order


def _recent(
    symbol: str,
    side: str,
    quantity: float,
    price: float | None,
    seconds_before: float,
    **extra: Any,
) -> RecentOrder:
    order_type = "market" if price is None else "limit"
    return RecentOrder.model_validate(
        {
            "symbol": symbol,
            "side": side,
            "quantity": quantity,
            "order_type": order_type,
            "limit_price": price,
            "at": _at(seconds_before),
            **extra,
        }
    )


def _states() -> dict[str, EngineState]:
    normal = EngineState(
        positions={
            "default:AAPL": 2000,
            "default:MSFT": -500,
            "paper-1:NVDA": 1200,
            "default:SPY": 49_950,
        },
        # each holding's last execution price: its gross exposure is measured
        marks={"AAPL": 150.25, "MSFT": 410.05, "NVDA": 120.03, "SPY": 575.1},
        recent_orders=[
            _recent("NVDA", "buy", 50, 120.02, 2, account="paper-1", client_order_id="s7-900001"),
            _recent("MSFT", "sell", 200, 410.10, 3),
            _recent("AAPL", "buy", 300, 150.10, 30),
        ],
    )
    # a runaway strategy: 20 orders from paper-1 within the last second
    flood = [_recent("QQQ", "buy", 10 + i, None, 0.04 * i, account="paper-1") for i in range(1, 21)]
    return {
        "normal": normal,
        "busy": normal.model_copy(update={"recent_orders": [*normal.recent_orders, *flood]}),
        "omega": normal.model_copy(update={"omega_active": True, "omega_reason": "bench"}),
        # the configuration in force does not verify (an edited, unsigned one)
        "unverified": normal.model_copy(
            update={
                "compliance": ComplianceFacts(
                    verified=False,
                    verified_note="threshold_not_met: 2 of 3 needed, 1 valid",
                    digest_ok=False,
                    digest_note="policy digest mismatch (want: none pinned, got: sha256:...)",
                )
            }
        ),
    }


def _approved(normal: EngineState) -> list[Case]:
    spec_context = _context("AAPL", quote_age_s=2, as_of=_at(5))
    orders = {
        "SPEC section 6 example": _order("AAPL", "buy", 100, "limit", 150.25),
        "limit sell": _order("AAPL", "sell", 200, "limit", 150.22),
        "market buy": _order("MSFT", "buy", 50, "market"),
        "limit sell adding to a short": _order(
            "MSFT", "sell", 100, "limit", 410.00, locate_id="LOC-1"
        ),
        "second account": _order("NVDA", "buy", 300, "limit", 120.05, account="paper-1"),
        "stop sell": _order("SPY", "sell", 100, "stop", 575.00),
        "reduce-only market sell": _order("AAPL", "sell", 500, "market", reduce_only=True),
        "ioc, calm regime": _order(
            "QQQ",
            "buy",
            1000,
            "limit",
            495.10,
            time_in_force="ioc",
            context=_context("QQQ", regime="calm"),
        ),
        "signals with as_of": _order(
            "JPM",
            "buy",
            250,
            "limit",
            245.30,
            account="paper-1",
            context=_context("JPM", regime="mean_reverting", as_of=_at(10)),
        ),
        "market sell, ranging": _order(
            "XOM", "sell", 400, "market", context=_context("XOM", regime="ranging"), locate_id="L-2"
        ),
        "gtc limit": _order("TSLA", "buy", 150, "limit", 250.00, time_in_force="gtc"),
        "no position yet": _order("MSFT", "buy", 75, "limit", 410.12, account="paper-1"),
        "larger limit buy": _order("NVDA", "buy", 2000, "limit", 120.03),
        "reduce-only to flat": _order(
            "NVDA", "sell", 1200, "market", account="paper-1", reduce_only=True
        ),
        "fok, older quote": _order(
            "AAPL", "buy", 100, "limit", 150.25, time_in_force="fok", context=spec_context
        ),
        "volatility at the maximum": _order(
            "AAPL", "buy", 100, "limit", 150.25, context=_context("AAPL", volatility=0.8)
        ),
        "spread of exactly 25 bps": _order(
            "SPY", "sell", 10, "limit", 100.0, context=_context("SPY", quote=(99.875, 100.125, 100))
        ),
    }
    return [Case(label, order, normal, True) for label, order in orders.items()]


def _blocked(states: dict[str, EngineState]) -> list[Case]:
    normal = states["normal"]
    aapl = ("AAPL", "buy", 100, "limit", 150.25)
    cases = {
        "restricted symbol": _order("RSTR", "buy", 100, "limit", 20.01),
        "account not allowed": _order(*aapl, account="hedge-9"),
        "data hash mismatch": _order(*aapl, context=_context("AAPL", data_hash=sha256_digest({}))),
        "stale quote": _order(*aapl, context=_context("AAPL", quote_age_s=10)),
        "bid above ask": _order(*aapl, context=_context("AAPL", quote=(150.30, 150.20, 150.25))),
        "volatility too high": _order(*aapl, context=_context("AAPL", volatility=0.95)),
        "volatility a hair too high": _order(*aapl, context=_context("AAPL", volatility=0.8000001)),
        "spread too wide": _order(*aapl, context=_context("AAPL", quote=(150.00, 150.50, 150.25))),
        "regime not allowed": _order(*aapl, context=_context("AAPL", regime="crisis")),
        "entropy too high": _order(*aapl, context=_context("AAPL", entropy=0.9)),
        "drift too far": _order(*aapl, context=_context("AAPL", drift=-0.7)),
        "signals stale": _order(*aapl, context=_context("AAPL", as_of=_at(120))),
        "volatility missing": _order(*aapl, context=_context("AAPL", volatility=None)),
        "market order without context": _order("AAPL", "buy", 100, "market", context={}),
        "duplicate order": _order("NVDA", "buy", 50, "limit", 120.02, account="paper-1"),
        "quantity too large": _order("XOM", "buy", 20_000, "limit", 112.12),
        "notional too large": _order("MSFT", "buy", 3000, "limit", 410.10),
        "limit far from market": _order("AAPL", "buy", 100, "limit", 160.00),
        "position too large": _order("SPY", "buy", 100, "limit", 580.00),
        "reduce-only would increase": _order(*aapl, reduce_only=True),
        "protocol hash mismatch": _order(
            *aapl, context=_context("AAPL", protocol_hash=sha256_digest(["T01"]))
        ),
        "required protocol missing": _order(*aapl, context=_context("AAPL", protocols=["T07"])),
        "short sale not marked": _order("XOM", "sell", 400, "market"),
    }
    out = [Case(label, order, normal, False) for label, order in cases.items()]
    out.append(Case("omega directive", _order(*aapl), states["omega"], False))
    out.append(Case("configuration not verified", _order(*aapl), states["unverified"], False))
    resting = WorkingOrder(
        order_id="ORD-2026-000001", symbol="AAPL", side="sell", order_type="limit",
        quantity=100, limit_price=150.25, price=150.25,
    )  # fmt: skip
    crossing = normal.model_copy(update={"working_orders": [resting]})
    out.append(Case("self-match", _order(*aapl), crossing, False))
    rate = _order("JPM", "buy", 100, "limit", 245.30, account="paper-1")
    out.append(Case("order rate exceeded", rate, states["busy"], False))
    return out


def cases() -> list[Case]:
    """Every distinct case once, each order with its own client order id."""
    states = _states()
    distinct = [*_approved(states["normal"]), *_blocked(states)]
    for number, case in enumerate(distinct, start=1):
        case.order["client_order_id"] = f"strat7-{number:06d}"
    return distinct


def mix(distinct: Sequence[Case]) -> list[Case]:
    """The evaluation mix: approved cases weighted, blocked ones interleaved."""
    approved = [c for c in distinct if c.approved] * APPROVED_WEIGHT
    blocked = [c for c in distinct if not c.approved]
    step = max(1, len(approved) // max(1, len(blocked)))
    out: list[Case] = []
    for index, case in enumerate(approved):
        out.append(case)
        if index % step == step - 1 and blocked:
            out.append(blocked.pop(0))
    return out + blocked
