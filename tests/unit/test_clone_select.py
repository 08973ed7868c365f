"""Choosing the set a flashback starts from, and reading the target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zsnap.catalog import SnapshotSet
from zsnap.clone.create import CreateClone
from zsnap.clone.request import CloneRequest, Commit
from zsnap.clone.select import TargetOutOfRange, candidates
from zsnap.clone.target import Kind, Target
from zsnap.errors import NotFoundError, UsageError
from zsnap.lsn import Lsn

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def make_set(minute: int, lsn: int, complete: bool = True) -> SnapshotSet:
    at = T0 + timedelta(minutes=minute)
    return SnapshotSet(
        id=at.strftime("%Y%m%dT%H%M%SZ"), cluster="c", created=at + timedelta(seconds=1),
        timeline=1, redo_lsn="0/1000000", checkpoint_lsn="0/1000060",
        consistent_lsn=str(Lsn(lsn)), replay_lsn=str(Lsn(lsn)), replay_timestamp=at,
        system_identifier=1, server_version=150000, wal_segment_size=16 << 20, block_size=8192,
        data_checksums=True, datasets=["p/a", "p/b"], layout="[]", complete=complete,
        missing=[] if complete else ["p/b@zsnap_x"],
    )


SETS = [make_set(0, 0x1000000), make_set(10, 0x2000000), make_set(20, 0x3000000)]
NOW = T0 + timedelta(hours=1)


def at(minute: float) -> Target:
    return Target(Kind.TIME, time=T0 + timedelta(minutes=minute))


def ids(sets: list[SnapshotSet]) -> list[str]:
    return [s.id for s in sets]


def test_between_two_sets_the_older_one_first_then_fallbacks() -> None:
    assert ids(candidates(SETS, at(15), NOW)) == [SETS[1].id, SETS[0].id]


def test_exactly_at_a_sets_consistency_uses_that_set() -> None:
    assert candidates(SETS, at(10), NOW)[0].id == SETS[1].id


def test_after_the_last_set() -> None:
    assert candidates(SETS, at(45), NOW)[0].id == SETS[2].id


def test_before_the_oldest_set_is_refused() -> None:
    with pytest.raises(TargetOutOfRange, match="before the oldest set"):
        candidates(SETS, at(-1), NOW)


def test_future_is_refused() -> None:
    with pytest.raises(TargetOutOfRange, match="in the future"):
        candidates(SETS, at(61), NOW)


def test_incomplete_sets_are_never_chosen() -> None:
    sets = [SETS[0], make_set(10, 0x2000000, complete=False)]
    assert ids(candidates(sets, at(15), NOW)) == [SETS[0].id]


def test_no_complete_set() -> None:
    with pytest.raises(NotFoundError):
        candidates([make_set(0, 1, complete=False)], at(5), NOW)


def test_lsn_targets_compare_with_the_consistency_lsn() -> None:
    target = Target(Kind.LSN, lsn=Lsn(0x2800000))
    assert ids(candidates(SETS, target, NOW)) == [SETS[1].id, SETS[0].id]
    with pytest.raises(TargetOutOfRange):
        candidates(SETS, Target(Kind.LSN, lsn=Lsn(0x10)), NOW)


def test_forced_set() -> None:
    assert ids(candidates(SETS, at(45), NOW, forced=SETS[0].id)) == [SETS[0].id]
    with pytest.raises(TargetOutOfRange):
        candidates(SETS, at(5), NOW, forced=SETS[1].id)
    with pytest.raises(NotFoundError):
        candidates(SETS, at(5), NOW, forced="20990101T000000Z")


def test_xid_and_immediate_start_from_the_newest() -> None:
    assert candidates(SETS, Target.at_xid("1234"), NOW)[0].id == SETS[2].id
    assert candidates(SETS, Target.immediate(), NOW)[0].id == SETS[2].id


@given(st.floats(min_value=0, max_value=59))
def test_every_candidate_is_consistent_before_the_target(minute: float) -> None:
    chosen = candidates(SETS, at(minute), NOW)
    assert all(s.consistent_at <= T0 + timedelta(minutes=minute) for s in chosen)
    assert chosen == sorted(chosen, key=lambda s: s.id, reverse=True)
    # The first is the newest that qualifies: no later set would have done.
    later = [s for s in SETS if s.id > chosen[0].id]
    assert all(s.consistent_at > T0 + timedelta(minutes=minute) for s in later)


def test_time_without_offset_is_local_and_says_so() -> None:
    t = Target.at_time("2026-11-21T14:04:59.123456")
    assert t.time is not None and t.time.tzinfo is not None
    assert t.time.replace(tzinfo=None) == datetime(2026, 11, 21, 14, 4, 59, 123456)
    assert t.note is not None and "local time" in t.note
    assert Target.at_time("2026-11-21T14:04:59Z").note is None


def test_target_settings_keep_microseconds() -> None:
    t = Target.at_time("2026-11-21T14:04:59.000123+01:00")
    assert t.settings() == {"recovery_target_time": "2026-11-21 14:04:59.000123+01:00"}
    assert Target.at_lsn("0/3000060").settings() == {"recovery_target_lsn": "0/3000060"}
    assert Target.immediate().settings() == {"recovery_target": "immediate"}
    assert Target.at_restore_point("before-upgrade").settings() == {
        "recovery_target_name": "before-upgrade"}


@pytest.mark.parametrize("make,text", [
    (Target.at_time, "yesterday"), (Target.at_lsn, "12345"), (Target.at_xid, "-1"),
    (Target.at_restore_point, ""),
])
def test_bad_targets_are_usage_errors(make: object, text: str) -> None:
    with pytest.raises(UsageError):
        make(text)  # type: ignore[operator]


def with_redo(s: SnapshotSet, redo: int) -> SnapshotSet:
    return s.model_copy(update={"redo_lsn": str(Lsn(redo))})


def test_the_set_with_the_nearest_redo_point_wins_over_a_newer_one() -> None:
    # The middle set was taken right after a checkpoint on the primary; the newest set's
    # restartpoint is older: starting from the middle one replays less WAL.
    sets = [with_redo(SETS[0], 0x800000), with_redo(SETS[1], 0x1F00000),
            with_redo(SETS[2], 0x1000000)]
    assert ids(candidates(sets, at(45), NOW)) == [SETS[1].id, SETS[2].id, SETS[0].id]


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 0x3000000)), min_size=1,
                max_size=8, unique_by=lambda t: t[0]),
       st.integers(0, 60))
def test_the_first_candidate_replays_the_least_wal(
    spec: list[tuple[int, int]], minute: int
) -> None:
    sets = sorted((with_redo(make_set(m, 0x3000000 + m), redo) for m, redo in spec),
                  key=lambda s: s.id)
    target = at(minute)
    eligible = [s for s in sets if s.consistent_at <= target.time]  # type: ignore[operator]
    if not eligible:
        with pytest.raises(TargetOutOfRange):
            candidates(sets, target, NOW)
        return
    got = candidates(sets, target, NOW)
    assert sorted(ids(got)) == sorted(ids(eligible))
    assert got[0].redo == max(s.redo for s in eligible)
    # Among the sets with that redo point, the newest.
    assert got[0].id == max(s.id for s in eligible if s.redo == got[0].redo)


def test_a_commit_at_a_sets_consistency_lsn_is_after_it() -> None:
    """A set's consistency LSN is where replay had got to (the end of the last record in it):
    a commit whose record starts there is the first thing after the set, which a flashback
    from it stops just before."""
    request = CloneRequest(Target.before_xid("742"), commit=Commit(SETS[1].consistent))
    assert ids(CreateClone._before_commit(SETS, request)) == ids(SETS[:2])
    request = CloneRequest(Target.before_xid("742"), commit=Commit(SETS[0].consistent))
    assert ids(CreateClone._before_commit(SETS, request)) == ids(SETS[:1])
