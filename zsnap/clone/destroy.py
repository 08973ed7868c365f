"""`zsnap destroy NAME`, and the same teardown for a clone that failed half-way: stop its server,
destroy its datasets, release the holds on its origin snapshots, remove its directory."""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from zsnap.clone import registry
from zsnap.clone.durability import stop_worker
from zsnap.clone.instance import Instance
from zsnap.clone.naming import hold_tag
from zsnap.config import Config
from zsnap.errors import DatasetNotFound, UsageError, ZfsError
from zsnap.pg.binaries import PgTools, find_bindir
from zsnap.zfs import Zfs, mounts

log = logging.getLogger(__name__)


@dataclass
class Teardown:
    """What one clone has, in the order it was made; `run` undoes it in reverse, whatever
    exists. Also what CreateClone fills in as it goes, so a failure leaves nothing."""

    name: str
    pgdata: Path | None = None
    datasets: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    dir: Path | None = None

    @property
    def parents(self) -> list[str]:
        """`<pool>/zsnap-clones/<name>`, made by `zfs clone -p`, one per pool."""
        return list(dict.fromkeys(d.rsplit("/", 1)[0] for d in self.datasets))

    def run(self, zfs: Zfs, pg: PgTools, *, dry_run: bool = False) -> None:
        if self.dir is not None and not dry_run:
            stop_worker(self.dir)
        if self.pgdata is not None:
            Instance(pg, self.pgdata, self.pgdata / "postmaster.log", "").stop()
        for dataset in [*reversed(self.datasets), *self.parents]:
            with contextlib.suppress(DatasetNotFound):
                zfs.destroy(dataset)
        tag = hold_tag(self.name)
        for snapshot in self.held:
            try:
                zfs.release(tag, [snapshot])
            except ZfsError as e:
                if "no such tag" not in str(e).lower() and not isinstance(e, DatasetNotFound):
                    raise
        if self.dir is not None and self.dir.exists() and not dry_run:
            inside = [m for m in mounts() if self.dir in m.mountpoint.parents]
            if inside:
                raise UsageError(f"{inside[0].mountpoint} is still mounted: {self.dir} kept")
            shutil.rmtree(self.dir)


@dataclass(frozen=True)
class DestroyResult:
    name: str
    datasets: list[str]
    released: list[str]
    dir: str
    dry_run: bool

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "datasets": self.datasets, "released_holds": self.released,
                "dir": self.dir, "dry_run": self.dry_run, "destroyed": not self.dry_run}


@dataclass
class DestroyClone:
    config: Config
    zfs: Zfs

    def run(self, name: str, *, dry_run: bool = False) -> DestroyResult:
        clone = registry.get(self.zfs, name, self.config.snapshot.cluster)
        pg = PgTools(self.zfs.runner, find_bindir(self.config.standby.pg_bin),
                     self.config.standby.os_user)
        teardown = Teardown(name, clone.pgdata, clone.datasets, clone.origins, clone.dir)
        teardown.run(self.zfs, pg, dry_run=dry_run)
        log.info("flashback instance %s destroyed", name)
        return DestroyResult(name, clone.datasets, clone.origins, str(clone.dir), dry_run)
