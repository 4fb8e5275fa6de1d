"""The shadow policy set (engine/gateway/shadow.py): a candidate set judging
every order beside the enforced one, its differences recorded in the chain
(`shadow_difference`) and counted in /metrics, changing no decision."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from litestar import Controller
from typing_extensions import TypedDict

from engine import load_policies, validate_policies
from engine.gateway.shadow import ShadowLimitReached
from engine.policy.loader import COMPLIANCE_FILE

from ..deps import Call, Services, ServicesDep
from ..docs import body, errors
from ..errors import ApiError, field_error
from ..guards import COMPLIANCE
from ..routes import delete, get, post
from ..runtime import keep_version

__all__ = ["ShadowController"]

BODY_LIMIT = 2 * 1024 * 1024  # a policy set of real size is larger than an order
MAX_FILES = 500
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}\.ya?ml$")


class ShadowBody(TypedDict):
    """A policy set as `apex-oms policy shadow DIR` sends it: each rule file's text
    by its name, and compliance.yaml's text."""

    files: dict[str, str]
    compliance: str


class ShadowSet(TypedDict):
    policy_digest: str
    compliance_digest: str
    files: list[str]
    rules: int
    loaded_at: str
    loaded_by: str
    judged: int
    differences: int
    dropped: int
    errors: int
    queued: int


class ShadowView(TypedDict):
    """The shadow (null: none loaded), the latest differences it recorded (at most
    100, oldest first; the chain holds every one), and the bound on shadow sets."""

    shadow: ShadowSet | None
    differences: list[dict[str, Any]]
    loads: int
    limit: int
    queue_size: int


def _view(services: Services) -> ShadowView:
    shadows = services.gateway.shadows
    current = shadows.current
    return {
        "shadow": current.view() if current is not None else None,  # type: ignore[typeddict-item]
        "differences": list(current.recent) if current is not None else [],
        "loads": shadows.loads,
        "limit": shadows.limit,
        "queue_size": shadows.queue_size,
    }


def _files(raw: dict[str, Any]) -> tuple[dict[str, str], str, list[dict[str, str]]]:
    """The body's rule files and compliance text, and every problem with them."""
    problems = [
        field_error(key[:200], "not a field of this route")
        for key in sorted(raw)
        if key not in ("files", "compliance")
    ]
    files, compliance = raw.get("files"), raw.get("compliance")
    if not isinstance(files, dict) or not files:
        problems.append(field_error("files", "required: an object of rule file name -> text"))
        files = {}
    elif len(files) > MAX_FILES:
        problems.append(field_error("files", f"at most {MAX_FILES} files (got {len(files)})"))
    for name, text in files.items():
        if not _FILE.match(name) or name == COMPLIANCE_FILE:
            problems.append(field_error(f"files.{name[:100]}", "not a rule file name (*.yaml)"))
        elif not isinstance(text, str):
            problems.append(field_error(f"files.{name}", "must be the file's text"))
    if not isinstance(compliance, str):
        problems.append(field_error("compliance", "required: compliance.yaml's text"))
        compliance = ""
    return files, compliance, problems


class ShadowController(Controller):
    path = "/v1/policies/shadow"
    tags = ("policies",)
    security = ({"bearer": []},)

    @get("/", guards=[COMPLIANCE], summary="The shadow policy set and its differences",
         responses=errors(401, 403))  # fmt: skip
    async def get_shadow(self, services: ServicesDep) -> ShadowView:
        return _view(services)

    @post(
        "/",
        guards=[COMPLIANCE],
        status_code=200,
        summary="Load a candidate policy set as the shadow (it decides nothing)",
        description=(
            "The set is validated as `policy validate` does; an invalid one is refused"
            " (`policy_invalid`, with `issues`). Once loaded, it judges every order beside"
            " the enforced set, off the order's path (a bounded queue and one worker:"
            " an order waits for no shadow work; a full queue drops and counts). Each"
            " verdict that differs from the enforced one is a `shadow_difference` record in"
            " the chain and counted in /metrics. Loading replaces the shadow there is. The"
            " service compiles at most `limit` distinct shadow sets over its life (the"
            " rules engine never frees one): past it, 409 `shadow_limit_reached`; loading a"
            " set loaded before does not count again. Body limit: 2 MiB."
        ),
        operation_class=body(ShadowBody),
        responses=errors(
            401,
            403,
            409,
            413,
            422,
            s409="The service has compiled as many shadow sets as it may"
            " (`shadow_limit_reached`); restart it to load another.",
            s422="The set is invalid (`policy_invalid`, `issues`), or the body is bad.",
        ),
    )
    async def load_shadow(self, request: Call, services: ServicesDep) -> ShadowView:
        actor, intake = request.user, services.intake
        raw = await intake.object(request, "shadow", actor, limit=BODY_LIMIT)
        files, compliance, problems = _files(raw)
        if problems:
            await intake.refuse(
                "shadow", actor, 422, "invalid_request", "a shadow set needs its files", problems
            )

        def load() -> ShadowView | list[Any] | ShadowLimitReached:
            with tempfile.TemporaryDirectory(prefix="apex-shadow-") as name:
                directory = Path(name)
                for file, text in files.items():
                    (directory / file).write_text(text, encoding="utf-8", newline="")
                (directory / COMPLIANCE_FILE).write_text(compliance, encoding="utf-8", newline="")
                issues = validate_policies(directory)
                if issues:
                    return issues
                loaded = load_policies(directory)
                keep_version(services.store, directory, loaded, services.clock)
            try:
                services.gateway.shadows.load(loaded, actor)
            except ShadowLimitReached as exc:
                return exc
            return _view(services)

        result = await services.threads.run(load)
        if isinstance(result, ShadowLimitReached):
            await intake.refuse(
                "shadow",
                actor,
                409,
                "shadow_limit_reached",
                str(result),
                [field_error("(body)", str(result))],
            )
        if isinstance(result, list):
            issues = [_issue(vars(i)) for i in result]
            shown = [field_error(str(i["file"] or "(policies)"), i["message"]) for i in issues[:20]]
            await intake.refuse(
                "shadow",
                actor,
                422,
                "policy_invalid",
                "the candidate policy set is invalid; no shadow was loaded",
                shown,
                issues=issues,
            )
        assert not isinstance(result, list | ShadowLimitReached)
        return result

    @delete(
        "/",
        guards=[COMPLIANCE],
        status_code=200,
        summary="Drop the shadow policy set",
        responses=errors(401, 403, 404, s404="No shadow set is loaded (`no_shadow`)."),
    )
    async def drop_shadow(self, services: ServicesDep) -> ShadowView:
        dropped = await services.threads.run(services.gateway.shadows.drop)
        if dropped is None:
            raise ApiError(404, "no_shadow", "no shadow policy set is loaded")
        view = _view(services)
        view["shadow"] = dropped.view()  # type: ignore[typeddict-item]
        view["differences"] = list(dropped.recent)
        return view


def _issue(issue: dict[str, Any]) -> dict[str, Any]:
    """A validator issue, its file named as sent (not the temporary directory's path)."""
    file = issue.get("file")
    if isinstance(file, str):
        issue["file"] = Path(file).name if "apex-shadow-" in file else file
    return issue
