"""The compliance configuration (`policies/compliance.yaml`): every threshold a rule
refers to, plus the settings the fact builder needs. A later stage signs it."""

from __future__ import annotations

from datetime import date, time
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..models import Mode

__all__ = [
    "ComplianceConfig",
    "FlowSettings",
    "ParamValue",
    "ProtocolSettings",
    "SessionSettings",
]

_Frozen = ConfigDict(frozen=True, extra="forbid")

Scalar = bool | int | float | str
# A map (`{ACC-1: 250000, ACC-2: 100000}`) is looked up by a fact field in a rule
# (`rules.Lookup`); its keys are text, matched exactly.
ParamValue = Scalar | list[Scalar] | dict[str, Scalar]
ParamGroup = dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], ParamValue]


class SessionSettings(BaseModel):
    """Trading-session calendar: `us_equities` (regular hours, New York time) or `always`."""

    model_config = _Frozen

    calendar: Literal["us_equities", "always"] = "us_equities"
    timezone: str = "America/New_York"
    open: time = time(9, 30)
    close: time = time(16, 0)
    holidays: list[date] = Field(default_factory=list)
    early_closes: dict[date, time] = Field(default_factory=dict)


class FlowSettings(BaseModel):
    """Windows over the account's recent orders."""

    model_config = _Frozen

    rate_window_s: Annotated[float, Field(gt=0, le=86_400)] = 1.0
    duplicate_window_s: Annotated[float, Field(gt=0, le=86_400)] = 5.0


class ProtocolSettings(BaseModel):
    model_config = _Frozen

    required: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(default_factory=list)


class ComplianceConfig(BaseModel):
    model_config = _Frozen

    version: Annotated[int, Field(ge=1)]
    expires: AwareDatetime
    # The digest of the rule files this configuration approves (`compliance pin`
    # writes it). Optional so that an edited, unpinned set still loads: the rules
    # are judged on their own; whether the configuration is in force is the
    # signature check's question, not the loader's.
    policy_digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None
    # The modes this configuration allows; absent means it does not restrict them.
    modes: Annotated[list[Mode], Field(min_length=1)] | None = None
    risk: ParamGroup = Field(default_factory=dict)
    compliance: ParamGroup = Field(default_factory=dict)
    market_data: ParamGroup = Field(default_factory=dict)
    flow: FlowSettings = Field(default_factory=FlowSettings)
    protocols: ProtocolSettings = Field(default_factory=ProtocolSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)

    def param(self, dotted: str) -> ParamValue | None:
        """Value of `group.name` (only the free-form groups hold parameters)."""
        group, _, name = dotted.partition(".")
        values = {
            "risk": self.risk,
            "compliance": self.compliance,
            "market_data": self.market_data,
        }.get(group)
        if values is None or not name:
            return None
        return values.get(name)
