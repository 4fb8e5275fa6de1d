"""The compliance configuration in force and every verification ever run
(SPEC section 8): for compliance officers and auditors."""

from __future__ import annotations

from typing import Any

from litestar import Controller
from litestar.params import FromQuery

from engine.signing import Trust
from engine.signing.standing import read_trust

from ..deps import ServicesDep
from ..docs import ComplianceStanding, ComplianceView, VerificationPage, errors
from ..errors import ApiError
from ..guards import _requires, query
from ..routes import get

__all__ = ["ComplianceController", "standing_view"]

OFFICERS_AND_AUDITORS = _requires("compliance", "auditor")


def standing_view(view: dict[str, Any]) -> ComplianceStanding:
    body: ComplianceStanding = view  # type: ignore[assignment]
    return body


class ComplianceController(Controller):
    path = "/v1/compliance"
    tags = ("compliance",)
    security = ({"bearer": []},)

    @get(
        "/",
        guards=[OFFICERS_AND_AUDITORS],
        summary="The compliance configuration in force: trust, signers, version, expiry",
        description=(
            "`trust` is `signed` (a threshold of trusted officers), `development` (the data"
            " directory's development root, never valid for live) or `none`; `code` says why"
            " the configuration is not in force. `trust_root` is keys/trust.yaml as read now."
        ),
        responses=errors(401, 403),
    )
    async def get_compliance(self, services: ServicesDep) -> ComplianceView:
        gateway = services.gateway
        source = gateway.compliance_source

        def read() -> ComplianceView:
            standing = gateway.standing
            view: dict[str, Any] = standing.view()
            view["trust_root"] = _trust_root(source.keys if source is not None else None)
            record = dict(standing.record) if standing.record.get("kind") else None
            view["verification"] = record
            return view  # type: ignore[return-value]

        return await services.threads.run(read)

    @get(
        "/verifications",
        guards=[OFFICERS_AND_AUDITORS, query("after", "limit")],
        summary="Every verification record, in chain order, paged by chain position",
        description=(
            "`after`: a chain position (0 for the first page); `next`: the `after` of the next"
            " page, null on the last one."
        ),
        responses=errors(400, 401, 403, 422),
    )
    async def verifications(
        self, services: ServicesDep, after: FromQuery[int] = 0, limit: FromQuery[int] = 100
    ) -> VerificationPage:
        if not 1 <= limit <= 1000 or after < 0:
            raise ApiError(422, "invalid_query", "limit must be 1..1000 and after >= 0")
        store = services.store
        rows = await services.threads.run(lambda: store.audit_of_kind("verification", after, limit))
        return {
            "verifications": [record for _, record in rows],
            "after": after,
            "limit": limit,
            "next": rows[-1][0] if len(rows) == limit else None,
        }


def _trust_root(keys: Any) -> dict[str, Any]:
    if keys is None:
        return {"keys": None, "threshold": None, "signers": [], "problem": "no trust root"}
    trust = read_trust(keys)
    if not isinstance(trust, Trust):
        return {"keys": str(keys), "threshold": None, "signers": [], "problem": str(trust)}
    signers = [
        {"name": s.name, "keyid": s.keyid, "status": trust.status_of(s.keyid)}
        for s in trust.signers
    ]
    return {"keys": str(keys), "threshold": trust.threshold, "signers": signers, "problem": None}
