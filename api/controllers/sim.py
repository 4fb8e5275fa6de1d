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
from ..errors import field_error
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
        actor, gateway, intake = request.user, services.gateway, services.intake
        raw = await intake.object(request, "quote", actor)
        try:
            given = QuoteBody.model_validate(raw)
        except ValidationError as exc:
            problems = [e.as_dict() for e in field_errors(exc)]
            fields = ", ".join(p["field"] for p in problems)
            await intake.refuse(
                "quote", actor, 422, "invalid_quote", f"invalid quote: {fields}", problems
            )
        symbol = given.symbol
        quote = Quote.model_validate(given.model_dump(exclude={"symbol"}))

        def feed() -> QuoteResult | str:
            mode = gateway.mode()
            if mode != "simulation":
                return mode
            changed = cast(list[OrderRecord], gateway.market_quote(symbol, quote, actor))
            return {"symbol": symbol, "orders_changed": changed}

        fed = await services.threads.run(feed)
        if isinstance(fed, str):  # refused: logged like any other refused attempt
            detail = f"quotes are for simulation mode (mode: {fed})"
            problems = [field_error("(mode)", detail)]
            await intake.refuse("quote", actor, 409, "not_simulation", detail, problems)
        return fed
