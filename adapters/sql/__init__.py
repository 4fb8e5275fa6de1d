"""The SQL store: engine.ports.Store on SQLite or PostgreSQL (`SqlStore(url)`)."""

from __future__ import annotations

from ._dialect import mask_url
from ._store import SqlStore
from .journal import SqlJournal

__all__ = ["SqlJournal", "SqlStore", "mask_url"]
