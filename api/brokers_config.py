"""brokers.yaml (SPEC section 11, docs/brokers.md): which adapter serves paper and
which serves live, with its connection settings. Credentials are never in the
file, only the names of the environment variables that hold them.

Validation is strict and says which field is wrong, and never what it holds:
a value can be a credential pasted in the wrong place, so an error names the
key and the kind of value found (`text`, `a number`), not the value. Unknown
keys are refused with the nearest known one; a key that looks like a credential
(`key_id:`, `token:`) is refused with the name it should have had
(`key_id_env:`); an `_env` value must be a valid environment variable name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adapters.base import BrokerConfigError
from adapters.registry import ADAPTERS, GATE_KEYS, KEYS, ROLES, Kind, build
from engine.broker import BrokerAdapter, BrokerJournal, SessionLog
from engine.clock import Clock

__all__ = ["BrokerSection", "BrokersConfig", "build_brokers", "load_brokers"]

FILE = "brokers.yaml"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9.:\-\[\]]{1,253}$")
_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s]*)?$")
_WS_URL = re.compile(r"^wss?://[^\s/?#]+(/[^\s]*)?$")
_TEXT_MAX = 128
_ADAPTER_NAME = re.compile(r"^[a-z_]{1,20}$")  # shown back: it cannot be a credential
# keys that would hold a credential's value: refused with the `_env` key to use
_SECRETS = ("key", "secret", "token", "password", "passwd", "credential", "api_key")


@dataclass(frozen=True)
class BrokerSection:
    """One role's section, validated: `values` as in the file (`adapter` included)."""

    role: str
    adapter: str
    values: Mapping[str, object]

    def get(self, key: str) -> object:
        return self.values.get(key)


@dataclass(frozen=True)
class BrokersConfig:
    path: Path | None
    sections: Mapping[str, BrokerSection]

    def section(self, role: str) -> BrokerSection | None:
        return self.sections.get(role)


def load_brokers(path: Path | None) -> BrokersConfig:
    """The file, validated (None: no file, no paper or live broker). Raises
    `BrokerConfigError` naming the first wrong field."""
    if path is None:
        return BrokersConfig(None, {})
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(FILE, f"cannot read {path} ({type(exc).__name__})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        # the message quotes the line, which may hold what should not be printed
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BrokerConfigError(FILE, f"not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise BrokerConfigError(FILE, f"not valid YAML ({type(exc).__name__})") from None
    if data is None:
        return BrokersConfig(path, {})
    if not isinstance(data, dict):
        raise BrokerConfigError(FILE, f"want: a mapping with paper: and live:, got: {_kind(data)}")
    sections: dict[str, BrokerSection] = {}
    for role, value in data.items():
        if role not in ROLES:
            raise BrokerConfigError(str(role), "unknown section" + _hint(str(role), ROLES))
        sections[role] = _section(role, value)
    return BrokersConfig(path, sections)


def build_brokers(
    config: BrokersConfig,
    env: Mapping[str, str],
    *,
    clock: Clock,
    journal: Callable[[str], BrokerJournal] | None = None,
    seed: int = 0,
    slippage_bps: float = 0.0,
    taken: tuple[str, ...] = ("simulated",),
    session_log: Callable[[str], SessionLog] | None = None,
) -> dict[str, BrokerAdapter]:
    """Role -> adapter for every section; raises `BrokerConfigError` naming the field.
    Every broker's name is unique (orders and the journal are keyed by it), also
    against `taken` (the simulation mode's)."""
    built: dict[str, BrokerAdapter] = {}
    names = set(taken)
    for role, section in config.sections.items():
        broker = build(
            role, section.values, env, clock=clock, journal=journal, seed=seed,
            slippage_bps=slippage_bps, session_log=session_log,
        )  # fmt: skip
        if not broker.name or len(broker.name) > 32 or broker.name in names:
            raise BrokerConfigError(
                f"{role}.adapter",
                f"broker name {broker.name!r} is empty, longer than 32 or already used "
                f"(in use: {', '.join(sorted(names))})",
            )
        names.add(broker.name)
        built[role] = broker
    return built


def _section(role: str, value: object) -> BrokerSection:
    if not isinstance(value, dict):
        want = "a mapping with adapter: and its keys"
        raise BrokerConfigError(role, f"want: {want}, got: {_kind(value)}")
    adapter = value.get("adapter")
    if adapter is None:
        raise BrokerConfigError(f"{role}.adapter", f"required (one of {', '.join(ADAPTERS)})")
    if not isinstance(adapter, str) or adapter not in ADAPTERS:
        named = isinstance(adapter, str) and _ADAPTER_NAME.match(adapter) is not None
        shown = repr(adapter) if named else _kind(adapter)
        raise BrokerConfigError(
            f"{role}.adapter",
            f"want: one of {', '.join(ADAPTERS)}, got: {shown}"
            + (_hint(str(adapter), ADAPTERS) if named else ""),
        )
    known = {**KEYS[adapter], **GATE_KEYS}
    for key in value:
        name = str(key)
        field = f"{role}.{name}"
        if name == "adapter":
            continue
        if name not in known:
            if _looks_secret(name):
                raise BrokerConfigError(
                    field,
                    "credentials are never in this file: name the environment variable "
                    f"that holds it instead ({_env_key(name, known)})",
                )
            raise BrokerConfigError(
                field, f"unknown key for adapter {adapter}" + _hint(name, tuple(known))
            )
        _check(field, known[name][0], value[key])
    for name, (_, required) in known.items():
        if required and name not in value:
            raise BrokerConfigError(f"{role}.{name}", f"required for adapter {adapter}")
    return BrokerSection(role, adapter, dict(value))


def _check(field: str, kind: Kind, value: object) -> None:
    """One value against its kind; the error says what was wanted and what kind of
    value was found, never the value."""
    if kind in ("integer", "port"):
        low, high = (1, 65535) if kind == "port" else (0, 2**31 - 1)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BrokerConfigError(field, f"want: an integer {low}..{high}, got: {_kind(value)}")
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            raise BrokerConfigError(field, f"want: true or false, got: {_kind(value)}")
        return
    if kind == "seconds":
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise BrokerConfigError(field, f"want: a number of seconds > 0, got: {_kind(value)}")
        return
    if not isinstance(value, str) or not value.strip():
        raise BrokerConfigError(field, f"want: {_WANT[kind]}, got: {_kind(value)}")
    if kind == "env":
        if not _ENV_NAME.match(value):
            raise BrokerConfigError(
                field,
                "want: the NAME of an environment variable (letters, digits, _), not the "
                "credential itself; got: text that is not a variable name",
            )
        return
    pattern = {"url": _URL, "ws_url": _WS_URL, "host": _HOST}.get(kind)
    if pattern is not None and not pattern.match(value):
        raise BrokerConfigError(field, f"want: {_WANT[kind]}, got: text that is not one")
    if kind == "text" and (len(value) > _TEXT_MAX or not value.isprintable()):
        raise BrokerConfigError(field, f"want: {_WANT[kind]}, got: text that is not one")


_WANT: dict[str, str] = {
    "url": "an http:// or https:// URL",
    "ws_url": "a ws:// or wss:// URL",
    "env": "the name of an environment variable",
    "host": "a host name or address",
    "text": f"printable text of at most {_TEXT_MAX} characters",
}


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return not lowered.endswith("_env") and any(word in lowered for word in _SECRETS)


def _env_key(key: str, known: Mapping[str, tuple[Kind, bool]]) -> str:
    """The `_env` key meant: `key_id` -> `key_id_env`, else the adapter's env keys."""
    envs = [k for k, (kind, _) in known.items() if kind == "env"]
    if f"{key}_env" in envs:
        return f"use {key}_env:"
    if envs:
        return "use " + " / ".join(f"{k}:" for k in envs)
    return "this adapter takes no credentials here"


def _hint(name: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    want = f" (want: one of {', '.join(choices)})" if choices else " (this adapter takes none)"
    return f"; did you mean {close[0]}?" if close else want


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice (the last one would win silently)."""


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise BrokerConfigError(str(key), f"given twice (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
