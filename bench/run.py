"""One benchmark run, end to end, on a lab of its own: build it, load pgbench, set up
pgBackRest, run the scenarios, measure a set's cost and the catalog at scale, write results.

Scenarios (every restore ends in a promoted instance that answers a query):
  a. same start: backups and a set taken together, writes, all paths to the same target T
     (zsnap also with --pause, and with PostgreSQL's own replay settings);
  b. schedule: the write window stands for one day: pgBackRest's daily full backup at its
     start, zsnap's default hourly sets through it (with [snapshot] primary_checkpoint),
     random targets across it (zsnap picks its set, pgBackRest restores its full backup);
  c. size doubled: a and b again (zsnap and pgBackRest) with twice the data, the same writes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.basebackup import BaseBackup
from bench.dest import LocalDir, ZfsDataset, owned_dir
from bench.machine import describe, filesystem, load_average
from bench.paths import CopyPath, Outcome, RestorePath, Start, ZsnapPath
from bench.pgbackrest import PgBackRest
from bench.scale import catalog_at_scale
from bench.snapcost import snapshot_cost
from bench.workload import Database, PgbenchLoad, scale_for
from bench.zsnapcli import ZsnapCli
from zsnap.catalog import SNAP_PREFIX
from zsnap.lab import Lab, LabInfo
from zsnap.pg.binaries import PgTools
from zsnap.runner import Runner
from zsnap.zfs import Zfs

log = logging.getLogger(__name__)


@dataclass
class Options:
    size_gb: float = 2.0
    runs: int = 3
    wal_gb: float | None = None  # writes after the common start; default half the size
    sets: int = 24  # the write window stands for a day: zsnap's default, a set every hour
    # A standby's restartpoint, hence a set's redo point, can only move to a checkpoint the
    # primary wrote, and a window of minutes holds none of its timed ones: zsnap's own
    # [snapshot] primary_checkpoint asks for one before each set (what doctor recommends).
    primary_checkpoint: bool = True
    targets: int = 5  # scenario b: random targets over the window
    double: bool = True  # scenario c
    basebackup: bool = True
    zfs_restore: bool = True  # pgBackRest also onto a ZFS dataset (same filesystem as clones)
    snapshots: int = 5  # snapshot cost: sets under load
    rate: int = 200  # snapshot cost: pgbench transactions per second
    scale_sets: int = 1000
    seed: int = 1
    name: str = "zbench"
    port: int = 47320
    keep: bool = False
    out: Path = Path("bench/results/latest.json")
    pg_bin: Path | None = None  # the lab's PostgreSQL (zsnap lab up --pg-bin)

    @property
    def wal_bytes(self) -> int:
        gb = self.wal_gb if self.wal_gb is not None else self.size_gb / 2
        return int(gb * 1024**3)


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return str(value)


@dataclass
class Window:
    """The writes after a common start: from `began` to `target` (the end mark)."""

    began: datetime
    target: datetime
    wal_bytes: int
    transactions: int
    seconds: float
    sets: list[dict[str, Any]] = field(default_factory=list)


class BenchRun:
    def __init__(self, options: Options):
        self.o = options
        self.runner = Runner()
        self.results: dict[str, Any] = {
            "command": shlex.join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
            "options": asdict(options),
            "outcomes": [],
        }

    # --- bookkeeping ---------------------------------------------------------------------

    def save(self) -> None:
        self.o.out.parent.mkdir(parents=True, exist_ok=True)
        self.o.out.write_text(json.dumps(self.results, default=_json, indent=2))

    def record(self, scenario: str, outcome: Outcome, **extra: Any) -> None:
        entry = {"scenario": scenario, **asdict(outcome), **extra}
        log.info("%s %s: %.1f s (%s)", scenario, outcome.path, outcome.total_s,
                 outcome.filesystem)
        self.results["outcomes"].append(entry)
        self.save()

    # --- the run -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        o = self.o
        pool_gb = max(4, math.ceil(o.size_gb * 12))
        lab = Lab(o.name, port=o.port, pool_size=f"{pool_gb}G", pg_bin=o.pg_bin,
                  runner=self.runner)
        info = lab.up()
        if o.primary_checkpoint:
            text = info.config_file.read_text()
            on = text.replace("# primary_checkpoint = ", "primary_checkpoint = ")
            info.config_file.write_text(on)
        self.results["machine"] = describe(self.runner, info.pg_bin)
        try:
            self._run(info)
        finally:
            self.results["machine"]["load_average_end"] = load_average()
            self.save()
            if not o.keep:
                lab.down()
        return self.results

    def _run(self, info: LabInfo) -> None:
        o = self.o
        home = owned_dir(info.root / "bench")
        db = Database(info, self.runner)
        zsnap = ZsnapCli(info.config_file, self.runner)
        pgbr = PgBackRest(info, self.runner, home / "pgbackrest")
        pgbr.configure()
        bb = BaseBackup(info, self.runner, home / "basebackup")
        pg = PgTools(self.runner, info.pg_bin, "postgres")
        zfs = Zfs(self.runner)

        def copy_path(key: str, dest: LocalDir | ZfsDataset, **kw: Any) -> CopyPath:
            return CopyPath(key, dest, pg, info.primary_port + 5, info.socket_dir,
                            info.log_dir / f"{key}.log", **kw)

        local = LocalDir(home / "restore")
        pgbr_local = copy_path("pgbackrest", local, pgbackrest=pgbr)
        zsnap_a = ZsnapPath(zsnap, force_set=True)
        paths_a: list[RestorePath] = [
            zsnap_a,
            # Paused at the target, read-only, instead of promoted.
            ZsnapPath(zsnap, force_set=True, key="zsnap-pause", extra=("--pause",)),
            # The same clone and WAL, replayed with PostgreSQL's defaults.
            ZsnapPath(zsnap, force_set=True, key="zsnap-defaults",
                      extra=("--no-fast-recovery",)),
            pgbr_local,
        ]
        if o.basebackup:
            paths_a.append(copy_path("basebackup", local, basebackup=bb, archive=info.archive))
        if o.zfs_restore:
            zdest = ZfsDataset(zfs, f"{info.pools[0]}/benchrestore", home / "zrestore")
            paths_a.append(copy_path("pgbackrest-zfs", zdest, pgbackrest=pgbr))
        self.results["filesystems"] = {
            "primary": filesystem(info.primary_data),
            "archive and pgBackRest repository": filesystem(home),
            "standby and zsnap clones": filesystem(info.standby_data),
        }

        scale = scale_for(o.size_gb)
        size = self._load(db, scale)
        start, window = self._common_start(db, zsnap, pgbr, bb, size)

        for run in range(o.runs):
            for p in paths_a:
                self.record("a", p.restore(window.target, start), run=run, size_bytes=size)
        paths_b: list[RestorePath] = [ZsnapPath(zsnap, force_set=False), pgbr_local]
        self._schedule("b", window, start, paths_b, size)

        self.results["snapshot_cost"] = snapshot_cost(db, zsnap, o.snapshots, o.rate)
        self.save()

        if o.double:
            # The sets of a and b hold the old table's blocks (copy-on-write): let them go.
            self._drop_sets(zfs, info)
            size2 = self._load(db, scale * 2, key="load_double")
            start2, window2 = self._common_start(db, zsnap, pgbr, None, size2, key="window_c")
            paths_c: list[RestorePath] = [zsnap_a, pgbr_local]
            for run in range(o.runs):
                for p in paths_c:
                    self.record("c", p.restore(window2.target, start2), run=run, size_bytes=size2)
            self._schedule("b2", window2, start2, paths_b, size2)

        real = self.results["sets"][-1]
        select = ("clone", "--at", window.target.isoformat(), "--dry-run")
        self.results["scale"] = catalog_at_scale(zfs, zsnap, real, o.scale_sets, o.runs, select)
        self.save()

    def _schedule(self, scenario: str, window: Window, start: Start,
                  paths: list[RestorePath], size: int) -> None:
        """Random targets over the window (the same ones at every size: one seed)."""
        rng = random.Random(self.o.seed)
        span = (window.target - window.began).total_seconds()
        targets = sorted(
            window.began + (window.target - window.began) * rng.random()
            for _ in range(self.o.targets)
        )
        for target in targets:
            hour = (target - window.began).total_seconds() / span * 24
            for p in paths:
                self.record(scenario, p.restore(target, start), hour=round(hour, 2),
                            size_bytes=size)

    def _drop_sets(self, zfs: Zfs, info: LabInfo) -> None:
        for row in zfs.list_snapshots([]):
            dataset, _, snap = row["name"].partition("@")
            if dataset.split("/")[0] in info.pools and snap.startswith(SNAP_PREFIX):
                zfs.destroy(row["name"])

    def _load(self, db: Database, scale: int, key: str = "load") -> int:
        began = time.monotonic()
        db.init(scale)
        db.archive_all()
        loaded = time.monotonic()
        db.wait_standby()
        size = db.size_bytes()
        self.results[key] = {
            "scale": scale, "size_bytes": size, "init_s": round(loaded - began, 1),
            "standby_caught_up_s": round(time.monotonic() - loaded, 1),
        }
        self.save()
        return size

    def _common_start(
        self, db: Database, zsnap: ZsnapCli, pgbr: PgBackRest, bb: BaseBackup | None,
        size: int, key: str = "window",
    ) -> tuple[Start, Window]:
        """Backups first, then the set (its restartpoint is then at the backups' checkpoint, so
        every path replays from about the same place); then the writes, with a set at each
        'hour' of the window (its WAL divided by `sets`); then the end mark T."""
        began = time.monotonic()
        label = pgbr.backup()
        backup_s = time.monotonic() - began
        if bb is not None and self.o.basebackup:
            bb.take()
        db.wait_standby()
        first = zsnap.snapshot()
        self.results.setdefault("sets", []).append(first)
        start = Start(set_id=str(first["id"]), backup_label=label)

        load = PgbenchLoad(db).start()
        lsn0 = db.lsn()
        w_began = db.now()
        t0 = time.monotonic()
        sets: list[dict[str, Any]] = []
        total = self.o.wal_bytes
        per = self.o.sets
        try:
            while (written := db.wal_since(lsn0)) < total:
                if len(sets) + 1 < per and written >= total * (len(sets) + 1) / per:
                    began_set = time.monotonic()
                    s = zsnap.snapshot()
                    sets.append({"id": s["id"], "hour": len(sets) + 1, "wal_bytes": written,
                                 "pause_ms": s["pause_ms"], "redo_lsn": s["redo_lsn"],
                                 "consistent_lsn": s["consistent_lsn"],
                                 "seconds": round(time.monotonic() - began_set, 2)})
                time.sleep(0.1)
        finally:
            transactions = load.stop()
        seconds = time.monotonic() - t0
        target = db.mark()
        window = Window(w_began, target, db.wal_since(lsn0), transactions, seconds, sets)
        # What the sets hold in copy-on-write space (ZFS's own account, every dataset).
        datasets = list(self.results.get("sets", [{}])[0].get("datasets", []))
        held = Zfs(self.runner).get(datasets, ["usedbysnapshots", "recordsize"])
        self.results[key] = {
            "size_bytes": size, "backup_label": label, "pgbackrest_backup_s": round(backup_s, 1),
            "start_set": first["id"], "primary_checkpoint": self.o.primary_checkpoint,
            "held_by_sets": {d: {"bytes": int(v["usedbysnapshots"]),
                                 "recordsize": int(v["recordsize"])}
                             for d, v in held.items()},
            **asdict(window),
        }
        self.save()
        return start, window
