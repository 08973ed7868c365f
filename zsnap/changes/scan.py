"""Reading archived WAL segments with pg_waldump, and keeping what each one held.

Consecutive segments are read by one pg_waldump (a record may start in one segment and end in
the next: read alone, a segment would lose it), with the segment after the run given too, so
that the last record of the run is read whole. A segment is kept in the state directory only
when it was read to its end and its successor was there: an archived segment never changes
(for a directory archive, its size and modification time are kept with it and compared), so
it is never read again. A segment that cannot be read (damaged, truncated, a compression zsnap
cannot undo) is reported as such, never kept, and reading goes on after it."""

from __future__ import annotations

import json
import logging
import lzma
import marshal
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from zsnap.changes.waldump import RMGRS, SegmentChanges, Summarizer
from zsnap.errors import ZsnapError
from zsnap.files import write_durably
from zsnap.lsn import Lsn, Segment, is_segment_name
from zsnap.runner import Runner, os_user_entry
from zsnap.wal.archives import WalArchive

log = logging.getLogger(__name__)

CACHE_DIR = "wal-changes"
CACHE_VERSION = 2
# Segments given to one pg_waldump at most (copies of compressed ones take this much room).
RUN = 64
WALDUMP_TIMEOUT_S = 3600.0
NOT_ARCHIVED = "not in the archive"
_STOPPED_AT = re.compile(r"at ([0-9A-F]+/[0-9A-F]+)")


@dataclass(frozen=True)
class SegmentRead:
    segment: Segment
    changes: SegmentChanges | None  # None: not archived, or unreadable (`problem` says why)
    problem: str | None = None
    cached: bool = False


Progress = Callable[[int, int, int], None]  # segments done, of how many, bytes read


@dataclass
class WalScan:
    runner: Runner
    archive: WalArchive
    waldump: Path
    state_dir: Path
    os_user: str
    # Whose summaries these are: a segment's name is no one file's when several clusters
    # share a state directory (most archives tell nothing more of a file than its name).
    cluster: str
    progress: Progress | None = None
    bytes_read: int = 0
    _tmp: Path | None = field(default=None, init=False)

    @property
    def _cache_dir(self) -> Path:
        return self.state_dir / CACHE_DIR

    @cached_property
    def _archived(self) -> set[str] | None:
        """The segment names the archive holds, whatever their compression suffix; None for
        an archive that cannot be listed (read up to the first segment it does not return)."""
        if not self.archive.listable:
            return None
        names = set()
        for name in self.archive.names():
            plain = name.split(".", 1)[0]
            if len(plain) == 24:
                names.add(plain)
        return names

    def _listed(self, seg: Segment) -> bool:
        return self._archived is None or seg.name in self._archived

    def read(self, first: int, last: int | None,
             at: Callable[[int], Segment]) -> Iterator[SegmentRead]:
        """Segments `first` to `last` (None: to the first one the archive does not return),
        `at(n)` saying which timeline's copy of segment n to read, in order."""
        total = 0 if last is None else last - first + 1
        try:
            n = first
            while last is None or n <= last:
                seg = at(n)
                hit = self.cached(seg)
                if hit is not None:
                    n += 1
                    self._tell(n - first, total)
                    yield SegmentRead(seg, hit, cached=True)
                    continue
                if not self._listed(seg):
                    n += 1
                    self._tell(n - first, total)
                    yield SegmentRead(seg, None, NOT_ARCHIVED)
                    continue
                run = [seg]
                while len(run) < RUN and (last is None or n + len(run) <= last):
                    nxt = at(n + len(run))
                    if nxt != run[-1].next() or not self._listed(nxt) or \
                            self.ended(nxt) is not None:
                        break
                    run.append(nxt)
                results, ended = self._read_run(run)
                for r in results:
                    n += 1
                    self._tell(n - first, total)
                    yield r
                if ended:
                    return
        finally:
            self.close()

    def _tell(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total, self.bytes_read)

    # --- the cache ---------------------------------------------------------------------------

    def _cache_path(self, seg: Segment) -> Path:
        return self._cache_dir / f"{self.cluster}-{seg.name}.summary"

    def forget_before(self, first: int, segment_size: int) -> int:
        """Removes what is kept of this cluster's segments numbered below `first`, of every
        timeline: no search reads them again (they are before every set's redo point), and
        kept, they would add up to a tenth of all the WAL ever archived; and the files of
        zsnap 0.1's layout (SEGMENT.json, SEGMENT.xids: whose they were is not known). Returns
        the files removed."""
        try:
            paths = list(self._cache_dir.iterdir())
        except OSError:
            return 0
        prefix = f"{self.cluster}-"
        removed = 0
        for path in paths:
            name = path.name.split(".", 1)[0]
            if is_segment_name(name):
                gone = True  # the old layout's
            elif name.startswith(prefix):
                try:
                    gone = Segment.parse(name[len(prefix):], segment_size).number < first
                except ValueError:
                    continue  # another cluster's ("main-2-..." for "main")
            else:
                continue  # another cluster's, one being written
            if gone:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _identity(self, seg: Segment) -> str:
        return self.archive.identity(seg.name)

    def cached(self, seg: Segment) -> SegmentChanges | None:
        try:
            data = marshal.loads(self._cache_path(seg).read_bytes())
            if data.get("version") != CACHE_VERSION or data.get("identity") != \
                    self._identity(seg):
                return None
            return SegmentChanges.from_cache(data["changes"])
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
            return None

    def _keep(self, seg: Segment, changes: SegmentChanges) -> None:
        """A cache: failing to write it costs only time later."""
        identity = self._identity(seg)
        # marshal: written and read several times faster than JSON, for what a gigabyte of
        # WAL adds up to (a third of a first reading's time went into writing it as JSON).
        data = marshal.dumps({"version": CACHE_VERSION, "identity": identity,
                              "changes": changes.to_cache()})
        xids = [e.xid for e in changes.ends]
        # Beside it, small: which transactions end in it, so that looking one up (an xid
        # target) opens only the segments that may hold its end.
        index = json.dumps({"version": CACHE_VERSION, "identity": identity,
                            "xids": [min(xids), max(xids)] if xids else None})
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            for path, content in ((self._cache_path(seg), data),
                                  (self._index_path(seg), index)):
                write_durably(path, content, mode=0o600, parents=False, sync=False)
        except OSError as e:
            log.debug("not kept: %s: %s", seg.name, e)

    def _index_path(self, seg: Segment) -> Path:
        return self._cache_dir / f"{self.cluster}-{seg.name}.xids"

    def ended(self, seg: Segment) -> range | None:
        """From the cache: the xids from the lowest to the highest that end in `seg` (empty
        when none does); None when `seg` is not cached (it must be read)."""
        try:
            data = json.loads(self._index_path(seg).read_text())
            if data.get("version") != CACHE_VERSION or data.get("identity") != \
                    self._identity(seg) or not self._cache_path(seg).exists():
                return None
            xids = data["xids"]
            return range(0) if xids is None else range(int(xids[0]), int(xids[1]) + 1)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return None

    # --- reading -----------------------------------------------------------------------------

    def _dir(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="zsnap-find-"))
            user = os_user_entry(self.os_user)
            os.chown(self._tmp, user.pw_uid, user.pw_gid)
        return self._tmp

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _place(self, seg: Segment) -> str | None:
        """`seg` as a plain file in the reading directory; the problem if it cannot be."""
        work = self._dir()
        dest = work / seg.name
        try:
            path = self.archive.fetch(seg.name, work)
        except (OSError, EOFError, lzma.LZMAError, ZsnapError) as e:
            dest.unlink(missing_ok=True)
            return f"cannot be read from the archive ({_reason(e)})"
        if path is None:
            if not self.archive.listable:
                return NOT_ARCHIVED
            return "listed but not fetched: removed meanwhile, or compressed in a way zsnap " \
                   "cannot undo (lz4, zstd)"
        size = path.stat().st_size
        if size != seg.segment_size:
            if path.parent == work:
                path.unlink(missing_ok=True)
            return f"is {size} bytes, not {seg.segment_size}: truncated or damaged"
        if path != dest:
            dest.unlink(missing_ok=True)
            dest.symlink_to(path)
        self.bytes_read += size
        return None

    def _read_run(self, run: list[Segment]) -> tuple[list[SegmentRead], bool]:
        """The segments of `run`, and whether the end of an archive that cannot be listed was
        met (a segment it did not return: the ones before it are read, it is not listed)."""
        results: list[SegmentRead] = []
        placed: list[Segment] = []
        ended = False
        for seg in run:
            problem = self._place(seg)
            if problem is None:
                placed.append(seg)
                continue
            # Read what came before it without it; it is unreadable; the rest follows.
            results.extend(self._read_placed(placed, successor=False))
            placed = []
            if problem == NOT_ARCHIVED and self._archived is None:
                ended = True
                break
            results.append(SegmentRead(seg, None, problem))
        if placed:
            successor = placed[-1].next()
            has_next = self._listed(successor) and self._place(successor) is None
            results.extend(self._read_placed(placed, successor=has_next))
        for path in self._dir().iterdir():
            path.unlink(missing_ok=True)
        return results, ended

    def _read_placed(self, run: list[Segment], *, successor: bool) -> list[SegmentRead]:
        """pg_waldump over `run`, and again after each segment it stops in."""
        reads: list[SegmentRead] = []
        while run:
            got = self._waldump(run, successor=successor)
            reads.extend(got)
            run = run[len(got):]
        return reads

    def _waldump(self, run: list[Segment], *, successor: bool) -> list[SegmentRead]:
        """The segments of `run` read whole, then the one it stopped in (if it did)."""
        first, last = run[0], run[-1]
        summary = Summarizer(first.segment_size)
        pending = b""

        def out(chunk: bytes) -> None:
            nonlocal pending
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            pending = data[cut:]
            summary.feed(data[:cut].decode("utf-8", "replace"))

        end = (last.next() if successor else last).next().start()
        # An end: without one, pg_waldump waits 5 s for the file after the last one given.
        argv = [str(self.waldump), *(f"--rmgr={r}" for r in RMGRS), "-p", str(self._dir()),
                "-t", str(first.timeline), "-s", str(first.start()), "-e", str(end)]
        # A damaged segment makes pg_waldump exit non-zero: its last line says where.
        result = self.runner.stream(argv, out, timeout=WALDUMP_TIMEOUT_S, check=False,
                                    env={**os.environ, "TZ": "UTC"})
        if pending:
            summary.feed(pending.decode("utf-8", "replace"))
        stopped = _stopped_at(result.stderr, end)
        reads = []
        for seg in run:
            changes = summary.segments.get(seg.number, SegmentChanges())
            if stopped.value < seg.next().start().value:
                lines = result.stderr.strip().splitlines()
                reads.append(SegmentRead(seg, None, "cannot be read: " + (
                    lines[-1].removeprefix("pg_waldump: ") if lines else "pg_waldump stopped")))
                break
            if seg != last or successor:
                self._keep(seg, changes)
            reads.append(SegmentRead(seg, changes))
        return reads


def _stopped_at(stderr: str, end: Lsn) -> Lsn:
    """Where pg_waldump stopped reading: the LSN its error names, else `end`."""
    lines = [line for line in stderr.splitlines() if "error:" in line]
    if lines and "could not find file" not in lines[-1]:
        m = _STOPPED_AT.search(lines[-1])
        if m is not None:
            return Lsn.parse(m.group(1))
    return end


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__

