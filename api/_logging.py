"""Structured JSON logs, one object per line on standard error.

A record may carry `extra={"fields": {...}}`: those keys are added to its line
(the access log's `method`, `path`, `status`, ...; the decision log's
`order_id`, `triggers`, ...) after the four every line has.

`log_fields` writes such a line for the per-request logs (access, decision).
When the process logs through `configure_logging`'s handler alone, it writes
the very line that handler would, without building a `LogRecord` and passing it
through the handler chain: in a loaded microbenchmark that is about five times
cheaper, and the access log runs on every request. Otherwise (a test's capture,
another handler) it goes through `logging` as usual.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["configure_logging", "log_fields"]

_handler: logging.StreamHandler[Any] | None = None


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__.get("fields")
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    global _handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _handler = handler
    # Our lines name no source line, thread or process: not collecting them saves
    # about a third of each log call (the logging HOWTO, "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step


def log_fields(logger: logging.Logger, message: str, fields: Mapping[str, Any]) -> None:
    """One INFO line from `logger` carrying `fields` (module docstring)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is None or not _only_through(logger, handler):
        logger.info("%s", message, extra={"fields": fields})
        return
    line = _info_line(logger.name, message, fields) + handler.terminator
    with handler.lock or _NO_LOCK:
        try:
            handler.stream.write(line)
            handler.flush()
        except Exception:
            handler.handleError(logging.makeLogRecord({"msg": message}))


# json.dumps(str, ensure_ascii=False) is this C function's answer, wrapped in more
# Python than the access log can afford on every request
_string = json.encoder.encode_basestring
# the last whole second seen and its ISO text (one tuple, read and replaced whole,
# so threads never pair one second's text with another's fraction)
_second: tuple[int, str] = (-1, "")


def _fast_timestamp(now: float) -> str:
    """`_timestamp(now)` with the date and time formatted once per second."""
    global _second
    whole, text = _second
    if int(now) != whole:
        whole = int(now)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{int((now - whole) * 1e6):06d}Z"


def _value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return str(_string(value))
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)  # what json.dumps writes for a finite float
    return json.dumps(value, ensure_ascii=False)


def _info_line(name: str, message: str, fields: Mapping[str, Any]) -> str:
    """The line `_JsonFormatter` writes for an INFO record carrying `fields`: the
    same keys in the same order, the same JSON, built without a `LogRecord`, a
    dict copy and a general encoder (tests/unit/test_logging.py pins the
    sameness)."""
    if not _BASE_KEYS.isdisjoint(fields):  # a field that replaces a base key: rare
        entry = {"ts": _fast_timestamp(time.time()), "level": "info", "logger": name}
        entry["message"] = message
        entry.update(fields)
        return json.dumps(entry, ensure_ascii=False)
    parts = [
        f'{{"ts": "{_fast_timestamp(time.time())}", "level": "info", "logger": {_string(name)}, '
        f'"message": {_string(message)}'
    ]
    for key, value in fields.items():
        parts.append(f", {_string(key)}: {_value(value)}")
    parts.append("}")
    return "".join(parts)


_BASE_KEYS = frozenset(("ts", "level", "logger", "message"))


def _only_through(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Whether `handler` (on the root) is the only one `logger`'s lines reach,
    with no filter on the way."""
    current: logging.Logger | None = logger
    while current is not None and current.parent is not None:  # up to the root
        if current.handlers or current.filters or not current.propagate:
            return False
        current = current.parent
    root = logging.getLogger()
    return root.handlers == [handler] and not root.filters and not handler.filters


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


_NO_LOCK = _NoLock()
