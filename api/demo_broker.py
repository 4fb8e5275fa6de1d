"""`apex-oms demo --broker alpaca|ib`: the tour in paper mode against a fake broker
the demo starts on 127.0.0.1 (tests/fakes/alpaca.py, tests/fakes/tws.py), through
the real adapter and the broker's real client library.

The demo writes a scratch brokers.yaml whose paper entry names the fake; Alpaca's
keys are made up for the fake and handed over the way real ones are, as
environment variables of this process named in the file (set for the tour only,
then restored); IB needs none (TWS holds the login). It checks the broker's
credentials (the recorded check paper's entry needs), enters paper and walks:
an evaluate, a market order that fills, a limit that rests, its replace and
cancel, a refusal by the broker (a fault the fake injects) blocked with
`broker_api_error` and the broker's words, the positions as the gateway and the
broker hold them, the broker's own order history, and the audit chain.

The fake's quote is the demo's orders' quote, so the policies' broker quote
check (the client's quote within 50 bps of the broker's) passes. The fakes live
under tests/, outside the installed package: they are loaded from the source
checkout next to this package, and without one the demo says so and exits 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from litestar.testing import TestClient

from engine.errors import ApexError
from engine.gateway import Actor

from .app import create_app
from .demo import _START, _Demo, _DemoClock, _print
from .runtime import Runtime
from .settings import Settings

__all__ = ["BROKERS", "run_broker_demo"]

BROKERS = ("alpaca", "ib")
_FAKES = {"alpaca": "alpaca", "ib": "tws"}  # broker -> module under tests/fakes
_TITLES = {"alpaca": "Alpaca", "ib": "IB (TWS)"}
_CHECKOUT = Path(__file__).resolve().parents[1]  # the source tree this package came from
_BID, _ASK, _LAST = 150.20, 150.30, 150.25  # the quote every demo order carries
# made-up keys for the fake, never real ones, under names only the demo uses
_KEY_ENV, _SECRET_ENV = "APEX_DEMO_ALPACA_KEY_ID", "APEX_DEMO_ALPACA_SECRET_KEY"
_KEY_ID, _SECRET = "PKDEMOFAKE000000", "demo-fake-secret-not-a-real-key"
_IB_ACCOUNT = "DU123"
_ACTOR = Actor.of("demo", "admin")


def run_broker_demo(broker: str, as_json: bool = False, policies: Path | None = None) -> int:
    """0: the tour ran and the chain verifies; 1: it does not verify; 2: the demo
    cannot run here (no fake, or the adapter cannot be built)."""
    if broker not in BROKERS:
        print(f"demo: --broker wants one of {', '.join(BROKERS)}, got {broker!r}", file=sys.stderr)
        return 2
    fake_module = _load_fake(_FAKES[broker])
    if fake_module is None:
        print(
            f"demo: --broker {broker} needs the fake broker tests/fakes/{_FAKES[broker]}.py, "
            "which is not installed here (run it from a source checkout)",
            file=sys.stderr,
        )
        return 2
    logging.disable(logging.CRITICAL)  # the refusal is logged as an error: the table says it
    clock = _DemoClock()
    try:
        with (
            _fake(broker, fake_module) as fake,
            tempfile.TemporaryDirectory(prefix="apex-demo-") as home,
            _credentials(broker),
        ):
            brokers = Path(home) / "brokers.yaml"
            brokers.write_text(_brokers_yaml(broker, fake), encoding="utf-8")
            settings = Settings.from_env(
                {
                    "APEX_HOME": home,
                    "APEX_POLICIES": str(policies or Path("policies")),
                    "APEX_KEYS": str(Path(home) / "keys"),
                    "APEX_BROKERS": str(brokers),
                }
            )
            try:
                runtime = Runtime.start(settings, clock=clock)
            except ApexError as exc:
                print(f"demo: the {broker} broker cannot be used here ({exc})", file=sys.stderr)
                return 2
            compliance = runtime.gateway.standing.view()
            token = runtime.tokens.create("admin", "demo", clock())
            rows: list[dict[str, Any]] = []
            try:
                with TestClient(create_app(runtime)) as client:
                    client.headers["Authorization"] = f"Bearer {token}"
                    demo = _Demo(client, clock, runtime, Path(home) / "apex.db", rows)
                    _script(demo, broker, fake)
                    verify = client.get("/v1/audit/verify").json()
            finally:
                runtime.close()
    finally:
        logging.disable(logging.NOTSET)
    if as_json:
        out = {"broker": broker, "compliance": compliance, "steps": rows, "audit": verify}
        print(json.dumps(out, indent=2))
    else:
        print(
            f"paper mode on a fake {_TITLES[broker]} on 127.0.0.1, through the {broker} "
            f"adapter; compliance configuration: version {compliance['version']}, "
            f"trust {compliance['trust']} (the scratch directory's development root)\n"
        )
        _print(rows)
        state = "OK" if verify["ok"] else f"BROKEN at {verify['first_break']}"
        print(f"\naudit chain {state}: {verify['records']} records, head {verify['head']}")
    return 0 if verify["ok"] else 1


# --- the fake broker ----------------------------------------------------------------------


def _load_fake(name: str) -> ModuleType | None:
    """tests.fakes.<name> when importable, else the checkout's file, else None."""
    try:
        return importlib.import_module(f"tests.fakes.{name}")
    except ImportError:
        pass
    path = _CHECKOUT / "tests" / "fakes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_apex_demo_fake_{name}", path)
    if not path.is_file() or spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[spec.name]
        return None
    return module


@contextmanager
def _fake(broker: str, module: ModuleType) -> Iterator[Any]:
    """The fake on an ephemeral port, quoting AAPL as the demo's orders do."""
    if broker == "alpaca":
        fake = module.FakeAlpaca(key_id=_KEY_ID, secret_key=_SECRET)
        with fake:
            fake.set_quote("AAPL", _BID, _ASK, _LAST)
            yield fake
    else:
        quotes = {"AAPL": (_BID, _ASK, _LAST)}
        with module.FakeTWS(accounts=(_IB_ACCOUNT,), quotes=quotes, clock=lambda: _START) as fake:
            yield fake


def _brokers_yaml(broker: str, fake: Any) -> str:
    if broker == "alpaca":
        return (
            "paper:\n"
            "  adapter: alpaca\n"
            f"  base_url: {fake.url}\n"
            f"  data_url: {fake.url}\n"
            f"  key_id_env: {_KEY_ENV}\n"
            f"  secret_key_env: {_SECRET_ENV}\n"
            "  timeout_s: 5\n"
        )
    return (
        "paper:\n"
        "  adapter: ib\n"
        "  host: 127.0.0.1\n"
        f"  port: {fake.port}\n"
        "  client_id: 7\n"
        f"  account: {_IB_ACCOUNT}\n"
        "  request_timeout_s: 5\n"
    )


@contextmanager
def _credentials(broker: str) -> Iterator[None]:
    """The fake's made-up keys in this process's environment, where the service
    reads the variables brokers.yaml names; restored afterwards."""
    if broker != "alpaca":
        yield
        return
    kept = {name: os.environ.get(name) for name in (_KEY_ENV, _SECRET_ENV)}
    os.environ[_KEY_ENV], os.environ[_SECRET_ENV] = _KEY_ID, _SECRET
    try:
        yield
    finally:
        for name, value in kept.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- the tour -----------------------------------------------------------------------------


def _script(demo: _Demo, broker: str, fake: Any) -> None:
    client, step, order = demo.client, demo.step, demo.order
    step("evaluate in research mode", client.post("/v1/orders/evaluate", json=order("demo-1")))
    _check(demo)
    step("enter paper mode", client.post("/v1/mode", json={"mode": "paper", "reason": "demo"}))
    step("market buy fills", client.post("/v1/orders", json=order("demo-2")))
    resting = step(
        "limit buy rests",
        client.post("/v1/orders", json=order("demo-3", order_type="limit", limit_price=149.50)),
    )
    step(
        "replace: new limit",
        client.post(
            f"/v1/orders/{resting['order_id']}/replace",
            json={"limit_price": 149.80, "context": order("x")["context"]},
        ),
    )
    step(
        "cancel it",
        client.post(
            f"/v1/orders/{resting['order_id']}/cancel", json={"reason": "demo: no longer wanted"}
        ),
    )
    _refusal(demo, broker, fake)
    _positions(demo)
    history = client.get("/v1/orders", params={"source": "broker"})
    step("the broker's order history", history)
    body = history.json()
    if history.status_code == 200 and isinstance(body, dict):
        demo.rows[-1]["status"] = f"{len(body.get('orders') or [])} orders"


def _check(demo: _Demo) -> None:
    """What `apex-oms brokers check` does: the recorded check paper's entry needs."""
    record = demo.runtime.gateway.check_broker("paper", _ACTOR)
    view = record.get("account_view") or {}
    reached = view.get("account_number") or view.get("id") or view.get("account") or "-"
    demo.rows.append(
        {
            "step": "brokers check",
            "http": "-",
            "order_id": "-",
            "status": f"ok: {record['broker']}, account {reached}" if record["ok"] else "failed",
            "triggers": "",
            "reasons": []
            if record["ok"]
            else [{"check": "(brokers check)", "code": "CHECK_FAILED", "detail": record["reason"]}],
            "how": "",
        }
    )


def _refusal(demo: _Demo, broker: str, fake: Any) -> None:
    """The fake refuses the next order as the broker would: Alpaca answers 403 with
    its message, TWS sends error 201 and marks the order Inactive."""
    if broker == "alpaca":
        fault = sys.modules[type(fake).__module__].HttpError(
            403, "insufficient buying power", code=40310000
        )
        how = "the fake Alpaca was told to answer the next submit HTTP 403 with Alpaca's own body"
    else:
        fault = sys.modules[type(fake).__module__].Reject()
        how = "the fake TWS was told to refuse the next order with IB's error 201"
    fake.inject(fault)
    record = demo.step(
        "blocked: the broker refuses",
        demo.client.post("/v1/orders", json=demo.order("demo-4")),
    )
    answer = record.get("broker_response")
    words = answer.get("detail") if isinstance(answer, dict) else None
    demo.rows[-1]["how"] = (
        f"broker_api_error: {how}; the gateway blocked the order and kept the broker's "
        f"words in broker_response: {words or '(none)'}"
    )


def _positions(demo: _Demo) -> None:
    """The gateway's positions next to the broker's own (its account)."""
    gateway = demo.runtime.store.positions("default")
    paper = demo.runtime.gateway.broker_for("paper")
    held = paper.positions(_IB_ACCOUNT) if paper is not None else {}
    same = {k: float(v) for k, v in gateway.items()} == {k: float(v) for k, v in held.items()}
    shown = ", ".join(f"{s} {q:g}" for s, q in sorted(gateway.items())) or "none"
    demo.rows.append(
        {
            "step": "positions: gateway = broker" if same else "positions: gateway != broker",
            "http": "-",
            "order_id": "-",
            "status": shown,
            "triggers": "",
            "reasons": [],
            "how": "",
        }
    )
