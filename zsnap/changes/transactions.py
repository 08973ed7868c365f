"""Segment summaries, in WAL order, into committed transactions. A transaction's records may
lie in earlier segments than its commit; a subtransaction's records carry its own id and count
for its top transaction once the commit lists it; an aborted (sub)transaction counts for
nothing. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from zsnap.changes.waldump import End, RestorePoint, SegmentChanges, database_of


@dataclass
class Transaction:
    xid: int
    committed_at: datetime
    commit_lsn: int
    timeline: int
    files: dict[str, list[int]] = field(default_factory=dict)  # file -> [ins, upd, del, pages]
    created: set[str] = field(default_factory=set)
    dropped_files: tuple[str, ...] = ()
    dropped_relations: tuple[str, ...] = ()  # DB/OID
    subxacts: tuple[int, ...] = ()  # its committed subtransactions

    @property
    def databases(self) -> set[int]:
        return databases_of([*self.files, *self.dropped_files, *self.created],
                            self.dropped_relations)


def databases_of(files: Iterable[str], dropped_relations: Iterable[str] = ()) -> set[int]:
    """The databases (OIDs) of relation files and of dropped relations (DB/OID), the shared
    catalogs' left out."""
    found = {database_of(k) for k in files}
    found |= {int(r.split("/")[0]) for r in dropped_relations}
    found.discard(0)
    return found


@dataclass(frozen=True)
class Point:
    """A restore point, and the newest commit before it (its own time is not in the record)."""

    name: str
    lsn: int
    timeline: int
    after: datetime | None


@dataclass
class Assembler:
    """Fed segment after segment (`add`), yields each transaction as its commit is met."""

    pending: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    created: dict[int, set[str]] = field(default_factory=dict)
    last_commit: datetime | None = None

    def add(self, seg: SegmentChanges, timeline: int) -> Iterator[Transaction | Point]:
        """`seg`'s dictionaries are taken over, not copied: a summary is added once."""
        pending = self.pending
        for xid, files in seg.changes.items():
            mine = pending.get(xid)
            if mine is None:
                pending[xid] = files
                continue
            for key, counts in files.items():
                total = mine.get(key)
                if total is None:
                    mine[key] = counts
                else:
                    for i, n in enumerate(counts):
                        total[i] += n
        for xid, keys in seg.created.items():
            self.created.setdefault(xid, set()).update(keys)
        # Restore points and ends in WAL order: a point says which commits came before it.
        events: list[End | RestorePoint] = list(seg.ends)
        if seg.restore_points:
            events.extend(seg.restore_points)
            events.sort(key=lambda e: e.lsn)
        for event in events:
            if isinstance(event, RestorePoint):
                yield Point(event.name, event.lsn, timeline, self.last_commit)
                continue
            done = self._finish(event, timeline)
            if done is not None:
                yield done

    def _finish(self, end: End, timeline: int) -> Transaction | None:
        files = self.pending.pop(end.xid, None) or {}
        created = self.created.pop(end.xid, None) or set()
        for sub in end.subxacts:
            for key, counts in self.pending.pop(sub, {}).items():
                total = files.setdefault(key, [0, 0, 0, 0])
                for i, n in enumerate(counts):
                    total[i] += n
            created |= self.created.pop(sub, set())
        if not end.committed:
            return None
        if self.last_commit is None or end.at > self.last_commit:
            self.last_commit = end.at
        return Transaction(end.xid, end.at, end.lsn, timeline, files, created,
                           end.dropped_files, end.dropped_relations, end.subxacts)
