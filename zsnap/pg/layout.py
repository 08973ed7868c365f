"""Where a running cluster keeps its files, and which ZFS dataset holds each place."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from zsnap.errors import NotOnZfs
from zsnap.pg.connection import Connection, scalar
from zsnap.zfs import Zfs, mount_of, mounts

ROLE_PGDATA = "pgdata"
ROLE_POLAR = "polar_datadir"
ROLE_TABLESPACE = "tablespace"
ROLE_PG_WAL = "pg_wal"


@dataclass(frozen=True)
class Place:
    """One directory the cluster needs, on `dataset` at `subpath` below its mountpoint."""

    role: str
    path: str
    dataset: str
    subpath: str
    oid: int | None = None

    def to_list(self) -> list[object]:
        return [self.role, self.oid, self.dataset, self.subpath, self.path]

    @classmethod
    def from_list(cls, item: list[object]) -> Place:
        role, oid, dataset, subpath, path = item
        number = None if oid is None else int(str(oid))
        return cls(str(role), str(path), str(dataset), str(subpath), number)


@dataclass(frozen=True)
class Layout:
    places: tuple[Place, ...]

    @property
    def control(self) -> Place:
        """The place that holds global/pg_control: polar_datadir on PolarDB, else PGDATA."""
        for role in (ROLE_POLAR, ROLE_PGDATA):
            for p in self.places:
                if p.role == role:
                    return p
        raise ValueError("layout without a data directory")

    @property
    def pgdata(self) -> Place:
        return next(p for p in self.places if p.role == ROLE_PGDATA)

    @property
    def datasets(self) -> list[str]:
        """Every dataset once, the control-file dataset first."""
        ordered = [self.control.dataset]
        for p in self.places:
            if p.dataset not in ordered:
                ordered.append(p.dataset)
        return ordered

    def to_json(self) -> str:
        return json.dumps([p.to_list() for p in self.places], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Layout:
        return cls(tuple(Place.from_list(item) for item in json.loads(text)))


def discover_paths(conn: Connection) -> list[tuple[str, str, int | None]]:
    """(role, path, oid) for every place of the running cluster."""
    data_directory = str(scalar(conn, "SELECT current_setting('data_directory')"))
    places: list[tuple[str, str, int | None]] = [(ROLE_PGDATA, data_directory, None)]
    polar = scalar(conn, "SELECT setting FROM pg_settings WHERE name = 'polar_datadir'")
    if polar:
        places.append((ROLE_POLAR, str(polar), None))
    rows = conn.execute(
        "SELECT oid, pg_tablespace_location(oid) FROM pg_tablespace "
        "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid"
    ).fetchall()
    for oid, location in rows:
        # An empty location is an in-place tablespace inside PGDATA (allow_in_place_tablespaces).
        if location and os.path.isabs(location):
            places.append((ROLE_TABLESPACE, str(location), int(oid)))
    wal = Path(data_directory) / "pg_wal"
    if wal.is_symlink():
        places.append((ROLE_PG_WAL, os.path.realpath(wal), None))
    return places


def map_to_datasets(paths: list[tuple[str, str, int | None]], zfs: Zfs) -> Layout:
    """Each place's dataset; NotOnZfs names the first place that is not on ZFS."""
    table = mounts()
    filesystems = zfs.filesystems()
    places = []
    for role, path, oid in paths:
        real = Path(os.path.realpath(path))
        mount = mount_of(real, table)
        if mount is None or mount.source not in filesystems:
            what = f"tablespace {oid}" if role == ROLE_TABLESPACE else role
            fs = f"{mount.fstype} ({mount.source})" if mount else "no filesystem"
            raise NotOnZfs(f"{what} at {path} is not on a ZFS dataset: it is on {fs}")
        subpath = str(real.relative_to(mount.mountpoint))
        places.append(Place(role, path, mount.source, subpath, oid))
    return Layout(tuple(places))


def discover(conn: Connection, zfs: Zfs) -> Layout:
    return map_to_datasets(discover_paths(conn), zfs)
