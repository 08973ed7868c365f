"""LSN and WAL segment name math."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zsnap.lsn import Lsn, Segment, is_segment_name

LSNS = st.integers(min_value=0, max_value=2**64 - 1)
# wal_segment_size is a power of two from 1 MB to 1 GB.
SEGMENT_SIZES = st.sampled_from([2**n for n in range(20, 31)])
TIMELINES = st.integers(min_value=1, max_value=2**32 - 1)


@given(LSNS)
def test_lsn_text_round_trip(value: int) -> None:
    lsn = Lsn(value)
    assert Lsn.parse(str(lsn)) == lsn
    assert Lsn.parse(str(lsn).lower()) == lsn


@given(LSNS, LSNS)
def test_lsn_order_and_distance_follow_the_number(a: int, b: int) -> None:
    assert (Lsn(a) < Lsn(b)) == (a < b)
    assert (Lsn(a) <= Lsn(b)) == (a <= b)
    assert Lsn(a) - Lsn(b) == a - b


@pytest.mark.parametrize(
    ("text", "value"),
    [("0/0", 0), ("0/2000028", 0x2000028), ("1/0", 2**32), ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
     ("16/B374D848", (0x16 << 32) | 0xB374D848), (" 0/10 ", 16)],
)
def test_lsn_known_values(text: str, value: int) -> None:
    assert Lsn.parse(text).value == value


def test_lsn_prints_as_postgresql_does() -> None:
    assert str(Lsn((0x16 << 32) | 0xB374D848)) == "16/B374D848"
    assert str(Lsn(0)) == "0/0"


@pytest.mark.parametrize("text", ["", "0", "0/", "/0", "G/0", "0/123456789", "1/2/3", "0x1/0"])
def test_not_an_lsn(text: str) -> None:
    with pytest.raises(ValueError, match="not an LSN"):
        Lsn.parse(text)


@pytest.mark.parametrize(
    ("lsn", "timeline", "size", "name"),
    [
        ("0/2000028", 1, 16 * 2**20, "000000010000000000000002"),
        ("0/FFFFFFFF", 1, 16 * 2**20, "0000000100000000000000FF"),
        ("1/0", 2, 16 * 2**20, "000000020000000100000000"),
        ("A/C5000000", 3, 16 * 2**20, "000000030000000A000000C5"),
        ("1/40000000", 1, 2**30, "000000010000000100000001"),
        ("0/300000", 1, 2**20, "000000010000000000000003"),
    ],
)
def test_segment_of_an_lsn(lsn: str, timeline: int, size: int, name: str) -> None:
    segment = Lsn.parse(lsn).segment(timeline, size)
    assert segment.name == name
    assert Segment.parse(name, size) == segment


@given(LSNS, TIMELINES, SEGMENT_SIZES)
def test_segment_holds_its_lsn_and_names_round_trip(value: int, tli: int, size: int) -> None:
    segment = Lsn(value).segment(tli, size)
    assert segment.start() <= Lsn(value) < segment.next().start()
    assert len(segment.name) == 24 and is_segment_name(segment.name)
    assert Segment.parse(segment.name, size) == segment
    assert segment.next().number == segment.number + 1


def test_segment_part_beyond_the_log_is_refused() -> None:
    # With 1 GB segments a log holds 4 of them: a segment part of 4 does not exist.
    with pytest.raises(ValueError, match="out of range"):
        Segment.parse("000000010000000000000004", 2**30)


@pytest.mark.parametrize(
    "name", ["00000001000000000000000", "00000001.history", "000000010000000000000002.partial",
             "00000001000000000000000g"],
)
def test_not_a_segment_name(name: str) -> None:
    assert not is_segment_name(name)
    with pytest.raises(ValueError, match="not a WAL segment name"):
        Segment.parse(name)
