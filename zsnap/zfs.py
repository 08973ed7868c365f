"""The `zfs` command, driven through the runner: argv lists, timeouts, errors typed from
stderr, and capabilities detected from the implementation at hand (OpenZFS 2.x in production,
zfs-fuse 0.7 here) rather than assumed."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from zsnap.errors import (
    CommandError,
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    NoSpace,
    NoSuchHold,
    PoolFull,
    ZfsError,
    ZfsUnsupported,
)
from zsnap.runner import Runner

log = logging.getLogger(__name__)

ZFS_TIMEOUT = 120.0
# How long `destroy` waits for a busy mount to be released, and its first retry.
BUSY_WAIT_S = 45.0
BUSY_FIRST_RETRY_S = 0.02
UNSET = "-"

_ERRORS: list[tuple[re.Pattern[str], type[ZfsError]]] = [
    (re.compile(r"does not exist|no such pool|could not find any snapshots"), DatasetNotFound),
    (re.compile(r"already exists"), DatasetExists),
    (re.compile(r"is busy|has dependent clones|snapshot is cloned"), DatasetBusy),
    (re.compile(r"out of space|no space left"), NoSpace),
    (re.compile(r"no such tag"), NoSuchHold),
    (re.compile(r"too many arguments|invalid option|unrecognized command"), ZfsUnsupported),
]


def zfs_error(argv: Sequence[str], returncode: int, stderr: str, stdout: str = "") -> CommandError:
    for pattern, kind in _ERRORS:
        if pattern.search(stderr.lower()):
            return kind(argv, returncode, stderr, stdout)
    return ZfsError(argv, returncode, stderr, stdout)


@dataclass(frozen=True)
class Capabilities:
    # OpenZFS >= 0.6.3 snapshots several datasets of one pool in one transaction group.
    atomic_snapshots: bool
    # `zfs list -p` (parsable numbers); zfs-fuse only has it on `zfs get`.
    list_parsable: bool
    # `zfs receive -s`: an interrupted receive keeps what arrived and a token to resume from
    # (`zfs send -t`); OpenZFS 0.7 and later, not zfs-fuse.
    resumable_receive: bool = False
    # `zfs set a=1 b=2 DATASET...`: several properties in one call; zfs-fuse takes one.
    set_several: bool = False

    @classmethod
    def from_usage(cls, usage: str) -> Capabilities:
        atomic = False
        parsable = False
        resumable = False
        several = False
        for raw in usage.splitlines():
            line = raw.strip()
            if line.startswith("snapshot "):
                atomic = line.endswith("...")
            elif line.startswith("list "):
                flags = re.match(r"list \[-([A-Za-z]+)\]", line)
                parsable = bool(flags and "p" in flags.group(1))
            elif line.startswith(("receive ", "recv ")):
                flags = re.match(r"(?:receive|recv) \[-([A-Za-z]+)\]", line)
                resumable = resumable or bool(flags and "s" in flags.group(1))
            elif line.startswith("set "):
                several = line.startswith("set <property=value> ...")
        return cls(atomic_snapshots=atomic, list_parsable=parsable, resumable_receive=resumable,
                   set_several=several)


@dataclass(frozen=True)
class Mount:
    source: str
    mountpoint: Path
    fstype: str


def mounts(proc_mounts: str = "/proc/self/mounts") -> list[Mount]:
    result = []
    with open(proc_mounts) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                # /proc/mounts escapes spaces and such as octal.
                point = parts[1].encode().decode("unicode_escape")
                result.append(Mount(parts[0], Path(point), parts[2]))
    return result


def mount_of(path: Path, table: Iterable[Mount]) -> Mount | None:
    """The mount holding `path`: the longest mountpoint that is a prefix of it (the last one
    mounted wins when two share a mountpoint, as in the kernel)."""
    best: Mount | None = None
    for m in table:
        holds = path == m.mountpoint or m.mountpoint in path.parents
        if holds and (best is None or len(m.mountpoint.parts) >= len(best.mountpoint.parts)):
            best = m
    return best


def pool_of(dataset: str) -> str:
    return dataset.split("/", 1)[0].split("@", 1)[0]


class Zfs:
    """`prefix`: an argv that runs the command on another host ([replicate] command)."""

    def __init__(self, runner: Runner, binary: str = "zfs", prefix: Sequence[str] = ()):
        self.runner = runner
        self.binary = binary
        self.prefix = list(prefix)

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, self.binary, *args]

    def run(
        self, *args: str, mutates: bool, timeout: float = ZFS_TIMEOUT, check: bool = True
    ) -> str:
        return self.runner.run(
            self.argv(*args), timeout=timeout, mutates=mutates, check=check, error=zfs_error
        ).stdout

    @cached_property
    def capabilities(self) -> Capabilities:
        # `zfs` without a command prints its usage; that text differs between implementations.
        result = self.runner.run(self.argv(), mutates=False, check=False, timeout=30)
        caps = Capabilities.from_usage(result.stderr + result.stdout)
        log.debug("zfs capabilities: %s", caps)
        return caps

    # --- reading -------------------------------------------------------------------------

    def filesystems(self) -> dict[str, str]:
        """Every filesystem dataset and its mountpoint property."""
        return {row["name"]: row["mountpoint"] for row in self.list_filesystems(["mountpoint"])}

    def list_filesystems(
        self, props: Sequence[str], *, parsable: bool = False
    ) -> list[dict[str, str]]:
        """One call for every filesystem on the host with the given properties; `parsable`:
        numbers in bytes (`-p`, only where `zfs list` has it: capabilities.list_parsable)."""
        return self._list("filesystem", props, *(["-p"] if parsable else []))

    def exists(self, name: str) -> bool:
        try:
            self.run("list", "-H", "-o", "name", "-t", "all", name, mutates=False)
        except DatasetNotFound:
            return False
        return True

    def get(self, targets: Sequence[str], props: Sequence[str]) -> dict[str, dict[str, str]]:
        """Parsable property values ({dataset: {property: value}}); unset ones are '-'."""
        if not targets:
            return {}
        out = self.run(
            "get", "-H", "-p", "-o", "name,property,value", ",".join(props), *targets,
            mutates=False,
        )
        values: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            # zfs-fuse appends the source column to some native properties despite `-o`.
            name, prop, value = line.split("\t")[:3]
            values.setdefault(name, {})[prop] = value
        return values

    def list_snapshots(
        self, props: Sequence[str], of: Sequence[str] = ()
    ) -> list[dict[str, str]]:
        """One call for every snapshot on the host (or only those of the datasets `of`) with
        the given (string) properties."""
        return self._list("snapshot", props, *(["-d", "1", *of] if of else []))

    def _list(self, kind: str, props: Sequence[str], *args: str) -> list[dict[str, str]]:
        """`zfs list` of datasets of `kind`, a row of the given properties for each."""
        columns = ["name", *props]
        out = self.run("list", "-H", "-t", kind, "-o", ",".join(columns), *args,
                       mutates=False, timeout=300)
        return [dict(zip(columns, line.split("\t"), strict=True))
                for line in out.splitlines() if line]

    def free_percent(
        self, pools: Sequence[str], listed: Sequence[Mapping[str, str]] = ()
    ) -> dict[str, float]:
        """Each pool's free space, in percent of its used plus available space; from `listed`
        (list_filesystems rows with parsable `used` and `available`) when it has every pool."""
        values: Mapping[str, Mapping[str, str]] = {
            row["name"]: row for row in listed if row["name"] in pools
            and row.get("used", "").isdigit() and row.get("available", "").isdigit()}
        if len(values) < len(set(pools)):
            values = self.get(list(pools), ["used", "available"])
        free = {}
        for pool in pools:
            used, avail = float(values[pool]["used"]), float(values[pool]["available"])
            free[pool] = 100.0 * avail / (used + avail) if used + avail else 0.0
        return free

    def refuse_full(
        self, datasets: Sequence[str], critical_pct: float, doing: str,
        listed: Sequence[Mapping[str, str]] = (),
    ) -> None:
        """One line instead of writing into a pool below `critical_pct` free: zfs-fuse dies
        when a pool fills, and takes every mount on the machine with it."""
        pools = list(dict.fromkeys(pool_of(d) for d in datasets))
        for pool, pct in self.free_percent(pools, listed).items():
            if pct < critical_pct:
                raise PoolFull(
                    f"pool {pool} has {pct:.1f}% free, below [check] "
                    f"pool_free_critical_pct ({critical_pct:g}%): {doing} would write into it; "
                    "prune sets (zsnap prune), destroy clones, or grow the pool")

    def origin(self, dataset: str) -> str | None:
        value = self.get([dataset], ["origin"])[dataset]["origin"]
        return None if value == UNSET else value

    # --- changing ------------------------------------------------------------------------

    def snapshot(self, names: Sequence[str], props: Mapping[str, str]) -> None:
        """Snapshot `names` (dataset@snap, all in one pool) with user properties set in the
        same call. Atomic for the group where zfs allows it, else one after another in order."""
        pools = {pool_of(n) for n in names}
        if len(pools) > 1:
            raise ValueError(f"one atomic snapshot call spans one pool, got {sorted(pools)}")
        options = [arg for key, value in props.items() for arg in ("-o", f"{key}={value}")]
        if self.capabilities.atomic_snapshots:
            self.run("snapshot", *options, *names, mutates=True)
        else:
            for name in names:
                self.run("snapshot", *options, name, mutates=True)

    def set(self, targets: Sequence[str], props: Mapping[str, str]) -> None:
        """`props` on each of `targets`: every call names them all (zfs takes several), one
        call per property, or one call in all where zfs takes several properties (OpenZFS).
        Each call waits for a transaction group on a busy pool: fewer calls, less waiting."""
        pairs = [f"{key}={value}" for key, value in props.items()]
        if not targets or not pairs:
            return
        if len(pairs) > 1 and self.capabilities.set_several:
            self.run("set", *pairs, *targets, mutates=True)
            return
        for pair in pairs:
            self.run("set", pair, *targets, mutates=True)

    def create(self, name: str, props: Mapping[str, str]) -> None:
        options = [arg for key, value in props.items() for arg in ("-o", f"{key}={value}")]
        self.run("create", "-p", *options, name, mutates=True)

    def clone(self, snapshot: str, target: str, props: Mapping[str, str]) -> None:
        options = [arg for key, value in props.items() for arg in ("-o", f"{key}={value}")]
        self.run("clone", "-p", *options, snapshot, target, mutates=True)

    def rename(self, name: str, new_name: str) -> None:
        self.run("rename", name, new_name, mutates=True)

    def promote(self, clone: str) -> None:
        """The clone takes its origin's snapshots up to the origin; the newer stay."""
        self.run("promote", clone, mutates=True)

    def hold(self, tag: str, snapshots: Sequence[str]) -> None:
        """One call for every snapshot (OpenZFS and zfs-fuse both take several)."""
        if snapshots:
            self.run("hold", tag, *snapshots, mutates=True)

    def release(self, tag: str, snapshots: Sequence[str]) -> None:
        for snap in snapshots:
            self.run("release", tag, snap, mutates=True)

    def destroy(self, name: str, *, recursive: bool = False,
                busy_wait_s: float = BUSY_WAIT_S) -> None:
        """Destroy a dataset or snapshot. A mount that a process has just released can still
        answer 'busy' for a moment: retried, soon at first (on zfs-fuse the first attempt
        after a clone's server stopped is refused almost every time, the next one 20 ms later
        goes through), for `busy_wait_s` at most."""
        args = ["destroy", *(["-r"] if recursive else []), name]
        deadline = time.monotonic() + busy_wait_s
        delay = BUSY_FIRST_RETRY_S
        while True:
            try:
                self.run(*args, mutates=True)
                return
            except DatasetBusy as e:
                # A dependent clone never goes away by waiting; a busy mount does.
                waiting_helps = "dependent clones" not in str(e) and "is cloned" not in str(e)
                if not waiting_helps or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
