"""Driver errors stop at the store's edge: each becomes `StoreUnavailable`, with
the driver's (or SQLAlchemy's) error as its cause."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.errors import StoreUnavailable

__all__ = ["CommitUnknown", "Errors", "StoreUnavailable", "describe", "unavailable"]

Errors = tuple[type[BaseException], ...]


class CommitUnknown(StoreUnavailable):
    """COMMIT itself failed (say, the connection dropped during it): the transaction
    may or may not have landed. Nothing in it is run again; whoever wrote it finds
    out which by reading (crash recovery resolves a `submitted` record that landed)."""


def describe(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}: {error}"


@contextmanager
def unavailable(errors: Errors, doing: str) -> Iterator[None]:
    """Raise `StoreUnavailable` for any of `errors` raised while `doing`."""
    try:
        yield
    except errors as exc:
        raise StoreUnavailable(f"{doing} failed: {describe(exc)}") from exc
