"""Service settings, read from the environment (only `api/` reads it)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import InvalidArgument

from .policy_source import policies_dir

__all__ = ["Settings"]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path
    database_url: str
    policies: Path
    # the trusted public keys and trust.yaml: APEX_KEYS, else ./keys
    keys: Path = Path("keys")
    max_body_bytes: int = 64 * 1024
    sim_seed: int = 0
    sim_slippage_bps: float = 0.0
    # connection limits (api/server.py, docs/operations.md "Connections")
    keep_alive_timeout: float = Field(default=5.0, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1000, gt=0)
    # signed audit checkpoints (engine/checkpoints.py, docs/audit.md)
    checkpoint_records: int = Field(default=1000, gt=0)
    checkpoint_seconds: float = Field(default=60.0, gt=0)
    # the broker configuration (SPEC section 11, docs/brokers.md): APEX_BROKERS, else
    # $APEX_HOME/brokers.yaml when it exists; None: simulation only, no paper or live
    brokers: Path | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("APEX_HOME") or Path.home() / ".apex-oms").expanduser()
        url = env.get("APEX_DATABASE_URL") or f"sqlite:///{home / 'apex.db'}"
        return cls(
            home=home,
            database_url=url,
            # APEX_POLICIES, else ./policies, else the packaged defaults
            policies=policies_dir(env),
            keys=Path(env.get("APEX_KEYS", "").strip() or "keys").expanduser(),
            brokers=_brokers_file(env, home),
            **_simulation(env),
            **_connection_limits(env),
        )


def _brokers_file(env: dict[str, str], home: Path) -> Path | None:
    """APEX_BROKERS (it must exist: a file named on purpose and missing is an error),
    else $APEX_HOME/brokers.yaml when there is one."""
    named = env.get("APEX_BROKERS", "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise InvalidArgument(f"APEX_BROKERS: no such file: {path}")
        return path
    default = home / "brokers.yaml"
    return default if default.is_file() else None


def _simulation(env: dict[str, str]) -> dict[str, Any]:
    """The simulated broker's seed (any integer) and slippage (basis points, a
    finite number >= 0); a bad value is refused naming its variable, not a
    traceback at start-up."""
    out: dict[str, Any] = {}
    seed = env.get("APEX_SIM_SEED", "").strip()
    if seed:
        try:
            out["sim_seed"] = int(seed)
        except ValueError:
            raise InvalidArgument(f"APEX_SIM_SEED: want an integer, got {seed[:40]!r}") from None
    slippage = env.get("APEX_SIM_SLIPPAGE_BPS", "").strip()
    if slippage:
        try:
            bps = float(slippage)
        except ValueError:
            bps = -1.0
        if not (bps >= 0 and math.isfinite(bps)):
            raise InvalidArgument(
                f"APEX_SIM_SLIPPAGE_BPS: want basis points >= 0, got {slippage[:40]!r}"
            )
        out["sim_slippage_bps"] = bps
    return out


# setting name -> (environment variable, how it is read)
_LIMITS: dict[str, tuple[str, type[float] | type[int]]] = {
    "keep_alive_timeout": ("APEX_KEEP_ALIVE_TIMEOUT", float),
    "header_timeout": ("APEX_HEADER_TIMEOUT", float),
    "body_timeout": ("APEX_BODY_TIMEOUT", float),
    "max_connections": ("APEX_MAX_CONNECTIONS", int),
    "checkpoint_records": ("APEX_CHECKPOINT_RECORDS", int),
    "checkpoint_seconds": ("APEX_CHECKPOINT_SECONDS", float),
}


def _connection_limits(env: dict[str, str]) -> dict[str, Any]:
    """The limits the environment sets; a value that is not a positive number is
    refused naming its variable (unset or empty: the default)."""
    out: dict[str, Any] = {}
    for field, (variable, kind) in _LIMITS.items():
        raw = env.get(variable, "").strip()
        if not raw:
            continue
        try:
            value = kind(raw)
        except ValueError:
            value = 0
        if not (value > 0 and math.isfinite(value)):
            kind_name = "an integer" if kind is int else "a number of seconds"
            raise InvalidArgument(f"{variable}: want {kind_name} > 0, got {raw!r}")
        out[field] = value
    return out
