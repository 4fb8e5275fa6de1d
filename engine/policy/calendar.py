"""Is the trading session open at a given instant?"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from .config import SessionSettings

__all__ = ["session_open", "trading_day"]


def trading_day(settings: SessionSettings, at: datetime) -> str:
    """The trading day an instant belongs to (YYYY-MM-DD in the session's
    timezone): the day the executed notional is counted against."""
    return at.astimezone(ZoneInfo(settings.timezone)).date().isoformat()


def session_open(settings: SessionSettings, now: datetime) -> bool:
    if settings.calendar == "always":
        return True
    local = now.astimezone(ZoneInfo(settings.timezone))
    if local.weekday() >= 5 or local.date() in settings.holidays:
        return False
    close = settings.early_closes.get(local.date(), settings.close)
    return settings.open <= local.time().replace(tzinfo=None) < close
