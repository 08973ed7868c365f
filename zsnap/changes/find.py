"""`zsnap wal find`: the committed transactions in the archived WAL that changed some tables,
with their commit time and LSN as PostgreSQL recorded them and the rows each inserted, updated
and deleted per table, whether it truncated, rewrote or dropped one; and the restore points.

The WAL read runs along the newest timeline's history, as recovery reads it (zsnap.wal), from
the redo point of the set a flashback to the first moment asked for would start from (the
oldest set's: the recovery window) to the newest segment archived. Relation files are named
where their table existed (zsnap.changes.relations): in the standby's catalogs, else in the
newest set from before the file was removed, else in an instance paused just before the
transaction that removed it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from zsnap.catalog import SnapshotSet, catalog_of, is_set_id
from zsnap.changes.relations import Names, RelationMap, cached, keep, read_server
from zsnap.changes.scan import Progress, WalScan
from zsnap.changes.transactions import Assembler, Point, Transaction, databases_of
from zsnap.changes.waldump import DELETED, INSERTED, PAGES, UPDATED, SegmentChanges
from zsnap.clone.request import CloneRequest, Commit
from zsnap.clone.target import Target
from zsnap.config import Config
from zsnap.errors import NotFoundError, UsageError, ZsnapError
from zsnap.lsn import Lsn, Segment
from zsnap.output import fmt_time
from zsnap.pg.binaries import PgTools
from zsnap.pg.connection import conninfo_for
from zsnap.wal import archives
from zsnap.wal.archives import read_archive
from zsnap.wal.names import split_suffix
from zsnap.wal.timelines import parse_history, timeline_path
from zsnap.zfs import Zfs

log = logging.getLogger(__name__)

KINDS = ("insert", "update", "delete", "truncate", "drop")
RELATIONS_DIR = "relations"
# Instances started in one run to name relation files (each a few seconds; kept afterwards).
MAX_LOOKUPS = 4
# Segments looked back through for the database of a transaction whose commit's segment holds
# none of its changes (a gigabyte of WAL at the default size).
LOOK_BACK = 64


def qualified(name: str) -> str:
    """`orders` -> `public.orders` (search_path public); `sales.orders` stays."""
    name = name.strip()
    if not name or name.startswith(".") or name.endswith("."):
        raise UsageError(f"not a table name: {name!r} (schema.name or name)")
    return name if "." in name else f"public.{name}"


@dataclass(frozen=True)
class FindRequest:
    tables: tuple[str, ...] = ()  # schema.name (qualified)
    database: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kinds: frozenset[str] = frozenset()  # of KINDS; empty: any
    min_rows: int = 0

    @cached_property
    def counted(self) -> tuple[int, ...]:
        """Which of a file's row counts the kinds asked for add up (`--min-rows`)."""
        return tuple(i for kind, i in (("insert", INSERTED), ("update", UPDATED),
                                       ("delete", DELETED))
                     if not self.kinds or kind in self.kinds)


@dataclass
class TableChange:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    truncated: bool = False
    dropped: bool = False
    rewritten: bool = False  # VACUUM FULL, CLUSTER, a rewriting ALTER TABLE

    def matches(self, kinds: frozenset[str]) -> bool:
        return not kinds or any(self._has(k) for k in kinds)

    def _has(self, kind: str) -> bool:
        return {"insert": self.inserted > 0, "update": self.updated > 0,
                "delete": self.deleted > 0, "truncate": self.truncated,
                "drop": self.dropped}[kind]

    def rows(self, kinds: frozenset[str]) -> int:
        counts = {"insert": self.inserted, "update": self.updated, "delete": self.deleted}
        return sum(n for k, n in counts.items() if not kinds or k in kinds)

    def to_json(self) -> dict[str, object]:
        return {"inserted": self.inserted, "updated": self.updated, "deleted": self.deleted,
                "truncated": self.truncated, "dropped": self.dropped,
                "rewritten": self.rewritten}


@dataclass
class Found:
    xid: int
    committed_at: datetime
    commit_lsn: Lsn
    timeline: int
    database: str | None
    tables: dict[str, TableChange] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"xid": self.xid, "committed_at": self.committed_at.isoformat(),
                "commit_lsn": str(self.commit_lsn), "timeline": self.timeline,
                "database": self.database,
                "tables": {k: v.to_json() for k, v in self.tables.items()}}


@dataclass
class FindResult:
    transactions: list[Found] = field(default_factory=list)
    restore_points: list[Point] = field(default_factory=list)
    first_segment: str | None = None
    last_segment: str | None = None
    segments: int = 0
    cached: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0
    names_from: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "transactions": [t.to_json() for t in self.transactions],
            "restore_points": [{"name": p.name, "lsn": str(Lsn(p.lsn)), "timeline": p.timeline,
                                "after_commit_at": p.after.isoformat() if p.after else None}
                               for p in self.restore_points],
            "scanned": {"from_segment": self.first_segment, "to_segment": self.last_segment,
                        "segments": self.segments, "cached": self.cached,
                        "bytes_read": self.bytes_read, "seconds": round(self.seconds, 3),
                        "unreadable": [{"segment": s, "problem": p}
                                       for s, p in self.unreadable]},
            "names_from": self.names_from,
            "notes": self.notes,
        }


@dataclass
class Scanned:
    """The committed transactions and restore points of a stretch of WAL, before naming."""

    transactions: list[Transaction] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    aborted: set[int] = field(default_factory=set)
    newest_xid: int = 0


@dataclass
class FindChanges:
    config: Config
    zfs: Zfs
    progress: Progress | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def run(self, request: FindRequest) -> FindResult:
        started = time.monotonic()
        sets = self._sets()
        self._check_range(request, sets)
        result = FindResult()
        scanned = self._scan(sets, request, result)
        self._forget_relations(sets)
        names = self._names(sets, scanned.transactions, request, result)
        for t in scanned.transactions:
            found = self._found(t, names)
            if found is not None and _wanted(found, request):
                result.transactions.append(found)
        result.restore_points = [p for p in scanned.points if _in_range(p.after, request)
                                 or p.after is None]
        result.seconds = time.monotonic() - started
        return result

    def locate(self, xid: int) -> Commit:
        """Where transaction `xid` committed and the database it changed, or one line saying
        why it did not commit. Cached segments are opened only where their index says the
        transaction may end; the rest is read as `run` reads it."""
        sets = self._sets()
        cfg = self.config
        archive = archives.readable(cfg, self.zfs.runner)
        first, last, at = self._segments(sets, None, archive)
        scan = self._scanner(archive)
        newest = 0
        n = first
        while last is None or n <= last:
            ended = scan.ended(at(n))
            if ended is None:
                break
            if ended:
                newest = max(newest, ended[-1])
                if xid in ended and (changes := scan.cached(at(n))) is not None:
                    end = next((e for e in changes.ends if e.xid == xid), None)
                    if end is not None and sets[0].holds_before(end.lsn):
                        if not end.committed:
                            raise NotFoundError(
                                f"transaction {xid} was rolled back: it never committed")
                        xids = (xid, *end.subxacts)
                        found = databases_of([*_files_of(changes, xids), *end.dropped_files],
                                             end.dropped_relations)
                        return Commit(Lsn(end.lsn),
                                      _database(found, scan, at, first, n - 1, xids))
            n += 1
        result = FindResult()
        scanned = self._scan(sets, FindRequest(), result, xid=xid, start=n)
        if scanned.transactions:
            t = scanned.transactions[0]
            # Read from segment n on: its changes before it are in the cached ones.
            return Commit(Lsn(t.commit_lsn), _database(t.databases, scan, at, first, n - 1,
                                                       (xid, *t.subxacts)))
        if xid in scanned.aborted:
            raise NotFoundError(f"transaction {xid} was rolled back: it never committed")
        newest = max(newest, scanned.newest_xid)
        if xid > newest:
            raise NotFoundError(f"transaction {xid} is not in the archived WAL: the newest "
                                f"committed there is {newest} (is it in the future, or not "
                                "archived yet?)")
        raise NotFoundError(f"transaction {xid} did not commit in the recovery window's WAL "
                            f"(from {at(first).name}): it committed before it, or never did")

    def _forget_relations(self, sets: list[SnapshotSet]) -> None:
        """The tables kept for names no search can ask again: those of sets gone (pruned),
        and those just before transactions before the oldest set's redo point."""
        oldest = min(s.redo for s in sets)
        prefix = f"{self.config.snapshot.cluster}-"
        ids = {s.id for s in sets}
        for path in (self.config.state.dir / RELATIONS_DIR).glob(f"{prefix}*.json"):
            key = path.name[len(prefix):-len(".json")]
            if key.startswith(_BEFORE_XID):
                try:
                    gone = _before_lsn(key) < oldest
                except ValueError:
                    continue
            else:
                gone = is_set_id(key) and key not in ids  # not another cluster's "main-2-..."
            if gone:
                path.unlink(missing_ok=True)

    def _scanner(self, archive: archives.WalArchive) -> WalScan:
        cfg = self.config
        waldump = PgTools.of(cfg, self.zfs.runner).path("pg_waldump")
        return WalScan(self.zfs.runner, archive, waldump, cfg.state.dir, cfg.standby.os_user,
                       cfg.snapshot.cluster, self.progress)

    # --- what to read ------------------------------------------------------------------------

    def _sets(self) -> list[SnapshotSet]:
        complete = [s for s in catalog_of(self.config, self.zfs).sets() if s.complete]
        if not complete:
            raise NotFoundError("there is no complete snapshot set: the WAL is read from a "
                                "set's redo point on (zsnap snapshot)")
        return sorted(complete, key=lambda s: (s.consistent.value, s.id))

    def _check_range(self, request: FindRequest, sets: list[SnapshotSet]) -> None:
        now = self.now()
        if request.since and request.until and request.since > request.until:
            raise UsageError(f"--since {fmt_time(request.since)} is after --until "
                             f"{fmt_time(request.until)}")
        if request.since and request.since > now:
            raise UsageError(f"--since {fmt_time(request.since)} is in the future")
        oldest = sets[0].consistent_at
        if request.until and request.until < oldest:
            raise UsageError(f"--until {fmt_time(request.until)} is before the recovery window, "
                             f"which begins at {fmt_time(oldest)} (set {sets[0].id})")

    def _segments(self, sets: list[SnapshotSet], since: datetime | None,
                  archive: archives.WalArchive) -> tuple[int, int | None,
                                                           Callable[[int], Segment]]:
        """The first segment to read, the last (None: up to the first one an archive that
        cannot be listed does not return), and which timeline's copy of each to read."""
        size = sets[0].wal_segment_size
        set_timelines = {s.timeline for s in sets}
        if archive.listable:
            found, histories = read_archive(archive, size)
            latest = max(found.timelines | set_timelines)
        else:
            found, histories = None, {}
            latest = max(set_timelines)
            # Newer timelines' history files, one after another, as recovery looks for them.
            while (text := archive.history(latest + 1)) is not None:
                latest += 1
                histories[latest] = text
            if latest > 1 and latest not in histories:
                text = archive.history(latest)
                if text is not None:
                    histories[latest] = text
        history = parse_history(histories[latest]) if latest in histories else []
        path = timeline_path(latest, history, size)
        start = sets[0]
        if since is not None:
            before = [s for s in sets if s.consistent_at <= since]
            if before:
                start = max(before, key=lambda s: (s.redo.value, s.id))
        first = start.redo.value // size

        def at(n: int) -> Segment:
            span = next(s for s in path if s.first <= n and (s.end is None or n < s.end))
            return Segment(span.timeline, n, size)

        if found is None:
            return first, None, at
        # Damaged files too: read, they are named as unreadable, and what follows is read.
        present = {tli: set(numbers) for tli, numbers in found.segments.items()}
        for name in found.damaged:
            seg = Segment.parse(split_suffix(name)[0], size)
            present.setdefault(seg.timeline, set()).add(seg.number)
        newest = max((n for span in path for n in present.get(span.timeline, set())
                      if n >= span.first and (span.end is None or n < span.end)),
                     default=first - 1)
        return first, newest, at

    def _scan(self, sets: list[SnapshotSet], request: FindRequest, result: FindResult,
              xid: int | None = None, start: int | None = None) -> Scanned:
        archive = archives.readable(self.config, self.zfs.runner)
        first, last, at = self._segments(sets, request.since, archive)
        first = first if start is None else start
        result.first_segment = at(first).name
        scan = self._scanner(archive)
        size = sets[0].wal_segment_size
        # Before every set's redo point: never read again.
        scan.forget_before(min(s.redo.value for s in sets) // size, size)
        out = Scanned()
        window_start = sets[0].consistent.value
        assembler = Assembler()
        past_until = 0
        for read in scan.read(first, last, at):
            result.segments += 1
            result.last_segment = read.segment.name
            result.cached += read.cached
            if read.changes is None:
                result.unreadable.append((read.segment.name, read.problem or "unreadable"))
                continue
            ends = read.changes.ends
            out.aborted.update(e.xid for e in ends if not e.committed)
            for item in assembler.add(read.changes, read.segment.timeline):
                if isinstance(item, Point):
                    out.points.append(item)
                    continue
                out.newest_xid = max(out.newest_xid, item.xid)
                # sets[0].holds_before(item.commit_lsn), inlined in the loop over every
                # transaction: else replayed into every set, outside the recovery window.
                if item.commit_lsn < window_start:
                    continue
                if xid is not None:
                    if item.xid == xid:
                        out.transactions.append(item)
                elif _in_range(item.committed_at, request) and _may_match(item, request):
                    out.transactions.append(item)
            if xid is not None and out.transactions:
                break
            # Commit times are not strictly in WAL order: one whole segment past --until more.
            if request.until and ends and min(e.at for e in ends) > request.until:
                past_until += 1
                if past_until > 1:
                    break
        result.bytes_read = scan.bytes_read
        if last is None:
            none = "" if result.segments else \
                f" ({result.first_segment}, the first: zsnap doctor tries the command)"
            result.notes.append(f"{archive.where} cannot be listed: read up to the first "
                                f"segment it did not return{none}")
        for name, problem in result.unreadable:
            result.notes.append(f"segment {name} {problem}: transactions in it are not listed")
        return out

    # --- naming --------------------------------------------------------------------------

    def _names(self, sets: list[SnapshotSet], transactions: list[Transaction],
               request: FindRequest, result: FindResult) -> Names:
        names = Names()
        if not self.config.receiving:
            try:
                names.maps.append(self._standby_map())
            except ZsnapError as e:
                result.notes.append(f"the standby's catalogs could not be read ({e})")
        keys = {k for t in transactions for k in (*t.files, *t.dropped_files, *t.created)}
        lookups = 0
        for key in sorted(keys):
            if names.unknown([key]) == [] or lookups >= MAX_LOOKUPS:
                continue
            last = max(t.commit_lsn for t in transactions
                       if key in t.files or key in t.dropped_files or key in t.created)
            before = [s for s in sets if s.holds_before(last)]
            if before:
                s = max(before, key=lambda s: (s.consistent.value, s.id))
                found, made = self._set_map(s)
                lookups += made
                if found is not None and found not in names.maps:
                    names.maps.append(found)
            if names.unknown([key]) and lookups < MAX_LOOKUPS:
                dropper = next((t for t in transactions if key in t.dropped_files), None)
                if dropper is not None:
                    found, made = self._before_map(dropper)
                    lookups += made
                    if found is not None and found not in names.maps:
                        names.maps.append(found)
        for wanted in request.tables:
            if not names.named(wanted, request.database):
                # Not among the tables the WAL read touched or the standby has: a set knows it?
                for s in reversed(sets):
                    found, made = self._set_map(s)
                    if found is not None and found not in names.maps:
                        names.maps.append(found)
                    if names.named(wanted, request.database) or made:
                        break
            if not names.named(wanted, request.database):
                where = f" in database {request.database}" if request.database else ""
                raise NotFoundError(f"no table {wanted}{where}: not in the standby nor in the "
                                    "sets looked at (zsnap wal find without --table lists every "
                                    "table changed)")
        result.names_from = [m.source for m in names.maps]
        unknown = sorted(names.unknown(keys))
        if unknown:
            shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            result.notes.append(f"{len(unknown)} relation file(s) could not be named, listed "
                                f"as SPC/DB/FILE: {shown}")
        return names

    def _standby_map(self) -> RelationMap:
        base = self.config.standby.conninfo
        return read_server("the standby", lambda db: conninfo_for(base, dbname=db),
                           "standby")

    def _map_path(self, key: str) -> Path:
        return self.config.state.dir / RELATIONS_DIR / f"{self.config.snapshot.cluster}-{key}.json"

    def _set_map(self, s: SnapshotSet) -> tuple[RelationMap | None, int]:
        """The relations of set `s`: kept from an earlier run, else read in a throwaway
        instance of it (the second value counts instances started)."""
        path = self._map_path(s.id)
        found = cached(path)
        if found is not None:
            return found, 0
        request = CloneRequest(Target.immediate(), set_id=s.id)
        return self._instance_map(request, f"set {s.id}", path), 1

    def _before_map(self, t: Transaction) -> tuple[RelationMap | None, int]:
        """The relations just before transaction `t` (which removed a file no set names)."""
        path = self._map_path(_before_key(t.xid, Lsn(t.commit_lsn)))
        found = cached(path)
        if found is not None:
            return found, 0
        request = CloneRequest(Target.before_xid(str(t.xid)), commit=Commit(Lsn(t.commit_lsn)))
        return self._instance_map(request, f"just before transaction {t.xid}", path), 1

    def _instance_map(self, request: CloneRequest, source: str, path: Path) -> RelationMap | None:
        from zsnap.past.instance import past_instance

        try:
            with past_instance(self.config, self.zfs, request, purpose="names") as inst:
                found = read_server(source, lambda db: inst.conninfo(db), "instance")
        except ZsnapError as e:
            log.warning("relations of %s not read: %s", source, e)
            return None
        keep(path, found)
        return found

    # --- the answer ----------------------------------------------------------------------

    def _found(self, t: Transaction, names: Names) -> Found | None:
        tables: dict[str, TableChange] = {}
        databases = sorted(t.databases)
        dropped = set(t.dropped_relations)

        def change(key: str) -> TableChange | None:
            rel = names.file(key)
            if rel is None:
                if key in names.unknown([key]):
                    return tables.setdefault(key, TableChange())
                return None  # a system catalog's file
            if not rel.listed:
                return None
            return tables.setdefault(rel.qualified, TableChange())

        for key, counts in t.files.items():
            c = change(key)
            if c is not None:
                c.inserted += counts[INSERTED]
                c.updated += counts[UPDATED]
                c.deleted += counts[DELETED]
        for key in t.dropped_files:
            c = change(key)
            if c is None:
                continue
            rel = names.file(key)
            if rel is None:
                # Unnamed: removed for good when no file replaced it in the same transaction.
                c.dropped = bool(dropped) and not t.created
                c.truncated = not c.dropped
                continue
            if f"{key.split('/')[1]}/{rel.oid}" in dropped:
                c.dropped = True
                continue
            rewritten = any(
                (new := names.file(k)) is not None and new.oid == rel.oid
                and new.database == rel.database and t.files.get(k, [0, 0, 0, 0])[PAGES] > 0
                for k in t.created)
            if rewritten:
                c.rewritten = True
            else:
                c.truncated = True
        tables = {k: v for k, v in tables.items() if _changed(v)}
        if not tables:
            return None
        database = names.database(databases[0]) if len(databases) == 1 else None
        return Found(t.xid, t.committed_at, Lsn(t.commit_lsn), t.timeline, database, tables)


def _files_of(changes: SegmentChanges, xids: Iterable[int]) -> list[str]:
    """The relation files (sub)transactions `xids` changed or created in one segment."""
    return [k for x in xids for k in (*changes.changes.get(x, ()), *changes.created.get(x, ()))]


def _database(found: set[int], scan: WalScan, at: Callable[[int], Segment], first: int,
              last: int, xids: tuple[int, ...]) -> int | None:
    """The one database in `found` (what the transaction's commit and the segments read with it
    say); when that is none, the one its changes in the cached segments before them name, from
    `last` back to the nearest that has some (at most LOOK_BACK). None: shared catalogs only,
    or not seen."""
    n = last
    while not found and n >= max(first, last - LOOK_BACK + 1):
        changes = scan.cached(at(n))
        if changes is None:
            break
        found = databases_of(_files_of(changes, xids))
        n -= 1
    return next(iter(found)) if len(found) == 1 else None


def _changed(c: TableChange) -> bool:
    return bool(c.inserted or c.updated or c.deleted or c.truncated or c.dropped or c.rewritten)


# The tables just before a transaction are kept under "before-xid-XID-LSN", its commit LSN.
_BEFORE_XID = "before-xid-"


def _before_key(xid: int, commit: Lsn) -> str:
    return f"{_BEFORE_XID}{xid}-{commit}".replace("/", "_")


def _before_lsn(key: str) -> Lsn:
    """The commit LSN in a `_before_key` (ValueError if it has none)."""
    return Lsn.parse(key.rsplit("-", 1)[1].replace("_", "/"))


def _in_range(at: datetime | None, request: FindRequest) -> bool:
    if at is None:
        return False
    return (request.since is None or at >= request.since) and \
        (request.until is None or at <= request.until)


def _may_match(t: Transaction, request: FindRequest) -> bool:
    """Before naming: could `t` pass the kinds and size asked for? Its raw counts include
    TOAST and catalog rows, so they can only be more than what is listed: a cheap test that
    keeps millions of small transactions out of the naming."""
    if not request.kinds and not request.min_rows:
        return True
    counted = request.counted
    rows = sum(counts[i] for counts in t.files.values() for i in counted)
    if request.kinds:
        removal = bool(request.kinds & {"truncate", "drop"}) and bool(t.dropped_files)
        if not rows and not removal:
            return False
    return rows >= request.min_rows


def _wanted(found: Found, request: FindRequest) -> bool:
    if request.database is not None and found.database != request.database:
        return False
    if request.tables:
        found.tables = {k: v for k, v in found.tables.items() if k in request.tables}
    found.tables = {k: v for k, v in found.tables.items() if v.matches(request.kinds)}
    if not found.tables:
        return False
    return sum(v.rows(request.kinds) for v in found.tables.values()) >= request.min_rows \
        if request.min_rows else True


def parse_kinds(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset()
    kinds = frozenset(k.strip().lower() for k in text.split(",") if k.strip())
    bad = sorted(kinds - set(KINDS))
    if bad:
        raise UsageError(f"unknown --kind {', '.join(bad)}: use {', '.join(KINDS)}")
    return kinds


def tables_of(given: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(qualified(t) for t in given))


def target_commit(config: Config, zfs: Zfs, target: Target) -> Commit | None:
    """Where an xid target's transaction committed, and the database it changed, found in the
    archived WAL (one line when it never committed, was rolled back, or is not archived); None
    for other targets, and where the archive cannot be listed (recovery itself then searches
    for the transaction, from the newest set back, rather than zsnap reading the whole archive
    first)."""
    if target.xid is None:
        return None
    if archives.configured(config, zfs.runner) is None:
        return None
    return FindChanges(config, zfs).locate(target.xid)
