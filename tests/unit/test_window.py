"""The recovery window from sets and archive names: where it starts, where missing WAL and
timeline branches split it, and where it ends (the last commit, read by a stand-in for
pg_waldump that knows one commit time per segment)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from zsnap.catalog import SnapshotSet
from zsnap.lsn import Lsn, Segment
from zsnap.wal.names import Archive
from zsnap.wal.window import commits_in, windows

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SEG = 16 << 20


def make_set(minute: int, redo_seg: int, consistent_seg: int, timeline: int = 1,
             complete: bool = True) -> SnapshotSet:
    at = T0 + timedelta(minutes=minute)
    return SnapshotSet(
        id=at.strftime("%Y%m%dT%H%M%SZ"), cluster="c", created=at + timedelta(seconds=1),
        timeline=timeline, redo_lsn=str(Lsn(redo_seg * SEG + 0x28)),
        checkpoint_lsn=str(Lsn(redo_seg * SEG + 0x60)),
        consistent_lsn=str(Lsn(consistent_seg * SEG + 0x100)),
        replay_lsn=str(Lsn(consistent_seg * SEG + 0x100)), replay_timestamp=at,
        system_identifier=1, server_version=150000, wal_segment_size=SEG, block_size=8192,
        data_checksums=True, datasets=["p/a"], layout="[]", complete=complete,
        missing=[] if complete else ["p/a@zsnap_x"],
    )


def names(timeline: int, numbers: range | list[int]) -> list[str]:
    return [Segment(timeline, n, SEG).name for n in numbers]


def commit_at_minute(segment: Segment, end: Lsn | None) -> datetime | None:
    """Each segment N holds one commit, at minute 10 N (minute 10 N - 5 before a switch)."""
    if end is not None:
        return T0 + timedelta(minutes=10 * segment.number - 5)
    return T0 + timedelta(minutes=10 * segment.number)


def minute(value: datetime) -> float:
    return (value - T0).total_seconds() / 60


def test_one_window_from_the_oldest_set_to_the_last_commit() -> None:
    sets = [make_set(3, 1, 1), make_set(25, 2, 2), make_set(99, 9, 9, complete=False)]
    found = windows(sets, Archive.from_names(names(1, range(1, 6))), {}, commit_at_minute)
    [w] = found.windows
    assert (minute(w.start), minute(w.end)) == (3, 50)
    assert w.first_set == sets[0].id and w.sets == [sets[0].id, sets[1].id]
    assert w.ends == "the end of the archived WAL" and found.notes == []


def test_missing_wal_splits_the_window_and_a_later_set_starts_the_next() -> None:
    sets = [make_set(3, 1, 1), make_set(65, 6, 6)]
    archive = Archive.from_names(names(1, [1, 2, 3, 6, 7]))
    first, second = windows(sets, archive, {}, commit_at_minute).windows
    assert (minute(first.start), minute(first.end)) == (3, 30)
    assert first.ends == f"segment {Segment(1, 4, SEG).name} is missing from the archive"
    assert first.missing == Segment(1, 4, SEG).name and second.missing is None
    assert (minute(second.start), minute(second.end)) == (65, 70)


def test_wal_after_a_gap_without_a_set_to_start_from_is_no_window() -> None:
    archive = Archive.from_names(names(1, [1, 2, 5, 6]))
    found = windows([make_set(3, 1, 1)], archive, {}, commit_at_minute)
    assert [minute(w.end) for w in found.windows] == [20]


def test_a_branch_splits_the_window_where_the_new_timeline_starts() -> None:
    # Timeline 2 branched off timeline 1 inside segment 3: recovery reads 1..2 on timeline 1,
    # 3.. on timeline 2.
    history = {2: "1\t0/3000100\tno recovery target specified\n"}
    archive = Archive.from_names(names(1, [1, 2, 3]) + names(2, [3, 4]) + ["00000002.history"])
    first, second = windows([make_set(3, 1, 1)], archive, history, commit_at_minute).windows
    assert (first.timeline, minute(first.start), minute(first.end)) == (1, 3, 25)
    assert first.ends == "timeline 2 branches off at 0/3000100"
    assert (second.timeline, second.start, minute(second.end)) == (2, first.end, 40)
    assert second.first_set == first.first_set


def test_a_set_on_an_abandoned_timeline_is_left_out_with_a_note() -> None:
    history = {2: "1\t0/3000100\tno recovery target specified\n"}
    archive = Archive.from_names(names(1, [1, 2, 3, 4]) + names(2, [3, 4]))
    old_branch = make_set(45, 4, 4, timeline=1)
    found = windows([make_set(3, 1, 1), old_branch], archive, history, commit_at_minute)
    assert any(old_branch.id in note for note in found.notes)
    assert all(old_branch.id not in w.sets for w in found.windows)


def test_a_set_consistent_in_a_segment_not_archived_yet_reaches_its_own_point() -> None:
    newest = make_set(80, 5, 6)
    found = windows([make_set(3, 1, 1), newest], Archive.from_names(names(1, range(1, 6))),
                    {}, commit_at_minute)
    [w] = found.windows
    assert newest.id in w.sets and minute(w.end) == 80


def test_a_set_newer_than_the_whole_archive_is_a_point_of_its_own() -> None:
    fresh = make_set(90, 8, 8)  # a fresh redo point, its segment not archived yet
    found = windows([make_set(3, 1, 1), fresh], Archive.from_names(names(1, range(1, 6))), {},
                    commit_at_minute)
    first, point = found.windows
    assert minute(first.end) == 50 and point.sets == [fresh.id]
    assert point.start == point.end == fresh.consistent_at and found.notes == []


def test_no_complete_set_no_window() -> None:
    found = windows([make_set(3, 1, 1, complete=False)],
                    Archive.from_names(names(1, [1])), {}, commit_at_minute)
    assert found.windows == [] and found.summary().startswith("no flashback possible")


def test_segments_without_commits_are_looked_back_through() -> None:
    def only_in_two(segment: Segment, end: Lsn | None) -> datetime | None:
        return T0 + timedelta(minutes=20) if segment.number == 2 else None

    [w] = windows([make_set(3, 1, 1)], Archive.from_names(names(1, range(1, 9))), {},
                  only_in_two).windows
    assert minute(w.end) == 20


@given(st.sets(st.integers(min_value=1, max_value=30), min_size=1),
       st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=6))
def test_windows_are_ordered_apart_and_each_holds_its_sets(
    archived: set[int], set_segments: list[int]
) -> None:
    sets = [make_set(10 * n + 1 + i, n, n) for i, n in enumerate(sorted(set_segments))]
    found = windows(sets, Archive.from_names(names(1, sorted(archived))), {}, commit_at_minute)
    for w in found.windows:
        assert w.start <= w.end
        assert w.sets, "a window without a branch starts at a set"
    for earlier, later in zip(found.windows, found.windows[1:], strict=False):
        assert earlier.end < later.start or earlier.last_segment < later.first_segment
    listed = {i for w in found.windows for i in w.sets}
    # Every set is in a window or named in a note, never both, never neither.
    for s in sets:
        assert (s.id in listed) != any(s.id in note for note in found.notes)


def test_commit_lines_of_pg_waldump() -> None:
    out = (
        "rmgr: Transaction len (rec/tot):     34/    34, tx:       3798, lsn: 0/040E3A50, "
        "prev 0/040E3A10, desc: COMMIT 2026-12-02 15:29:12.246976 UTC\n"
        "rmgr: Transaction len (rec/tot):     34/    34, tx:       3799, lsn: 0/040E3A90, "
        "prev 0/040E3A50, desc: ABORT 2026-12-02 15:29:13.000001 UTC\n"
        "rmgr: Transaction len (rec/tot):     66/    66, tx:          0, lsn: 0/040E3B00, "
        "prev 0/040E3A90, desc: COMMIT_PREPARED 740: 2026-12-02 15:29:14 UTC\n"
    )
    assert commits_in(out) == [datetime(2026, 12, 2, 15, 29, 12, 246976, tzinfo=UTC),
                               datetime(2026, 12, 2, 15, 29, 14, tzinfo=UTC)]
