"""brokers.yaml (api/brokers_config.py) and the adapter registry (adapters/registry.py):
every refusal names the field and never shows what the file holds there."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import registry
from adapters.base import BrokerConfigError
from adapters.simulated import SimulatedBroker
from api.brokers_config import build_brokers, load_brokers
from api.settings import Settings
from engine.errors import InvalidArgument
from tests.broker_stub import GOOD_SECRET
from tests.conftest import FixedClock

SECRET = "PKZ9S3CR3TV4LU3xQ7"  # what a careless user pastes


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


REFUSED = [
    ("unknown-section", "papr:\n  adapter: simulated\n", "papr", "did you mean paper?"),
    ("not-a-mapping", "- paper\n", "brokers.yaml", "want: a mapping"),
    ("section-not-a-mapping", "paper: alpaca\n", "paper", "want: a mapping"),
    ("no-adapter", "paper:\n  base_url: http://127.0.0.1:1\n", "paper.adapter", "required"),
    ("unknown-adapter", "paper:\n  adapter: alpacca\n", "paper.adapter", "did you mean alpaca?"),
    ("adapter-not-text", "paper:\n  adapter: 3\n", "paper.adapter", "got: a number"),
    (
        "unknown-key",
        "paper:\n  adapter: alpaca\n  key_id_env: A\n  secret_key_env: B\n  base_ulr: http://x\n",
        "paper.base_ulr",
        "did you mean base_url?",
    ),
    (
        "credential-pasted-as-key",
        f"paper:\n  adapter: alpaca\n  key_id: {SECRET}\n  secret_key_env: B\n",
        "paper.key_id",
        "use key_id_env:",
    ),
    (
        "secret-pasted-as-key",
        f"live:\n  adapter: oms_rest\n  base_url: http://h\n  token: {SECRET}\n",
        "live.token",
        "use token_env:",
    ),
    (
        "credential-pasted-as-env-name",
        f"paper:\n  adapter: alpaca\n  key_id_env: {SECRET}-x\n  secret_key_env: B\n",
        "paper.key_id_env",
        "NAME of an environment variable",
    ),
    (
        "env-name-not-text",
        "paper:\n  adapter: alpaca\n  key_id_env: 12345\n  secret_key_env: B\n",
        "paper.key_id_env",
        "got: a number",
    ),
    (
        "missing-required-key",
        "paper:\n  adapter: alpaca\n  key_id_env: A\n",
        "paper.secret_key_env",
        "required for adapter alpaca",
    ),
    (
        "bad-url",
        f"paper:\n  adapter: alpaca\n  base_url: {SECRET}\n  key_id_env: A\n  secret_key_env: B\n",
        "paper.base_url",
        "http:// or https:// URL",
    ),
    (
        "port-not-integer",
        "live:\n  adapter: ib\n  port: '7496'\n  client_id: 1\n  account: U1\n",
        "live.port",
        "want: an integer 1..65535, got: text",
    ),
    (
        "port-out-of-range",
        "live:\n  adapter: ib\n  port: 70000\n  client_id: 1\n  account: U1\n",
        "live.port",
        "want: an integer 1..65535",
    ),
    (
        "client-id-bool",
        "live:\n  adapter: ib\n  port: 7496\n  client_id: true\n  account: U1\n",
        "live.client_id",
        "got: true/false",
    ),
    (
        "heartbeat-not-positive",
        "live:\n  adapter: oms_fix\n  host: h\n  port: 1\n  sender_comp_id: A\n"
        "  target_comp_id: B\n  heartbeat_s: 0\n",
        "live.heartbeat_s",
        "seconds > 0",
    ),
    (
        "simulated-takes-no-keys",
        f"paper:\n  adapter: simulated\n  password: {SECRET}\n",
        "paper.password",
        "takes no credentials",
    ),
    ("key-given-twice", "paper:\n  adapter: simulated\npaper:\n  adapter: ib\n", "paper", "twice"),
    (
        "bad-yaml",
        f"paper:\n  adapter: [simulated\n  x: {SECRET}\n",
        "brokers.yaml",
        "not valid YAML",
    ),
]


@pytest.mark.parametrize(("text", "field", "message"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])  # fmt: skip
def test_load_when_the_file_is_wrong_then_refused_naming_the_field_never_the_value(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    with pytest.raises(BrokerConfigError) as caught:
        load_brokers(write(tmp_path, text))

    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")
    assert SECRET not in str(caught.value)


def test_load_when_the_spec_example_then_each_role_its_adapter_and_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
paper:
  adapter: alpaca                 # alpaca | ib | oms_rest | oms_fix | simulated
  base_url: http://127.0.0.1:8701
  data_url: http://127.0.0.1:8701
  key_id_env: APCA_API_KEY_ID
  secret_key_env: APCA_API_SECRET_KEY
live:
  adapter: ib
  host: 127.0.0.1
  port: 7496
  client_id: 17
  account: U1234567
""",
    )

    config = load_brokers(path)

    assert {r: s.adapter for r, s in config.sections.items()} == {"paper": "alpaca", "live": "ib"}
    assert config.sections["live"].get("port") == 7496
    assert config.sections["paper"].get("key_id_env") == "APCA_API_KEY_ID"


def test_load_when_no_file_or_an_empty_one_then_no_broker(tmp_path: Path) -> None:
    assert load_brokers(None).sections == {}
    assert load_brokers(write(tmp_path, "# nothing yet\n")).sections == {}


def test_settings_when_apex_brokers_names_a_missing_file_then_refused(tmp_path: Path) -> None:
    env = {"APEX_HOME": str(tmp_path), "APEX_BROKERS": str(tmp_path / "nope.yaml")}

    with pytest.raises(InvalidArgument, match="APEX_BROKERS: no such file"):
        Settings.from_env(env)


def test_settings_when_home_has_brokers_yaml_then_it_is_used_else_none(tmp_path: Path) -> None:
    env = {"APEX_HOME": str(tmp_path)}
    assert Settings.from_env(env).brokers is None

    path = write(tmp_path, "paper:\n  adapter: simulated\n")
    assert Settings.from_env(env).brokers == path
    other = tmp_path / "other.yaml"
    other.write_text("", encoding="utf-8")
    assert Settings.from_env({**env, "APEX_BROKERS": str(other)}).brokers == other


# --- the registry -----------------------------------------------------------------------


def build(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> dict[str, object]:
    return dict(build_brokers(load_brokers(write(tmp_path, text)), env or {}, clock=FixedClock()))


def test_build_when_simulated_paper_then_a_simulator_named_for_its_role(tmp_path: Path) -> None:
    built = build(tmp_path, "paper:\n  adapter: simulated\n")

    broker = built["paper"]
    assert isinstance(broker, SimulatedBroker)
    assert broker.name == "simulated-paper"
    assert registry.adapter_name(broker) == "simulated"


def test_build_when_simulated_for_live_then_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError) as caught:
        build(tmp_path, "live:\n  adapter: simulated\n")

    assert (caught.value.field, caught.value.message) == (
        "live.adapter",
        "the simulated broker never serves live",
    )


@pytest.mark.parametrize("adapter", ["oms_fix"])
def test_build_when_adapter_not_written_yet_then_not_available_naming_it(
    tmp_path: Path, adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.MODULES, adapter, None)  # every adapter is written now
    keys = {
        "oms_rest": "  base_url: http://127.0.0.1:1\n  token_env: OMS_TOKEN\n",
        "oms_fix": "  host: h\n  port: 1\n  sender_comp_id: A\n  target_comp_id: B\n",
    }[adapter]

    with pytest.raises(registry.AdapterUnavailable) as caught:
        build(tmp_path, f"paper:\n  adapter: {adapter}\n{keys}")

    assert caught.value.field == "paper.adapter"
    assert caught.value.message == f"adapter {adapter} is not available yet"


def test_build_when_adapter_module_missing_then_not_available_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.MODULES, "alpaca", "adapters.no_such_module")

    with pytest.raises(registry.AdapterUnavailable) as caught:
        build(tmp_path, "paper:\n  adapter: alpaca\n  key_id_env: A\n  secret_key_env: B\n")

    assert caught.value.field == "paper.adapter"
    assert caught.value.message.startswith("adapter alpaca is not available (")


def test_build_when_module_registered_then_its_from_config_builds_with_env_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.MODULES, "alpaca", "tests.broker_stub")
    text = "paper:\n  adapter: alpaca\n  key_id_env: STUB_KEY\n  secret_key_env: STUB_SECRET\n"

    built = build(tmp_path, text, {"STUB_KEY": "k", "STUB_SECRET": GOOD_SECRET})

    assert getattr(built["paper"], "name", None) == "stub-paper"
    assert registry.adapter_name(built["paper"]) == "alpaca"  # the module it was built from


def test_build_when_adapter_does_not_declare_the_role_then_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.MODULES, "alpaca", "tests.broker_stub")
    text = (
        "live:\n  adapter: alpaca\n  base_url: http://127.0.0.1:1/paper-only\n"
        "  key_id_env: STUB_KEY\n  secret_key_env: STUB_SECRET\n"
    )

    with pytest.raises(BrokerConfigError) as caught:
        build(tmp_path, text, {"STUB_SECRET": GOOD_SECRET})

    assert caught.value.field == "live.adapter"
    assert "(stub-live) does not declare that it serves live" in caught.value.message


def test_build_when_two_sections_would_share_a_broker_name_then_refused(tmp_path: Path) -> None:
    config = load_brokers(write(tmp_path, "paper:\n  adapter: simulated\n"))

    with pytest.raises(BrokerConfigError, match="already used"):
        build_brokers(config, {}, clock=FixedClock(), taken=("simulated-paper",))
