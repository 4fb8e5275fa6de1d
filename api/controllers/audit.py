"""The audit chain, for auditors: its records in chain order, and verification."""

from __future__ import annotations

from pathlib import Path

from litestar import Controller
from litestar.params import FromQuery

from engine.audit_replay import ServiceKeys, verify_store
from engine.ports import CHECKPOINT_SETTING
from engine.signing.keys import KeyFileError, key_id

from ..deps import ServicesDep
from ..docs import AuditPage, ChainReportBody, CheckpointBody, errors
from ..errors import ApiError
from ..guards import AUDITOR, query
from ..routes import get
from ..service_key import load_service_key

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
        store, home = services.store, services.settings.home
        report = await services.threads.run(lambda: verify_store(store, _service_keys(home)))
        body: ChainReportBody = report.as_dict()  # type: ignore[assignment]
        return body

    @get(
        "/checkpoint",
        guards=[AUDITOR],
        summary=(
            "The latest signed checkpoint of the chain head, to keep apart from any export"
            " (`tools/verify_audit.py --checkpoint`)"
        ),
        responses=errors(401, 403, 404, s404="No checkpoint yet (`no_checkpoint`)."),
    )
    async def checkpoint(self, services: ServicesDep) -> CheckpointBody:
        store = services.store
        latest = await services.threads.run(lambda: store.setting(CHECKPOINT_SETTING))
        if not isinstance(latest, dict):
            raise ApiError(
                404,
                "no_checkpoint",
                "no checkpoint yet: the service signs one once records are appended",
            )
        body: CheckpointBody = latest  # type: ignore[assignment]
        return body


def _service_keys(home: Path) -> ServiceKeys:
    """The service's own key; none (every checkpoint then a finding) when it is
    missing or unusable: a verification must not pass on a key it cannot read."""
    try:
        key = load_service_key(home)
    except KeyFileError:
        return {}
    return {} if key is None else {key_id(key): key}
