"""The controls compliance holds: the mode, the Omega directive (the kill switch)
and the trading states, each change with a reason, audited in the chain."""

from __future__ import annotations

from typing import Any, cast

from litestar import Controller
from litestar.params import FromQuery

from engine.gateway import MODES
from engine.gateway.outcome import Actor, ModeRefused, StateRefused
from engine.models import comment_problem

from ..deps import Call, Services, ServicesDep
from ..docs import (
    ModeBody,
    ModeChanged,
    ModeView,
    Omega,
    OmegaBody,
    OmegaChanged,
    TradingStateBody,
    TradingStateChanged,
    TradingStates,
    body,
    errors,
)
from ..errors import field_error
from ..guards import ANY_ROLE, COMPLIANCE, query
from ..routes import delete, get, post

__all__ = ["ControlsController"]

STATES = ("active", "reducing", "halted")


async def _reason(
    services: Services, operation: str, actor: Actor, raw: dict[str, Any], required: bool
) -> str:
    """The body's `reason`; a missing (when required) or ill-typed one is refused
    and logged."""
    reason = raw.get("reason", "")
    if not isinstance(reason, str) or (required and not reason.strip()):
        await services.intake.refuse(
            operation,
            actor,
            422,
            "invalid_request",
            "a reason is required" if required else "`reason` must be a string",
            [field_error("reason", "required string" if required else "must be a string")],
            request=raw,
        )
    await _printable_reason(services, operation, actor, str(reason), raw)
    return str(reason)


async def _printable_reason(
    services: Services, operation: str, actor: Actor, reason: str, raw: dict[str, Any] | None
) -> None:
    """A reason the record can keep as text anyone can read: printable, bounded."""
    problem = comment_problem(reason)
    if problem is not None:
        await services.intake.refuse(
            operation,
            actor,
            422,
            "invalid_request",
            f"`reason`: {problem}",
            [field_error("reason", problem)],
            request=raw,
        )


class ControlsController(Controller):
    path = "/v1"
    tags = ("controls",)
    security = ({"bearer": []},)

    # --- mode -------------------------------------------------------------------

    @get(
        "/mode",
        guards=[ANY_ROLE],
        summary="The trading mode, the Omega directive, and each mode's requirements",
        responses=errors(401),
    )
    async def get_mode(self, services: ServicesDep) -> ModeView:
        gateway = services.gateway

        def view() -> ModeView:
            return {
                "mode": gateway.mode(),
                "omega": cast(Omega, gateway.omega()),
                "requirements": {m: gateway.requirements(m) for m in MODES},
            }

        return await services.threads.run(view)

    @post(
        "/mode",
        guards=[COMPLIANCE],
        status_code=200,
        summary="Change the trading mode",
        operation_class=body(ModeBody),
        responses=errors(
            401, 403, 409, 413, 422, s409="The mode's requirements are not met (`missing`)."
        ),
    )
    async def set_mode(self, request: Call, services: ServicesDep) -> ModeChanged:
        actor, intake = request.user, services.intake
        raw = await intake.object(request, "mode", actor)
        if raw.get("mode") not in MODES:
            await intake.refuse(
                "mode",
                actor,
                422,
                "invalid_request",
                f"body needs a `mode`: one of {', '.join(MODES)}",
                [field_error("mode", f"one of {', '.join(MODES)}")],
                request=raw,
            )
        reason = await _reason(services, "mode", actor, raw, required=False)
        try:
            event = await services.threads.run(
                services.gateway.set_mode, raw["mode"], actor, reason
            )
        except ModeRefused as exc:
            await intake.refuse(
                "mode",
                actor,
                409,
                "mode_requirements_not_met",
                str(exc),
                [field_error("mode", missing) for missing in exc.missing],
                request=raw,
                missing=exc.missing,
            )
        return {"mode": raw["mode"], "event": event}

    # --- the Omega directive ----------------------------------------------------------

    @post(
        "/omega",
        guards=[COMPLIANCE],
        status_code=200,
        summary="Invoke the Omega directive (halt all new orders and replaces)",
        operation_class=body(OmegaBody),
        responses=errors(401, 403, 413, 422),
    )
    async def invoke_omega(self, request: Call, services: ServicesDep) -> OmegaChanged:
        actor, gateway = request.user, services.gateway
        raw = await services.intake.object(request, "omega", actor)
        reason = await _reason(services, "omega", actor, raw, required=True)
        cancel = raw.get("cancel_open_orders", False)
        if not isinstance(cancel, bool):
            await services.intake.refuse(
                "omega",
                actor,
                422,
                "invalid_request",
                "`cancel_open_orders` must be true or false",
                [field_error("cancel_open_orders", "must be a boolean")],
                request=raw,
            )

        def invoke() -> OmegaChanged:
            event = gateway.invoke_omega(actor, reason, cancel)
            return {"omega": cast(Omega, gateway.omega()), "event": event}

        return await services.threads.run(invoke)

    @delete(
        "/omega",
        guards=[COMPLIANCE, query("reason")],
        status_code=200,
        summary="Clear the Omega directive",
        responses=errors(400, 401, 403, 422),
    )
    async def clear_omega(
        self, request: Call, services: ServicesDep, reason: FromQuery[str | None] = None
    ) -> OmegaChanged:
        actor, gateway = request.user, services.gateway
        if not reason or not reason.strip():
            await services.intake.refuse(
                "omega",
                actor,
                422,
                "invalid_request",
                "a reason is required (?reason=...)",
                [field_error("reason", "required query parameter")],
            )
        await _printable_reason(services, "omega", actor, reason or "", None)

        def clear() -> OmegaChanged:
            event = gateway.clear_omega(actor, reason)
            return {"omega": cast(Omega, gateway.omega()), "event": event}

        return await services.threads.run(clear)

    # --- trading states ---------------------------------------------------------------

    @get(
        "/trading-state",
        guards=[ANY_ROLE],
        summary="The trading state of the gateway (`global`) and of each account",
        responses=errors(401),
    )
    async def get_trading_state(self, services: ServicesDep) -> TradingStates:
        states = await services.threads.run(services.gateway.trading_states)
        return cast(TradingStates, states)

    @post(
        "/trading-state",
        guards=[COMPLIANCE],
        status_code=200,
        summary="Set the trading state of the gateway or of one account",
        description=(
            "`active`; `reducing`: only orders that reduce a position pass, cancels "
            "always pass; `halted`. `scope` is `global` or an account id."
        ),
        operation_class=body(TradingStateBody),
        responses=errors(401, 403, 413, 422),
    )
    async def set_trading_state(self, request: Call, services: ServicesDep) -> TradingStateChanged:
        actor, gateway, intake = request.user, services.gateway, services.intake
        raw = await intake.object(request, "state", actor)
        reason = await _reason(services, "state", actor, raw, required=True)
        scope: Any = raw.get("scope")
        state: Any = raw.get("state")
        problems = []
        if not isinstance(scope, str) or not scope:
            problems.append(field_error("scope", "`global` or an account id"))
        if state not in STATES:
            problems.append(field_error("state", f"one of {', '.join(STATES)}"))
        if problems:
            fields = ", ".join(p["field"] for p in problems)
            detail = f"invalid trading state: {fields}"
            await intake.refuse("state", actor, 422, "invalid_request", detail, problems,
                                request=raw)  # fmt: skip

        def change() -> TradingStateChanged:
            event = gateway.set_trading_state(scope, state, actor, reason)
            states = cast(TradingStates, gateway.trading_states())
            return {"trading_state": states, "event": event}

        try:
            return await services.threads.run(change)
        except StateRefused as exc:
            await intake.refuse(
                "state",
                actor,
                422,
                "invalid_trading_state",
                str(exc),
                [field_error("scope", str(exc))],
                request=raw,
            )
