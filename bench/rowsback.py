"""From a mistake to the rows back, timed (docs/benchmarks.md, "Rows back"):

- `zsnap wal find --kind delete --min-rows 1000` over the WAL of a pgbench load (1 GB by
  default): the first time (nothing cached) and again (cached), against pg_waldump's own
  reading of the same segments with the same resource managers, its output thrown away: the
  floor of any search;
- `zsnap query --before-xid` of a DELETE made a short while after the newest set (hourly sets:
  a mistake is within an hour of one), end to end; with `--keep`, the next query;
- side by side, what a pgBackRest user does for the same answer: `restore --type=xid
  --target-exclusive` of the full backup taken with the first set, start, query, stop.

Each zsnap command is the real command line in a child process (bench.zsnapcli)."""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.dest import LocalDir, owned_dir
from bench.instance import Instance
from bench.lab import LabBenchmark
from bench.machine import describe, filesystem
from bench.pgbackrest import PgBackRest
from bench.workload import Database, PgbenchLoad, scale_for
from bench.zsnapcli import ZsnapCli
from zsnap.changes.waldump import RMGRS
from zsnap.lab import LabInfo
from zsnap.lsn import Lsn, is_segment_name
from zsnap.pg.binaries import PgTools
from zsnap.runner import Runner
from zsnap.units import MB

log = logging.getLogger(__name__)

MISTAKE = "DELETE FROM pgbench_accounts WHERE aid <= 10000"
QUESTION = "SELECT count(*) FROM pgbench_accounts WHERE aid <= 10000"
# What a DBA asks first: which transaction deleted many rows? (Every transaction of the
# pgbench load, listed, would be a quarter of a million lines of JSON.)
SEARCH = ("wal", "find", "--kind", "delete", "--min-rows", "1000")


@dataclass
class RowsBack(LabBenchmark):
    size_gb: float = 2.0
    name: str = "zrows"
    port: int = 51320
    wal_gb: float = 1.0
    after_set_s: float = 20.0  # pgbench between the newest set and the mistake
    runs: int = 3

    def _run(self, info: LabInfo, runner: Runner) -> dict[str, Any]:
        # As docs/operations.md recommends (and `bench run` does): each set's redo point at
        # the set, so that a flashback replays from the set, not from an older checkpoint.
        text = info.config_file.read_text()
        info.config_file.write_text(text.replace("# primary_checkpoint = ",
                                                 "primary_checkpoint = "))
        home = owned_dir(info.root / "bench")
        db = Database(info, runner)
        cli = ZsnapCli(info.config_file, runner)
        pgbr = PgBackRest(info, runner, home / "pgbackrest")
        pgbr.configure()
        db.init(scale_for(self.size_gb))
        db.archive_all()
        db.wait_standby()
        first = cli.snapshot()
        label = pgbr.backup()
        lsn0 = db.lsn()
        load = PgbenchLoad(db).start()
        try:
            while db.wal_since(lsn0) < self.wal_gb * 1024**3:
                time.sleep(0.5)
        finally:
            transactions = load.stop()
        db.archive_all()
        db.wait_standby()
        newest = cli.snapshot()
        load = PgbenchLoad(db).start()
        try:
            time.sleep(self.after_set_s)
        finally:
            transactions += load.stop()
        with psycopg.connect(db.dsn) as conn:
            conn.execute(MISTAKE)
            row = conn.execute("SELECT txid_current()").fetchone()
            assert row is not None
            xid = int(row[0])
            conn.commit()
        db.mark()  # a commit after it, archived
        results: dict[str, Any] = {
            "machine": describe(runner, info.pg_bin),
            "filesystems": {"archive": filesystem(info.archive),
                            "standby and zsnap clones": filesystem(info.standby_data)},
            "size_bytes": db.size_bytes(), "transactions": transactions,
            "sets": [first["id"], newest["id"]], "xid": xid,
        }
        results["find"] = self._find(info, cli, runner, str(first["redo_lsn"]), xid)
        results["query"] = self._query(cli, xid)
        results["pgbackrest"] = self._pgbackrest(info, pgbr, runner, label, xid, home)
        return results

    def _find(self, info: LabInfo, cli: ZsnapCli, runner: Runner, redo: str,
              xid: int) -> dict[str, Any]:
        state = info.root / "state"
        segments = sorted(p for p in info.archive.iterdir() if is_segment_name(p.name)
                          and p.name[8:] >= Lsn.parse(redo).segment(1).name[8:])
        wal_bytes = sum(p.stat().st_size for p in segments)
        # pg_waldump alone over the same segments, with the same resource managers, into
        # /dev/null: how fast the WAL can be read here at all.
        work = info.root / "waldump-bench"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        for p in segments:
            os.symlink(p, work / p.name)
        end = Lsn((Lsn.parse(redo).segment(1).number + len(segments)) * 16 * MB)
        argv = [str(info.pg_bin / "pg_waldump"), *(f"--rmgr={r}" for r in RMGRS), "-p",
                str(work), "-s", str(Lsn.parse(redo).segment(1).start()), "-e", str(end)]
        waldump = []
        for _ in range(self.runs):
            began = time.monotonic()
            runner.stream(argv, lambda chunk: None, timeout=3600, check=False)
            waldump.append(time.monotonic() - began)
        shutil.rmtree(work, ignore_errors=True)
        first, cached = [], []
        found = 0
        for _ in range(self.runs):
            shutil.rmtree(state / "wal-changes", ignore_errors=True)
            shutil.rmtree(state / "relations", ignore_errors=True)
            timed = cli.timed(*SEARCH, timeout=7200)
            first.append(timed.seconds)
            found = len(timed.data["transactions"])
            assert [t["xid"] for t in timed.data["transactions"]] == [xid], timed.data
            cached.append(cli.timed(*SEARCH).seconds)
        med = {k: statistics.median(v) for k, v in
               (("waldump", waldump), ("first", first), ("cached", cached))}
        return {
            "wal_bytes": wal_bytes, "segments": len(segments), "transactions_found": found,
            "pg_waldump_s": waldump, "first_s": first, "cached_s": cached,
            "pg_waldump_mb_s": round(wal_bytes / MB / med["waldump"], 1),
            "first_mb_s": round(wal_bytes / MB / med["first"], 1),
            "first_vs_pg_waldump": round(med["first"] / med["waldump"], 2),
            "cached_s_median": round(med["cached"], 3),
        }

    def _query(self, cli: ZsnapCli, xid: int) -> dict[str, Any]:
        once, kept_first, kept_next = [], [], []
        made = []
        for _ in range(self.runs):
            t = cli.timed("query", "--before-xid", str(xid), QUESTION)
            assert t.data["rows"][0]["count"] == 10000, t.data
            once.append(t.seconds)
            made.append({"answer_s": t.data["seconds"], **t.data["instance_made"]})
        for _ in range(self.runs):
            a = cli.timed("query", "--before-xid", str(xid), "--keep", "10m", QUESTION)
            b = cli.timed("query", "--before-xid", str(xid), "--keep", "10m", QUESTION)
            assert b.data["reused"] and b.data["rows"][0]["count"] == 10000
            kept_first.append(a.seconds)
            kept_next.append(b.seconds)
            cli.destroy(str(a.data["instance"]))
        return {"once_s": once, "once_s_median": round(statistics.median(once), 3),
                "once_answer_s_median": round(statistics.median(m["answer_s"] for m in made),
                                              3),
                "instances": made,
                "keep_first_s": kept_first, "keep_next_s": kept_next,
                "keep_next_s_median": round(statistics.median(kept_next), 3)}

    def _pgbackrest(self, info: LabInfo, pgbr: PgBackRest, runner: Runner, label: str,
                    xid: int, home: Path) -> dict[str, Any]:
        pg = PgTools(runner, info.pg_bin, "postgres")
        dest = LocalDir(home / "restore")
        seconds = []
        for _ in range(self.runs):
            root = dest.prepare()
            data = owned_dir(root / "data")
            tablespaces = owned_dir(root / "ts")
            instance = Instance(pg, data, info.primary_port + 5, info.socket_dir,
                                info.log_dir / "pgbackrest-rowsback.log")
            try:
                began = time.monotonic()
                pgbr.run("restore", f"--pg1-path={data}", f"--set={label}", "--type=xid",
                         f"--target={xid}", "--target-exclusive", "--target-action=promote",
                         f"--tablespace-map-all={tablespaces}", "--archive-mode=off",
                         timeout=7200)
                instance.settings({})  # its own port and socket, no archiving
                instance.start()
                instance.wait_ready()
                with psycopg.connect(instance.dsn, autocommit=True) as conn:
                    row = conn.execute(QUESTION).fetchone()
                seconds.append(time.monotonic() - began)
                assert row is not None and row[0] == 10000
            finally:
                instance.stop()
                dest.discard()
        return {"restore_and_query_s": seconds,
                "median_s": round(statistics.median(seconds), 3)}
