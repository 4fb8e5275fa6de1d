"""Request bodies, read by us rather than by Litestar: malformed JSON and
oversize bodies get the same JSON error shape as every other failure and are
logged in the chain as rejected attempts (SPEC section 6)."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request

from engine.gateway.outcome import Actor

from ._threads import GatewayThreads
from .errors import ApiError, field_error
from .metrics import Metrics

__all__ = ["Intake"]


class Intake:
    def __init__(self, gateway: Any, threads: GatewayThreads, metrics: Metrics, limit: int) -> None:
        self._gateway = gateway
        self._threads = threads
        self._metrics = metrics
        self.limit = limit

    async def json(self, request: Request[Any, Any, Any], operation: str, actor: Actor) -> Any:
        """The parsed JSON body (None when there is none), or an ApiError after
        logging the rejected attempt."""
        limit = self.limit
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
        problems = [("(body)", detail)]
        outcome = await self._threads.run(self._gateway.reject, operation, problems, actor)
        self._metrics.decision(operation, "rejected", [])
        raise ApiError(status, code, detail, [field_error("(body)", detail)], record=outcome.record)
