"""The catalog at scale: many sets of three datasets, made as real snapshots whose zsnap
properties are copied from a real set (only the set id and times vary), then `zsnap list`,
`zsnap show` and set selection timed, with the number of `zfs` calls each makes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.machine import describe
from bench.stats import Summary
from bench.workload import Database
from bench.zsnapcli import ZsnapCli
from zsnap.catalog import COMPLETE, PREFIX, SET_PROPS, new_set_id, snapshot_name
from zsnap.lab import Lab
from zsnap.runner import Runner
from zsnap.snapshot import pool_groups
from zsnap.zfs import Zfs

# Concurrent zfs calls: the runner spends ~0.1 s per command waiting (sh's timeout watcher),
# and zfs-fuse takes concurrent snapshot calls fine; 3 000 calls one after another would take
# minutes of mostly waiting.
WORKERS = 8


def make_sets(zfs: Zfs, real: dict[str, Any], count: int) -> list[str]:
    """`count` sets, an hour apart, before the real set: older than every real set, so that
    they never stand in for one in a clone."""
    members: list[str] = list(real["datasets"])
    source = f"{members[0]}@{snapshot_name(real['id'])}"
    props = zfs.get([source], [PREFIX + k for k in SET_PROPS])[source]
    first = datetime.fromisoformat(real["created"])

    def make(i: int) -> str:
        when = first - timedelta(hours=i + 1)
        set_id = new_set_id(when)
        values = dict(props)
        values[PREFIX + "set"] = set_id
        values[PREFIX + "created"] = when.isoformat(timespec="seconds")
        values[PREFIX + "replay_timestamp"] = when.isoformat()
        for group in pool_groups(members):
            zfs.snapshot([f"{d}@{snapshot_name(set_id)}" for d in group], values)
        # Complete, as zsnap marks a set it has proven (on the control-file member).
        zfs.set([f"{members[0]}@{snapshot_name(set_id)}"], {PREFIX + "complete": COMPLETE})
        return set_id

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(make, range(count)))


def remove_sets(zfs: Zfs, members: list[str], ids: list[str]) -> None:
    names = [f"{d}@{snapshot_name(set_id)}" for set_id in ids for d in members]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(zfs.destroy, names))


def _timed(zsnap: ZsnapCli, runs: int, *args: str) -> dict[str, Any]:
    results = [zsnap.timed(*args, debug=True) for _ in range(runs)]
    return {
        "seconds": Summary.of([r.seconds for r in results]).__dict__,
        "zfs_calls": results[0].zfs_calls,
        "rows": len(results[0].data) if isinstance(results[0].data, list) else None,
    }


def catalog_at_scale(
    zfs: Zfs, zsnap: ZsnapCli, real: dict[str, Any], count: int, runs: int,
    selection: tuple[str, ...] | None,
) -> dict[str, Any]:
    """Measure with the real sets only, then with `count` more."""
    before = {"list": _timed(zsnap, runs, "list")}
    began = time.monotonic()
    ids = make_sets(zfs, real, count)
    made_s = time.monotonic() - began
    try:
        host_snapshots = len(zfs.list_snapshots([]))
        after = {
            "list": _timed(zsnap, runs, "list"),
            "list_all_members": _timed(zsnap, runs, "list", "--all-members"),
            "show": _timed(zsnap, runs, "show", ids[len(ids) // 2]),
        }
        if selection is not None:
            after["select"] = _timed(zsnap, runs, *selection)
    finally:
        began = time.monotonic()
        remove_sets(zfs, list(real["datasets"]), ids)
        removed_s = time.monotonic() - began
    return {
        "sets": count,
        "datasets_per_set": len(real["datasets"]),
        "snapshots_on_host": host_snapshots,
        "create_s": round(made_s, 1),
        "remove_s": round(removed_s, 1),
        "before": before,
        "after": after,
    }


@dataclass
class Scale:
    """The catalog alone, on a small lab of its own (`python -m bench scale`): what the full
    run measures at its end, without the hour of restores before it."""

    sets: int = 1000
    runs: int = 3
    name: str = "zscale"
    port: int = 52320
    pg_bin: Path | None = None

    def run(self) -> dict[str, Any]:
        runner = Runner()
        lab = Lab(self.name, port=self.port, pool_size="2G", pg_bin=self.pg_bin,
                  runner=runner)
        info = lab.up()
        try:
            db = Database(info, runner)
            db.init(10)
            db.archive_all()
            db.wait_standby()
            zsnap = ZsnapCli(info.config_file, runner)
            real = zsnap.snapshot()
            target = db.mark()
            select = ("clone", "--at", target.isoformat(), "--dry-run")
            return {
                "machine": describe(runner, info.pg_bin),
                "scale": catalog_at_scale(Zfs(runner), zsnap, real, self.sets, self.runs,
                                          select),
            }
        finally:
            lab.down()
