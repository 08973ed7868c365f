"""pg_waldump's text, summed up per WAL segment: for each transaction id the rows it inserted,
updated and deleted in each relation file, the files it created, its commit or abort, and the
restore points. Pure: lines in, summaries out (DOMAIN.md 4b has what each record looks like on
PostgreSQL 15 and 18; only `rmgr:`, `tx:`, `lsn:`, `blkref` and the record's first word are
relied on, and the two ways 15 and 18 print a tuple count).

A relation file is named as `blkref` names it, SPC/DB/RELFILENODE (`1663/5/16384`); commit
records and Storage CREATE name paths (`base/5/16384`), turned into the same form here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# The resource managers whose records matter here (pg_waldump --rmgr, one per flag).
RMGRS = ("Heap", "Heap2", "Transaction", "Storage", "XLOG")

_BLKREF = re.compile(r"blkref #\d+: rel (\d+)/(\d+)/(\d+)")
_TUPLES = re.compile(r"(?:ntuples: (\d+)|(\d+) tuples)")
_FLAGS = re.compile(r"flags:? 0x([0-9A-Fa-f]+)")
_WHEN = re.compile(r"^(?:(\d+): )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
# heapam_xlog.h: a DELETE that undoes a speculative insertion (INSERT ... ON CONFLICT).
DELETE_IS_SUPER = 0x08
GLOBAL_TABLESPACE = 1664
DEFAULT_TABLESPACE = 1663

INSERTED, UPDATED, DELETED, PAGES = range(4)
# The first words of the descriptions _record reads, of records other than Heap ones.
_WANTED = ("MULTI_INSERT", "COMMIT", "ABORT", "CREATE", "RESTORE_POINT", "FPI")


def file_key(path: str) -> str | None:
    """`base/5/16384` -> `1663/5/16384`; `global/1262` -> `1664/0/1262`;
    `pg_tblspc/16385/PG_15_202209061/5/16400` -> `16385/5/16400`; None for a fork's file."""
    parts = path.split("/")
    if "_" in parts[-1]:
        return None  # a fork (_fsm, _vm, _init): the relation is named by its main file
    if len(parts) == 3 and parts[0] == "base":
        return f"{DEFAULT_TABLESPACE}/{parts[1]}/{parts[2]}"
    if len(parts) == 2 and parts[0] == "global":
        return f"{GLOBAL_TABLESPACE}/0/{parts[1]}"
    if len(parts) == 5 and parts[0] == "pg_tblspc":
        return f"{parts[1]}/{parts[3]}/{parts[4]}"
    return None


def database_of(key: str) -> int:
    return int(key.split("/")[1])


@dataclass(frozen=True)
class End:
    """A transaction's commit or abort record."""

    xid: int
    lsn: int
    committed: bool
    at: datetime
    subxacts: tuple[int, ...] = ()
    dropped_files: tuple[str, ...] = ()  # `rels:`: relation files removed at commit
    dropped_relations: tuple[str, ...] = ()  # `dropped stats:` of relations, as DB/OID

    def to_json(self) -> list[Any]:
        return [self.xid, self.lsn, self.committed, self.at.isoformat(), list(self.subxacts),
                list(self.dropped_files), list(self.dropped_relations)]

    @classmethod
    def from_json(cls, data: list[Any]) -> End:
        xid, lsn, committed, at, subs, files, rels = data
        return cls(xid, lsn, committed, datetime.fromisoformat(at), tuple(subs), tuple(files),
                   tuple(rels))


@dataclass(frozen=True)
class RestorePoint:
    name: str
    lsn: int


@dataclass
class SegmentChanges:
    """What one segment's records add up to. Records are counted in the segment they start in."""

    # xid -> relation file -> [inserted, updated, deleted, pages written whole]
    changes: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    created: dict[int, list[str]] = field(default_factory=dict)  # xid -> files it created
    ends: list[End] = field(default_factory=list)  # in WAL order
    restore_points: list[RestorePoint] = field(default_factory=list)
    records: int = 0

    def count(self, xid: int, key: str, what: int, n: int = 1) -> None:
        self.changes.setdefault(xid, {}).setdefault(key, [0, 0, 0, 0])[what] += n

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": {str(x): rels for x, rels in self.changes.items()},
            "created": {str(x): files for x, files in self.created.items()},
            "ends": [e.to_json() for e in self.ends],
            "restore_points": [[r.name, r.lsn] for r in self.restore_points],
            "records": self.records,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SegmentChanges:
        # Written by to_json above, in a directory only zsnap writes (a version number
        # guards the layout): taken as it is read, only the xids made numbers again.
        return cls(
            changes={int(x): rels for x, rels in data["changes"].items()},
            created={int(x): files for x, files in data["created"].items()},
            ends=[End.from_json(e) for e in data["ends"]],
            restore_points=[RestorePoint(str(n), int(lsn)) for n, lsn in data["restore_points"]],
            records=int(data["records"]),
        )


@dataclass
class Summarizer:
    """Fed pg_waldump's lines as they come (`feed`); `segments` holds what each segment's
    records add up to. Lines that are not records (pg_waldump's own messages) are passed over."""

    segment_size: int
    segments: dict[int, SegmentChanges] = field(default_factory=dict)

    def feed(self, lines: Iterable[str]) -> None:
        # The hot loop of `zsnap wal find`: a gigabyte of WAL is millions of lines, so the
        # fixed parts of pg_waldump's format ("rmgr: %-11s len (rec/tot): %6u/%8u, tx: %10u,
        # lsn: %X/%08X, prev %X/%08X, desc: ...") are cut with str methods without copying
        # the line, the segment is worked out again only when the LSN's leading digits change,
        # and heap records, most of them, are counted inline.
        size = self.segment_size
        # The hex digits of an LSN's low half that fix its segment (or a part of it).
        digits = 8 - (size.bit_length() - 1) // 4
        found = self.segments
        last_hi = last_top = ""
        seg = SegmentChanges()
        changes = seg.changes
        for line in lines:
            i = line.find(", tx:", 17)
            if i < 0:
                continue
            j = line.find(", lsn: ", i)
            slash = line.find("/", j)
            k = line.find(", prev ", slash)
            d = line.find(", desc: ", k)
            if j < 0 or slash < 0 or k < 0 or d < 0 or not line.startswith("rmgr: "):
                continue
            hi = line[j + 7:slash]
            top = line[slash + 1:slash + 1 + digits]
            if top != last_top or hi != last_hi:
                last_hi, last_top = hi, top
                number = ((int(hi, 16) << 32) | int(line[slash + 1:k], 16)) // size
                seg = found.get(number) or found.setdefault(number, SegmentChanges())
                changes = seg.changes
            seg.records += 1
            d += 8
            if line.startswith("Heap ", 6):
                if line.startswith("INSERT", d):
                    what = INSERTED
                elif line.startswith(("HOT_UPDATE", "UPDATE"), d):
                    what = UPDATED
                elif line.startswith("DELETE", d):
                    flags = _FLAGS.search(line, d)
                    if flags and int(flags.group(1), 16) & DELETE_IS_SUPER:
                        continue
                    what = DELETED
                else:
                    continue  # LOCK, INPLACE, CONFIRM...: no row changes
                ref = line.find("blkref #0: rel ", d)
                if ref < 0:
                    continue
                ref += 15
                key = line[ref:line.find(" ", ref)]
                xid = int(line[i + 5:j])
                files = changes.get(xid)
                if files is None:
                    files = changes[xid] = {}
                counts = files.get(key)
                if counts is None:
                    files[key] = counts = [0, 0, 0, 0]
                counts[what] += 1
                continue
            if not line.startswith(_WANTED, d):
                continue  # PRUNE, VISIBLE, CHECKPOINT...: nothing a transaction is listed by
            lsn = (int(hi, 16) << 32) | int(line[slash + 1:k], 16)
            space = line.find(" ", d)
            kind, rest = (line[d:], "") if space < 0 else (line[d:space], line[space + 1:])
            _record(seg, line[6:line.index(" ", 6)], int(line[i + 5:j]), lsn, kind, rest)


def summarize(lines: Iterable[str], segment_size: int) -> dict[int, SegmentChanges]:
    """Segment number -> what its records add up to."""
    summary = Summarizer(segment_size)
    summary.feed(lines)
    return summary.segments


def _record(seg: SegmentChanges, rmgr: str, xid: int, lsn: int, kind: str, rest: str) -> None:
    if rmgr == "Heap2":
        if kind.startswith("MULTI_INSERT") and (ref := _BLKREF.search(rest)):
            tuples = _TUPLES.search(rest)
            n = int(tuples.group(1) or tuples.group(2)) if tuples else 1
            seg.count(xid, "/".join(ref.groups()), INSERTED, n)
    elif rmgr == "Transaction":
        end = _end(kind, xid, lsn, rest)
        if end is not None:
            seg.ends.append(end)
    elif rmgr == "Storage":
        if kind == "CREATE" and (key := file_key(rest.strip())) is not None and xid:
            seg.created.setdefault(xid, []).append(key)
    elif rmgr == "XLOG":
        if kind == "RESTORE_POINT":
            seg.restore_points.append(RestorePoint(rest.strip(), lsn))
        elif kind == "FPI" and xid:
            # Pages written whole by a transaction into a file it created: a table rewritten
            # (VACUUM FULL, CLUSTER) rather than emptied (TRUNCATE).
            for ref in _BLKREF.finditer(rest):
                seg.count(xid, "/".join(ref.groups()), PAGES)


def _end(kind: str, xid: int, lsn: int, rest: str) -> End | None:
    if kind not in ("COMMIT", "ABORT", "COMMIT_PREPARED", "ABORT_PREPARED"):
        return None
    parts = rest.split("; ")
    first = parts[0]
    if first.endswith(" UTC") and first[:1].isdigit() and first[4:5] == "-":
        at = datetime.fromisoformat(first[:-4] + "+00:00")  # the usual case, quickly
    else:
        when = _WHEN.match(first)
        if when is None:
            return None
        if when.group(1):  # COMMIT_PREPARED 1234: the prepared transaction's id
            xid = int(when.group(1))
        at = datetime.fromisoformat(when.group(2)).replace(tzinfo=UTC)
    subxacts: tuple[int, ...] = ()
    files: tuple[str, ...] = ()
    relations: tuple[str, ...] = ()
    for part in parts[1:]:
        label, _, values = part.partition(": ")
        words = values.split()
        if label == "subxacts":
            subxacts = tuple(int(w) for w in words if w.isdigit())
        elif label == "rels":
            files = tuple(k for w in words if (k := file_key(w)) is not None)
        elif label == "dropped stats":
            # KIND/DB/OID; kind 2 is a relation (pgstat_kind.h: PGSTAT_KIND_RELATION).
            relations = tuple(w.split("/", 1)[1] for w in words if w.startswith("2/"))
    return End(xid, lsn, kind.startswith("COMMIT"), at, subxacts, files, relations)
