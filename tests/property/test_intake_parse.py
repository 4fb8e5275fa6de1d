"""api.intake.parse on random and hostile bodies: JSON within the limits reads back
as sent; deeper nesting, repeated keys, byte-order marks, UTF-16 and UTF-32 are
refused with their own code; any byte string whatever either parses or is
refused as a ValueError (never a RecursionError, never anything else).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.intake import BodyRefused, parse
from engine.limits import MAX_DEPTH

EXAMPLES = settings(max_examples=100, deadline=None, derandomize=True)

keys = st.text(max_size=6)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    # brackets and quotes inside strings are text, never nesting
    st.text(max_size=12) | st.sampled_from(['"[[[', "{{{{", '\\"]', "]]]}}}", "\\\\"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def wrap(value: Any, levels: int, container: str) -> Any:
    for _ in range(levels):
        value = {"k": value} if container == "dict" else [value]
    return value


@EXAMPLES
@given(value=values, ascii_only=st.booleans())
def test_parse_when_json_is_within_the_limits_then_read_back_as_sent(
    value: Any, ascii_only: bool
) -> None:
    if depth_of(value) > MAX_DEPTH:
        return
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")

    try:
        parsed = parse(raw)
    except BodyRefused as exc:  # only a lone surrogate in the text may be refused
        assert exc.code == "not_utf8" or "\\ud" in raw.decode("utf-8", "replace").lower()
        return
    except ValueError:
        assert "\\ud" in raw.decode("utf-8", "replace").lower()
        return

    assert parsed == value


@EXAMPLES
@given(
    value=values,
    levels=st.integers(MAX_DEPTH + 1, 5_000),
    container=st.sampled_from(["dict", "list"]),
)
def test_parse_when_nesting_is_past_the_bound_then_refused_before_parsing(
    value: Any, levels: int, container: str
) -> None:
    # written out by hand: json.dumps itself recurses once per level
    opener, closer = ('{"k": ', "}") if container == "dict" else ("[", "]")
    text = '{"order": ' + opener * levels + json.dumps(value) + closer * levels + "}"
    raw = text.encode("utf-8", "surrogatepass")

    with pytest.raises(BodyRefused) as refused:
        parse(raw)

    assert refused.value.code == "nesting_too_deep"


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, MAX_DEPTH])
def test_parse_when_nesting_is_at_the_bound_then_parsed(levels: int) -> None:
    value = wrap(1, levels, "list")

    assert parse(json.dumps(value).encode()) == value


def test_parse_when_brackets_are_inside_strings_then_they_are_text() -> None:
    body = {"decision_reason": "[" * 500 + '\\"{' * 100, "x": ["]" * 40]}

    assert parse(json.dumps(body).encode()) == body


@EXAMPLES
@given(value=st.dictionaries(keys, values, min_size=1, max_size=4), data=st.data())
def test_parse_when_an_object_repeats_a_key_then_refused_naming_it(
    value: dict[str, Any], data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted(value)))
    text = json.dumps(value)
    raw = (text[:-1] + ", " + json.dumps(key) + ": 1}").encode("utf-8", "surrogatepass")

    with pytest.raises(ValueError) as refused:
        parse(raw)

    if isinstance(refused.value, BodyRefused) and refused.value.code == "duplicate_key":
        assert refused.value.field == key.encode("utf-8", "backslashreplace").decode()[:200]
    else:  # refused first for a lone surrogate somewhere in the text
        assert "\\ud" in text.lower()


@EXAMPLES
@given(
    value=st.dictionaries(st.text(st.characters(codec="ascii"), max_size=6), scalars, max_size=3),
    encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]),
)
def test_parse_when_body_is_utf16_or_utf32_then_refused_not_utf8(
    value: dict[str, Any], encoding: str
) -> None:
    raw = json.dumps(value).encode(encoding)

    with pytest.raises(BodyRefused) as refused:
        parse(raw)

    assert refused.value.code in {"not_utf8", "byte_order_mark"}


def test_parse_when_body_starts_with_a_utf8_byte_order_mark_then_refused() -> None:
    with pytest.raises(BodyRefused) as refused:
        parse(b'\xef\xbb\xbf{"a": 1}')

    assert refused.value.code == "byte_order_mark"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    raw=st.binary(max_size=200)
    | st.text(alphabet='[]{}"\\:,01a \x00', max_size=400).map(str.encode)
)
def test_parse_when_body_is_any_bytes_then_parsed_or_refused_as_a_value_error(raw: bytes) -> None:
    # BodyRefused or json's JSONDecodeError (both answered 422); anything else fails
    with contextlib.suppress(ValueError):
        parse(raw)
