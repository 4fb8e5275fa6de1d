"""Bearer tokens: created once, stored only as a sha256 hash, each with one role;
a trader's token is bound to accounts (none named: every account in the
compliance configuration's `allowed_accounts` at the time of each request)."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Collection
from datetime import datetime

from engine.gateway.outcome import Actor
from engine.ports import Store

__all__ = ["ROLES", "TokenBook", "TokenRefused", "token_id_of"]

ROLES = ("trader", "compliance", "auditor", "admin")
_ACCOUNT = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")  # as an order's `account`
_CACHE_SECONDS = 5.0


class TokenRefused(ValueError):
    """A token that cannot be created as asked (unknown role, bad account)."""


class TokenBook:
    """Issues and checks tokens. Checks are cached briefly: hashing is cheap,
    the database round trip is not; a revoked token lives at most a few seconds."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, Actor | None]] = {}
        self._lock = threading.Lock()

    def create(
        self, role: str, label: str, now: datetime, accounts: Collection[str] | None = None
    ) -> str:
        if role not in ROLES:
            raise TokenRefused(f"unknown role {role!r} (one of {', '.join(ROLES)})")
        if accounts is not None and role != "trader":
            raise TokenRefused(f"only a trader token is bound to accounts (role: {role})")
        if accounts is not None and not accounts:
            raise TokenRefused("a trader token bound to accounts needs at least one")
        for account in accounts or ():
            if not _ACCOUNT.match(account):
                raise TokenRefused(f"not an account id: {account[:80]!r}")
        token_id = secrets.token_hex(4)
        token = f"apx_{token_id}_{secrets.token_urlsafe(24)}"
        bound = sorted(set(accounts)) if accounts is not None else None
        with self._store.writing() as w:
            w.add_token(token_id, _hash(token), role, label, bound, now)
        return token

    def check(self, token: str) -> Actor | None:
        """The actor a live token stands for, or None."""
        digest = _hash(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        row = self._store.token(digest)
        actor = Actor.of(row.token_id, row.role, row.accounts) if row is not None else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + _CACHE_SECONDS, actor)
        return actor


def token_id_of(token: str) -> str:
    """The public id inside a token (`apx_<id>_<secret>`)."""
    return token.split("_")[1]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
