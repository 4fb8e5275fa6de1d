"""The HTTP API (SPEC section 8): a thin Litestar layer over the gateway.

Handlers read the raw body themselves so that malformed JSON and oversize
bodies are answered with the same JSON error shape as every other failure,
and are logged as rejected attempts. Blocking work runs in worker threads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request, Response, delete, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery

from engine import PolicyError, load_policies
from engine.audit import verify_chain
from engine.gateway.core import MODES, ModeRefused, Outcome
from engine.models import Quote
from engine.policy.evaluator import Evaluator

from ._threads import GatewayThreads
from .auth import Principal
from .runtime import Runtime

__all__ = ["ApiError", "create_app"]

log = logging.getLogger("apex.api")

TRADER, COMPLIANCE, AUDITOR = ("trader",), ("compliance",), ("auditor",)
GATEWAY_THREADS = 16
_SUBMIT_STATUS = {
    "routed": 201, "blocked": 403, "rejected": 422, "conflict": 409, "broker_error": 502,
    "audit_unavailable": 503, "not_found": 404, "not_open": 409, "evaluated": 200,
}  # fmt: skip


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


def create_app(runtime: Runtime) -> Litestar:
    gateway, metrics, settings = runtime.gateway, runtime.metrics, runtime.settings
    # The gateway blocks (database, broker): its calls run on these threads.
    threads = GatewayThreads(GATEWAY_THREADS)
    blocking = threads.run
    # On SQLite an evaluation runs on the event loop itself. It calls no broker, and
    # its reads and its one local write take well under a millisecond, while handing
    # it to a thread makes the loop and that thread pass the GIL to and fro: 9-13%
    # more CPU per evaluation in a paired run (README, "Benchmarks").
    evaluate_inline = runtime.store.dialect == "sqlite"

    def principal(request: Request[Any, Any, Any], roles: tuple[str, ...] | None) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "missing bearer token")
        found = runtime.tokens.check(token.strip())
        if found is None:
            raise ApiError(401, "unauthorized", "unknown or revoked token")
        if roles is not None and not found.may(roles):
            raise ApiError(403, "forbidden", f"role {found.role!r} may not do this")
        return found

    async def body(request: Request[Any, Any, Any], operation: str, actor: str) -> Any:
        """The parsed JSON body, or an ApiError after logging the rejected attempt."""
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        problem: tuple[int, str, str] | None = None
        raw = b""
        if declared and declared.isdigit() and int(declared) > limit:
            problem = (413, "body_too_large", f"body is over {limit} bytes")
        elif declared and declared.isdigit():
            raw = await request.body()  # the server holds it to the declared length
        else:
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limit:
                    problem = (413, "body_too_large", f"body is over {limit} bytes")
                    break
        if problem is None:
            try:
                parsed = json.loads(raw or b"null")
                # "\ud800" (or its UTF-8 bytes, which json.loads lets through)
                # parses to a lone surrogate, which is not text: no record holding
                # it could be stored or hashed as UTF-8.
                if b"\\u" in raw or b"\xed" in raw:
                    json.dumps(parsed, ensure_ascii=False).encode("utf-8")
                return parsed
            except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
                problem = (422, "malformed_json", f"body is not valid JSON: {exc}")
        status, code, detail = problem
        outcome = await blocking(gateway.reject, operation, [("(body)", detail)], actor)
        metrics.decision(operation, "rejected", [])
        raise ApiError(
            status,
            code,
            detail,
            errors=[{"field": "(body)", "message": detail}],
            record=outcome.record,
        )

    def answer(operation: str, outcome: Outcome, evaluate: bool = False) -> Response[Any]:
        kind = outcome.replayed_kind or outcome.kind
        record = outcome.record
        metrics.decision(operation, outcome.kind, list(record.get("fail_closed_triggers") or []))
        if kind == "rejected":
            errors = record.get("errors", [])
            fields = ", ".join(e["field"] for e in errors)
            raise ApiError(
                422, "invalid_order", f"invalid order: {fields}", errors=errors, record=record
            )
        if kind == "conflict":
            raise ApiError(
                409,
                "client_order_id_conflict",
                "client_order_id already used with a different body",
                record=record,
            )
        if kind == "audit_unavailable":
            sent = bool(record.get("broker_response"))
            detail = (
                "the broker acted on the order (see record) but its outcome could not be logged"
                if sent
                else "the audit log could not be written; the order was not sent"
            )
            raise ApiError(503, "audit_unavailable", detail, record=record)
        if kind == "not_found":
            raise ApiError(404, "not_found", f"no order {record.get('order_id')}")
        if kind == "not_open":
            raise ApiError(
                409, "order_not_open", "the order is not working at a broker", record=record
            )
        status = 200 if evaluate and kind in ("evaluated", "blocked") else _SUBMIT_STATUS[kind]
        if outcome.kind == "replayed" and kind == "routed":
            status = 201
        return Response(record, status_code=status)

    async def timed(route: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return await work()
        finally:
            metrics.latency.labels(route).observe(time.perf_counter() - started)

    # --- orders --------------------------------------------------------------

    @post("/v1/orders/evaluate", status_code=200)
    async def evaluate_order(request: Request[Any, Any, Any]) -> Response[Any]:
        async def work() -> Response[Any]:
            who = principal(request, TRADER)
            raw = await body(request, "evaluate", who.token_id)
            if evaluate_inline:
                outcome = gateway.evaluate(raw, who.token_id)
            else:
                outcome = await blocking(gateway.evaluate, raw, who.token_id)
            return answer("evaluate", outcome, evaluate=True)

        result: Response[Any] = await timed("evaluate", work)
        return result

    @post("/v1/orders", status_code=201)
    async def submit_order(request: Request[Any, Any, Any]) -> Response[Any]:
        async def work() -> Response[Any]:
            who = principal(request, TRADER)
            raw = await body(request, "submit", who.token_id)
            outcome = await blocking(gateway.submit, raw, who.token_id)
            return answer("submit", outcome)

        result: Response[Any] = await timed("submit", work)
        return result

    @get("/v1/orders")
    async def list_orders(
        request: Request[Any, Any, Any],
        status: FromQuery[str | None] = None,
        symbol: FromQuery[str | None] = None,
        account: FromQuery[str | None] = None,
        client_order_id: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
        offset: FromQuery[int] = 0,
    ) -> dict[str, Any]:
        principal(request, TRADER + AUDITOR)
        if not 1 <= limit <= 1000 or offset < 0:
            raise ApiError(422, "invalid_query", "limit must be 1..1000 and offset >= 0")
        rows = await blocking(
            lambda: runtime.store.list_orders(
                status=status,
                symbol=symbol,
                account=account,
                client_order_id=client_order_id,
                limit=limit,
                offset=offset,
            )
        )
        return {"orders": rows, "limit": limit, "offset": offset, "count": len(rows)}

    @get("/v1/orders/{order_id:str}")
    async def get_order(request: Request[Any, Any, Any], order_id: FromPath[str]) -> dict[str, Any]:
        principal(request, TRADER + AUDITOR)
        record = await blocking(runtime.store.order_record, order_id)
        if record is None:
            raise ApiError(404, "not_found", f"no order {order_id}")
        return record

    @post("/v1/orders/{order_id:str}/cancel", status_code=200)
    async def cancel_order(
        request: Request[Any, Any, Any], order_id: FromPath[str]
    ) -> Response[Any]:
        who = principal(request, TRADER)
        outcome = await blocking(gateway.cancel, order_id, who.token_id)
        if outcome.kind == "routed":
            metrics.decision("cancel", "routed", [])
            return Response(outcome.record, status_code=200)
        return answer("cancel", outcome)

    @post("/v1/orders/{order_id:str}/replace", status_code=200)
    async def replace_order(
        request: Request[Any, Any, Any], order_id: FromPath[str]
    ) -> Response[Any]:
        who = principal(request, TRADER)
        raw = await body(request, "replace", who.token_id)
        if not isinstance(raw, dict):
            raise ApiError(
                422,
                "invalid_order",
                "the body must be a JSON object",
                errors=[{"field": "(body)", "message": "must be an object"}],
            )
        outcome = await blocking(gateway.replace, order_id, raw, who.token_id)
        if outcome.kind == "routed":
            metrics.decision("replace", "routed", [])
            return Response(outcome.record, status_code=200)
        return answer("replace", outcome)

    # --- simulation market data ---------------------------------------------

    @post("/v1/sim/quotes", status_code=200)
    async def sim_quote(request: Request[Any, Any, Any]) -> dict[str, Any]:
        who = principal(request, TRADER)
        raw = await body(request, "quote", who.token_id)
        if not isinstance(raw, dict) or not isinstance(raw.get("symbol"), str):
            raise ApiError(
                422,
                "invalid_quote",
                "body needs symbol and quote fields",
                errors=[{"field": "symbol", "message": "required string"}],
            )
        symbol = raw.pop("symbol")
        try:
            quote = Quote.model_validate(raw)
        except ValueError as exc:
            raise ApiError(422, "invalid_quote", str(exc).splitlines()[0]) from exc
        changed = await blocking(gateway.market_quote, symbol, quote, who.token_id)
        return {"symbol": symbol, "orders_changed": changed}

    # --- mode and kill switch -------------------------------------------------

    def mode_view() -> dict[str, Any]:
        return {
            "mode": gateway.mode(),
            "omega": gateway.omega(),
            "requirements": {m: gateway.requirements(m) for m in MODES},
        }

    @get("/v1/mode")
    async def get_mode(request: Request[Any, Any, Any]) -> dict[str, Any]:
        principal(request, None)
        result: dict[str, Any] = await blocking(mode_view)
        return result

    @post("/v1/mode", status_code=200)
    async def set_mode(request: Request[Any, Any, Any]) -> dict[str, Any]:
        who = principal(request, COMPLIANCE)
        raw = await body(request, "mode", who.token_id)
        if not isinstance(raw, dict) or raw.get("mode") not in MODES:
            raise ApiError(
                422,
                "invalid_request",
                f"body needs a `mode`: one of {', '.join(MODES)}",
                errors=[{"field": "mode", "message": f"one of {', '.join(MODES)}"}],
            )
        try:
            event = await blocking(
                gateway.set_mode, raw["mode"], who.token_id, str(raw.get("reason", ""))
            )
        except ModeRefused as exc:
            raise ApiError(409, "mode_requirements_not_met", str(exc), missing=exc.missing) from exc
        return {"mode": raw["mode"], "event": event}

    @post("/v1/omega", status_code=200)
    async def invoke_omega(request: Request[Any, Any, Any]) -> dict[str, Any]:
        who = principal(request, COMPLIANCE)
        raw = await body(request, "omega", who.token_id)
        reason = raw.get("reason") if isinstance(raw, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            raise ApiError(
                422,
                "invalid_request",
                "a reason is required",
                errors=[{"field": "reason", "message": "required string"}],
            )
        cancel = bool(raw.get("cancel_open_orders", False))
        event = await blocking(gateway.invoke_omega, who.token_id, reason, cancel)
        return {"omega": gateway.omega(), "event": event}

    @delete("/v1/omega", status_code=200)
    async def clear_omega(
        request: Request[Any, Any, Any], reason: FromQuery[str | None] = None
    ) -> dict[str, Any]:
        who = principal(request, COMPLIANCE)
        if not reason or not reason.strip():
            raise ApiError(
                422,
                "invalid_request",
                "a reason is required (?reason=...)",
                errors=[{"field": "reason", "message": "required query parameter"}],
            )
        event = await blocking(gateway.clear_omega, who.token_id, reason)
        return {"omega": gateway.omega(), "event": event}

    # --- policies -------------------------------------------------------------

    def policy_view() -> dict[str, Any]:
        policy = gateway.evaluator.policy.policies
        return {
            "policy_digest": policy.policy_digest,
            "compliance_digest": policy.compliance_digest,
            "files": list(policy.files),
            "rules": [
                {
                    "id": r.id,
                    "trigger": r.trigger,
                    "code": r.code,
                    "description": r.description,
                    "source": r.source,
                    "line": r.line,
                }
                for r in policy.rules
            ],
        }

    @get("/v1/policies")
    async def get_policies(request: Request[Any, Any, Any]) -> dict[str, Any]:
        principal(request, None)
        return policy_view()

    @post("/v1/policies/reload", status_code=200)
    async def reload_policies(request: Request[Any, Any, Any]) -> dict[str, Any]:
        principal(request, COMPLIANCE)

        def reload() -> dict[str, Any]:
            try:
                loaded = load_policies(settings.policies)
            except PolicyError as exc:
                raise ApiError(
                    422,
                    "policy_invalid",
                    "the new policy set is invalid; the loaded one stays",
                    issues=[vars(i) for i in exc.issues],
                ) from exc
            gateway.use_evaluator(Evaluator(loaded, runtime.clock))
            return policy_view()

        result: dict[str, Any] = await blocking(reload)
        return result

    # --- audit ----------------------------------------------------------------

    @get("/v1/audit")
    async def audit(
        request: Request[Any, Any, Any], after: FromQuery[int] = 0, limit: FromQuery[int] = 100
    ) -> dict[str, Any]:
        principal(request, AUDITOR)
        if not 1 <= limit <= 1000 or after < 0:
            raise ApiError(422, "invalid_query", "limit must be 1..1000 and after >= 0")
        records = await blocking(lambda: list(runtime.store.audit_records(after, limit)))
        return {"records": records, "after": after, "limit": limit}

    @get("/v1/audit/verify")
    async def audit_verify(request: Request[Any, Any, Any]) -> dict[str, Any]:
        principal(request, AUDITOR)
        report = await blocking(lambda: verify_chain(runtime.store.audit_records()))
        return report.as_dict()

    # --- operations -------------------------------------------------------------

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Response[Any]:
        try:
            database = await blocking(runtime.store.ping)
        except Exception:
            database = False
        ready = database
        body_ = {
            "ready": ready,
            "database": database,
            "policy_digest": gateway.evaluator.policy.policies.policy_digest,
        }
        return Response(body_, status_code=200 if ready else 503)

    @get("/metrics", media_type="text/plain; version=0.0.4")
    async def prometheus() -> bytes:
        return metrics.render()

    return Litestar(
        route_handlers=[
            evaluate_order,
            submit_order,
            list_orders,
            get_order,
            cancel_order,
            replace_order,
            sim_quote,
            get_mode,
            set_mode,
            invoke_omega,
            clear_omega,
            get_policies,
            reload_policies,
            audit,
            audit_verify,
            healthz,
            readyz,
            prometheus,
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _crash},
        openapi_config=OpenAPIConfig(title="apex-oms", version="0.1.0", path="/schema"),
        request_max_body_size=4 * 1024 * 1024,
        on_shutdown=[threads.close],
        # Logging belongs to the process (api/_logging.py): Litestar's default
        # config would replace the root handlers and turn the JSON logs to text.
        logging_config=None,
    )


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return Response({"code": exc.code, "detail": exc.detail, **exc.extra}, status_code=exc.status)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    codes = {
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
    }
    return Response(
        {"code": codes.get(exc.status_code, "http_error"), "detail": exc.detail},
        status_code=exc.status_code,
    )


def _crash(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error", exc_info=exc)
    return Response(
        {"code": "internal_error", "detail": "unexpected error; it has been logged"},
        status_code=500,
    )
