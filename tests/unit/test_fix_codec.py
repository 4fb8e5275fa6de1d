"""FIX framing and values for the `oms_fix` adapter (adapters/fix_codec.py):
frames are cut and checked by us (BodyLength, CheckSum), a garbled one is
dropped whole without swallowing the next, quantities read in either notation
and sent whole when whole."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.fix_codec import Framer, build, decimal, fix_time, parse_time, quantity_text, readable

AT = datetime(2026, 11, 30, 15, 0, 0, 123456, tzinfo=UTC)


def message(seq: int, *fields: tuple[int, str]) -> bytes:
    return build("0", list(fields), sender="OMS", target="APEX", seq=seq, sent_at=AT)


def test_build_when_a_message_is_made_then_header_in_order_and_millis() -> None:
    raw = build("D", [(11, "ord-1")], sender="APEX", target="OMS", seq=7, sent_at=AT,
                orig_sent_at="20261130-14:59:59.000")  # fmt: skip

    assert readable(raw).startswith(
        "8=FIX.4.4|9=90|35=D|49=APEX|56=OMS|34=7|52=20261130-15:00:00.123|43=Y|"
        "122=20261130-14:59:59.000|11=ord-1|10="
    )
    assert Framer().feed(raw)[0].problem == ""  # BodyLength and CheckSum as we check them
    assert fix_time(AT) == "20261130-15:00:00.123"
    assert parse_time("20261130-15:00:00.123") == datetime(2026, 11, 30, 15, 0, 0, 123000, UTC)
    assert parse_time("20261130-15:00:00") == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def test_framer_when_messages_arrive_in_pieces_then_each_cut_whole() -> None:
    stream = message(1) + message(2, (112, "x"))
    framer = Framer()

    frames = [f for i in range(0, len(stream), 7) for f in framer.feed(stream[i : i + 7])]

    assert [f.message.get(34) for f in frames if f.message is not None] == [b"1", b"2"]
    assert all(not f.problem for f in frames)


@pytest.mark.parametrize(
    ("garble", "problem"),
    [
        (lambda raw: raw[:-4] + (b"000" if not raw.endswith(b"000\x01") else b"001") + b"\x01",
         "CheckSum wrong"),
        (lambda raw: raw.replace(b"9=", b"9=1", 1), "BodyLength wrong"),
        (lambda raw: raw.replace(b"9=", b"9=x", 1), "BodyLength is not a number"),
    ],
    ids=["checksum", "body-length", "body-length-not-a-number"],
)  # fmt: skip
def test_framer_when_a_message_is_garbled_then_dropped_and_the_next_still_read(
    garble: object, problem: str
) -> None:
    bad = garble(message(1))  # type: ignore[operator]

    frames = Framer().feed(b"junk" + bad + message(2))

    assert [f.problem.split(" (")[0] for f in frames] == ["bytes outside a frame", problem, ""]
    assert frames[2].message is not None and frames[2].message.get(34) == b"2"


def test_framer_when_a_frame_never_ends_then_dropped_at_the_bound_and_memory_stays_bounded() -> (
    None
):
    framer = Framer(max_frame=1_000)
    opened = message(1)[:40]  # a frame's start, then filler without a CheckSum
    frames = framer.feed(opened)
    for _ in range(500):
        frames += framer.feed(b"x" * 97)
        assert len(framer._buffer) <= 1_000 + 97

    frames += framer.feed(message(2))

    dropped = [f for f in frames if f.problem]
    assert dropped and dropped[0].problem == "no CheckSum within 1000 bytes"
    assert dropped[0].raw.startswith(b"8=FIX.4.4")
    read = [f.message.get(34) for f in frames if f.message is not None]
    assert read == [b"2"]


def test_framer_when_a_large_valid_frame_trickles_in_then_cut_whole() -> None:
    big = message(4, (58, "z" * 5_000)) + message(5)
    framer = Framer()

    frames = [f for byte in range(len(big)) for f in framer.feed(big[byte : byte + 1])]

    assert [f.message.get(34) for f in frames if f.message is not None] == [b"4", b"5"]
    assert all(not f.problem for f in frames)


@pytest.mark.parametrize(
    ("text", "value"),
    [("100", 100.0), ("100.0", 100.0), ("2.5", 2.5), (".5", 0.5), ("1E2", None), ("", None),
     ("nan", None), (None, None)],
)  # fmt: skip
def test_decimal_when_read_then_integer_or_decimal_notation_only(
    text: str | None, value: float | None
) -> None:
    assert decimal(text) == value


def test_quantity_text_when_whole_then_integer_notation() -> None:
    assert [quantity_text(q) for q in (100.0, 2.5, 0.001)] == ["100", "2.5", "0.001"]
