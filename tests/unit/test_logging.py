"""The per-request log lines: `log_fields` writes, without a LogRecord, the line
the JSON formatter would write for the same INFO record."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pytest

from api._logging import _fast_timestamp, _info_line, _JsonFormatter

FIELDS: list[dict[str, Any]] = [
    {
        "method": "GET",
        "path": "/v1/orders/ORD-2026-000001",
        "status": 200,
        "duration_ms": 1.234,
        "request_id": "0f" * 16,
        "principal": None,
    },
    {"path": '/a"b\\c\n\u00e9\u2028\U0001f600', "status": None, "principal": "ab12cd34"},
    {"triggers": ["risk_denied", "engine_error"], "reduce_only": True, "n": 10**20},
    {"duration_ms": 0.0, "x": -5, "y": 1e-7, "z": 1e16, "nan": float("nan")},
    {"nested": {"a": [1, {"b": None}]}, "empty": "", "tab": "\t"},
    {"message": "replaced", "level": "odd"},  # fields that replace base keys
]


def _formatted(name: str, message: str, fields: dict[str, Any]) -> str:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)
    record.fields = fields
    return _JsonFormatter().format(record)


@pytest.mark.parametrize("fields", FIELDS, ids=range(len(FIELDS)))
def test_info_line_when_given_fields_then_the_formatters_line_but_the_time(
    fields: dict[str, Any],
) -> None:
    fast = json.loads(_info_line("apex.access", "GET /x 200", fields))
    slow = json.loads(_formatted("apex.access", "GET /x 200", fields))
    fast_ts, slow_ts = fast.pop("ts"), slow.pop("ts")

    assert list(fast) == list(slow)
    assert json.dumps(fast) == json.dumps(slow)  # NaN included
    datetime.fromisoformat(fast_ts.replace("Z", "+00:00"))
    assert fast_ts[:4] == slow_ts[:4]


def test_info_line_when_no_field_replaces_a_base_key_then_text_equals_the_formatters() -> None:
    fields = FIELDS[0]
    fast = _info_line("apex.access", "GET /x 200", fields)
    slow = _formatted("apex.access", "GET /x 200", fields)
    cut = fast.index('"level"')
    assert fast[cut:] == slow[slow.index('"level"') :]


@pytest.mark.parametrize(
    ("now", "text"),
    [
        (1764518400.0, "2025-11-30T16:00:00.000000Z"),
        (1764518400.25, "2025-11-30T16:00:00.250000Z"),
        (1764518459.999999, "2025-11-30T16:00:59.999998Z"),
        (1764518460.5, "2025-11-30T16:01:00.500000Z"),
    ],
)
def test_fast_timestamp_when_seconds_change_then_each_reads_its_own_second(
    now: float, text: str
) -> None:
    assert _fast_timestamp(now)[:20] == text[:20]
    assert _fast_timestamp(now).endswith("Z")
