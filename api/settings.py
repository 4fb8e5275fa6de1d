"""Service settings, read from the environment (only `api/` reads it)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["Settings"]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path
    database_url: str
    policies: Path
    max_body_bytes: int = 64 * 1024
    sim_seed: int = 0
    sim_slippage_bps: float = 0.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("APEX_HOME") or Path.home() / ".apex-oms").expanduser()
        url = env.get("APEX_DATABASE_URL") or f"sqlite:///{home / 'apex.db'}"
        return cls(
            home=home,
            database_url=url,
            policies=Path(env.get("APEX_POLICIES", "policies")),
            sim_seed=int(env.get("APEX_SIM_SEED", "0")),
            sim_slippage_bps=float(env.get("APEX_SIM_SLIPPAGE_BPS", "0")),
        )
