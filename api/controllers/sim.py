"""Market data for the simulated broker: admin only, and only in simulation mode
(a quote fills resting orders)."""

from __future__ import annotations

from typing import cast

from litestar import Controller
from pydantic import ValidationError

from engine.models import Quote
from engine.policy.evaluator import field_errors

from ..deps import Call, ServicesDep
from ..docs import OrderRecord, QuoteBody, QuoteResult, body, errors
from ..errors import ApiError
from ..guards import ONLY_ADMIN
from ..routes import post

__all__ = ["SimController"]


class SimController(Controller):
    path = "/v1/sim"
    tags = ("simulation",)
    security = ({"bearer": []},)

    @post(
        "/quotes",
        guards=[ONLY_ADMIN],
        status_code=200,
        summary="Feed a quote to the simulated broker; the orders it fills",
        operation_class=body(QuoteBody),
        responses=errors(
            401, 403, 409, 413, 422, s409="The mode is not simulation (`not_simulation`)."
        ),
    )
    async def quote(self, request: Call, services: ServicesDep) -> QuoteResult:
        actor, gateway = request.user, services.gateway
        raw = await services.intake.json(request, "quote", actor)
        try:
            given = QuoteBody.model_validate(raw)
        except ValidationError as exc:
            problems = [e.as_dict() for e in field_errors(exc)]
            fields = ", ".join(p["field"] for p in problems)
            raise ApiError(422, "invalid_quote", f"invalid quote: {fields}", problems) from exc
        symbol = given.symbol
        quote = Quote.model_validate(given.model_dump(exclude={"symbol"}))

        def feed() -> QuoteResult:
            mode = gateway.mode()
            if mode != "simulation":
                detail = f"quotes are for simulation mode (mode: {mode})"
                raise ApiError(409, "not_simulation", detail)
            changed = cast(list[OrderRecord], gateway.market_quote(symbol, quote, actor))
            return {"symbol": symbol, "orders_changed": changed}

        return await services.threads.run(feed)
