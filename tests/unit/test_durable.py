"""engine._durable: numbers the engine core can parse, exactly the rules that fired, and
no state left behind however many orders it judges."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidArgument
from engine.policy._durable import LIMIT, DurableRuleset, _encode, encode


def engine_rule(condition: dict[str, Any]) -> dict[str, Any]:
    return {"all": [{"m": {"$and": [{"kind": "order"}, condition]}}]}


DEFINITION = {
    "big": engine_rule({"$gt": {"x": 10}}),
    "small": engine_rule({"$lt": {"x": 5}}),
    "named_a": engine_rule({"s": "a"}),
    "tiny": engine_rule({"$and": [{"$gt": {"x": 0}}, {"$lt": {"x": 0.0001}}]}),
}

MakeRuleset = Callable[..., DurableRuleset]


@pytest.fixture
def make_ruleset() -> Iterator[MakeRuleset]:
    made: list[DurableRuleset] = []

    def make(definition: dict[str, Any] = DEFINITION) -> DurableRuleset:
        ruleset = DurableRuleset(f"test_{uuid.uuid4().hex}", definition)
        made.append(ruleset)
        return ruleset

    yield make
    for ruleset in made:
        ruleset.close()


# --- encode ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-05, "0.00001"),
        (-2.5e-07, "-0.00000025"),
        (1e16, "999999999999999"),
        (-1e16, "-999999999999999"),
        (math.inf, "999999999999999"),
        (-math.inf, "-999999999999999"),
        (10**20, "999999999999999"),
        (1.0, "1"),
        (-0.0, "0"),
        (2.5, "2.5"),
        (123456789.12345679, "123456789.12345679"),
        (7, "7"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ("café", '"café"'),
        ('say "hi"', '"say \\"hi\\""'),
        ([1, 2.5, 1e-05], "[1,2.5,0.00001]"),
        ({"a": [True, None, "x"], "b": {"c": 1e-7}}, '{"a":[true,null,"x"],"b":{"c":0.0000001}}'),
        ({"x": 1e-05, "y": 1e16, "s": "é"}, '{"x":0.00001,"y":999999999999999,"s":"é"}'),
    ],
    ids=[
        "small-float",
        "small-negative-float",
        "huge-float-clamped",
        "huge-negative-float-clamped",
        "inf-clamped",
        "minus-inf-clamped",
        "huge-int-clamped",
        "integral-float",
        "negative-zero",
        "float",
        "many-digits",
        "int",
        "true",
        "false",
        "none",
        "unicode-string",
        "quoted-string",
        "list",
        "nested",
        "flat-fact",
    ],
)
def test_encode_then_writes_plain_decimal_json(value: Any, text: str) -> None:
    assert encode(value) == text


def test_encode_when_smallest_subnormal_then_plain_decimal_that_reads_back() -> None:
    text = encode(5e-324)

    assert "e" not in text.lower()
    assert float(text) == 5e-324


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(allow_nan=False))
def test_encode_when_any_finite_or_infinite_float_then_no_exponent_and_value_kept(
    value: float,
) -> None:
    expected = max(-LIMIT, min(LIMIT, value))
    alone, in_fact = encode(value), encode({"x": value})

    assert "e" not in alone.lower()
    assert "e" not in in_fact.lower()
    assert float(alone) == float(in_fact.removeprefix('{"x":').removesuffix("}")) == expected


_SCALARS = (
    st.floats(allow_nan=False)
    | st.integers(min_value=-(10**17), max_value=10**17)
    | st.text(max_size=8)
    | st.booleans()
    | st.none()
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.dictionaries(st.text(alphabet="abcdefgh_", min_size=1, max_size=6), _SCALARS))
def test_encode_when_a_flat_fact_then_the_same_text_as_value_by_value(fact: dict[str, Any]) -> None:
    """The flat path (one json.dumps, odd numbers marked and replaced) writes the
    values encoding each alone writes, in the same order, every number in plain
    decimal: tiny and huge numbers included."""
    numbers: list[str] = []

    def number(token: str) -> float:
        numbers.append(token)
        return float(token)

    read = json.loads(encode(fact), parse_float=number, parse_int=number)

    assert list(read) == list(fact)
    assert read == json.loads(_encode(fact))
    assert read == {
        k: max(-LIMIT, min(LIMIT, v)) if type(v) in (int, float) else v for k, v in fact.items()
    }
    assert not [token for token in numbers if "e" in token.lower()]


def test_encode_when_text_holds_what_a_mark_would_be_then_it_is_kept_as_text() -> None:
    fact = {"a": 1e-05, "note": "\x000\x00", "b": "\\u00000\\u0000", "c": 2e-06}

    assert encode(fact) == (
        '{"a":0.00001,"note":"\\u00000\\u0000","b":"\\\\u00000\\\\u0000","c":0.000002}'
    )
    assert json.loads(encode(fact)) == fact
    del fact["note"]  # no NUL: the flat path, beside text that reads like a mark
    assert encode(fact) == '{"a":0.00001,"b":"\\\\u00000\\\\u0000","c":0.000002}'


@pytest.mark.parametrize(
    "value",
    [math.nan, {"x": math.nan}, [1, math.nan], {"a": {"b": -math.nan}}],
    ids=["scalar", "in-a-fact", "in-a-list", "nested"],
)
def test_encode_when_nan_then_raises_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="NaN"):
        encode(value)


@pytest.mark.parametrize("value", [object(), b"bytes", {1, 2}], ids=["object", "bytes", "set"])
def test_encode_when_not_json_then_raises_type_error(value: Any) -> None:
    with pytest.raises(InvalidArgument, match="cannot encode"):
        encode(value)


# --- DurableRuleset -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fact", "fired"),
    [
        ({"x": 20, "s": "a"}, {"big", "named_a"}),
        ({"x": 1, "s": "b"}, {"small"}),
        ({"x": 0.00005, "s": "a"}, {"small", "tiny", "named_a"}),
        ({"x": 7, "s": "b"}, set()),
        ({"x": 1e16, "s": "b"}, {"big"}),
        ({"kind": "other", "x": 20, "s": "a"}, set()),
    ],
    ids=["two-rules", "one-rule", "small-number", "none", "clamped", "other-kind"],
)
def test_fired_then_returns_exactly_the_rules_that_fired(
    make_ruleset: MakeRuleset, fact: dict[str, Any], fired: set[str]
) -> None:
    ruleset = make_ruleset()

    assert ruleset.fired({"kind": "order", **fact}) == fired


def test_fired_then_fact_is_retracted_after_each_call(make_ruleset: MakeRuleset) -> None:
    ruleset = make_ruleset()

    for x in (20, 1, 7):
        ruleset.fired({"kind": "order", "x": x, "s": "a"})
        assert ruleset.facts() == []


def test_fired_when_the_same_fact_twice_then_same_answer(make_ruleset: MakeRuleset) -> None:
    ruleset = make_ruleset()
    fact = {"kind": "order", "x": 20, "s": "a"}

    assert ruleset.fired(fact) == ruleset.fired(fact) == {"big", "named_a"}


def test_fired_when_5000_evaluations_then_state_does_not_grow(make_ruleset: MakeRuleset) -> None:
    # more than the engine's 1024-state limit: one shared state, emptied after every call
    ruleset = make_ruleset()
    ruleset.fired({"kind": "order", "x": 0, "s": "a"})
    state = ruleset.state()

    answers = [ruleset.fired({"kind": "order", "x": n % 13, "s": f"s{n}"}) for n in range(5000)]

    assert ruleset.state() == state
    assert ruleset.facts() == []
    assert answers[11] == {"big"} and answers[3] == {"small"} and answers[7] == set()


def test_fired_when_engine_refuses_the_fact_then_raises_and_next_call_works(
    make_ruleset: MakeRuleset,
) -> None:
    ruleset = make_ruleset()

    with pytest.raises(Exception):  # noqa: B017 - the engine core raises its own error type
        ruleset.fired({"kind": "order", "x": 20, "s": "\ud800"})

    assert ruleset.fired({"kind": "order", "x": 20, "s": "a"}) == {"big", "named_a"}
    assert ruleset.facts() == []


def test_fired_when_ruleset_retired_then_raises(make_ruleset: MakeRuleset) -> None:
    ruleset = make_ruleset()
    ruleset.close()
    ruleset.close()  # closing twice is harmless

    with pytest.raises(RuntimeError, match="ruleset was retired"):
        ruleset.fired({"kind": "order", "x": 20})
