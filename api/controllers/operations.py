"""Liveness, readiness and metrics: no token needed."""

from __future__ import annotations

from litestar import Controller, Response
from litestar.openapi import ResponseSpec

from ..deps import ServicesDep
from ..docs import Health, Readiness
from ..routes import get
from .compliance import standing_view

__all__ = ["OperationsController"]


class OperationsController(Controller):
    path = "/"
    tags = ("operations",)

    @get("/healthz", summary="Liveness")
    async def healthz(self) -> Health:
        return {"status": "ok"}

    @get(
        "/readyz",
        summary=(
            "Readiness: the database answers, a verified compliance configuration is in force,"
            " and every broker is reconciled"
        ),
        responses={
            503: ResponseSpec(
                data_container=Readiness,
                description="Not ready; `reasons` says why.",
                generate_examples=False,
            )
        },
    )
    async def readyz(self, services: ServicesDep) -> Response[Readiness]:
        gateway, store = services.gateway, services.store

        def check() -> Readiness:
            try:
                database = bool(store.ping())
            except Exception:
                database = False
            reasons = [] if database else ["database: not answering"]
            reasons += gateway.readiness()
            in_force = gateway.in_force
            return {
                "ready": not reasons,
                "database": database,
                "policy_digest": in_force.evaluator.policy.policies.policy_digest,
                "reasons": reasons,
                "compliance": standing_view(in_force.standing.view()),
            }

        body = await services.threads.run(check)
        return Response(body, status_code=200 if body["ready"] else 503)

    @get("/metrics", media_type="text/plain; version=0.0.4", summary="Prometheus metrics")
    async def metrics(self, services: ServicesDep) -> bytes:
        return services.metrics.render()
