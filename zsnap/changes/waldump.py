"""pg_waldump's text, summed up per WAL segment: for each transaction id the rows it inserted,
updated and deleted in each relation file, the files it created, its commit or abort, and the
restore points. Pure: lines in, summaries out (DOMAIN.md 4b has what each record looks like on
PostgreSQL 15 and 18; only `rmgr:`, `tx:`, `lsn:`, `blkref` and the record's first word are
relied on, and the two ways 15 and 18 print a tuple count).

A relation file is named as `blkref` names it, SPC/DB/RELFILENODE (`1663/5/16384`); commit
records and Storage CREATE name paths (`base/5/16384`), turned into the same form here."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

INSERTED, UPDATED, DELETED, PAGES = range(4)
_LSN = re.compile(r", lsn: ([0-9A-F]+)/([0-9A-F]{8}), prev ")
# A heap record's first three letters -> what it does to a row (INSERT+INIT, HOT_UPDATE...).
_HEAP_ROWS = {"INS": INSERTED, "HOT": UPDATED, "UPD": UPDATED, "DEL": DELETED}


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


class End(NamedTuple):
    """A transaction's commit or abort record (a named tuple: a gigabyte of WAL makes
    hundreds of thousands, each cheap to build)."""

    xid: int
    lsn: int
    committed: bool
    at: datetime
    subxacts: tuple[int, ...] = ()
    dropped_files: tuple[str, ...] = ()  # `rels:`: relation files removed at commit
    dropped_relations: tuple[str, ...] = ()  # `dropped stats:` of relations, as DB/OID

    def to_cache(self) -> tuple[Any, ...]:
        # The time as microseconds since the epoch, and the lists only when there are any:
        # hundreds of thousands of these are written for a gigabyte of WAL.
        at = (self.at - _EPOCH) // _MICROSECOND
        if self.subxacts or self.dropped_files or self.dropped_relations:
            return (self.xid, self.lsn, self.committed, at, self.subxacts, self.dropped_files,
                    self.dropped_relations)
        return (self.xid, self.lsn, self.committed, at)

    @classmethod
    def from_cache(cls, data: tuple[Any, ...]) -> End:
        xid, lsn, committed, at, *lists = data
        return cls(xid, lsn, committed, _EPOCH + timedelta(microseconds=at), *lists)


@dataclass(frozen=True)
class RestorePoint:
    name: str
    lsn: int


@dataclass
class SegmentChanges:
    """What one segment's records add up to. Records count in the segment they start in."""

    # xid -> relation file -> [inserted, updated, deleted, pages written whole]
    changes: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    created: dict[int, list[str]] = field(default_factory=dict)  # xid -> files it created
    ends: list[End] = field(default_factory=list)  # in WAL order
    restore_points: list[RestorePoint] = field(default_factory=list)

    def count(self, xid: int, key: str, what: int, n: int = 1) -> None:
        self.changes.setdefault(xid, {}).setdefault(key, [0, 0, 0, 0])[what] += n

    def to_cache(self) -> dict[str, Any]:
        """What `marshal` writes for the cache (ints, strings, tuples, lists and dicts only)."""
        return {
            "changes": self.changes,
            "created": self.created,
            "ends": [e.to_cache() for e in self.ends],
            "restore_points": [(r.name, r.lsn) for r in self.restore_points],
        }

    @classmethod
    def from_cache(cls, data: dict[str, Any]) -> SegmentChanges:
        # Written by to_cache above, in a directory only zsnap writes (a version number
        # guards the layout): taken as it is read.
        return cls(
            changes=data["changes"],
            created=data["created"],
            ends=[End.from_cache(e) for e in data["ends"]],
            restore_points=[RestorePoint(n, lsn) for n, lsn in data["restore_points"]],
        )


@dataclass
class Summarizer:
    """Fed pg_waldump's output as it comes (`feed`); `segments` holds what each segment's
    records add up to. Lines that are not records (pg_waldump's own messages) are passed over."""

    segment_size: int
    segments: dict[int, SegmentChanges] = field(default_factory=dict)

    def feed(self, text: str) -> None:
        """`text`: whole lines, in the order pg_waldump printed them, which is LSN order."""
        # A gigabyte of WAL is millions of lines. Records come in LSN order, so the text is
        # cut where the leading digits of their LSNs change (a segment, or a part of one),
        # found by searching the text, and the lines of each cut are read without looking at
        # their LSN again.
        size = self.segment_size
        # The hex digits of an LSN's low half that fix its segment (or a part of it).
        digits = 8 - (size.bit_length() - 1) // 4
        pos, n = 0, len(text)
        while (m := _LSN.search(text, pos)) is not None:
            hi, lo = m.group(1), m.group(2)
            number = ((int(hi, 16) << 32) | int(lo, 16)) // size
            cut = _past(text, f", lsn: {hi}/{lo[:digits]}", m.start(), n)
            seg = self.segments.get(number) or self.segments.setdefault(number, SegmentChanges())
            _read(seg, text[pos:cut].splitlines())
            pos = cut


def _past(text: str, prefix: str, start: int, end: int) -> int:
    """Where the lines whose record's LSN begins with `prefix` (", lsn: 0/1F") end in
    `text[start:end]`: they are together, records being in LSN order."""
    while (q := text.rfind(prefix, start, end)) >= 0:
        line = text.rfind("\n", 0, q) + 1
        if text.find(", desc: ", line, q) < 0:  # the record's own LSN, not one in a desc
            return text.find("\n", q) + 1 or len(text)
        end = line
    return text.find("\n", start) + 1 or len(text)


def _read(seg: SegmentChanges, lines: list[str]) -> None:
    """The lines of records that all start in `seg`: the fixed parts of pg_waldump's format
    ("rmgr: %-11s len (rec/tot): %6u/%8u, tx: %10u, lsn: %X/%08X, prev %X/%08X, desc: ...")
    cut with str methods without copying the line; the two kinds that are most records,
    heap row changes and plain commits, read inline."""
    changes, ends = seg.changes, seg.ends
    for line in lines:
        i = line.find(", tx:", 17)
        d = line.find(", desc: ", i)
        if i < 0 or d < 0:
            continue
        d += 8
        if line.startswith("rmgr: Heap "):
            what = _HEAP_ROWS.get(line[d:d + 3])
            if what is None:
                continue  # LOCK, INPLACE, CONFIRM...: no row changes
            if what == DELETED:
                flags = _FLAGS.search(line, d)
                if flags and int(flags.group(1), 16) & DELETE_IS_SUPER:
                    continue
            ref = line.find("blkref #0: rel ", d)
            if ref < 0:
                continue
            ref += 15
            key = line[ref:line.find(" ", ref)]
            xid = int(line[i + 5:line.find(",", i + 5)])
            files = changes.get(xid)
            if files is None:
                files = changes[xid] = {}
            counts = files.get(key)
            if counts is None:
                files[key] = counts = [0, 0, 0, 0]
            counts[what] += 1
            continue
        if not line.startswith(_WANTED, d) or not line.startswith("rmgr: "):
            continue  # PRUNE, VISIBLE, CHECKPOINT...: nothing a transaction is listed by
        j = line.find(", lsn: ", i, d)
        slash = line.find("/", j, d)
        if j < 0 or slash < 0:
            continue
        lsn = (int(line[j + 7:slash], 16) << 32) | int(line[slash + 1:slash + 9], 16)
        if (line.startswith("COMMIT 2", d) and line.startswith("Transaction ", 6)
                and line.endswith(" UTC") and line.find(";", d) < 0):
            # A commit that lists nothing but its time (most of them): read here.
            ends.append(End(int(line[i + 5:j]), lsn, True, _utc(line[d + 7:])))
            continue
        space = line.find(" ", d)
        kind, rest = (line[d:], "") if space < 0 else (line[d:space], line[space + 1:])
        _record(seg, line[6:line.index(" ", 6)], int(line[i + 5:j]), lsn, kind, rest)


def summarize(lines: Iterable[str], segment_size: int) -> dict[int, SegmentChanges]:
    """Segment number -> what its records add up to."""
    summary = Summarizer(segment_size)
    summary.feed("\n".join(lines))
    return summary.segments


def _record(seg: SegmentChanges, rmgr: str, xid: int, lsn: int, kind: str, rest: str) -> None:
    for (manager, word), read in _READERS.items():
        if rmgr == manager and kind.startswith(word):
            read(seg, xid, lsn, kind, rest)
            return


def _multi_insert(seg: SegmentChanges, xid: int, lsn: int, kind: str, rest: str) -> None:
    if ref := _BLKREF.search(rest):
        tuples = _TUPLES.search(rest)
        n = int(tuples.group(1) or tuples.group(2)) if tuples else 1
        seg.count(xid, "/".join(ref.groups()), INSERTED, n)


def _transaction_end(seg: SegmentChanges, xid: int, lsn: int, kind: str, rest: str) -> None:
    end = _end(kind, xid, lsn, rest)
    if end is not None:
        seg.ends.append(end)


def _create(seg: SegmentChanges, xid: int, lsn: int, kind: str, rest: str) -> None:
    if kind == "CREATE" and (key := file_key(rest.strip())) is not None and xid:
        seg.created.setdefault(xid, []).append(key)


def _restore_point(seg: SegmentChanges, xid: int, lsn: int, kind: str, rest: str) -> None:
    if kind == "RESTORE_POINT":
        seg.restore_points.append(RestorePoint(rest.strip(), lsn))


def _full_pages(seg: SegmentChanges, xid: int, lsn: int, kind: str, rest: str) -> None:
    if kind == "FPI" and xid:  # not FPI_FOR_HINT
        # Pages written whole by a transaction into a file it created: a table rewritten
        # (VACUUM FULL, CLUSTER) rather than emptied (TRUNCATE).
        for ref in _BLKREF.finditer(rest):
            seg.count(xid, "/".join(ref.groups()), PAGES)


# The records read besides heap row changes: (resource manager, the first word of the
# description or its beginning) -> what reads them.
_READERS: dict[tuple[str, str], Callable[[SegmentChanges, int, int, str, str], None]] = {
    ("Heap2", "MULTI_INSERT"): _multi_insert,
    ("Transaction", "COMMIT"): _transaction_end,
    ("Transaction", "ABORT"): _transaction_end,
    ("Storage", "CREATE"): _create,
    ("XLOG", "RESTORE_POINT"): _restore_point,
    ("XLOG", "FPI"): _full_pages,
}
# Their first words: a line whose description begins otherwise is passed over uncut.
_WANTED = tuple({word: None for _, word in _READERS})


def _utc(stamp: str) -> datetime:
    """pg_waldump's time of a commit, run with TZ=UTC ("2026-12-05 10:17:10.551804 UTC")."""
    return datetime.fromisoformat(stamp[:-4] + "+00:00")


def _end(kind: str, xid: int, lsn: int, rest: str) -> End | None:
    if kind not in ("COMMIT", "ABORT", "COMMIT_PREPARED", "ABORT_PREPARED"):
        return None
    parts = rest.split("; ")
    first = parts[0]
    if first.endswith(" UTC") and first[:1].isdigit() and first[4:5] == "-":
        at = _utc(first)  # the usual case, quickly
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
