"""The recovery window: from when to when a flashback is possible on this host. It starts at
the consistency point of the oldest complete set and runs, along the archived WAL, to the last
commit archived; it is split where a segment is missing (no recovery passes it) and where a
timeline branches (the part before the branch and the part after are told apart, as recovery
follows the newest timeline's history, zsnap.wal).

Where a window ends is a commit timestamp inside a WAL segment: the segment is read with
pg_waldump, in the archive directory or fetched from the repository (WalArchive.fetch). An
archived segment never changes, so what was found in it is kept in the state directory."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from zsnap.catalog import SnapshotSet
from zsnap.config import Config
from zsnap.errors import ZsnapError
from zsnap.files import write_durably
from zsnap.lsn import DEFAULT_SEGMENT_SIZE, Lsn, Segment
from zsnap.pg.binaries import PgTools
from zsnap.runner import Runner, os_user_entry
from zsnap.wal.archives import WalArchive, configured, not_listed, read_archive
from zsnap.wal.names import Archive, split_suffix
from zsnap.wal.timelines import Span, parse_history, timeline_path

log = logging.getLogger(__name__)

CACHE = "wal-commits"
CACHE_ENTRIES = 4096
# How far back from a window's last segment to look for a commit (an idle primary archives
# segments with none: a switch every archive_timeout).
LOOK_BACK = 32
_COMMIT = re.compile(
    r"desc: COMMIT(?:_PREPARED)? (?:\d+: )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")

# The last commit in a segment (up to an LSN, where a timeline branched inside it), or None.
LastCommit = Callable[[Segment, Lsn | None], datetime | None]


@dataclass(frozen=True)
class Window:
    timeline: int
    start: datetime  # the earliest target: a set's consistency point, or where a branch began
    end: datetime  # the last commit archived inside the window
    first_set: str  # the oldest set a flashback in the window starts from
    sets: list[str]  # the complete sets that start inside it
    first_segment: str
    last_segment: str
    ends: str  # why it ends there: the end of the archive, missing WAL, a branch
    missing: str | None = None  # the segment whose absence ends it, if that is why

    def to_json(self) -> dict[str, object]:
        return {"timeline": self.timeline, "from": self.start.isoformat(),
                "to": self.end.isoformat(), "first_set": self.first_set, "sets": self.sets,
                "first_segment": self.first_segment, "last_segment": self.last_segment,
                "ends": self.ends, "missing_segment": self.missing}


@dataclass
class RecoveryWindow:
    windows: list[Window] = field(default_factory=list)
    # Why there is none, or what is left out of it (sets on an abandoned timeline, say).
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"windows": [w.to_json() for w in self.windows], "notes": self.notes}

    def summary(self) -> str:
        if not self.windows:
            return "no flashback possible" + (f": {self.notes[0]}" if self.notes else "")
        parts = [f"{w.start.isoformat(sep=' ', timespec='seconds')} to "
                 f"{w.end.isoformat(sep=' ', timespec='seconds')} (timeline {w.timeline})"
                 for w in self.windows]
        return "flashback possible from " + "; from ".join(parts)


def windows(
    sets: Sequence[SnapshotSet], archive: Archive, histories: dict[int, str],
    last_commit: LastCommit, segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> RecoveryWindow:
    """The windows that complete `sets` and the archived WAL add up to, oldest first."""
    result = RecoveryWindow()
    complete = sorted((s for s in sets if s.complete), key=lambda s: (s.consistent.value, s.id))
    if not complete:
        result.notes.append("no complete snapshot set")
        return result
    latest = max(archive.timelines | {s.timeline for s in complete})
    history: list[tuple[int, Lsn]] = []
    if latest > 1:
        try:
            history = parse_history(histories[latest])
        except (KeyError, ValueError):
            result.notes.append(f"{latest:08X}.history is missing or unreadable: the window "
                                f"follows timeline {latest} alone")
    path = timeline_path(latest, history, segment_size)
    switches = {tli: lsn for tli, lsn in history}

    def span_at(n: int) -> Span:
        return next(s for s in path if s.first <= n and (s.end is None or n < s.end))

    def has(n: int) -> bool:
        return n in archive.segments.get(span_at(n).timeline, set())

    usable = []
    for s in complete:
        at = s.consistent.value // segment_size
        if span_at(at).timeline != s.timeline:
            result.notes.append(f"set {s.id} is on timeline {s.timeline}, which the history of "
                                f"timeline {latest} leaves before it: outside the window")
        else:
            usable.append(s)
    if not usable:
        return result
    first = min(s.redo.value // segment_size for s in usable)
    archived = [n for span in path for n in archive.segments.get(span.timeline, set())
                if n >= max(first, span.first) and (span.end is None or n < span.end)]
    newest = max(archived, default=first - 1)
    # Runs of segments with none missing, each cut where the timeline changes.
    pieces: list[tuple[int, int]] = []
    n = first
    while n <= newest:
        if not has(n):
            n += 1
            continue
        a = n
        while n + 1 <= newest and has(n + 1) and span_at(n + 1) == span_at(a):
            n += 1
        pieces.append((a, n))
        n += 1
    assigned: set[str] = set()
    reached: datetime | None = None  # where the previous piece ended, at a branch
    run_start = first
    for i, (a, b) in enumerate(pieces):
        span = span_at(a)
        after_previous = i > 0 and pieces[i - 1][1] == a - 1
        if not after_previous:
            run_start, reached = a, None
        next_piece = pieces[i + 1] if i + 1 < len(pieces) else None
        followed = next_piece is not None and next_piece[0] == b + 1
        # A set consistent in the segment after the last one archived (not archived yet, or
        # missing) still reaches its consistency point: that WAL is in the set itself.
        hi = b if followed else b + 1
        inside = [s for s in usable if run_start <= s.redo.value // segment_size
                  and a <= s.consistent.value // segment_size <= hi]
        assigned.update(s.id for s in inside)
        if not inside and reached is None:
            continue
        start = reached or min(s.consistent_at for s in inside)
        branch = followed and span.end is not None and b == span.end - 1
        missing = None
        if branch:
            nxt = span_at(b + 1).timeline
            switch = switches[span.timeline]
            ends = f"timeline {nxt} branches off at {switch}"
            end = _last_before(last_commit, Segment(nxt, b + 1, segment_size), switch, a,
                               span.timeline, segment_size)
        else:
            after = Segment(span.timeline, b + 1, segment_size).name
            why = next((w for name, w in archive.damaged.items()
                        if split_suffix(name)[0] == after), None)
            ends = "the end of the archived WAL"
            if next_piece is not None or why is not None:
                # A damaged segment ends the window even where nothing readable follows it.
                missing = after
                ends = f"segment {missing} is " + (f"damaged in the archive: {why}" if why
                                                  else "missing from the archive")
            end = _last(last_commit, span.timeline, a, b, segment_size)
        end = max([start, *([end] if end is not None else []),
                   *(s.consistent_at for s in inside)])
        first_set = min(s.id for s in inside) if not reached else result.windows[-1].first_set
        result.windows.append(Window(
            span.timeline, start, end, first_set, [s.id for s in inside],
            Segment(span.timeline, a, segment_size).name,
            Segment(span.timeline, b, segment_size).name, ends, missing))
        reached = end if branch else None
    for s in usable:
        if s.id in assigned:
            continue
        if s.redo.value // segment_size > newest:
            # Newer than the archive (an idle primary, a fresh redo point): the set holds its
            # own WAL up to its consistency point, which a flashback reaches, and no more.
            seg = Segment(s.timeline, s.consistent.value // segment_size, segment_size).name
            result.windows.append(Window(
                s.timeline, s.consistent_at, s.consistent_at, s.id, [s.id], seg, seg,
                "its own WAL: nothing archived after it yet"))
        else:
            result.notes.append(f"set {s.id}: the WAL from its redo point to its consistency "
                                "point is not all in the archive: outside the window")
    result.windows.sort(key=lambda w: (w.start, w.first_segment))
    return result


def _last(last_commit: LastCommit, timeline: int, a: int, b: int,
          segment_size: int) -> datetime | None:
    for n in range(b, max(a, b - LOOK_BACK) - 1, -1):
        found = last_commit(Segment(timeline, n, segment_size), None)
        if found is not None:
            return found
    return None


def _last_before(last_commit: LastCommit, switch_segment: Segment, switch: Lsn, a: int,
                 timeline: int, segment_size: int) -> datetime | None:
    """The last commit before a branch: in the new timeline's copy of the segment holding the
    switch point (recovery reads that one), else before it on the old timeline."""
    found = last_commit(switch_segment, switch)
    if found is not None:
        return found
    return _last(last_commit, timeline, a, switch_segment.number - 1, segment_size)


# --- reading the archive -----------------------------------------------------------------------


def commits_in(waldump_output: str) -> list[datetime]:
    return [datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)
            for m in _COMMIT.finditer(waldump_output)]


@dataclass
class SegmentReader:
    """Finds the last commit of archived segments with pg_waldump, remembering what it found."""

    config: Config
    runner: Runner
    archive: WalArchive
    _cache: dict[str, str | None] = field(default_factory=dict)
    _loaded: bool = False
    _dir: Path | None = None

    @property
    def _cache_path(self) -> Path:
        # The cluster's own: a segment's name is no one file's when several clusters share a
        # state directory (and most archives tell nothing more of a file than its name).
        return self.config.state.dir / f"{CACHE}-{self.config.snapshot.cluster}.json"

    def __call__(self, segment: Segment, end: Lsn | None) -> datetime | None:
        # Under the file's identity too: a segment put back whole after a truncated copy was
        # read is read again.
        key = (segment.name + (f"@{end}" if end is not None else "")
               + f"#{self.archive.identity(segment.name)}")
        if not self._loaded:
            self._loaded = True
            self._cache = self._load()
        if key in self._cache:
            value = self._cache[key]
        else:
            try:
                path = self._fetch(segment)
            except ZsnapError as e:
                log.warning("segment %s: %s", segment.name, e)
                path = None
            if path is None:
                return None  # not cached: it may be readable next time
            # An end always: without one pg_waldump waits 5 s for the next segment's file.
            value = self._cache[key] = self._read(path, end or segment.next().start())
        if value is None:
            return None
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None

    def _load(self) -> dict[str, str | None]:
        """The cache as written, or nothing (anything else in the file is not ours)."""
        try:
            data = json.loads(self._cache_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str | None)}

    @cached_property
    def _waldump(self) -> Path:
        return PgTools.of(self.config, self.runner).path("pg_waldump")

    def _read(self, path: Path, end: Lsn) -> str | None:
        argv = [str(self._waldump), "--rmgr=Transaction", f"--end={end}", str(path)]
        # The end of the WAL at hand makes pg_waldump exit non-zero after the last record.
        result = self.runner.run(argv, mutates=False, check=False, timeout=120,
                                 env={**os.environ, "TZ": "UTC"})
        found = commits_in(result.stdout)
        return max(found).isoformat() if found else None

    def _fetch(self, segment: Segment) -> Path | None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="zsnap-window-"))
            user = os_user_entry(self.config.standby.os_user)
            os.chown(self._dir, user.pw_uid, user.pw_gid)
        return self.archive.fetch(segment.name, self._dir)

    def close(self) -> None:
        """Keep what was found (a cache: a failure to write it costs only time later)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if not self._cache:
            return
        try:
            # The newest segments are the ones asked about again (names sort by timeline,
            # then position): the oldest are let go past a bound.
            kept = dict(sorted(self._cache.items())[-CACHE_ENTRIES:])
            write_durably(self._cache_path, json.dumps(kept, sort_keys=True), sync=False)
        except OSError as e:
            log.debug("window cache not written: %s", e)


def recovery_window(config: Config, sets: Sequence[SnapshotSet], runner: Runner) -> RecoveryWindow:
    """This host's window; a note instead when the archive cannot be read."""
    archive = configured(config, runner)
    if archive is None:
        return RecoveryWindow(notes=[not_listed(config)])
    complete = [s for s in sets if s.complete]
    size = complete[0].wal_segment_size if complete else DEFAULT_SEGMENT_SIZE
    reader = SegmentReader(config, runner, archive)
    try:
        found, histories = read_archive(archive, size)
        return windows(sets, found, histories, reader, size)
    except ZsnapError as e:
        return RecoveryWindow(notes=[f"the archive could not be read: {e}"])
    finally:
        reader.close()
