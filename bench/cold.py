"""The first flashback of a set against the repeated ones (issue 21, item 2), on a lab shaped
like a user's: a pgbench database, a set, then unthrottled pgbench for a while, and clones of
that set to the same target one after another, the first right when the load stops. Each
clone is profiled from outside: what zfs-fuse read, wrote and spent in CPU meanwhile
(/proc/<pid>/io and stat), and what the host read and wrote (/proc/vmstat). With
`--drop-caches` the host's page cache is dropped before every other clone, to tell a cold
cache from the standby's own work after the load (how far its replay is behind the primary
is recorded as each clone starts). A pgBackRest full backup is taken with the set (as the
issue's scenario has it) and restored to the same target after the clones: with
`--drop-caches` first with the page cache dropped, then warm."""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.dest import LocalDir, owned_dir
from bench.lab import LabBenchmark
from bench.machine import describe, filesystem
from bench.paths import CopyPath, Start
from bench.pgbackrest import PgBackRest
from bench.workload import Database, PgbenchLoad, scale_for
from bench.zsnapcli import ZsnapCli
from zsnap.lab import LabInfo
from zsnap.pg.binaries import PgTools
from zsnap.runner import Runner

log = logging.getLogger(__name__)


def _vmstat() -> dict[str, int]:
    found = {}
    with open("/proc/vmstat") as f:
        for line in f:
            key, value = line.split()
            if key in ("pgpgin", "pgpgout"):
                found[key] = int(value)  # KiB read from and written to disk
    return found


def _zfs_fuse(runner: Runner) -> dict[str, float]:
    """zfs-fuse's bytes read and written on disk and CPU seconds so far (zeros without it)."""
    pids = runner.run(["pgrep", "-x", "zfs-fuse"], mutates=False, check=False).stdout.split()
    if not pids:
        return {"read_bytes": 0, "write_bytes": 0, "cpu_s": 0.0}
    pid = pids[0]
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            key, value = line.split(": ")
            if key in ("read_bytes", "write_bytes"):
                found[key] = int(value)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime + stime, in clock ticks
    found["cpu_s"] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return found


def _drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Cold(LabBenchmark):
    size_gb: float = 1.5
    name: str = "zcold"
    port: int = 49320
    load_s: float = 60.0
    clones: int = 3
    recordsize: str | None = None
    drop_caches: bool = False

    def _run(self, info: LabInfo, runner: Runner) -> dict[str, Any]:
        if self.recordsize:
            for pool in {d.split("/")[0] for d in info.datasets}:
                runner.run(["zfs", "set", f"recordsize={self.recordsize}", pool])
        home = owned_dir(info.root / "bench")
        pgbr = PgBackRest(info, runner, home / "pgbackrest")
        pgbr.configure()
        db = Database(info, runner)
        db.init(scale_for(self.size_gb))
        db.archive_all()
        label = pgbr.backup()
        db.wait_standby()
        cli = ZsnapCli(info.config_file, runner)
        first = cli.snapshot()
        lsn0 = db.lsn()
        load = PgbenchLoad(db).start()
        time.sleep(self.load_s)
        transactions = load.stop()
        target = db.mark()
        db.archive_all()
        clones = []
        for i in range(self.clones):
            cold = self.drop_caches and i % 2 == 1
            if cold:
                _drop_caches()
            behind = max(db.replay_behind(db.lsn()) or 0, 0)
            vm0, z0 = _vmstat(), _zfs_fuse(runner)
            timed = cli.clone(target, str(first["id"]))
            vm1, z1 = _vmstat(), _zfs_fuse(runner)
            data = timed.data
            clones.append({
                "order": i + 1, "page_cache_dropped": cold,
                "standby_replay_behind_mib": behind >> 20,
                "total_s": round(timed.seconds, 3), "replay_s": data["replay_s"],
                "limit_s": data["limit_s"], "wal_bytes": data["wal_replayed_bytes"],
                "steps_s": data["steps_s"],
                "host_read_mib": round((vm1["pgpgin"] - vm0["pgpgin"]) / 1024),
                "host_written_mib": round((vm1["pgpgout"] - vm0["pgpgout"]) / 1024),
                "zfs_fuse_read_mib": round((z1["read_bytes"] - z0["read_bytes"]) / 2**20),
                "zfs_fuse_written_mib": round((z1["write_bytes"] - z0["write_bytes"]) / 2**20),
                "zfs_fuse_cpu_s": round(z1["cpu_s"] - z0["cpu_s"], 2),
            })
            log.info("clone %d: replay %.2f s", i + 1, data["replay_s"])
            cli.timed("durable", str(data["name"]), timeout=3600)
            cli.destroy(str(data["name"]))
        warm = [c["replay_s"] for c in clones[1:] if not c["page_cache_dropped"]]
        restore = CopyPath("pgbackrest", LocalDir(home / "restore"),
                           PgTools(runner, info.pg_bin, "postgres"), info.primary_port + 5,
                           info.socket_dir, info.log_dir / "pgbackrest.log", pgbackrest=pgbr)
        restores = []
        for cold in (True, False) if self.drop_caches else (False,):
            if cold:
                _drop_caches()
            o = restore.restore(target, Start(str(first["id"]), label))
            restores.append({"page_cache_dropped": cold, "total_s": round(o.total_s, 3),
                             "restore_s": o.copy_s, "recover_s": o.recover_s})
            log.info("pgBackRest restore: %.2f s", o.total_s)
        return {
            "machine": describe(runner, info.pg_bin),
            "filesystem": filesystem(info.standby_data),
            "recordsize": self.recordsize or "default",
            "size_gb": self.size_gb, "load_s": self.load_s, "transactions": transactions,
            "wal_since_set_bytes": db.wal_since(lsn0),
            "set": first["id"], "target": target.isoformat(),
            "clones": clones,
            "first_over_warm": round(clones[0]["replay_s"] / statistics.median(warm), 2)
            if warm else None,
            "pgbackrest": restores,
            # The same start and target: pgBackRest's first restore against zsnap's first clone.
            "pgbackrest_first_over_zsnap_first": round(
                restores[0]["total_s"] / clones[0]["total_s"], 2),
        }
