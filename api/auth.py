"""Bearer tokens: created once, stored only as a sha256 hash, each with one role
and, if asked, an expiry; a trader's token is bound to accounts (none named:
every account in the compliance configuration's `allowed_accounts` at the time
of each request). A token is never logged: only its public id is."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path

from engine.clock import Clock, system_clock
from engine.gateway.outcome import Actor
from engine.ports import Store

__all__ = [
    "CACHE_SECONDS",
    "ROLES",
    "TokenBook",
    "TokenRefused",
    "parse_duration",
    "token_id_of",
    "write_secret",
]

ROLES = ("trader", "compliance", "auditor", "admin")
_ACCOUNT = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")  # as an order's `account`
# A revocation made on any replica reaches every other one through the database
# within this time: each replica re-reads a token at least this often.
CACHE_SECONDS = 0.5
_DURATION = re.compile(r"^([1-9][0-9]{0,8})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_LIFETIME = timedelta(days=3650)  # beyond any datetime arithmetic trouble


class TokenRefused(ValueError):
    """A token that cannot be created as asked (unknown role, bad account, bad expiry)."""


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `15m`, `90s`: a positive whole number and one unit."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise TokenRefused(
            f"not a duration: {text[:40]!r} (a whole number and a unit: s, m, h or d, e.g. 30d)"
        )
    lifetime = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if lifetime > _MAX_LIFETIME:
        raise TokenRefused(f"too long: {text!r} (at most {_MAX_LIFETIME.days}d)")
    return lifetime


class TokenBook:
    """Issues, checks and revokes tokens. Checks are cached for `CACHE_SECONDS`:
    hashing is cheap, the database round trip is not; expiry is judged on every
    check by the runtime's clock, so a cached token never outlives it."""

    def __init__(self, store: Store, clock: Clock = system_clock) -> None:
        self._store = store
        self._clock = clock
        # digest -> (monotonic deadline, actor or None, expires_at)
        self._cache: dict[str, tuple[float, Actor | None, datetime | None]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        role: str,
        label: str,
        now: datetime,
        accounts: Collection[str] | None = None,
        expires_in: timedelta | None = None,
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
        if expires_in is not None and expires_in <= timedelta(0):
            raise TokenRefused("a token's lifetime must be positive")
        token_id = secrets.token_hex(4)
        token = f"apx_{token_id}_{secrets.token_urlsafe(24)}"
        bound = sorted(set(accounts)) if accounts is not None else None
        expires_at = now + expires_in if expires_in is not None else None
        with self._store.writing() as w:
            w.add_token(token_id, _hash(token), role, label, bound, now, expires_at)
        return token

    def cached(self, token: str) -> bool:
        """Whether `check` would answer from the cache, without the database: the
        guard asks a thread to `check` otherwise, so that a database host that
        stops answering never holds the event loop (and `/healthz`) for its
        connect timeout."""
        hit = self._cache.get(_hash(token))
        return hit is not None and hit[0] > time.monotonic()

    def check(self, token: str) -> Actor | None:
        """The actor a live token (known, not revoked, not expired) stands for, or None.
        When the store cannot be asked this raises `StoreUnavailable` (a 503): a
        database that is down says nothing about the token, so it is never a None
        (a 401), and a failed read is not cached."""
        digest = _hash(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            actor, expires_at = hit[1], hit[2]
        else:
            row = self._store.token(digest)
            actor = Actor.of(row.token_id, row.role, row.accounts) if row is not None else None
            expires_at = row.expires_at if row is not None else None
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + CACHE_SECONDS, actor, expires_at)
        if actor is not None and expires_at is not None and self._clock() >= expires_at:
            return None
        return actor

    def revoke(self, token_id: str, at: datetime) -> bool:
        """Revoke a live token by its public id; False when there is none. Other
        replicas see it within `CACHE_SECONDS`; this one at once."""
        with self._store.writing() as w:
            revoked = w.revoke_token(token_id, at)
        with self._lock:
            self._cache.clear()
        return revoked


def token_id_of(token: str) -> str:
    """The public id inside a token (`apx_<id>_<secret>`)."""
    return token.split("_")[1]


def write_secret(path: Path, secret: str) -> None:
    """Write `secret` to a file only its owner can read (0600 from the start: a
    file created wider and narrowed later could be read in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a stale file keeps its old mode; start afresh
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret + "\n")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
