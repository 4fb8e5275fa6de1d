"""Request bodies, read by us rather than by Litestar: malformed JSON and
oversize bodies get the same JSON error shape as every other failure and are
logged in the chain as rejected attempts (SPEC section 6)."""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Request

from engine.gateway.outcome import Actor
from engine.limits import MAX_DEPTH

from ._threads import GatewayThreads
from .errors import ApiError, field_error
from .metrics import Metrics

__all__ = ["BodyRefused", "Intake", "parse"]


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
        field = "(body)"
        if problem is None:
            try:
                return parse(raw)
            except BodyRefused as exc:
                problem, field = (422, exc.code, str(exc)), exc.field
            except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
                problem = (422, "malformed_json", f"body is not valid JSON: {exc}")
        status, code, detail = problem
        problems = [(field, detail)]
        outcome = await self._threads.run(self._gateway.reject, operation, problems, actor)
        self._metrics.decision(operation, "rejected", [])
        raise ApiError(status, code, detail, [field_error(field, detail)], record=outcome.record)


class BodyRefused(ValueError):
    """A body that is JSON to a lenient reader but not to us; `field` names the
    part at fault."""

    def __init__(self, code: str, detail: str, field: str = "(body)") -> None:
        super().__init__(detail)
        self.code, self.field = code, field


def parse(raw: bytes) -> Any:
    """A JSON body, strictly: UTF-8 without a byte-order mark (json.loads would
    take UTF-16 and UTF-32 too), nested at most MAX_DEPTH deep (checked before
    any parser recurses: json.loads, and every reader of the value after it,
    would otherwise recurse once per level), and no key twice in one object
    (json.loads keeps the last, so `"symbol":"RSTR",...,"symbol":"AAPL"` would
    be judged as AAPL while a log or another reader sees RSTR)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        detail = f"body is not UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})"
        raise BodyRefused("not_utf8", detail) from exc
    if text.startswith("\ufeff"):
        raise BodyRefused(
            "byte_order_mark", "body starts with a byte-order mark; send UTF-8 without"
        )
    _check_depth(text)
    parsed = json.loads(text or "null", object_pairs_hook=_unique_keys)
    # "\ud800" parses to a lone surrogate, which is not text: no record holding it
    # could be stored or hashed as UTF-8
    if "\\u" in text:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    return parsed


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                name = key.encode("utf-8", "backslashreplace").decode("utf-8")[:200]
                raise BodyRefused(
                    "duplicate_key", f"key {name!r} appears twice in one object", name
                )
            seen.add(key)
    return obj


# A string (escapes included; an unterminated one runs to the end) or a bracket.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def _check_depth(text: str) -> None:
    """Refuse a body whose arrays and objects nest deeper than MAX_DEPTH, counting
    brackets outside strings only (`"[[["` is text, not nesting)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # it cannot nest deeper than it has openers: every order takes this path
    depth = 0
    for token in _TOKENS.finditer(text):
        mark = token.group()
        if mark in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise BodyRefused(
                    "nesting_too_deep",
                    f"body nests arrays and objects deeper than {MAX_DEPTH} levels "
                    f"(at character {token.start()})",
                )
        elif mark in ("]", "}"):
            depth -= 1
