"""`apex-oms demo --broker alpaca|ib`: the tour in paper mode against the fake broker
the demo starts, each step answering as scripted, the broker's refusal blocked
with `broker_api_error` and its words, the positions agreeing, the chain
verifying; and without the fakes, one line and exit 2."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api import demo_broker
from api.cli import main

ROOT = Path(__file__).resolve().parents[2]

# the broker's words each fake answers its refusal with
REFUSAL_WORDS = {
    "alpaca": "HTTP 403 'insufficient buying power' (code 40310000)",
    "ib": "IB error 201: Order rejected",
}
# orders the broker holds at the end: the fill, the limit (Alpaca: its replace is a
# second order of the same chain, one entry), and IB's refused order (Inactive)
HISTORY = {"alpaca": "2 orders", "ib": "3 orders"}
# the account each fake reports (Alpaca's is derived from the demo's made-up key id)
ACCOUNTS = {"alpaca": "PA7B095F951F", "ib": "DU123"}


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(ROOT)  # the demo reads ./policies (its database is a scratch one)
    yield
    logging.disable(logging.NOTSET)


def _run(broker: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["demo", "--broker", broker, "--json"])
    assert code == 0
    return dict(json.loads(out.getvalue()))


@pytest.fixture(scope="module", params=["alpaca", "ib"])
def tour(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """One run of `apex-oms demo --broker <broker> --json` per broker."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        shown = _run(request.param)
    logging.disable(logging.NOTSET)
    return request.param, shown


def test_demo_broker_when_run_then_every_step_answers_as_scripted(
    tour: tuple[str, dict[str, Any]],
) -> None:
    broker, shown = tour
    steps = [(s["step"], s["http"], s["status"]) for s in shown["steps"]]

    assert shown["broker"] == broker
    assert steps == [
        ("evaluate in research mode", 200, "evaluated"),
        ("brokers check", "-", f"ok: {broker}-paper, account {ACCOUNTS[broker]}"),
        ("enter paper mode", 200, "paper"),
        ("market buy fills", 201, "filled"),
        ("limit buy rests", 201, "accepted"),
        ("replace: new limit", 200, "replaced"),
        ("cancel it", 200, "cancelled"),
        ("blocked: the broker refuses", 502, "blocked"),
        ("positions: gateway = broker", "-", "AAPL 102"),
        ("the broker's order history", 200, HISTORY[broker]),
    ]


def test_demo_broker_when_the_broker_refuses_then_broker_api_error_with_its_words(
    tour: tuple[str, dict[str, Any]],
) -> None:
    broker, shown = tour
    (step,) = [s for s in shown["steps"] if s["step"] == "blocked: the broker refuses"]

    assert step["triggers"] == "broker_api_error"
    assert [r["code"] for r in step["reasons"]] == ["BROKER_REJECTED"]
    assert REFUSAL_WORDS[broker] in step["reasons"][0]["detail"]
    assert REFUSAL_WORDS[broker] in step["how"]


def test_demo_broker_when_run_then_the_audit_chain_verifies(
    tour: tuple[str, dict[str, Any]],
) -> None:
    _, shown = tour

    assert shown["audit"]["ok"] is True


def test_demo_broker_when_run_then_no_key_is_shown_and_the_environment_is_restored(
    tour: tuple[str, dict[str, Any]],
) -> None:
    _, shown = tour

    assert demo_broker._SECRET not in json.dumps(shown)
    assert demo_broker._KEY_ENV not in os.environ
    assert demo_broker._SECRET_ENV not in os.environ


@pytest.mark.parametrize(("broker", "module"), [("alpaca", "alpaca"), ("ib", "tws")])
def test_demo_broker_when_the_fakes_are_not_installed_then_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    broker: str,
    module: str,
) -> None:
    # a wheel: no tests package to import, and no checkout next to the package
    monkeypatch.setitem(sys.modules, f"tests.fakes.{module}", None)
    monkeypatch.setattr(demo_broker, "_CHECKOUT", tmp_path)

    code = main(["demo", "--broker", broker])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert f"tests/fakes/{module}.py" in captured.err


def test_demo_broker_when_only_the_checkout_has_the_fakes_then_it_loads_them_from_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tests.fakes.tws", None)

    loaded = demo_broker._load_fake("tws")

    assert loaded is not None
    assert Path(str(loaded.__file__)) == ROOT / "tests" / "fakes" / "tws.py"
    assert hasattr(loaded, "FakeTWS")
