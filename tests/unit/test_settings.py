"""Settings from the environment: a bad value is refused naming its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import Settings
from engine.errors import InvalidArgument


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("APEX_SIM_SEED", "seven", id="seed-word"),
        pytest.param("APEX_SIM_SEED", "1.5", id="seed-fraction"),
        pytest.param("APEX_SIM_SLIPPAGE_BPS", "x", id="slippage-word"),
        pytest.param("APEX_SIM_SLIPPAGE_BPS", "-1", id="slippage-negative"),
        pytest.param("APEX_SIM_SLIPPAGE_BPS", "nan", id="slippage-nan"),
        pytest.param("APEX_SIM_SLIPPAGE_BPS", "inf", id="slippage-inf"),
    ],
)
def test_from_env_when_a_simulation_setting_is_bad_then_it_is_refused_naming_it(
    variable: str, value: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument, match=variable):
        Settings.from_env({"APEX_HOME": str(tmp_path), variable: value})


def test_from_env_when_simulation_settings_are_given_then_they_are_read(tmp_path: Path) -> None:
    env = {"APEX_HOME": str(tmp_path), "APEX_SIM_SEED": "-3", "APEX_SIM_SLIPPAGE_BPS": "2.5"}
    settings = Settings.from_env(env)
    assert (settings.sim_seed, settings.sim_slippage_bps) == (-3, 2.5)


def test_from_env_when_simulation_settings_are_unset_then_the_defaults_hold(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({"APEX_HOME": str(tmp_path)})
    assert (settings.sim_seed, settings.sim_slippage_bps) == (0, 0.0)
