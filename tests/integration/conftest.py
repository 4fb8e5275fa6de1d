"""Fixtures for the integration tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`tokens create` and `demo` silence logging for the whole process: give it
    back to the next test."""
    yield
    logging.disable(logging.NOTSET)
