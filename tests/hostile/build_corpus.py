"""Writes tests/hostile/corpus.jsonl: the hostile-request corpus that
test_corpus.py sends over HTTP.

Run `python -m tests.hostile.build_corpus` after changing an entry here; the
file it writes is the corpus of record (review its diff). One JSON object per
line:

- `id`: a unique name; `source`: the reproduction it comes from (issue 8) or
  what else it probes;
- `method`, `route` (`{order_id}` is the working order the test opens first),
  `role` (trader, compliance, auditor, admin; null: no token at all);
- the body: `body` (text, sent as UTF-8; JSON escapes carry NULs and control
  characters through this file) or `body_b64` (exact bytes: byte-order marks,
  UTF-16, invalid UTF-8);
- `expect`: `status`, and `code` (the error's code), `field` (a field the error
  names) or `reasons` (reason codes the blocked record must hold);
- `must_block`: the body must never be approved;
- `records`: chain records the attempt appends (default: 1 with a token, 0
  without one).

Every order is quoted at the suite's fixed clock (tests/conftest.py START), so
the approved baseline is approved and every other refusal is for its own reason.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from engine.canonical import sha256_digest
from engine.clock import format_utc
from tests.conftest import START

HERE = Path(__file__).resolve().parent
QUOTED_AT = format_utc(START - timedelta(seconds=1))

_numbers = iter(range(1, 10_000))


def order(**changes: Any) -> dict[str, Any]:
    """The order of SPEC section 6 with a fresh client_order_id; `context` entries
    replace the default context's, and the digests follow the quote."""
    context_changes = changes.pop("context", {})
    context: dict[str, Any] = {
        "quote": {"bid": 150.20, "ask": 150.30, "last": 150.25, "timestamp": QUOTED_AT},
        "volatility": 0.23,
        "regime": "trending",
        "entropy": 0.41,
        "drift": 0.12,
        "protocols_fired": ["T01", "T07"],
    }
    context.update(context_changes)
    context.setdefault("data_hash", sha256_digest(context["quote"]))
    context.setdefault("protocol_hash", sha256_digest(sorted(context["protocols_fired"])))
    body: dict[str, Any] = {
        "client_order_id": f"hostile-{next(_numbers):04d}",
        "account": "default",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 100,
        "order_type": "limit",
        "limit_price": 150.25,
        "time_in_force": "day",
        "reduce_only": False,
        "decision_reason": "hostile_corpus",
        "context": context,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


def entry(
    id: str,
    source: str,
    body: str | bytes | None,
    expect: dict[str, Any],
    *,
    route: str = "/v1/orders",
    method: str = "POST",
    role: str | None = "trader",
    must_block: bool = True,
    records: int | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id, "source": source, "method": method, "route": route}
    out["role"] = role
    if isinstance(body, bytes):
        out["body_b64"] = base64.b64encode(body).decode("ascii")
    elif body is not None:
        out["body"] = body
    out["expect"] = expect
    out["must_block"] = must_block
    if records is not None:
        out["records"] = records
    return out


def invalid(field: str) -> dict[str, Any]:
    return {"status": 422, "code": "invalid_order", "field": field}


def blocked(*reasons: str) -> dict[str, Any]:
    return {"status": 403, "reasons": list(reasons)}


P1 = "issue 8, reached the database unchecked"
P2 = "issue 8, passed and should not"
MORE = "more: beyond the reproductions"


def entries() -> list[dict[str, Any]]:
    out = [
        # the baseline: the approved order is approved (routed and filled in
        # simulation: its submitted and filled records), so the corpus is not vacuous
        entry(
            "baseline_approved",
            "control",
            text(order(client_order_id="baseline-1")),
            {"status": 201},
            must_block=False,
            records=2,
        ),
        entry(
            "baseline_evaluated",
            "control",
            text(order(client_order_id="baseline-2", quantity=101)),
            {"status": 200},
            route="/v1/orders/evaluate",
            must_block=False,
        ),
    ]
    # --- paragraph 1: values that reached the database unchecked
    p1: list[tuple[str, dict[str, Any], str]] = [
        ("side_nine_chars", {"side": "xxxxxxxxx"}, "side"),
        ("symbol_33_chars", {"symbol": "S" * 33}, "symbol"),
        ("symbol_17_chars", {"symbol": "S" * 17}, "symbol"),
        ("account_65_chars", {"account": "a" * 65}, "account"),
        ("client_order_id_65_chars", {"client_order_id": "c" * 65}, "client_order_id"),
        ("time_in_force_nine_chars", {"time_in_force": "zzzzzzzzz"}, "time_in_force"),
        ("order_type_stop_limit", {"order_type": "stop_limit"}, "order_type"),
        ("nul_in_symbol", {"symbol": "AA\x00PL"}, "symbol"),
        ("nul_in_account", {"account": "def\x00ault"}, "account"),
        ("nul_in_client_order_id", {"client_order_id": "nul\x00id"}, "client_order_id"),
        ("nul_in_decision_reason", {"decision_reason": "manual\x00trigger"}, "decision_reason"),
        ("nul_in_side", {"side": "buy\x00"}, "side"),
        ("time_in_force_object", {"time_in_force": {}}, "time_in_force"),
        ("time_in_force_array", {"time_in_force": []}, "time_in_force"),
        ("side_object", {"side": {"$ne": "sell"}}, "side"),
        ("symbol_array", {"symbol": ["AAPL"]}, "symbol"),
        ("quantity_object", {"quantity": {}}, "quantity"),
        ("reduce_only_array", {"reduce_only": []}, "reduce_only"),
    ]
    for name, changes, field in p1:
        out.append(entry(name, P1, text(order(**changes)), invalid(field)))
    raw = text(order())[:-1] + ',"x":' + '{"a":' * 970 + "1" + "}" * 970 + "}"
    out.append(entry("extra_field_970_deep", P1, raw, {"status": 422, "code": "nesting_too_deep"}))
    raw = text(order())[:-1] + ',"x":' + "[" * 970 + "]" * 970 + "}"
    out.append(entry("array_970_deep", P1, raw, {"status": 422, "code": "nesting_too_deep"}))
    raw = "[" * 30_000 + "]" * 30_000
    out.append(entry("bare_30000_deep", P1, raw, {"status": 422, "code": "nesting_too_deep"}))
    raw = text(order())
    raw_nul = raw.replace('"hostile_corpus"', '"hostile\x00corpus"')
    out.append(
        entry("raw_nul_byte_in_string", P1, raw_nul, {"status": 422, "code": "malformed_json"})
    )
    # --- paragraph 2: input that passed and should not
    p2: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
        ("quantity_1e-7", {"quantity": 1e-7}, ("QUANTITY_BELOW_MIN", "FRACTIONAL_QUANTITY")),
        ("quantity_5e-324", {"quantity": 5e-324}, ("QUANTITY_BELOW_MIN", "FRACTIONAL_QUANTITY")),
        ("entropy_minus_1", {"context": {"entropy": -1}}, ("ENTROPY_OUT_OF_DOMAIN",)),
        ("entropy_above_1", {"context": {"entropy": 1.5}}, ("ENTROPY_OUT_OF_DOMAIN",)),
        ("restricted_trailing_dot", {"symbol": "RSTR."}, ("SYMBOL_RESTRICTED",)),
        ("restricted_trailing_dash", {"symbol": "RSTR-"}, ("SYMBOL_RESTRICTED",)),
        ("restricted_class_slash", {"symbol": "RSTR/A"}, ("SYMBOL_RESTRICTED",)),
        ("restricted_class_dot", {"symbol": "HALTD.B"}, ("SYMBOL_RESTRICTED",)),
        ("restricted_plain", {"symbol": "RSTR"}, ("SYMBOL_RESTRICTED",)),
        # and the rest of item 1 of the issue
        ("volatility_minus_1", {"context": {"volatility": -1}}, ("VOLATILITY_OUT_OF_DOMAIN",)),
        ("fractional_quantity", {"quantity": 100.5}, ("FRACTIONAL_QUANTITY",)),
        ("sub_penny_limit", {"limit_price": 150.255}, ("PRICE_NOT_ON_TICK",)),
        (
            "sub_penny_stop",
            {"order_type": "stop", "limit_price": _DROP, "stop_price": 150.305},
            ("PRICE_NOT_ON_TICK",),
        ),
        (
            "five_decimals_below_a_dollar",
            {
                "limit_price": 0.99995,
                "context": {
                    "quote": {"bid": 0.9999, "ask": 1.0001, "last": 1.0, "timestamp": QUOTED_AT}
                },
            },
            ("PRICE_NOT_ON_TICK",),
        ),
        (
            "sub_penny_at_a_dollar",
            {
                "limit_price": 1.005,
                "context": {
                    "quote": {"bid": 1.0, "ask": 1.01, "last": 1.0, "timestamp": QUOTED_AT}
                },
            },
            ("PRICE_NOT_ON_TICK",),
        ),
    ]
    for name, changes, reasons in p2:
        out.append(entry(name, P2, text(order(**changes)), blocked(*reasons)))
        if name in ("quantity_1e-7", "entropy_minus_1", "restricted_class_slash"):
            out.append(
                entry(
                    f"evaluate_{name}",
                    P2,
                    text(order(**changes)),
                    {"status": 200, "reasons": list(reasons)},
                    route="/v1/orders/evaluate",
                )
            )
    dup = order(symbol="RSTR")
    raw = text(dup)[:-1] + ',"symbol":"AAPL"}'
    out.append(entry("duplicate_key_symbol", P2, raw, _dup("symbol")))
    raw = text(order(quantity=1e9))[:-1] + ',"quantity":5}'
    out.append(entry("duplicate_key_quantity", P2, raw, _dup("quantity")))
    raw = '{"context":{"quote":{"bid":1,"bid":2}},"symbol":"AAPL"}'
    out.append(entry("duplicate_key_nested", P2, raw, _dup("bid")))
    good = text(order()).encode("utf-8")
    refused = [
        ("byte_order_mark_utf8", b"\xef\xbb\xbf" + good, "byte_order_mark"),
        ("utf16_with_bom", text(order()).encode("utf-16"), "not_utf8"),
        ("utf16_le_no_bom", text(order()).encode("utf-16-le"), "not_utf8"),
        ("utf16_be_no_bom", text(order()).encode("utf-16-be"), "not_utf8"),
        ("utf32_le_no_bom", text(order()).encode("utf-32-le"), "not_utf8"),
        ("utf32", text(order()).encode("utf-32"), "not_utf8"),
        ("invalid_utf8", good.replace(b"hostile_corpus", b"hostile\xff\xfecorpus"), "not_utf8"),
        ("surrogate_as_utf8", good.replace(b"hostile_corpus", b"\xed\xa0\x80"), "not_utf8"),
    ]
    for name, raw_bytes, code in refused:
        out.append(entry(name, P2, raw_bytes, {"status": 422, "code": code, "field": "(body)"}))
    # --- more: other hostile shapes, on every route that reads a body
    more: list[tuple[str, str, dict[str, Any]]] = [
        ("empty_body", "", {"status": 422}),
        ("not_json", "client_order_id=x", {"status": 422, "code": "malformed_json"}),
        ("truncated_json", '{"client_order_id": ', {"status": 422, "code": "malformed_json"}),
        ("nan_quantity", text(order(quantity=_DROP))[:-1] + ',"quantity":NaN}',
         invalid("quantity")),
        ("infinity_price", text(order(limit_price=_DROP))[:-1] + ',"limit_price":Infinity}',
         invalid("limit_price")),
        ("huge_exponent", text(order(quantity=_DROP))[:-1] + ',"quantity":1e999}',
         invalid("quantity")),
        ("huge_integer", text(order(quantity=10**400)), invalid("quantity")),
        ("lone_surrogate_escape", text(order(decision_reason="\ud800")),
         {"status": 422, "code": "malformed_json"}),
        ("control_char_in_regime", text(order(context={"regime": "trending\x1b[2J"})),
         invalid("context.regime")),
        ("newline_after_symbol", text(order(symbol="AAPL\n")), invalid("symbol")),
        ("c1_control_in_reason", text(order(decision_reason="manual\x85")),
         invalid("decision_reason")),
        ("nul_in_protocol", text(order(context={"protocols_fired": ["T01", "T\x00"]})),
         invalid("context.protocols_fired.1")),
        ("quantity_as_text", text(order(quantity="100")), invalid("quantity")),
        ("unknown_field", text(order(colour="blue")), invalid("colour")),
        ("array_body", "[]", {"status": 422}),
        ("string_body", '"x"', {"status": 422}),
        ("null_body", "null", {"status": 422}),
        ("number_body", "5", {"status": 422}),
    ]  # fmt: skip
    for name, raw, expect in more:
        out.append(entry(name, MORE, raw, expect))
    oversize = '{"pad":"' + "x" * (64 * 1024) + '"}'
    out.append(entry("over_64_kib", MORE, oversize, {"status": 413, "code": "body_too_large"}))
    # replace: non-object bodies and hostile terms on a working order
    replace = "/v1/orders/{order_id}/replace"
    for name, shape in [("array", "[]"), ("string", '"x"'), ("null", "null")]:
        out.append(entry(f"replace_{name}_body", P1 + " (replace)", shape, {"status": 422},
                         route=replace))  # fmt: skip
    deep = '{"quantity":' + "[" * 100 + "]" * 100 + "}"
    out.append(
        entry(
            "replace_deep", MORE, deep, {"status": 422, "code": "nesting_too_deep"}, route=replace
        )
    )
    out.append(
        entry(
            "replace_duplicate_key",
            MORE,
            '{"quantity": 50, "quantity": 1e9}',
            _dup("quantity"),
            route=replace,
        )
    )
    # bad quotes for the simulator (admin)
    quotes = "/v1/sim/quotes"
    bad_quotes: list[tuple[str, str, dict[str, Any]]] = [
        ("quote_array", "[]", {"status": 422}),
        ("quote_nul_symbol", text({"symbol": "AA\x00PL", "bid": 1.0}), {"status": 422}),
        ("quote_negative_bid", text({"symbol": "AAPL", "bid": -1.0}), {"status": 422}),
        ("quote_deep", '{"symbol":' + "[" * 50 + "]" * 50 + "}",
         {"status": 422, "code": "nesting_too_deep"}),
    ]  # fmt: skip
    for name, quote, wanted in bad_quotes:
        out.append(entry(name, P1 + " (quotes)", quote, wanted, route=quotes, role="admin"))
    # who may not submit, and who has no token
    out.append(entry("auditor_submits", MORE, text(order()), {"status": 403}, role="auditor"))
    out.append(entry("no_token_submit", MORE, text(order()), {"status": 401}, role=None, records=0))
    out.append(
        entry(
            "no_token_nested",
            MORE,
            "[" * 1_000 + "]" * 1_000,
            {"status": 401},
            role=None,
            records=0,
        )
    )
    # a replay and a conflict on the baseline's client order id
    out.append(
        entry(
            "replay_same_body",
            MORE,
            out[0]["body"],
            {"status": 201},
            must_block=False,
        )
    )
    out.append(
        entry(
            "conflict_same_id_other_body",
            MORE,
            text(order(client_order_id="baseline-1", quantity=200)),
            {"status": 409},
        )
    )
    return out


def _dup(field: str) -> dict[str, Any]:
    return {"status": 422, "code": "duplicate_key", "field": field}


def main() -> None:
    lines = [json.dumps(e, ensure_ascii=True, sort_keys=False) for e in entries()]
    names = [json.loads(line)["id"] for line in lines]
    assert len(names) == len(set(names)), "entry ids must be unique"
    (HERE / "corpus.jsonl").write_text("\n".join(lines) + "\n", "ascii")
    print(f"{len(lines)} entries written to {HERE / 'corpus.jsonl'}")


if __name__ == "__main__":
    main()
