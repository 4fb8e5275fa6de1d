"""One set of limits: the order model's text limits are the store's column sizes
(engine/limits.py declares both), so no value the model accepts can fail a
column, and the first value past a limit is refused by the model, over HTTP as
a 422 naming the field.

The limits are read from the model itself (its JSON schema), not restated here:
a field whose limit changes, or a new unbounded text field, shows up at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from pydantic import ValidationError
from sqlalchemy import Column, select

from adapters.sql.schema import client_orders, orders, positions
from api.app import create_app
from engine import OrderRequest
from engine.limits import CODE_LENGTH, IDENTIFIER_LENGTH, SYMBOL_LENGTH
from tests.conftest import FixedClock, StartRuntime, build_order, copy_policies, role_tokens

# the order fields that have columns of their own, and those columns
COLUMNS: dict[str, list[Column[Any]]] = {
    "client_order_id": [orders.c.client_order_id, client_orders.c.client_order_id],
    "account": [orders.c.account, positions.c.account],
    "symbol": [orders.c.symbol, positions.c.symbol],
    "side": [orders.c.side],
    "order_type": [orders.c.order_type],
    "time_in_force": [orders.c.time_in_force],
}
DECLARED = {
    "client_order_id": IDENTIFIER_LENGTH,
    "account": IDENTIFIER_LENGTH,
    "symbol": SYMBOL_LENGTH,
    "side": CODE_LENGTH,
    "order_type": CODE_LENGTH,
    "time_in_force": CODE_LENGTH,
}


def _string_fields() -> dict[str, dict[str, Any]]:
    """Every text field of an order (dotted path to its JSON schema), list items as
    `path[]`; `quote.timestamp` and `as_of` are date-times, not free text."""
    schema = OrderRequest.model_json_schema()
    defs = schema["$defs"]
    found: dict[str, dict[str, Any]] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        if "$ref" in node:
            walk(prefix, defs[node["$ref"].rsplit("/", 1)[1]])
        elif "anyOf" in node:
            for option in node["anyOf"]:
                walk(prefix, option)
        elif node.get("type") == "object":
            for name, sub in node["properties"].items():
                walk(f"{prefix}.{name}" if prefix else name, sub)
        elif node.get("type") == "array":
            walk(f"{prefix}[]", node["items"])
        elif node.get("type") == "string" and node.get("format") != "date-time":
            found[prefix] = node

    walk("", schema)
    return found


STRING_FIELDS = _string_fields()


def longest(path: str) -> str:
    """The longest value the model accepts in a text field."""
    node = STRING_FIELDS[path]
    if "enum" in node:
        return str(max(node["enum"], key=len))
    size = int(node["maxLength"])
    return "A" * size if path == "symbol" else "x" * size


def place(order: dict[str, Any], path: str, value: str) -> dict[str, Any]:
    """`order` with `value` at `path` (`context.protocols_fired[]`: the one entry)."""
    *parents, last = path.split(".")
    target = order
    for part in parents:
        target = target.setdefault(part, {})
    if last.endswith("[]"):
        target[last[:-2]] = [value]
    else:
        target[last] = value
    if path == "order_type" and value == "market":
        order["limit_price"] = None  # a market order carries no price
    if path == "locate_id":  # a locate belongs to a short sale, which is a sell
        order.update(side="sell", short_sale=True)
    return order


def error_field(path: str) -> str:
    return path.replace("[]", ".0")


# --- the limits, declared once ---------------------------------------------------------


def test_every_text_field_of_an_order_is_bounded() -> None:
    unbounded = [
        p for p, node in STRING_FIELDS.items() if "enum" not in node and "maxLength" not in node
    ]

    assert len(STRING_FIELDS) == 12, sorted(STRING_FIELDS)
    assert unbounded == []


@pytest.mark.parametrize("field", sorted(COLUMNS))
def test_a_column_is_exactly_as_wide_as_the_model_allows(field: str) -> None:
    widths = {column.table.name: column.type.length for column in COLUMNS[field]}  # type: ignore[attr-defined]

    assert len(longest(field)) <= DECLARED[field]
    assert widths == dict.fromkeys(widths, DECLARED[field])
    if "enum" not in STRING_FIELDS[field]:
        assert STRING_FIELDS[field]["maxLength"] == DECLARED[field]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(field=st.sampled_from(sorted(COLUMNS)), text=st.text(min_size=1, max_size=80))
def test_any_value_the_model_accepts_fits_its_columns(field: str, text: str) -> None:
    # letters drawn from the symbol alphabet too, so that valid values are common
    value = text.upper() if field == "symbol" else text
    order = build_order("c-1", FixedClock().now)
    order[field] = value
    try:
        accepted = OrderRequest.model_validate(order)
    except ValidationError:
        return
    stored = getattr(accepted, field)
    assert all(len(stored) <= column.type.length for column in COLUMNS[field])  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", sorted(STRING_FIELDS))
def test_model_when_a_text_is_one_past_its_limit_then_refused_naming_it(path: str) -> None:
    accepted = place(build_order("c-1", FixedClock().now), path, longest(path))
    refused = place(build_order("c-1", FixedClock().now), path, longest(path) + "x")

    OrderRequest.model_validate(accepted)
    with pytest.raises(ValidationError) as caught:
        OrderRequest.model_validate(refused)

    fields = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}
    assert fields == {error_field(path)}


# --- over HTTP, on SQLite and on PostgreSQL ---------------------------------------------

LONG_ACCOUNT = "a" * IDENTIFIER_LENGTH
LONG_SYMBOL = "A" * SYMBOL_LENGTH


@pytest.fixture
def wide_client(
    start_runtime: StartRuntime, tmp_path: Path
) -> Iterator[tuple[TestClient[Any], dict[str, dict[str, str]], Any]]:
    """The default policies, with the longest account allowed to trade."""
    policies = copy_policies(tmp_path / "wide")
    config_path = policies / "compliance.yaml"
    config = yaml.safe_load(config_path.read_text("utf-8"))
    config["compliance"]["allowed_accounts"].append(LONG_ACCOUNT)
    config_path.write_text(yaml.safe_dump(config), "utf-8")
    runtime = start_runtime(policies)
    auth = {r: {"Authorization": f"Bearer {t}"} for r, t in role_tokens(runtime).items()}
    with TestClient(create_app(runtime)) as client:
        yield client, auth, runtime


def test_http_when_every_text_is_at_its_limit_then_stored_and_read_back(
    wide_client: tuple[TestClient[Any], dict[str, dict[str, str]], Any], clock: FixedClock
) -> None:
    client, auth, runtime = wide_client
    entered = client.post(
        "/v1/mode", headers=auth["compliance"], json={"mode": "simulation", "reason": "limits"}
    )
    assert entered.status_code == 200, entered.text
    got: dict[str, Any] = {}
    for n, path in enumerate(sorted(STRING_FIELDS)):
        order = place(build_order(f"limit-{n}", clock()), path, longest(path))
        response = client.post("/v1/orders/evaluate", headers=auth["trader"], json=order)
        record = response.json()
        stored = client.get(f"/v1/orders/{record.get('order_id')}", headers=auth["auditor"])
        got[path] = (response.status_code, stored.status_code, stored.json() == record)
    # routed and filled: the longest id, account and symbol in client_orders and positions
    routed = build_order(
        "r" * IDENTIFIER_LENGTH,
        clock(),
        account=LONG_ACCOUNT,
        symbol=LONG_SYMBOL,
        order_type="market",
        limit_price=None,
    )
    submitted = client.post("/v1/orders", headers=auth["trader"], json=routed)
    with runtime.store.engine.connect() as conn:
        row = conn.execute(
            select(orders.c.client_order_id, orders.c.account, orders.c.symbol).where(
                orders.c.order_id == submitted.json()["order_id"]
            )
        ).one()
        claim = conn.execute(select(client_orders.c.client_order_id)).scalars().all()
        held = conn.execute(select(positions.c.account, positions.c.symbol)).all()

    assert got == dict.fromkeys(STRING_FIELDS, (200, 200, True))
    assert (submitted.status_code, submitted.json()["order_status"]) == (201, "filled")
    assert tuple(row) == ("r" * IDENTIFIER_LENGTH, LONG_ACCOUNT, LONG_SYMBOL)
    assert claim == ["r" * IDENTIFIER_LENGTH]
    assert [tuple(h) for h in held] == [(LONG_ACCOUNT, LONG_SYMBOL)]


def test_http_when_a_text_is_one_past_its_limit_then_422_naming_it(
    client: TestClient[Any], auth: dict[str, dict[str, str]], clock: FixedClock
) -> None:
    got = {}
    for n, path in enumerate(sorted(STRING_FIELDS)):
        order = place(build_order(f"over-{n}", clock()), path, longest(path) + "x")
        response = client.post("/v1/orders", headers=auth["trader"], json=order)
        body = response.json()
        got[path] = (response.status_code, body["code"], [e["field"] for e in body["errors"]])
    verified = client.get("/v1/audit/verify", headers=auth["auditor"]).json()

    assert got == {p: (422, "invalid_order", [error_field(p)]) for p in STRING_FIELDS}
    assert verified["ok"] is True
    assert verified["records"] == 1 + len(STRING_FIELDS)  # after the start's verification
