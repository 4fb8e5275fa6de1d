"""The audit chain, for auditors: its records in chain order, and verification."""

from __future__ import annotations

from litestar import Controller, get
from litestar.params import FromQuery

from engine.audit import verify_chain

from ..deps import StoreDep, ThreadsDep
from ..docs import AuditPage, ChainReportBody, errors
from ..errors import ApiError
from ..guards import AUDITOR, one_value

__all__ = ["AuditController"]


class AuditController(Controller):
    path = "/v1/audit"
    tags = ("audit",)
    security = ({"bearer": []},)

    @get(
        "/",
        guards=[AUDITOR, one_value("after", "limit")],
        summary="Audit records after position `after`, in chain order",
        responses=errors(400, 401, 403, 422),
    )
    async def records(
        self,
        store: StoreDep,
        threads: ThreadsDep,
        after: FromQuery[int] = 0,
        limit: FromQuery[int] = 100,
    ) -> AuditPage:
        if not 1 <= limit <= 1000 or after < 0:
            raise ApiError(422, "invalid_query", "limit must be 1..1000 and after >= 0")
        records = await threads.run(lambda: list(store.audit_records(after, limit)))
        return {"records": records, "after": after, "limit": limit}

    @get(
        "/verify",
        guards=[AUDITOR],
        summary="Verify the whole chain; the first broken record if any",
        responses=errors(401, 403),
    )
    async def verify(self, store: StoreDep, threads: ThreadsDep) -> ChainReportBody:
        report = await threads.run(lambda: verify_chain(store.audit_records()))
        body: ChainReportBody = report.as_dict()  # type: ignore[assignment]
        return body
