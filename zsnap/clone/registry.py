"""The flashback instances on this host, read back from their datasets' ZFS user properties:
a clone carries its own record, so `zsnap clones` needs no local file and survives a crash of
the zsnap that made it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from zsnap.catalog import PREFIX
from zsnap.clone.naming import ClonePaths
from zsnap.errors import DatasetNotFound, NotFoundError
from zsnap.zfs import UNSET, Zfs

# Written on every clone dataset in the `zfs clone` call itself.
NAME = PREFIX + "clone"
CLUSTER = PREFIX + "clone_cluster"
SET = PREFIX + "clone_set"
TARGET = PREFIX + "clone_target"
PORT = PREFIX + "clone_port"
MEMBER = PREFIX + "clone_member"
CREATED = PREFIX + "clone_created"
DIR = PREFIX + "clone_dir"
PGDATA = PREFIX + "clone_pgdata"
# "pending" until the clone is durable, then the time it became so (zsnap.clone.durability).
DURABLE = PREFIX + "clone_durable"
# When `zsnap destroy --expired` (and the daemon) may remove it; unset: never.
EXPIRES = PREFIX + "clone_expires"
# An xid target's: the OID of the database its transaction changed, as found in the WAL (the
# database `zsnap query` and `zsnap dump` ask by default, a kept instance's too).
DATABASE = PREFIX + "clone_database"
COLUMNS = [NAME, CLUSTER, SET, TARGET, PORT, MEMBER, CREATED, DIR, PGDATA, DURABLE, EXPIRES,
           DATABASE, "origin", "mountpoint"]


class Clone(BaseModel):
    name: str
    cluster: str
    set: str
    target: str
    port: int
    created: datetime | None
    dir: Path
    pgdata: Path
    datasets: list[str]  # in set member order
    origins: list[str]
    mountpoints: list[Path]
    # The DURABLE property of the first member; None on clones made before it existed.
    durable: str | None = None
    expires_at: datetime | None = None
    database_oid: int | None = None  # DATABASE
    used_bytes: int | None = None
    state: str = "unknown"

    @property
    def paths(self) -> ClonePaths:
        return ClonePaths(self.name, self.dir.parent)


def read(zfs: Zfs, cluster: str | None = None, *, sizes: bool = True) -> list[Clone]:
    """Every clone (of `cluster`, if given), by name. One `zfs list` call where it prints
    parsable numbers (`-p`, OpenZFS); else the space used takes one `zfs get -p` more."""
    return listing(zfs, cluster, sizes=sizes)[0]


def listing(
    zfs: Zfs, cluster: str | None = None, *, sizes: bool = True,
    listed: Sequence[Mapping[str, str]] | None = None,
) -> tuple[list[Clone], set[str]]:
    """`read`, and the name of every filesystem on the host, from the same `zfs list` call;
    or from `listed`, the host's filesystems with COLUMNS, when the caller has them."""
    inline = sizes and listed is None and zfs.capabilities.list_parsable
    if listed is None:
        listed = zfs.list_filesystems([*COLUMNS, "used"] if inline else COLUMNS,
                                      parsable=inline)
    rows: dict[str, list[Mapping[str, str]]] = {}
    names: set[str] = set()
    for fields in listed:
        names.add(fields["name"])
        if fields[NAME] in (UNSET, "") or fields[MEMBER] == UNSET:
            continue
        if cluster is not None and fields[CLUSTER] != cluster:
            continue
        rows.setdefault(fields[NAME], []).append(fields)
    clones = [_build(name, members) for name, members in sorted(rows.items())]
    if inline:
        for c in clones:
            c.used_bytes = _total(m["used"] for m in rows[c.name])
    elif sizes:
        _add_sizes(zfs, clones)
    return clones, names


def _total(sizes: Iterable[str]) -> int:
    return sum(int(s) for s in sizes if s.isdigit())


def _add_sizes(zfs: Zfs, clones: list[Clone]) -> None:
    datasets = [d for c in clones for d in c.datasets]
    try:
        used = zfs.get(datasets, ["used"])
    except DatasetNotFound:
        # A clone destroyed since the listing: ask for each one left.
        used = {}
        for d in datasets:
            with contextlib.suppress(DatasetNotFound):
                used.update(zfs.get([d], ["used"]))
    for c in clones:
        c.used_bytes = _total(used.get(d, {}).get("used", UNSET) for d in c.datasets)


def get(zfs: Zfs, name: str, cluster: str | None = None) -> Clone:
    for c in read(zfs, cluster):
        if c.name == name:
            return c
    raise NotFoundError(f"no flashback instance named {name} (zsnap clones lists them)")


def _build(name: str, members: list[Mapping[str, str]]) -> Clone:
    members = sorted(members, key=lambda m: int(m[MEMBER]) if m[MEMBER].isdigit() else 0)
    first = members[0]
    return Clone(
        name=name,
        cluster=first[CLUSTER],
        set=first[SET],
        target=first[TARGET],
        port=int(first[PORT]) if first[PORT].isdigit() else 0,
        created=_time(first[CREATED]),
        dir=Path(first[DIR]),
        pgdata=Path(first[PGDATA]),
        durable=first[DURABLE] if first[DURABLE] != UNSET else None,
        expires_at=_time(first[EXPIRES]),
        database_oid=int(first[DATABASE]) if first[DATABASE].isdigit() else None,
        datasets=[m["name"] for m in members],
        origins=[m["origin"] for m in members if m["origin"] != UNSET],
        mountpoints=[Path(m["mountpoint"]) for m in members],
    )


def _time(value: str) -> datetime | None:
    """A time property; unset, or not a time (set by hand), is none; one set by hand without
    an offset is UTC (zsnap writes offsets)."""
    if value in (UNSET, ""):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def expired(c: Clone, now: datetime) -> bool:
    return c.expires_at is not None and c.expires_at <= now
