"""Timeline-aware gap finding and pg_archivecleanup-style cleanup, on generated archives."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from zsnap.lsn import Lsn, Segment
from zsnap.wal.check import find_gaps
from zsnap.wal.names import Archive
from zsnap.wal.prune import cleanup_names
from zsnap.wal.timelines import parse_history, timeline_path

SIZE = 16 * 1024 * 1024


@st.composite
def archives(draw: st.DrawFn) -> tuple[list[str], dict[int, str], Segment, set[tuple[int, int]]]:
    """An archive along a history of timelines, some segments removed (returned too)."""
    timelines = draw(st.integers(1, 4))
    switches = sorted(draw(st.lists(st.integers(2, 600), min_size=timelines - 1,
                                    max_size=timelines - 1)))
    offsets = [draw(st.integers(0, SIZE - 1)) for _ in switches]
    history = [(i + 1, Lsn(seg * SIZE + off))
               for i, (seg, off) in enumerate(zip(switches, offsets, strict=True))]
    spans = timeline_path(timelines, history, SIZE)
    start_span = draw(st.sampled_from([s for s in spans if s.end is None or s.end > s.first]))
    high = start_span.end - 1 if start_span.end is not None else start_span.first + 50
    start = Segment(start_span.timeline, draw(st.integers(start_span.first, high)), SIZE)
    last_end = spans[-1].first
    newest = draw(st.integers(max(start.number, last_end), max(start.number, last_end) + 40))
    expected = []
    for span in spans:
        end = newest + 1 if span.end is None else min(span.end, newest + 1)
        expected += [(span.timeline, n) for n in range(max(span.first, start.number), end)]
    assume(expected)
    newest_key = max(expected, key=lambda k: k[1])
    removed = set(draw(st.lists(st.sampled_from(expected), max_size=8))) - {newest_key}
    names = [Segment(t, n, SIZE).name for t, n in expected if (t, n) not in removed]
    # What a real archive also holds: the old timeline going on past its switch (the old
    # primary), .partial files, backup history files, segments before the start.
    for span in spans[:-1]:
        assert span.end is not None
        names += [Segment(span.timeline, n, SIZE).name for n in range(span.end, span.end + 3)]
        names.append(Segment(span.timeline, span.end, SIZE).name + ".partial")
    names += [Segment(1, 0, SIZE).name + ".00000028.backup"]
    texts = {}
    for tli in range(2, timelines + 1):
        texts[tli] = "".join(f"{t}\t{lsn}\tno recovery target specified\n"
                             for t, lsn in history[: tli - 1])
        names.append(f"{tli:08X}.history")
    return names, texts, start, removed


@settings(max_examples=300)
@given(archives())
def test_gaps_are_exactly_the_missing_segments(
    case: tuple[list[str], dict[int, str], Segment, set[tuple[int, int]]],
) -> None:
    names, texts, start, removed = case
    report = find_gaps(Archive.from_names(names, SIZE), texts, start, SIZE)
    assert not report.problems
    found = set()
    for gap in report.gaps:
        first = Segment.parse(gap.first, SIZE)
        last = Segment.parse(gap.last, SIZE)
        assert first.timeline == last.timeline == gap.timeline
        assert last.number - first.number + 1 == gap.count
        found |= {(gap.timeline, n) for n in range(first.number, last.number + 1)}
    assert found == removed


def test_a_missing_history_file_is_a_problem() -> None:
    names = ["000000010000000000000003", "000000020000000000000004"]
    report = find_gaps(Archive.from_names(names), {}, Segment(1, 3))
    assert any("00000002.history is missing" in p for p in report.problems)


def test_a_set_on_an_abandoned_timeline_is_named() -> None:
    # Timeline 3 forked from 1; the set lives on 2.
    names = ["000000020000000000000005", "000000030000000000000006", "00000003.history"]
    report = find_gaps(Archive.from_names(names), {3: "1\t0/6000000\tx\n"}, Segment(2, 5))
    assert any("not in the history" in p for p in report.problems)


def test_history_file_parsing() -> None:
    text = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point\n"
    assert parse_history(text) == [(1, Lsn.parse("0/3000158")), (2, Lsn.parse("0/5000000"))]
    spans = timeline_path(3, parse_history(text), SIZE)
    assert [(s.timeline, s.first, s.end) for s in spans] == [(1, 0, 3), (2, 3, 5), (3, 5, None)]


segment_names = st.builds(
    lambda t, n, suffix: Segment(t, n).name + suffix,
    st.integers(1, 5), st.integers(0, 3000), st.sampled_from(["", ".partial", ".gz"]),
)
other_names = st.sampled_from(["00000002.history", "00000003.history",
                               "000000010000000000000002.00000028.backup", "README", "x.tmp"])


@given(st.lists(st.one_of(segment_names, other_names)), st.integers(1, 5),
       st.integers(0, 3000))
def test_cleanup_follows_pg_archivecleanup(names: list[str], tli: int, number: int) -> None:
    cutoff = Segment(tli, number)
    chosen = set(cleanup_names(names, cutoff))
    for name in names:
        if name.endswith((".history", ".backup")) or len(name) < 24:
            assert name not in chosen
            continue
        # Any timeline: only the log/segment part counts.
        assert (name in chosen) == (Segment.parse(name[:24]).number < number)
