"""The audit chain, for auditors: its records in chain order, and verification."""

from __future__ import annotations

from litestar import Controller
from litestar.params import FromQuery

from engine.audit_replay import verify_store

from ..deps import ServicesDep
from ..docs import AuditPage, ChainReportBody, errors
from ..errors import ApiError
from ..guards import AUDITOR, query
from ..routes import get

__all__ = ["AuditController"]


class AuditController(Controller):
    path = "/v1/audit"
    tags = ("audit",)
    security = ({"bearer": []},)

    @get(
        "/",
        guards=[AUDITOR, query("after", "limit")],
        summary="Audit records after position `after`, in chain order",
        responses=errors(400, 401, 403, 422),
    )
    async def records(
        self,
        services: ServicesDep,
        after: FromQuery[int] = 0,
        limit: FromQuery[int] = 100,
    ) -> AuditPage:
        if not 1 <= limit <= 1000 or after < 0:
            raise ApiError(422, "invalid_query", "limit must be 1..1000 and after >= 0")
        store = services.store
        records = await services.threads.run(lambda: list(store.audit_records(after, limit)))
        return {"records": records, "after": after, "limit": limit}

    @get(
        "/verify",
        guards=[AUDITOR],
        summary=(
            "Verify the whole chain, then compare it with the stored head, orders and"
            " positions; the first broken record, and every stored row that differs"
        ),
        responses=errors(401, 403),
    )
    async def verify(self, services: ServicesDep) -> ChainReportBody:
        store = services.store
        report = await services.threads.run(lambda: verify_store(store))
        body: ChainReportBody = report.as_dict()  # type: ignore[assignment]
        return body
