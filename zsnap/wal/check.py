"""`zsnap wal check` and the WAL part of `zsnap check`: every segment recovery needs, from the
oldest complete set's redo point to the newest archived one, along the newest timeline's
history (zsnap.wal.timelines); what is missing or damaged, in runs per timeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from zsnap.catalog import Catalog, SnapshotSet
from zsnap.config import Config
from zsnap.lsn import DEFAULT_SEGMENT_SIZE, Lsn, Segment
from zsnap.wal.archives import read_archive, required
from zsnap.wal.names import Archive, split_suffix
from zsnap.wal.timelines import parse_history, timeline_path


@dataclass(frozen=True)
class Gap:
    timeline: int
    first: str  # segment names, inclusive
    last: str
    count: int


@dataclass
class GapReport:
    start: str | None  # the first segment checked
    newest: str | None  # the newest archived segment on the path
    latest_timeline: int
    checked: int = 0
    gaps: list[Gap] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Files from the start on that are there but cannot be read as the segment they name
    # (counted in the gaps, or past the newest readable segment): name -> what is wrong.
    damaged: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        return sum(g.count for g in self.gaps)

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.problems and not self.damaged


def _runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def find_gaps(
    archive: Archive,
    histories: dict[int, str],
    start: Segment,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> GapReport:
    """Every segment recovery needs from `start` to the newest archived one, along the history
    of the newest timeline; what is missing, grouped into runs per timeline."""
    latest = max(archive.timelines | {start.timeline})
    report = GapReport(start=start.name, newest=None, latest_timeline=latest)
    report.damaged = {
        name: why for name, why in sorted(archive.damaged.items())
        if Segment.parse(split_suffix(name)[0], segment_size).number >= start.number}
    history: list[tuple[int, Lsn]] = []
    if latest > 1:
        if latest in histories:
            try:
                history = parse_history(histories[latest])
            except ValueError as e:
                report.problems.append(f"{latest:08X}.history: {e}")
        else:
            report.problems.append(
                f"{latest:08X}.history is missing: recovery cannot follow timeline {latest}"
            )
    path = timeline_path(latest, history, segment_size)
    on_path = [s.timeline for s in path]
    if start.timeline not in on_path:
        report.problems.append(
            f"timeline {start.timeline} (of the oldest set) is not in the history of timeline "
            f"{latest}: sets on it cannot reach the newest WAL"
        )
        return report
    path = path[on_path.index(start.timeline):]
    newest: Segment | None = None
    for span in path:
        numbers = archive.segments.get(span.timeline, set())
        inside = [n for n in numbers if n >= max(span.first, start.number)
                  and (span.end is None or n < span.end)]
        if inside:
            seg = Segment(span.timeline, max(inside), segment_size)
            if newest is None or seg.number >= newest.number:
                newest = seg
    if newest is None:
        report.gaps.append(Gap(start.timeline, start.name, start.name, 1))
        report.checked = 1
        return report
    report.newest = newest.name
    for span in path:
        first = max(span.first, start.number)
        end = newest.number + 1 if span.end is None else min(span.end, newest.number + 1)
        have = archive.segments.get(span.timeline, set())
        missing = [n for n in range(first, end) if n not in have]
        report.checked += max(0, end - first)
        for a, b in _runs(missing):
            report.gaps.append(Gap(
                span.timeline, Segment(span.timeline, a, segment_size).name,
                Segment(span.timeline, b, segment_size).name, b - a + 1,
            ))
    return report


def oldest_complete(sets: Sequence[SnapshotSet]) -> SnapshotSet | None:
    complete = [s for s in sets if s.complete]
    return min(complete, key=lambda s: (s.redo.value, s.id)) if complete else None


@dataclass
class WalCheckResult:
    archive: str
    oldest_set: str | None
    report: GapReport | None
    partials: list[str]
    # Sets whose WAL from redo to consistency is itself missing: they cannot start at all.
    unusable_sets: list[str]

    @property
    def ok(self) -> bool:
        return self.report is None or self.report.ok


@dataclass
class WalCheck:
    config: Config
    catalog: Catalog

    def run(self) -> WalCheckResult:
        source = required(self.config, self.catalog.zfs.runner)
        sets = self.catalog.sets()
        oldest = oldest_complete(sets)
        size = oldest.wal_segment_size if oldest else DEFAULT_SEGMENT_SIZE
        archive, histories = read_archive(source, size)
        if oldest is None:
            return WalCheckResult(source.where, None, None, archive.partials, [])
        start = oldest.redo.segment(oldest.timeline, size)
        report = find_gaps(archive, histories, start, size)
        # A segment past the newest archived one is not archived yet, not missing: only the
        # gaps found make a set unusable.
        holes = {
            (g.timeline, n) for g in report.gaps
            for n in range(Segment.parse(g.first, size).number,
                           Segment.parse(g.last, size).number + 1)
        }
        unusable = []
        for s in sets:
            if not s.complete:
                continue
            first = s.redo.segment(s.timeline, size).number
            last = s.consistent.segment(s.timeline, size).number
            if any((s.timeline, n) in holes for n in range(first, last + 1)):
                unusable.append(s.id)
        return WalCheckResult(source.where, oldest.id, report, archive.partials, unusable)
