"""What WAL a clone needs and where it is: every segment from its set's redo point on, in the
archive or already in the clone's pg_wal; checked before the instance starts, used to size the
progress bar, and named when recovery stops short of its target."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from zsnap.catalog import SnapshotSet
from zsnap.clone.serverlog import last_restored
from zsnap.clone.target import Kind, Target
from zsnap.errors import WalMissing
from zsnap.lsn import Lsn, Segment, is_segment_name
from zsnap.wal import available as segments
from zsnap.wal.archives import WalArchive
from zsnap.wal.names import Archive, split_suffix


@dataclass(frozen=True)
class CloneWal:
    set: SnapshotSet
    # Where the clone's restore_command fetches from, when zsnap knows (listed, or only
    # fetched from: a restore_command alone).
    wal_archive: WalArchive | None
    pg_wal: Path  # the clone's

    @property
    def _listed(self) -> bool:
        return self.wal_archive is not None and self.wal_archive.listable

    @property
    def start(self) -> Segment:
        """Where replay starts: the set's redo segment."""
        s = self.set
        return s.redo.segment(s.timeline, s.wal_segment_size)

    @cached_property
    def _archived(self) -> Archive:
        if not self._listed:
            return Archive()
        assert self.wal_archive is not None
        return self.wal_archive.listing(self.set.wal_segment_size)

    def from_set(self, name: str) -> bool:
        """Whether the clone needs the set's own copy of WAL file `name`: a segment from the
        redo point to the replay position that the archive does not have (the standby had
        streamed it, it was not archived yet). Without an archive to look into, every
        segment of that range."""
        if not is_segment_name(name):
            return False
        s = self.set
        seg = Segment.parse(name, s.wal_segment_size)
        if self._archived.has(seg):
            return False
        replayed = Lsn.parse(s.replay_lsn).segment(s.timeline, s.wal_segment_size)
        return seg.timeline <= s.timeline and self.start.number <= seg.number <= replayed.number

    def available(self) -> segments.Available:
        s = self.set
        size = s.wal_segment_size
        replayed = Lsn.parse(s.replay_lsn).segment(s.timeline, size).number
        return segments.merge(
            segments.available(self._archived),
            segments.available(Archive.from_names(segments.listing(self.pg_wal), size)),
            replayed,
        )

    @property
    def _consistency_segment(self) -> Segment:
        """The segment holding the first byte after the set's consistency point."""
        s = self.set
        return s.consistent.segment(s.timeline, s.wal_segment_size)

    def recovery_target(self, target: Target) -> Target:
        """What recovery is told (pg_wal is not looked at: this is decided before the clone's
        pg_wal is in place). An immediate target stops *before* the first record after
        consistency, so it needs one: in the archive's (complete) copy of the segment that
        follows the consistency point there is one. When that segment is not archived yet (an
        idle primary: the set's consistency point is the end of all WAL written), PostgreSQL
        would reach consistency with the last record there is and end recovery "before
        configured recovery target was reached". Then recovery runs to the end of the WAL at
        hand instead, and `cut` makes that end exactly the set's consistency point."""
        if target.kind is not Kind.IMMEDIATE or self.wal_archive is None:
            return target
        s = self.set
        if not self._listed:
            # Known by its restore_command alone: asked for that one segment.
            fetched = self.wal_archive.has(self._consistency_segment.name)
            return target if fetched else Target.end_of_wal()
        found = segments.available(self._archived)
        if any(t >= s.timeline for t in found.get(self._consistency_segment.number, set())):
            return target
        return Target.end_of_wal()

    def cut(self, target: Target) -> tuple[str, int] | None:
        """Where the clone's WAL must end for `target` as `recovery_target` chose it (segment
        file and offset): at the set's consistency point when recovery runs to the end of the
        WAL at hand (what the standby had received beyond it is not the set's), else
        nowhere."""
        if target.kind is not Kind.END_OF_WAL:
            return None
        return self._consistency_segment.name, self.set.consistent.value % self.set.wal_segment_size

    def restore_command(self, command: str, target: Target) -> str:
        """The restore_command for `target` as `recovery_target` chose it. Recovering to the
        end of the WAL at hand, the segment cut at the consistency point must not be fetched
        whole from the archive should it be archived while the clone starts: recovery would
        run past the set's point."""
        if self.cut(target) is None:
            return command
        return f'[ "%f" != "{self._consistency_segment.name}" ] && {{ {command} ; }}'

    def goal(self, target: Target) -> Lsn | None:
        """How far replay can get: an LSN target, else the end of the newest segment at hand."""
        if target.lsn is not None:
            return target.lsn
        s = self.set
        last = segments.newest(self.available(), s.timeline, s.wal_segment_size)
        return last.next().start() if last is not None else None

    def check(self, target: Target) -> None:
        """Before starting: with an archive to look into, every segment from the set's redo
        point to its consistency point (and to an LSN target) must be there or in the clone's
        pg_wal."""
        if not self._listed:
            return
        s = self.set
        needed = s.consistent
        if target.lsn is not None and target.lsn > needed:
            needed = target.lsn
        gap = segments.first_gap(self.available(), self.start)
        last = needed.segment(s.timeline, s.wal_segment_size)
        if gap is not None and gap.number <= last.number:
            goal = "consistency" if needed == s.consistent else "the target"
            raise WalMissing(f"WAL segment {gap.name} is {self._absent(gap)}: set {s.id} needs "
                             f"it to reach {goal}")

    def _absent(self, segment: Segment) -> str:
        """How a segment the archive does not give is not there: missing, or damaged."""
        where = self.wal_archive.where if self.wal_archive is not None else "the archive"
        why = next((w for name, w in self._archived.damaged.items()
                    if split_suffix(name)[0] == segment.name), None)
        return (f"damaged in the archive {where} ({why})" if why
                else f"missing from the archive {where}")

    def first_gap(self) -> Segment | None:
        """The first segment missing after the set's redo point (None without an archive to
        look into)."""
        if not self._listed:
            return None
        return segments.first_gap(self.available(), self.start)

    def missing(self, target: Target, server_log: str) -> WalMissing:
        """Why recovery ended before `target`, in one line naming the segment it lacked."""
        s = self.set
        if self._listed and self.wal_archive is not None:
            where = self.wal_archive.where
            gap = self.first_gap()
            if gap is not None:
                return WalMissing(
                    f"WAL segment {gap.name} is {self._absent(gap)}: recovery from set {s.id} "
                    f"stopped there, before the target {target}"
                )
            last = segments.newest(self.available(), s.timeline, s.wal_segment_size)
            after = last.next().name if last else "after the set"
            return WalMissing(
                f"WAL segment {after} is not in the archive {where} yet, and the archived WAL "
                f"ends before the target {target} (a time target needs the first commit "
                "after it): wait for archiving, or run SELECT pg_switch_wal() on the primary"
            )
        restored = last_restored(server_log)
        nxt = Segment.parse(restored, s.wal_segment_size).next().name if restored else "?"
        return WalMissing(
            f"recovery ended before the target {target}: WAL segment {nxt} could not be "
            "restored (missing from the archive, or not archived yet)"
        )
