"""What `zsnap wal find` reads from pg_waldump's text, on PostgreSQL 15 and 18 (tests/unit/data:
real output of a lab, one segment, read with the resource managers zsnap asks for)."""

from __future__ import annotations

import marshal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zsnap.changes.find import (
    LOOK_BACK,
    FindChanges,
    FindRequest,
    Found,
    TableChange,
    _database,
    _wanted,
    parse_kinds,
    qualified,
    tables_of,
)
from zsnap.changes.relations import Names, Relation, RelationMap
from zsnap.changes.scan import WalScan, _stopped_at
from zsnap.changes.transactions import Assembler, Point, Transaction
from zsnap.changes.waldump import RestorePoint, SegmentChanges, file_key, summarize
from zsnap.clone.target import Target
from zsnap.errors import UsageError
from zsnap.lsn import Lsn, Segment
from zsnap.past.dump import failure as dump_failure
from zsnap.past.dump import pattern
from zsnap.past.instance import kept_name

DATA = Path(__file__).parent / "data"
SEGMENT = 16 * 1024 * 1024


def transactions(name: str) -> tuple[dict[int, Transaction], list[Point]]:
    segments = summarize((DATA / name).read_text().splitlines(), SEGMENT)
    assembler = Assembler()
    done: dict[int, Transaction] = {}
    points: list[Point] = []
    for number in sorted(segments):
        for item in assembler.add(segments[number], 1):
            if isinstance(item, Point):
                points.append(item)
            else:
                done[item.xid] = item
    return done, points


def test_postgresql_15_rows_per_transaction() -> None:
    done, points = transactions("waldump-15.txt")
    orders = "1663/5/16416"
    assert done[732].files[orders][:3] == [100, 0, 0]  # CREATE TABLE + INSERT 100
    # A DELETE of 10 rows and, in a released savepoint (its own xid 734), an UPDATE.
    assert done[733].files[orders][:3] == [0, 1, 10]
    assert 734 not in done
    assert done[735].files[orders][:3] == [6, 0, 0]  # COPY: one MULTI_INSERT of 6 tuples
    # TRUNCATE: the old files go at commit, new ones were created, nothing dropped for good.
    assert orders in done[736].dropped_files
    assert done[736].dropped_relations == ()
    assert "1663/5/16423" in done[736].created
    # DROP TABLE: the truncated table's files, and its OID among the dropped relations.
    assert "1663/5/16423" in done[737].dropped_files
    assert "5/16416" in done[737].dropped_relations
    assert done[733].committed_at == datetime(2026, 12, 4, 18, 49, 3, 651273, tzinfo=UTC)
    assert done[733].commit_lsn == Lsn.parse("0/034473C8").value
    [rp] = points
    assert rp.name == "rp1" and rp.after == done[736].committed_at


def test_postgresql_18_rows_per_transaction() -> None:
    done, _ = transactions("waldump-18.txt")
    orders = "1663/5/16424"
    # DELETE 3, UPDATE in a released savepoint (761); the rolled back one (762) counts for none.
    assert done[760].files[orders][:3] == [0, 1, 3]
    assert done[763].files[orders][:3] == [0, 1, 0]
    assert done[764].files[orders][:3] == [6, 0, 0]
    # VACUUM FULL writes whole pages into the file it created: a rewrite, not a truncation.
    assert done[765].files["1663/5/16432"][3] > 0 and "1663/5/16432" in done[765].created
    assert orders in done[765].dropped_files
    assert "5/16424" not in done[765].dropped_relations
    assert "5/16424" in done[767].dropped_relations


def test_a_transaction_spanning_segments_counts_once_its_commit_is_read() -> None:
    first = SegmentChanges()
    first.count(900, "1663/5/20000", 2, 5)  # 5 deletes in the first segment
    first.count(901, "1663/5/20000", 0, 1)  # a subtransaction's insert
    second = SegmentChanges()
    second.count(900, "1663/5/20000", 2, 2)
    commit = datetime(2026, 12, 4, 14, 5, 2, 123456, tzinfo=UTC)
    from zsnap.changes.waldump import End

    second.ends.append(End(900, 200, True, commit, subxacts=(901,)))
    assembler = Assembler()
    assert list(assembler.add(first, 1)) == []
    [t] = list(assembler.add(second, 1))
    assert isinstance(t, Transaction)
    assert t.files["1663/5/20000"] == [1, 0, 7, 0]
    assert assembler.pending == {}


def test_a_transactions_database_is_found_behind_its_commit() -> None:
    """What `query`/`dump` ask for an xid target. The commit's segment may hold none of the
    transaction's changes: the cached segments before it name the database, a committed
    subtransaction's changes too, the shared catalogs (database 0) never."""
    segments = {3: SegmentChanges(), 4: SegmentChanges()}
    segments[3].count(50, "1663/16384/16500", 2, 5)
    segments[4].count(51, "1664/0/1260", 0)  # the subtransaction: a shared catalog only
    segments[4].count(60, "1663/5/16416", 0)  # another transaction, another database
    segments[4].count(71, "1663/16390/16600", 0)  # transaction 70's subtransaction
    uncached = {2}

    class Cache:
        def cached(self, seg: Segment) -> SegmentChanges | None:
            return None if seg.number in uncached else segments.get(seg.number, SegmentChanges())

    scan = cast(WalScan, Cache())

    def at(n: int) -> Segment:
        return Segment(1, n, SEGMENT)

    assert _database(set(), scan, at, 0, 5, (50, 51)) == 16384
    assert _database(set(), scan, at, 0, 5, (70, 71)) == 16390
    assert _database({5}, scan, at, 0, 5, (50, 51)) == 5  # from the commit's own segment
    assert _database(set(), scan, at, 4, 5, (50, 51)) is None  # not before the first segment
    assert _database(set(), scan, at, 0, 2, (50,)) is None  # nor past one not cached
    assert _database({5, 16384}, scan, at, 0, 5, (50,)) is None  # never a guess
    assert _database(set(), scan, at, 0, 3 + LOOK_BACK - 1, (50,)) == 16384
    assert _database(set(), scan, at, 0, 3 + LOOK_BACK, (50,)) is None


def test_an_aborted_transaction_is_never_listed() -> None:
    from zsnap.changes.waldump import End

    seg = SegmentChanges()
    seg.count(950, "1663/5/20000", 2, 1000)
    seg.ends.append(End(950, 100, False, datetime(2026, 1, 1, tzinfo=UTC)))
    assert list(Assembler().add(seg, 1)) == []


@pytest.mark.parametrize(("path", "key"), [
    ("base/5/16384", "1663/5/16384"),
    ("global/1262", "1664/0/1262"),
    ("pg_tblspc/16385/PG_15_202209061/5/16400", "16385/5/16400"),
    ("base/5/16384_fsm", None),
    ("nonsense", None),
])
def test_relation_file_paths(path: str, key: str | None) -> None:
    assert file_key(path) == key


def _names() -> Names:
    live = RelationMap("the standby")
    orders = Relation("shop", "public", "orders", 16400, "r")
    live.add(1663, 5, 16500, orders)  # its file now (after a rewrite)
    live.add(1663, 5, 16501, Relation("shop", "pg_toast", "pg_toast_16400", 16403, "t"))
    live.databases[5] = "shop"
    old = RelationMap("set A")
    old.add(1663, 5, 16400, orders)  # its file before
    gone = Relation("shop", "public", "gone", 16450, "r")
    old.add(1663, 5, 16450, gone)
    return Names([live, old])


def _t(**kw: object) -> Transaction:
    base: dict[str, object] = {"xid": 1000, "committed_at": datetime(2026, 12, 4, tzinfo=UTC),
                               "commit_lsn": 1 << 24, "timeline": 1}
    base.update(kw)
    return Transaction(**base)  # type: ignore[arg-type]


def _found(t: Transaction) -> Found | None:
    op = FindChanges.__new__(FindChanges)
    return op._found(t, _names())


def test_rows_in_old_and_new_files_are_the_same_table() -> None:
    found = _found(_t(files={"1663/5/16400": [0, 0, 3, 0], "1663/5/16500": [2, 0, 0, 0],
                             "1663/5/16501": [9, 0, 0, 0], "1663/5/1259": [1, 1, 1, 0]}))
    assert found is not None and found.database == "shop"
    # The TOAST table's chunks and the catalog's rows are not the table's rows.
    assert found.tables == {"public.orders": TableChange(inserted=2, deleted=3)}


def test_truncate_rewrite_and_drop_are_told_apart() -> None:
    truncate = _found(_t(dropped_files=("1663/5/16400",), created={"1663/5/16500"}))
    assert truncate is not None and truncate.tables["public.orders"].truncated
    rewrite = _found(_t(dropped_files=("1663/5/16400",), created={"1663/5/16500"},
                        files={"1663/5/16500": [0, 0, 0, 4]}))
    assert rewrite is not None
    assert rewrite.tables["public.orders"] == TableChange(rewritten=True)
    drop = _found(_t(dropped_files=("1663/5/16450",), dropped_relations=("5/16450",)))
    assert drop is not None and drop.tables["public.gone"] == TableChange(dropped=True)


def test_a_file_no_catalog_names_is_listed_by_its_path() -> None:
    found = _found(_t(files={"1663/5/17000": [0, 0, 5, 0]}))
    assert found is not None and found.tables == {"1663/5/17000": TableChange(deleted=5)}


def test_filters() -> None:
    def found() -> Found:
        return Found(1, datetime(2026, 1, 1, tzinfo=UTC), Lsn(1), 1, "shop", {
            "public.orders": TableChange(deleted=1000), "public.log": TableChange(inserted=1)})

    assert _wanted(f := found(), FindRequest(kinds=frozenset({"delete"}), min_rows=1000))
    assert list(f.tables) == ["public.orders"]
    assert not _wanted(found(), FindRequest(kinds=frozenset({"delete"}), min_rows=1001))
    assert not _wanted(found(), FindRequest(database="other"))
    assert _wanted(f := found(), FindRequest(tables=("public.log",)))
    assert list(f.tables) == ["public.log"]
    assert not _wanted(found(), FindRequest(tables=("public.log",),
                                            kinds=frozenset({"truncate"})))


def test_kinds_and_names() -> None:
    assert parse_kinds("delete, TRUNCATE") == frozenset({"delete", "truncate"})
    with pytest.raises(UsageError, match="unknown --kind"):
        parse_kinds("delete,merge")
    assert qualified("orders") == "public.orders"
    assert qualified("sales.orders") == "sales.orders"
    assert tables_of(["orders", "public.orders"]) == ("public.orders",)
    with pytest.raises(UsageError):
        qualified(" ")


def test_before_xid_target() -> None:
    t = Target.before_xid("1234")
    assert t.settings() == {"recovery_target_xid": "1234", "recovery_target_inclusive": "false"}
    assert str(t) == "before-xid:1234" and t.xid == 1234
    assert Target.parse(str(t)) == t
    assert Target.at_xid("1234").settings() == {"recovery_target_xid": "1234"}
    with pytest.raises(UsageError):
        Target.before_xid("abc")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20))
def test_dump_pattern_quotes_every_name(name: str) -> None:
    p = pattern(f"public.{name}")
    assert p.startswith('"public".') and p.count('"') == 4 + 2 * name.count('"')


def test_kept_instances_are_named_by_their_target() -> None:
    a = kept_name("main", Target.before_xid("10"), None)
    assert a == kept_name("main", Target.before_xid("10"), None)
    assert a != kept_name("main", Target.at_xid("10"), None)
    assert a != kept_name("other", Target.before_xid("10"), None)


def test_where_pg_waldump_stopped() -> None:
    end = Lsn.parse("0/9000000")
    assert _stopped_at("", end) == end
    assert _stopped_at('pg_waldump: error: could not find file "0000000100000009"', end) == end
    damaged = "pg_waldump: error: error in WAL record at 0/7012345: invalid record length"
    assert _stopped_at(damaged, end) == Lsn.parse("0/7012345")


def test_only_transactions_that_may_match_are_named() -> None:
    from zsnap.changes.find import _may_match

    small = _t(files={"1663/5/16400": [1, 1, 0, 0]})
    big = _t(files={"1663/5/16400": [0, 0, 5000, 0]})
    truncate = _t(dropped_files=("1663/5/16400",))
    everything = FindRequest()
    deletes = FindRequest(kinds=frozenset({"delete"}), min_rows=1000)
    assert _may_match(small, everything) and _may_match(truncate, everything)
    assert _may_match(big, deletes) and not _may_match(small, deletes)
    assert not _may_match(truncate, deletes)
    assert _may_match(truncate, FindRequest(kinds=frozenset({"truncate"})))
    assert not _may_match(small, FindRequest(kinds=frozenset({"truncate", "drop"})))


def test_lines_that_are_not_records_are_passed_over() -> None:
    lines = ["pg_waldump: error: could not find file", "rmgr: Heap        len (rec/tot): cut",
             "", "rmgr: Heap        len (rec/tot):     54/    54, tx:        760, lsn: "
             "0/0302B258, prev 0/0302ACF0, desc: DELETE off 1 flags 0x00 KEYS_UPDATED , "
             "blkref #0: rel 1663/5/16424 blk 0"]
    [seg] = summarize(lines, SEGMENT).values()
    assert seg.changes == {760: {"1663/5/16424": [0, 0, 1, 0]}}


@pytest.mark.parametrize("name", ["waldump-15.txt", "waldump-18.txt"])
def test_a_summary_is_the_same_read_back_from_the_cache(name: str) -> None:
    # Commits are kept as microseconds since the epoch, and short when they list nothing.
    segments = summarize((DATA / name).read_text().splitlines(), SEGMENT)
    ends = [e for seg in segments.values() for e in seg.ends]
    assert any(e.subxacts or e.dropped_files for e in ends) and any(not e.subxacts for e in ends)
    for seg in segments.values():
        again = SegmentChanges.from_cache(marshal.loads(marshal.dumps(seg.to_cache())))
        assert again == seg
        assert [e.at.utcoffset() for e in again.ends] == [timedelta(0)] * len(seg.ends)


@given(st.sampled_from([1, 2, 16, 64, 1024]),
       st.lists(st.integers(0, (1 << 40) - 1), min_size=1, max_size=60))
def test_each_record_is_counted_in_the_segment_its_lsn_is_in(mb: int, lsns: list[int]) -> None:
    # The text is cut where the LSNs' leading digits change; segment sizes that are no whole
    # number of hex digits (2 MB) included. pg_waldump prints records in LSN order.
    size = mb * 1024 * 1024
    lines = [f"rmgr: Heap        len (rec/tot):     54/    54, tx:        {700 + n % 3}, "
             f"lsn: {lsn >> 32:X}/{lsn & 0xFFFFFFFF:08X}, prev 0/00000000, desc: INSERT off 1 "
             f"flags 0x00, blkref #0: rel 1663/5/16384 blk 0" for n, lsn in enumerate(sorted(lsns))]
    expected: dict[int, int] = {}
    for lsn in lsns:
        expected[lsn // size] = expected.get(lsn // size, 0) + 1
    counted = {number: sum(files["1663/5/16384"][0] for files in seg.changes.values())
               for number, seg in summarize(lines, size).items()}
    assert counted == expected


def test_an_lsn_written_in_a_description_does_not_move_a_record() -> None:
    head = "len (rec/tot):     54/    54, tx:        {}, lsn: 0/{}, prev 0/00000000, desc: "
    lines = [f"rmgr: Heap        {head.format(700, '01000100')}INSERT off 1 flags 0x00, "
             "blkref #0: rel 1663/5/16384 blk 0",
             f"rmgr: XLOG        {head.format(0, '02000100')}RESTORE_POINT a, lsn: 0/01",
             f"rmgr: Heap        {head.format(701, '02000200')}INSERT off 2 flags 0x00, "
             "blkref #0: rel 1663/5/16384 blk 0"]
    segments = summarize(lines, SEGMENT)
    assert list(segments[1].changes) == [700] and segments[1].restore_points == []
    assert list(segments[2].changes) == [701]
    assert segments[2].restore_points == [RestorePoint("a, lsn: 0/01", 0x02000100)]


def test_an_expiry_written_by_hand_never_breaks_the_listing() -> None:
    from zsnap.clone.registry import _time

    assert _time("-") is None and _time("soon") is None
    assert _time("2026-12-04T10:00:00") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert _time("2026-12-04T10:00:00+01:00") == datetime(2026, 12, 4, 9, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
       st.integers(3, (1 << 32) - 1), st.sampled_from(["", "; inval msgs: catcache 19",
                                                        "; subxacts: 901 902"]))
def test_a_commit_is_read_alike_however_much_it_lists(at: datetime, xid: int, more: str) -> None:
    # Commits that list nothing but their time are read by a shorter path than the others.
    line = (f"rmgr: Transaction len (rec/tot):     34/    34, tx: {xid:>10}, lsn: 0/0302B258, "
            f"prev 0/0302ACF0, desc: COMMIT {at:%Y-%m-%d %H:%M:%S}.{at.microsecond:06d} UTC"
            f"{more}")
    [seg] = summarize([line], SEGMENT).values()
    [end] = seg.ends
    assert (end.xid, end.lsn, end.committed, end.at) == \
        (xid, 0x0302B258, True, at.replace(tzinfo=UTC))
    assert end.subxacts == ((901, 902) if "subxacts" in more else ())


def test_clusters_sharing_a_state_dir_keep_and_forget_their_own_summaries(tmp_path: Path) -> None:
    from zsnap.changes.scan import WalScan
    from zsnap.runner import Runner
    from zsnap.wal.archives import DirectoryArchive

    archive = DirectoryArchive(tmp_path / "archive")
    archive.path.mkdir()
    seg = Segment(1, 3, SEGMENT)
    (archive.path / seg.name).write_bytes(b"\0" * 16)

    def scan(cluster: str) -> WalScan:
        return WalScan(Runner(), archive, Path("pg_waldump"), tmp_path / "state", "postgres",
                       cluster)

    main, other = scan("main"), scan("main-2")
    changes = summarize((DATA / "waldump-15.txt").read_text().splitlines(), SEGMENT)[3]
    main._keep(seg, changes)
    assert main.cached(seg) == changes and main.ended(seg)
    # The same name, the same file as far as the archive tells: not the other cluster's.
    assert other.cached(seg) is None and other.ended(seg) is None
    assert other.forget_before(4, SEGMENT) == 0 and main.cached(seg) == changes
    assert main.forget_before(3, SEGMENT) == 0 and main.cached(seg) == changes
    assert main.forget_before(4, SEGMENT) == 2 and main.cached(seg) is None


def test_pg_dumps_error_line_is_the_one_said() -> None:
    stderr = ("pg_dump: error: query failed: ERROR:  permission denied for table lab_a\n"
              "pg_dump: detail: Query was: LOCK TABLE public.lab_a IN ACCESS SHARE MODE\n")
    assert dump_failure(stderr) == ("pg_dump: error: query failed: ERROR:  permission denied "
                                    "for table lab_a")
    assert dump_failure("something else\nthe last line\n") == "the last line"
    assert dump_failure("") == ""
