"""The WAL archive (zsnap.walarchive: a directory, or a pgBackRest stanza): timeline-aware gap
check, and cleanup of a directory.

Recovery reads each segment from the newest timeline of the target's history whose start
segment is at or before it (xlogrecovery.c, XLogFileReadAnyTLI): on a timeline that ended at a
switch point, the segments before the one holding the switch point; from that segment on, the
next timeline. The gap check expects exactly those files. Cleanup follows pg_archivecleanup:
WAL segments (and `.partial` ones) before the cutoff segment go, whatever their timeline;
`.history` and `.backup` files stay.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zsnap.catalog import Catalog, SnapshotSet
from zsnap.config import Config
from zsnap.lsn import DEFAULT_SEGMENT_SIZE, Lsn, Segment
from zsnap.walarchive import DirectoryArchive, WalArchive, required

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})$")
_PARTIAL = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})\.partial$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_BACKUP = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")
# What archive_command wrappers commonly add; the WAL name before it decides.
_COMPRESSED = re.compile(r"\.(gz|zst|lz4|bz2|xz)$")


@dataclass
class Archive:
    """The names in an archive directory, sorted by kind."""

    segments: dict[int, set[int]] = field(default_factory=dict)  # timeline -> segment numbers
    histories: set[int] = field(default_factory=set)
    partials: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @classmethod
    def from_names(cls, names: Iterable[str], segment_size: int = DEFAULT_SEGMENT_SIZE) -> Archive:
        archive = cls()
        for name in names:
            plain = _COMPRESSED.sub("", name)
            if _SEGMENT.match(plain):
                seg = Segment.parse(plain, segment_size)
                archive.segments.setdefault(seg.timeline, set()).add(seg.number)
            elif _PARTIAL.match(plain):
                archive.partials.append(name)
            elif m := _HISTORY.match(name):
                archive.histories.add(int(m.group(1), 16))
            elif _BACKUP.match(name):
                archive.backups.append(name)
            else:
                archive.other.append(name)
        return archive

    @property
    def timelines(self) -> set[int]:
        return set(self.segments) | self.histories


@dataclass(frozen=True)
class Span:
    """Where a timeline is read from: segments [first, end) (end None: open)."""

    timeline: int
    first: int
    end: int | None


def parse_history(text: str) -> list[tuple[int, Lsn]]:
    """A TTTTTTTT.history file: each ancestor timeline and the LSN where it was left."""
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"bad timeline history line: {raw!r}")
        entries.append((int(parts[0]), Lsn.parse(parts[1])))
    return entries


def timeline_path(
    latest: int, history: Sequence[tuple[int, Lsn]], segment_size: int = DEFAULT_SEGMENT_SIZE
) -> list[Span]:
    """The spans recovery reads along the history of `latest`, oldest first."""
    spans = []
    first = 0
    for tli, switch in history:
        end = switch.value // segment_size
        spans.append(Span(tli, first, end))
        first = end
    spans.append(Span(latest, first, None))
    return spans


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

    @property
    def missing(self) -> int:
        return sum(g.count for g in self.gaps)

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.problems


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


def cleanup_names(names: Iterable[str], cutoff: Segment) -> list[str]:
    """pg_archivecleanup's choice: WAL and .partial files whose log/segment part is before the
    cutoff's, on any timeline. History, backup history and unknown files are never chosen."""
    limit = cutoff.name[8:]
    chosen = []
    for name in names:
        plain = _COMPRESSED.sub("", name)
        m = _SEGMENT.match(plain) or _PARTIAL.match(plain)
        if m and m.group(2) < limit:
            chosen.append(name)
    return sorted(chosen)


# --- on disk ---------------------------------------------------------------------------------


def read_archive(archive: WalArchive, segment_size: int) -> tuple[Archive, dict[int, str]]:
    found = Archive.from_names(archive.names(), segment_size)
    histories = {tli: text for tli in found.histories
                 if (text := archive.history(tli)) is not None}
    return found, histories


def remove_files(directory: Path, names: Sequence[str]) -> None:
    """Unlink, then fsync the directory so that the removal itself is durable."""
    for name in names:
        (directory / name).unlink(missing_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- operations ------------------------------------------------------------------------------


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


@dataclass
class WalPruneResult:
    archive: str
    cutoff: str | None
    oldest_set: str | None
    removed: list[str]
    kept: int
    dry_run: bool
    note: str = ""


@dataclass
class WalPrune:
    config: Config
    catalog: Catalog
    dry_run: bool = False

    def run(self) -> WalPruneResult:
        source = required(self.config, self.catalog.zfs.runner)
        names = source.names()
        oldest = oldest_complete(self.catalog.sets())
        if oldest is None:
            return WalPruneResult(source.where, None, None, [], len(names), self.dry_run,
                                  "no complete snapshot set: nothing tells which WAL is needed")
        cutoff = oldest.redo.segment(oldest.timeline, oldest.wal_segment_size)
        if source.managed_by is not None:
            # Its tool keeps its own catalogue of the WAL; a file removed behind its back
            # would be a gap it does not know of.
            return WalPruneResult(
                source.where, cutoff.name, oldest.id, [], len(names), self.dry_run,
                f"{source.managed_by} removes WAL from this archive, not zsnap: the sets need "
                f"it from {cutoff.name} on, so keep the archive retention at least that long")
        assert isinstance(source, DirectoryArchive)
        chosen = cleanup_names(names, cutoff)
        if not self.dry_run:
            remove_files(source.path, chosen)
            log.info("removed %d archived WAL files before %s", len(chosen), cutoff.name)
        return WalPruneResult(source.where, cutoff.name, oldest.id, chosen,
                              len(names) - len(chosen), self.dry_run)
