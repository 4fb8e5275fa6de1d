"""The policy set in force, and its verified hot reload: a bad set is refused
and the loaded one stays."""

from __future__ import annotations

from litestar import Controller

from engine import PolicyError, load_policies
from engine.gateway import Gateway
from engine.signing.standing import Standing

from ..deps import Call, ServicesDep
from ..docs import PolicyView, errors
from ..errors import field_error
from ..guards import ANY_ROLE, COMPLIANCE
from ..routes import get, post
from ..runtime import keep_version
from .compliance import standing_view

__all__ = ["PoliciesController"]


def _view(gateway: Gateway) -> PolicyView:
    in_force = gateway.in_force  # the set and its verdict, read together
    policy = in_force.evaluator.policy.policies
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
        "compliance": standing_view(in_force.standing.view()),
    }


class PoliciesController(Controller):
    path = "/v1/policies"
    tags = ("policies",)
    security = ({"bearer": []},)

    @get("/", guards=[ANY_ROLE], summary="The loaded policy set and its digests",
         responses=errors(401))  # fmt: skip
    async def get_policies(self, services: ServicesDep) -> PolicyView:
        return _view(services.gateway)

    @post(
        "/reload",
        guards=[COMPLIANCE],
        status_code=200,
        summary="Load the policy directory again, verified (a bad set is refused)",
        description=(
            "The rules are validated and the compliance configuration verified against"
            " keys/trust.yaml as it is now (a rotated or revoked key counts at once). A set"
            " whose configuration does not verify is refused (`compliance_invalid`, with"
            " the finding's `finding` code) and the set in force stays; if the set in force"
            " no longer verifies under the new trust root, it goes out of force (a"
            " verification record says so, and orders are blocked with `compliance_failure`)."
            " SIGHUP to `apex-oms serve` does the same. No body, or an empty object; any"
            " other body is refused (422, logged)."
        ),
        responses=errors(
            401,
            403,
            413,
            422,
            s422=(
                "The set is invalid (`policy_invalid`, `issues`) or its configuration does not"
                " verify (`compliance_invalid`, `finding`); the old stays. Or the body is bad."
            ),
        ),
    )
    async def reload(self, request: Call, services: ServicesDep) -> PolicyView:
        gateway, settings = services.gateway, services.settings
        actor, intake = request.user, services.intake
        raw = await intake.object(request, "reload", actor, optional=True)
        if raw:  # the route takes no fields: a body that means something is refused
            problems = [field_error(key[:200], "not a field of this route") for key in sorted(raw)]
            detail = "a reload takes no body fields"
            await intake.refuse("reload", actor, 422, "invalid_request", detail, problems)

        def reload() -> PolicyView | PolicyError | Standing:
            try:
                loaded = load_policies(settings.policies)
            except PolicyError as exc:
                return exc
            keep_version(services.store, settings.policies, loaded, services.clock)
            standing = gateway.reload(loaded, actor, "reload")
            return _view(gateway) if standing.in_force else standing

        result = await services.threads.run(reload)
        if isinstance(result, PolicyError):  # refused: logged like any other refused attempt
            issues = [vars(i) for i in result.issues]
            problems = [field_error(i.file or "(policies)", str(i)) for i in result.issues[:20]]
            await intake.refuse(
                "reload",
                actor,
                422,
                "policy_invalid",
                "the new policy set is invalid; the loaded one stays",
                problems,
                issues=issues,
            )
        if isinstance(result, Standing):
            problems = [field_error("compliance.yaml", f"{result.code}: {result.message}")]
            await intake.refuse(
                "reload",
                actor,
                422,
                "compliance_invalid",
                f"the new compliance configuration does not verify ({result.code}: "
                f"{result.message}); the set in force stays",
                problems,
                finding=result.code,
                compliance=result.view(),
            )
        return result
