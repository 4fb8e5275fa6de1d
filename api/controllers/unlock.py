"""The live unlock (SPEC sections 3 and 8): compliance officers take its five steps;
compliance, auditors and the admin read where it stands. docs/unlock.md."""

from __future__ import annotations

from typing import Any, cast

from litestar import Controller
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath

from engine.gateway.unlock import UnlockInvalid, UnlockRefused, parse_step

from ..deps import Call, Services, ServicesDep
from ..docs import UnlockBody, UnlockDone, UnlockView, body, errors
from ..errors import ApiError, field_error
from ..guards import _authenticate, _requires
from ..intake import Intake
from ..routes import get, post

__all__ = ["UnlockController"]

READERS = _requires("compliance", "auditor")  # and the admin, who sees but never acts
OPERATION = "unlock"
REFUSED = "The step's condition does not hold (`unlock_refused`); the refusal is in `record`."


async def only_compliance(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Compliance officers alone take the steps: not even the admin (issue 9)."""
    actor = await _authenticate(connection)
    connection.scope["user"] = actor
    if actor.role != "compliance":
        detail = f"role {actor.role!r} may not take unlock steps (compliance only)"
        intake: Intake | None = connection.app.state.get("intake")
        if intake is not None:
            await intake.refuse_role(connection, handler, actor, detail)
        raise ApiError(403, "forbidden", detail)


async def _invalid(
    services: Services, request: Call, field: str, detail: str, raw: Any = None
) -> None:
    await services.intake.refuse(OPERATION, request.user, 422, "invalid_request", detail,
                                 [field_error(field, detail)], request=raw)  # fmt: skip


class UnlockController(Controller):
    path = "/v1/unlock"
    tags = ("unlock",)
    security = ({"bearer": []},)

    @get(
        "/",
        guards=[READERS],
        summary="Where the live unlock stands: each step, each requirement, whether live holds",
        responses=errors(401, 403),
    )
    async def unlock_status(self, services: ServicesDep) -> UnlockView:
        view = await services.threads.run(services.gateway.unlock.status)
        return cast(UnlockView, view)

    @post(
        "/{step:str}",
        guards=[only_compliance],
        status_code=200,
        summary="Take one step of the live unlock (compliance officers only)",
        description=(
            "`step`: 1-5 or its name (access, acknowledge, risk, credentials, enable), in"
            ' order. Step 5 needs the body `{"confirm": "ENABLE LIVE TRADING"}`,'
            " checks every live requirement again and sets the mode to live. A refused step"
            " is recorded (`unlock_step`, outcome `refused`) and answered 409 with the reason."
        ),
        operation_class=body(UnlockBody, required=False),
        responses=errors(401, 403, 409, 413, 422, s409=REFUSED),
    )
    async def unlock(self, step: FromPath[str], request: Call, services: ServicesDep) -> UnlockDone:
        actor, intake = request.user, services.intake
        raw = await intake.object(request, OPERATION, actor, optional=True)
        try:
            number = parse_step(step)
        except UnlockInvalid as exc:
            await _invalid(services, request, exc.field, str(exc), raw)
            raise AssertionError("unreachable") from exc
        unknown = sorted(k for k in raw if k != "confirm")
        if unknown:
            await _invalid(services, request, unknown[0], "not a field of this body", raw)
        confirm = raw.get("confirm")
        if confirm is not None and not isinstance(confirm, str):
            await _invalid(services, request, "confirm", "`confirm` must be a string", raw)
        if number != 5 and confirm is not None:
            await _invalid(services, request, "confirm", "only step 5 takes a confirmation", raw)
        unlock = services.gateway.unlock

        def take() -> UnlockDone:
            event = unlock.perform(number, actor, confirm)
            return {"event": event, "unlock": cast(UnlockView, unlock.status())}

        try:
            return await services.threads.run(take)
        except UnlockInvalid as exc:
            await _invalid(services, request, exc.field, str(exc), raw)
            raise AssertionError("unreachable") from exc
        except UnlockRefused as exc:
            raise ApiError(409, "unlock_refused", str(exc), [field_error("step", exc.reason)],
                           record=exc.record) from None  # fmt: skip
