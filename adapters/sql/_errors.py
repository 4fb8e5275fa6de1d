"""Driver errors stop at the store's edge: each becomes `StoreUnavailable`, with
the driver's (or SQLAlchemy's) error as its cause."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.errors import StoreUnavailable

__all__ = ["CommitUnknown", "Errors", "StoreUnavailable", "describe", "reason", "unavailable"]

Errors = tuple[type[BaseException], ...]


class CommitUnknown(StoreUnavailable):
    """COMMIT itself failed (say, the connection dropped during it): the transaction
    may or may not have landed. Nothing in it is run again; whoever wrote it finds
    out which by reading (crash recovery resolves a `submitted` record that landed)."""


def describe(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}: {error}"


def reason(error: BaseException) -> str:
    """The driver's own words for a failure, on one line: the innermost cause's
    first line (SQLAlchemy wraps the driver's error, and we wrap SQLAlchemy's)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextmanager
def unavailable(errors: Errors, doing: str) -> Iterator[None]:
    """Raise `StoreUnavailable` for any of `errors` raised while `doing`."""
    try:
        yield
    except errors as exc:
        raise StoreUnavailable(f"{doing} failed: {describe(exc)}") from exc
