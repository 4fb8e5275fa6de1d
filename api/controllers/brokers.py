"""The brokers (SPEC section 8, `GET /v1/brokers`): each routing mode's broker,
its adapter and capabilities, whether it takes new orders (and why not), its
last credential check, its last reconciliation in this process, and its update
stream where it has one (information only). Any role may read it; nothing in
it is secret (docs/brokers.md)."""

from __future__ import annotations

from typing import Any, cast

from litestar import Controller

from adapters.registry import adapter_name
from engine.broker import BrokerAdapter
from engine.gateway import Gateway

from ..deps import ServicesDep
from ..docs import BrokersView, BrokerView, errors
from ..guards import ANY_ROLE
from ..routes import get

__all__ = ["BrokersController", "capabilities_view"]

_ORDER = ("simulation", "paper", "live")


def capabilities_view(broker: BrokerAdapter) -> dict[str, Any]:
    caps = broker.capabilities
    return {
        "order_types": sorted(caps.order_types),
        "time_in_force": sorted(caps.time_in_force),
        "reduce_only": caps.reduce_only,
        "reduce_only_emulated": caps.reduce_only_emulated,
        "cancel": caps.cancel,
        "replace": caps.replace,
        "history": caps.history,
        "positions": caps.positions,
        "market_data": caps.market_data,
        "reference_quotes": caps.quotes_are_reference,
        "paper": caps.paper,
        "live": caps.live,
        "credentials": caps.credentials,
    }


def stream_view(broker: BrokerAdapter) -> dict[str, Any] | None:
    """An update stream beside the broker's commands (oms_rest's WebSocket), shown
    for information: its state never makes the broker unready (`ready` and
    `why_not` say whether it takes orders). None for a broker without one."""
    probe = getattr(broker, "stream_status", None)
    if not callable(probe):
        return None
    try:
        found = probe()
    except Exception:  # information only: never fails the route
        return None
    return dict(found) if isinstance(found, dict) else None


def brokers_view(gateway: Gateway) -> BrokersView:
    configured = gateway.brokers()
    modes = sorted(configured, key=lambda m: (_ORDER.index(m) if m in _ORDER else 9, m))
    out = []
    for mode in modes:
        broker = configured[mode]
        status = gateway.broker_status(broker)
        out.append({
            "mode": mode,
            "name": broker.name,
            "adapter": adapter_name(broker),
            "capabilities": capabilities_view(broker),
            **status,
            "stream": stream_view(broker),
        })  # fmt: skip
    return {"mode": gateway.mode(), "brokers": cast(list[BrokerView], out)}


class BrokersController(Controller):
    path = "/v1/brokers"
    tags = ("brokers",)
    security = ({"bearer": []},)

    @get(
        "/",
        guards=[ANY_ROLE],
        summary="Configured brokers by mode: capabilities, readiness, checks",
        description=(
            "Each routing mode's broker (simulation always; paper and live as brokers.yaml "
            "configures them): its adapter, every capability, whether it takes new orders "
            "now and why not, its last credential check (`apex-oms brokers check`; paper "
            "needs a successful one within 24 h) and its last reconciliation since start."
        ),
        responses=errors(401),
    )
    async def list_brokers(self, services: ServicesDep) -> BrokersView:
        return await services.threads.run(brokers_view, services.gateway)
