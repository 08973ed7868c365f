"""Which WAL segments a flashback can read, from the WAL archive (zsnap.wal.archives) and the
clone's own pg_wal (the snapshot holds what the standby had streamed, often the newest, not yet
archived, segment), and the first one missing after a set's redo point."""

from __future__ import annotations

from pathlib import Path

from zsnap.lsn import Segment
from zsnap.wal.names import Archive

# segment number -> the timelines it is available on
Available = dict[int, set[int]]


def available(archive: Archive) -> Available:
    """By segment number rather than timeline. Full segment files only: a `.partial` file
    (the old timeline's last segment after a failover) is not read by recovery; the new
    timeline's copy of it is. Damaged files are not there (zsnap.wal.archives.listing)."""
    found: Available = {}
    for timeline, numbers in archive.segments.items():
        for number in numbers:
            found.setdefault(number, set()).add(timeline)
    return found


def listing(directory: Path | None) -> list[str]:
    if directory is None or not directory.is_dir():
        return []
    return [p.name for p in directory.iterdir()]


def merge(found: Available, pg_wal: Available, up_to: int) -> Available:
    """The archive plus the clone's pg_wal up to the set's replay position: further names in
    pg_wal may be recycled segments, renamed ahead of use and still holding old WAL."""
    merged = {n: set(tlis) for n, tlis in found.items()}
    for number, tlis in pg_wal.items():
        if number <= up_to:
            merged.setdefault(number, set()).update(tlis)
    return merged


def newest(found: Available, timeline: int, segment_size: int) -> Segment | None:
    numbers = [n for n, tlis in found.items() if max(tlis) >= timeline]
    if not numbers:
        return None
    top = max(numbers)
    return Segment(max(found[top]), top, segment_size)


def first_gap(found: Available, start: Segment) -> Segment | None:
    """The first segment from `start` on that is on no timeline at or after the set's, below
    the newest one available: a hole recovery cannot cross. After a failover the new
    timeline's files continue the numbering, so any timeline >= the set's will do."""
    last = newest(found, start.timeline, start.segment_size)
    if last is None:
        return start
    tli = start.timeline
    for number in range(start.number, last.number + 1):
        here = {t for t in found.get(number, set()) if t >= start.timeline}
        if not here:
            return Segment(tli, number, start.segment_size)
        tli = max(here)
    return None
