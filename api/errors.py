"""Every error the API answers has one shape, `{code, detail, errors}` (plus
`record` when an attempt was logged, and a few documented extras), whatever
raised it: our `ApiError`, Litestar's own HTTP exceptions, or a crash."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from engine.errors import ApexError, StoreUnavailable

__all__ = ["EXCEPTION_HANDLERS", "ApiError", "field_error"]

log = logging.getLogger("apex.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def field_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


class ApiError(ApexError):
    """An answer other than success: its HTTP status, a stable code, a human detail,
    the fields at fault, and extras (`record`, `missing`, `issues`)."""

    code = "api_error"

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        errors: Sequence[Mapping[str, str]] = (),
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = [dict(e) for e in errors]
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "errors": self.errors, **self.extra}


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return Response(exc.body(), status_code=exc.status)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    errors: list[dict[str, str]] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        # Litestar's own parameter validation: name each parameter at fault
        errors = [
            field_error(str(e.get("key", "(request)")), str(e.get("message", "invalid")))
            for e in exc.extra
            if isinstance(e, dict)
        ]
    body = {"code": _HTTP_CODES.get(exc.status_code, "http_error"), "detail": exc.detail}
    return Response(
        {**body, "errors": errors}, status_code=exc.status_code, headers=exc.headers or None
    )


def _store_unavailable(_: Request[Any, Any, Any], exc: StoreUnavailable) -> Response[Any]:
    # one line: in an outage every request lands here, and the message already
    # names what was being done and the driver's error; the traceback at debug
    log.error("store unavailable: %s", exc)
    log.debug("store unavailable", exc_info=exc)
    detail = "the store could not be read or written; try again"
    return Response({"code": exc.code, "detail": detail, "errors": []}, status_code=503)


def _crash(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error", exc_info=exc)
    return Response(
        {"code": "internal_error", "detail": "unexpected error; it has been logged", "errors": []},
        status_code=500,
    )


EXCEPTION_HANDLERS: Any = {
    ApiError: _api_error,
    HTTPException: _http_error,
    StoreUnavailable: _store_unavailable,
    Exception: _crash,
}
