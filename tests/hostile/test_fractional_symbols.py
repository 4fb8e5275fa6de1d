"""Whole shares unless the compliance configuration lists the symbol in
`risk.fractional_symbols` (issue 8): the list is read from the signed file, it
names exact symbols (not issuers), and a configuration without it allows no
fractions at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import Evaluator, load_policies
from tests.conftest import NOW, OrderBuilder, copy_policies


def evaluator_with(tmp_path: Path, fractional: list[str] | None) -> Evaluator:
    policies = copy_policies(tmp_path / "policies")
    path = policies / "compliance.yaml"
    config = yaml.safe_load(path.read_text("utf-8"))
    if fractional is None:
        del config["risk"]["fractional_symbols"]
    else:
        config["risk"]["fractional_symbols"] = fractional
    path.write_text(yaml.safe_dump(config), "utf-8")
    return Evaluator(load_policies(policies), clock=lambda: NOW)


@pytest.mark.parametrize(
    ("fractional", "symbol", "quantity", "result"),
    [
        (["AAPL"], "AAPL", 10.5, "pass"),
        (["AAPL"], "AAPL", 10.0, "pass"),
        (["AAPL"], "MSFT", 10.5, "fail"),
        (["BRK.B"], "BRK.B", 10.5, "pass"),
        (["BRK.B"], "BRK.A", 10.5, "fail"),  # another share of the same issuer
        (["BRK"], "BRK.B", 10.5, "fail"),  # the list names symbols, not issuers
        ([], "AAPL", 10.5, "fail"),
        (None, "AAPL", 10.5, "fail"),  # no list at all: whole shares only
        (None, "AAPL", 10.0, "pass"),
    ],
    ids=[
        "listed-fraction",
        "listed-whole",
        "unlisted-fraction",
        "listed-class",
        "other-class",
        "root-listed",
        "empty-list",
        "no-list-fraction",
        "no-list-whole",
    ],
)
def test_whole_shares_check_when_symbol_is_or_is_not_listed(
    tmp_path: Path,
    approved_order: OrderBuilder,
    fractional: list[str] | None,
    symbol: str,
    quantity: float,
    result: str,
) -> None:
    evaluator = evaluator_with(tmp_path, fractional)
    order: dict[str, Any] = approved_order(symbol=symbol, quantity=quantity)

    decision = evaluator.evaluate(order)

    assert decision.results["whole_shares_check"] == result
    if result == "fail":
        assert "FRACTIONAL_QUANTITY" in {r.code for r in decision.reasons}
