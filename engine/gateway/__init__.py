"""The order gateway: lifecycle, submit, amend, controls, recovery."""

from __future__ import annotations

from .desk import MODES, Listener
from .gateway import Gateway
from .outcome import SYSTEM, Actor, ModeRefused, Outcome, OutcomeKind, StateRefused

__all__ = [
    "MODES",
    "SYSTEM",
    "Actor",
    "Gateway",
    "Listener",
    "ModeRefused",
    "Outcome",
    "OutcomeKind",
    "StateRefused",
]
