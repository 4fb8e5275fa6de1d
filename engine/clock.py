"""The clock is an input: evaluation takes `now`, and these helpers format it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .errors import InvalidArgument

__all__ = ["Clock", "format_utc", "parse_utc", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def format_utc(moment: datetime) -> str:
    """`2026-11-27T14:30:00Z`; microseconds only when present."""
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """Parse an ISO-8601 time; a time without a zone is refused, not guessed."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise InvalidArgument(f"time {text!r} has no time zone")
    return moment.astimezone(UTC)
