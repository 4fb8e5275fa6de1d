"""The adapters brokers.yaml can name (SPEC section 11), each imported only when a
section names it, so a missing or unfinished adapter (or its SDK) costs nothing
until it is used, and then says so in one line naming the field.

`KEYS` says, per adapter, which keys its section may hold and what each is; the
loader (api/brokers_config.py) checks them before anything is built, and each
adapter's `from_config` checks its own again. `simulated` is built here: the
in-process simulator, with the store's journal, as the simulation mode's. An
adapter whose `from_config` takes `journal` (alpaca: its fill steps) gets the
store's journal factory and opens the journal of its own broker name.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Literal

from engine.broker import BrokerAdapter, BrokerJournal, SessionLog
from engine.clock import Clock

from .base import BrokerConfigError
from .simulated import SimulatedBroker

__all__ = [
    "ADAPTERS",
    "GATE_KEYS",
    "KEYS",
    "MODULES",
    "ROLES",
    "AdapterUnavailable",
    "Kind",
    "adapter_name",
    "build",
]

ROLES = ("paper", "live")
ADAPTERS = ("alpaca", "ib", "oms_rest", "oms_fix", "simulated")

# what a key holds: an http(s) URL, a ws(s) URL, the NAME of an environment
# variable (never a credential), a host name, a TCP port, a non-negative integer,
# text, a positive number of seconds, true or false
Kind = Literal["url", "ws_url", "env", "host", "port", "integer", "text", "seconds", "boolean"]

# adapter -> key -> (kind, required); `adapter` itself is every section's first key
KEYS: dict[str, dict[str, tuple[Kind, bool]]] = {
    "alpaca": {
        "base_url": ("url", False),
        "data_url": ("url", False),
        "stream_url": ("ws_url", False),
        "key_id_env": ("env", True),
        "secret_key_env": ("env", True),
        "timeout_s": ("seconds", False),
    },
    "ib": {
        "host": ("host", False),
        "port": ("port", True),
        "client_id": ("integer", True),
        "account": ("text", True),
        "connect_timeout_s": ("seconds", False),
        "request_timeout_s": ("seconds", False),
        "quote_timeout_s": ("seconds", False),
        "reconnect_max_s": ("seconds", False),
    },
    "oms_rest": {
        "base_url": ("url", True),
        "ws_url": ("ws_url", False),
        "token_env": ("env", True),
        "timeout_s": ("seconds", False),
    },
    "oms_fix": {
        "host": ("host", True),
        "port": ("port", True),
        "sender_comp_id": ("text", True),
        "target_comp_id": ("text", True),
        "heartbeat_s": ("seconds", False),
        "mass_status": ("boolean", False),
        "positions": ("boolean", False),
    },
    "simulated": {},
}

# keys any section may hold that are the gate's, not the adapter's (never passed
# to `from_config`): `position_account`, the gateway account each full
# reconciliation sets to the broker's positions (engine/gateway/portfolio.py)
GATE_KEYS: dict[str, tuple[Kind, bool]] = {"position_account": ("text", False)}

# adapter -> the module whose `from_config` builds it (None: not available yet).
# Tests may point an adapter at a module of their own.
MODULES: dict[str, str | None] = {
    "alpaca": "adapters.alpaca",
    "ib": "adapters.ib",
    "oms_rest": "adapters.oms_rest",
    "oms_fix": "adapters.oms_fix",
}


class AdapterUnavailable(BrokerConfigError):
    """The adapter a section names cannot be built here (not written yet, or its
    module or SDK does not import)."""


def build(
    role: str,
    section: Mapping[str, object],
    env: Mapping[str, str],
    *,
    clock: Clock,
    journal: Callable[[str], BrokerJournal] | None = None,
    seed: int = 0,
    slippage_bps: float = 0.0,
    session_log: Callable[[str], SessionLog] | None = None,
) -> BrokerAdapter:
    """The adapter for one validated section; raises `BrokerConfigError` naming the
    field. Refuses an adapter whose capabilities do not declare `role`, and the
    simulator for live, whatever it declares."""
    field = f"{role}.adapter"
    adapter = section.get("adapter")
    if not isinstance(adapter, str) or adapter not in ADAPTERS:
        raise BrokerConfigError(field, f"want: one of {', '.join(ADAPTERS)}")
    if adapter == "simulated":
        if role != "paper":
            raise BrokerConfigError(field, "the simulated broker never serves live")
        broker: BrokerAdapter = SimulatedBroker(
            clock,
            seed=seed,
            slippage_bps=slippage_bps,
            name=f"simulated-{role}",
            journal=journal(f"simulated-{role}") if journal is not None else None,
        )
    else:
        own = {k: v for k, v in section.items() if k not in GATE_KEYS}
        broker = _from_module(adapter, role, own, env, clock, journal, session_log)
    caps = broker.capabilities
    if not (caps.paper if role == "paper" else caps.live):
        raise BrokerConfigError(
            field, f"adapter {adapter} ({broker.name}) does not declare that it serves {role}"
        )
    return broker


def _from_module(
    adapter: str,
    role: str,
    section: Mapping[str, object],
    env: Mapping[str, str],
    clock: Clock,
    journal: Callable[[str], BrokerJournal] | None,
    session_log: Callable[[str], SessionLog] | None = None,
) -> BrokerAdapter:
    field = f"{role}.adapter"
    module_name = MODULES.get(adapter)
    if module_name is None:
        raise AdapterUnavailable(field, f"adapter {adapter} is not available yet")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # the module itself missing, or its SDK: the exception names a module, no value
        raise AdapterUnavailable(
            field, f"adapter {adapter} is not available ({type(exc).__name__}: {exc})"
        ) from None
    factory = getattr(module, "from_config", None)
    if not callable(factory):
        raise AdapterUnavailable(
            field, f"adapter {adapter} is not available (its module has no from_config)"
        )
    extra: dict[str, object] = {}
    if journal is not None and _takes(factory, "journal"):
        extra["journal"] = journal
    if session_log is not None and _takes(factory, "session_log"):
        extra["session_log"] = session_log  # a FIX session's sequence numbers and messages
    broker = factory(section, env, role=role, clock=clock, **extra)
    if not isinstance(broker, BrokerAdapter):
        raise AdapterUnavailable(
            field, f"adapter {adapter} is not available (from_config built no broker)"
        )
    return broker


def _takes(factory: Callable[..., object], name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read: call it without
        return False


def adapter_name(broker: BrokerAdapter) -> str:
    """Which adapter a broker is (GET /v1/brokers): by the module its class comes from."""
    module = type(broker).__module__ or ""
    if isinstance(broker, SimulatedBroker):
        return "simulated"
    for adapter, name in MODULES.items():
        if name is not None and module == name:
            return adapter
    return module.rsplit(".", 1)[-1]
