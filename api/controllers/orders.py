"""Orders (SPEC section 8): evaluate, submit, read, cancel, replace.

A trader sees and acts on its own accounts' orders only; another account's
order answers 404, as if it did not exist (the gateway decides what an actor
may see). Compliance and admin may cancel any order, with a reason.
"""

from __future__ import annotations

import time
from typing import cast

from litestar import Controller, Response
from litestar.params import FromPath, FromQuery

from engine.broker import BrokerError
from engine.gateway.outcome import Actor, Outcome
from engine.models import OrderRequest, comment_problem

from ..deps import Call, Services, ServicesDep
from ..docs import (
    BrokerOrderPage,
    BrokerOrderRow,
    CancelBody,
    OrderPage,
    OrderRecord,
    body,
    errors,
    record,
    record_or_error,
    replace_schema,
)
from ..errors import ApiError, field_error
from ..guards import CANCELLERS, READERS, TRADER, query
from ..intake import order_ref
from ..outcomes import answer
from ..routes import get, post

__all__ = ["OrdersController"]

_BLOCKED = "Blocked: the body is the order record (`order_status` `blocked`, the triggers)."


class OrdersController(Controller):
    path = "/v1/orders"
    tags = ("orders",)
    security = ({"bearer": []},)

    @post(
        "/evaluate",
        guards=[TRADER],
        status_code=200,
        summary="Judge an order (dry run, never routed)",
        description="200 with the record, approved or blocked; every attempt is logged.",
        operation_class=body(OrderRequest),
        responses=errors(401, 403, 413, 422),
    )
    async def evaluate(self, request: Call, services: ServicesDep) -> Response[OrderRecord]:
        started = time.perf_counter()
        actor, gateway = request.user, services.gateway
        try:
            raw = await services.intake.json(request, "evaluate", actor)
            if services.inline_evaluation:
                outcome = gateway.evaluate(raw, actor)
            else:
                outcome = await services.threads.run(gateway.evaluate, raw, actor)
            return answer("evaluate", outcome, services.metrics)
        finally:
            services.metrics.latency.labels("evaluate").observe(time.perf_counter() - started)

    @post(
        "/",
        guards=[TRADER],
        status_code=201,
        summary="Evaluate and route an order",
        description=(
            "201 routed; 202 a retry of an order whose outcome is not known yet; 403 "
            "blocked (the body is the record); 409 the same "
            "client_order_id with another body; 502 the broker failed or refused (blocked). "
            "The same client_order_id and body answer the original record and status."
        ),
        operation_class=body(OrderRequest),
        responses={
            **errors(401, 409, 413, 422),
            **record_or_error(403, _BLOCKED + " Or this role may not submit (`forbidden`)."),
            502: record("The broker failed or refused: the record, blocked."),
            202: record(
                "A retry of an order still on its way to the broker (or being resolved "
                "with it): the record, `submitted`; it is never sent twice."
            ),
        },
    )
    async def submit(self, request: Call, services: ServicesDep) -> Response[OrderRecord]:
        started = time.perf_counter()
        actor = request.user
        try:
            raw = await services.intake.json(request, "submit", actor)
            outcome = await services.threads.run(services.gateway.submit, raw, actor)
            return answer("submit", outcome, services.metrics)
        finally:
            services.metrics.latency.labels("submit").observe(time.perf_counter() - started)

    @get(
        "/",
        guards=[
            READERS,
            query(
                "status",
                "symbol",
                "account",
                "client_order_id",
                "limit",
                "offset",
                "source",
                "broker",
            ),
        ],
        summary="List orders (latest records, newest first), or the broker's own history",
        description=(
            "A trader sees its own accounts' orders only. `source=broker`: the order "
            "history of the current mode's broker (or of the broker named by `broker=`) as "
            "the broker reports it, each with the account of our record of it (filters: "
            "status, account); 409 when the mode has no broker or the broker keeps no "
            "history, 502 when the broker cannot be asked."
        ),
        responses={
            **errors(400, 401, 403, 422),
            **errors(
                409,
                s409="`source=broker`: the mode has no broker (`no_broker`), or the broker "
                "keeps no order history (`broker_capability`).",
            ),
            **errors(502, s502="`source=broker`: the broker failed (`broker_api_error`)."),
        },
    )
    async def list_orders(
        self,
        request: Call,
        services: ServicesDep,
        status: FromQuery[str | None] = None,
        symbol: FromQuery[str | None] = None,
        account: FromQuery[str | None] = None,
        client_order_id: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
        offset: FromQuery[int] = 0,
        source: FromQuery[str | None] = None,
        broker: FromQuery[str | None] = None,
    ) -> OrderPage | BrokerOrderPage:
        if not 1 <= limit <= 1000 or offset < 0:
            raise ApiError(422, "invalid_query", "limit must be 1..1000 and offset >= 0")
        if source not in (None, "store", "broker"):
            problem = field_error("source", "store (the default) or broker")
            raise ApiError(422, "invalid_query", "source must be store or broker", [problem])
        if source == "broker":
            if symbol is not None or client_order_id is not None:
                name = "symbol" if symbol is not None else "client_order_id"
                problem = field_error(name, "not a filter of source=broker")
                raise ApiError(422, "invalid_query", f"{name}: not with source=broker", [problem])
            return await _broker_page(request, services, broker, status, account, limit, offset)
        if broker is not None:
            problem = field_error("broker", "only with source=broker")
            raise ApiError(422, "invalid_query", "broker= needs source=broker", [problem])
        rows = await services.threads.run(
            lambda: services.gateway.list_orders(
                request.user,
                status=status,
                symbol=symbol,
                account=account,
                client_order_id=client_order_id,
                limit=limit,
                offset=offset,
            )
        )
        orders = cast(list[OrderRecord], rows)
        return {"orders": orders, "limit": limit, "offset": offset, "count": len(rows)}

    @get(
        "/{order_id:str}",
        guards=[READERS],
        summary="One order's latest record",
        responses=errors(400, 401, 403, 404),
    )
    async def get_order(
        self, request: Call, order_id: FromPath[str], services: ServicesDep
    ) -> OrderRecord:
        found = await services.threads.run(services.gateway.order, order_id, request.user)
        if found is None:
            raise ApiError(404, "not_found", f"no order {order_id}")
        return cast(OrderRecord, found)

    @post(
        "/{order_id:str}/cancel",
        guards=[CANCELLERS],
        status_code=200,
        summary="Cancel a working order (never blocked by the kill switch)",
        description=(
            "200 when the broker confirmed (`cancelled`), 202 when it took the request "
            "and confirmation is pending (`pending_cancel`), 403 when the order's broker "
            "cannot cancel (refused before it is asked). Compliance and admin may "
            "cancel any order and must give a `reason`, which the record keeps as `comment`."
        ),
        operation_class=body(CancelBody, required=False),
        responses={
            **errors(400, 401, 404, 413, 422),
            **record_or_error(
                403,
                "The order's broker cannot cancel (`broker_capability`, the record: the order "
                "keeps working). Or this role may not cancel (`forbidden`).",
            ),
            **errors(409, s409="The order is not working at a broker (`order_not_open`)."),
            202: record("Accepted by the broker; confirmation pending."),
            502: record("The broker failed or refused the cancel: the record."),
        },
    )
    async def cancel(
        self, request: Call, order_id: FromPath[str], services: ServicesDep
    ) -> Response[OrderRecord]:
        actor, intake = request.user, services.intake
        about = order_ref(order_id)
        raw = await intake.object(request, "cancel", actor, optional=True, about=about)
        reason = raw.get("reason")
        if not isinstance(reason, str | None):
            await intake.refuse(
                "cancel",
                actor,
                422,
                "invalid_request",
                "the body, if any, is an object with a `reason` string",
                [field_error("reason", "must be a string")],
                about=about,
            )
        reason = (reason or "").strip()
        problem = comment_problem(reason)
        if problem is not None:
            await intake.refuse(
                "cancel",
                actor,
                422,
                "invalid_request",
                f"`reason`: {problem}",
                [field_error("reason", problem)],
                about=about,
            )
        if actor.oversees and not reason:
            await intake.refuse(
                "cancel",
                actor,
                422,
                "invalid_request",
                f"a reason is required to cancel as {actor.role}",
                [field_error("reason", "required string")],
                about=about,
            )
        outcome = await services.threads.run(services.gateway.cancel, order_id, actor, reason)
        await _log_unlogged("cancel", order_id, actor, outcome, services)
        return answer("cancel", outcome, services.metrics)

    @post(
        "/{order_id:str}/replace",
        guards=[TRADER],
        status_code=200,
        summary="Cancel/replace a working order, judged like a new order",
        description="200 / 202 as for cancel; 403 when the new terms are blocked.",
        operation_class=body(replace_schema()),
        responses={
            **errors(400, 401, 404, 413, 422),
            **errors(409, s409="The order is not working at a broker (`order_not_open`)."),
            **record_or_error(403, _BLOCKED + " Or this role may not replace (`forbidden`)."),
            202: record("Accepted by the broker; confirmation pending."),
            502: record("The broker failed or refused the replace: the record."),
        },
    )
    async def replace(
        self, request: Call, order_id: FromPath[str], services: ServicesDep
    ) -> Response[OrderRecord]:
        actor = request.user
        raw = await services.intake.object(request, "replace", actor, about=order_ref(order_id))
        outcome = await services.threads.run(services.gateway.replace, order_id, raw, actor)
        await _log_unlogged("replace", order_id, actor, outcome, services)
        return answer("replace", outcome, services.metrics)


async def _broker_page(
    request: Call,
    services: Services,
    name: str | None,
    status: str | None,
    account: str | None,
    limit: int,
    offset: int,
) -> BrokerOrderPage:
    """The routed broker's own order history (`name`: a broker by name instead)."""
    gateway = services.gateway
    if name is not None:
        broker = gateway.broker_named(name)
        if broker is None:
            known = ", ".join(b.name for b in gateway.brokers().values())
            problem = field_error("broker", f"no broker of that name (configured: {known})")
            raise ApiError(422, "invalid_query", "broker: no broker of that name", [problem])
    else:
        mode = await services.threads.run(gateway.mode)
        broker = gateway.broker_for(mode)
        if broker is None:
            raise ApiError(409, "no_broker", f"the gateway's mode ({mode}) has no broker")
    if not broker.capabilities.history:
        detail = f"broker {broker.name} keeps no order history (capability history: false)"
        raise ApiError(409, "broker_capability", detail)
    try:
        rows = await services.threads.run(
            gateway.broker_history, broker, request.user, status, account
        )
    except BrokerError as exc:
        raise ApiError(502, "broker_api_error", f"broker {broker.name}: {exc}") from None
    page = cast(list[BrokerOrderRow], rows[offset : offset + limit])
    return {
        "source": "broker", "broker": broker.name, "orders": page, "limit": limit,
        "offset": offset, "count": len(page),
    }  # fmt: skip


async def _log_unlogged(
    operation: str, order_id: str, actor: Actor, outcome: Outcome, services: Services
) -> None:
    """A cancel or replace the gateway refused without a record (no such order
    for this actor, or not working): logged as a `rejected` attempt naming the
    order, answered as before; a 404 shows nothing, as if the order did not exist."""
    intake, about = services.intake, order_ref(order_id)
    if outcome.kind == "not_found":
        await intake.refuse(
            operation,
            actor,
            404,
            "not_found",
            f"no order {order_id}",
            [field_error("order_id", "no such order for this token")],
            about=about,
            reveal=False,
        )
    if outcome.kind == "not_open":
        status = outcome.record.get("order_status")
        await intake.refuse(
            operation,
            actor,
            409,
            "order_not_open",
            "the order is not working at a broker",
            [field_error("order_id", f"the order is {status}: not working at a broker")],
            about=about,
        )
