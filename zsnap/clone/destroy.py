"""`zsnap destroy NAME`, and the same teardown for a clone that failed half-way: stop its server,
destroy its datasets, release the holds on its origin snapshots, remove its directory."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from zsnap.clone import registry
from zsnap.clone.durability import stop_worker
from zsnap.clone.instance import Instance
from zsnap.clone.naming import ClonePaths, check_name, hold_tag
from zsnap.config import Config
from zsnap.errors import DatasetNotFound, UsageError, ZfsError
from zsnap.files import write_durably
from zsnap.pg.binaries import PgTools
from zsnap.runner import together
from zsnap.zfs import Zfs, mounts

log = logging.getLogger(__name__)


RECORD = "teardown.json"


@dataclass
class Teardown:
    """What one clone has, in the order it was made; `run` undoes it in reverse, whatever
    exists. CreateClone writes it into the clone's directory (`record`) before it takes a
    hold or makes a dataset, so that a clone killed half-way, before its datasets carry
    their properties, is still found and removed whole by `zsnap destroy`."""

    name: str
    pgdata: Path | None = None
    datasets: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    dir: Path | None = None
    cluster: str = ""
    set: str = ""

    def record(self) -> None:
        assert self.dir is not None
        # Durable: a crash right after this must still find it (crash clean-up reads it).
        write_durably(self.dir / RECORD, json.dumps({
            "name": self.name, "cluster": self.cluster, "set": self.set,
            "pgdata": str(self.pgdata) if self.pgdata else None, "datasets": self.datasets,
            "held": self.held, "dir": str(self.dir),
        }))

    @classmethod
    def recorded(cls, clone_dir: Path) -> Teardown | None:
        try:
            data = json.loads((clone_dir / RECORD).read_text())
            return cls(name=str(data["name"]),
                       pgdata=Path(data["pgdata"]) if data["pgdata"] else None,
                       datasets=list(data["datasets"]), held=list(data["held"]),
                       dir=Path(data["dir"]), cluster=str(data["cluster"]),
                       set=str(data["set"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def parents(self) -> list[str]:
        """`<pool>/zsnap-clones/<name>`, made by `zfs clone -p`, one per pool."""
        return list(dict.fromkeys(d.rsplit("/", 1)[0] for d in self.datasets))

    def run(self, zfs: Zfs, pg: PgTools, *, dry_run: bool = False) -> None:
        if self.dir is not None and not dry_run:
            stop_worker(self.dir)
        if self.pgdata is not None:
            # Its datasets go next: nothing it would write at a clean shutdown is kept.
            Instance(pg, self.pgdata, self.pgdata / "postmaster.log", "").stop(mode="immediate")
        # Each step's calls at once (each waits for its pool's transaction group): the
        # members, then their parents, then the holds.
        for datasets in (self.datasets, self.parents):
            together([functools.partial(_destroy, zfs, d) for d in datasets])
        tag = hold_tag(self.name)
        together([functools.partial(_release, zfs, tag, s) for s in self.held])
        if self.dir is not None and self.dir.exists() and not dry_run:
            inside = [m for m in mounts() if self.dir in m.mountpoint.parents]
            if inside:
                raise UsageError(f"{inside[0].mountpoint} is still mounted: {self.dir} kept")
            shutil.rmtree(self.dir)


def _destroy(zfs: Zfs, dataset: str) -> None:
    with contextlib.suppress(DatasetNotFound):
        zfs.destroy(dataset)


def _release(zfs: Zfs, tag: str, snapshot: str) -> None:
    try:
        zfs.release(tag, [snapshot])
    except ZfsError as e:
        if "no such tag" not in str(e).lower() and not isinstance(e, DatasetNotFound):
            raise


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
        """From the record of what was made where there is one (every hold and dataset the
        clone was to have, whether or not each came to exist), else from its datasets."""
        cluster = self.config.snapshot.cluster
        paths = ClonePaths(check_name(name), self.config.clones.mount_root)
        teardown = Teardown.recorded(paths.dir)
        if teardown is not None and teardown.cluster != cluster:
            teardown = None
        if teardown is None:
            clone = registry.get(self.zfs, name, cluster)
            teardown = Teardown(name, clone.pgdata, clone.datasets, clone.origins, clone.dir)
        pg = PgTools.of(self.config, self.zfs.runner)
        teardown.run(self.zfs, pg, dry_run=dry_run)
        log.info("flashback instance %s destroyed", name)
        return DestroyResult(name, teardown.datasets, teardown.held, str(teardown.dir),
                             dry_run)


def half_made(mount_root: Path, cluster: str, known: set[str]) -> list[Teardown]:
    """Clones of `cluster` recorded under `mount_root` that no dataset names (killed before
    their datasets carried their properties)."""
    if not mount_root.is_dir():
        return []
    found = (Teardown.recorded(d) for d in sorted(mount_root.iterdir()) if d.is_dir())
    return [t for t in found if t is not None and t.cluster == cluster and t.name not in known]
