"""Bearer tokens: created once, stored only as a sha256 hash, each with one role."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import datetime

from adapters.sql.store import Store

__all__ = ["ROLES", "Principal", "TokenBook"]

ROLES = ("trader", "compliance", "auditor", "admin")
_CACHE_SECONDS = 5.0


class Principal:
    __slots__ = ("role", "token_id")

    def __init__(self, token_id: str, role: str) -> None:
        self.token_id = token_id
        self.role = role

    def may(self, roles: tuple[str, ...]) -> bool:
        return self.role == "admin" or self.role in roles


class TokenBook:
    """Issues and checks tokens. Checks are cached briefly: hashing is cheap,
    the database round trip is not; a revoked token lives at most a few seconds."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def create(self, role: str, label: str, now: datetime) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
        token_id = secrets.token_hex(4)
        token = f"apx_{token_id}_{secrets.token_urlsafe(24)}"
        with self._store.writing() as w:
            w.add_token(token_id, _hash(token), role, label, now)
        return token

    def check(self, token: str) -> Principal | None:
        digest = _hash(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        found = self._store.token(digest)
        principal = Principal(*found) if found else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + _CACHE_SECONDS, principal)
        return principal


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
