"""The catalog of snapshot sets, read from the snapshots' own ZFS user properties: a set carries
its metadata with it, so nothing is lost with a local file."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from zsnap.errors import ConfigError, DatasetNotFound, NotFoundError, ZsnapError
from zsnap.lsn import Lsn
from zsnap.pg.backup_mode import BackupLabel
from zsnap.pg.config_files import ConfigFiles
from zsnap.pg.layout import Layout, Place
from zsnap.zfs import UNSET, Zfs

T = TypeVar("T")

if TYPE_CHECKING:
    from zsnap.config import Config

PREFIX = "zsnap:"
SNAP_PREFIX = "zsnap_"
# Format 2: a set is complete only once zsnap has proven it consistent and written
# `complete` on its control-file member. Format 1 sets (before that) count when every member
# is there.
FORMAT = "2"
FORMATS = ("1", "2")
COMPLETE = "yes"
# What `missing` names for a format 2 set without the mark (zsnap died, or replay moved).
UNPROVEN = "proof of consistency (zsnap stopped before it was proven)"
# An absent value (zfs shows an unset property as "-", and refuses empty values).
NONE = "none"
ID_FORMAT = "%Y%m%dT%H%M%SZ"
_ID = re.compile(r"^\d{8}T\d{6}Z$")

# Set-level properties, written on every member in the same `zfs snapshot` call.
SET_PROPS = [
    "format", "set", "cluster", "created", "members", "layout", "timeline", "redo_lsn",
    "checkpoint_lsn", "consistent_lsn", "replay_lsn", "replay_timestamp", "system_identifier",
    "server_version", "wal_segment_size", "block_size", "data_checksums",
]
# Only where the standby's postgresql.conf lies outside its PGDATA (the Debian layout):
# its path and the authentication files', written in the same call; older sets have none.
CONFIG_PROPS = ["config_file", "hba_file", "ident_file"]
# Sets of a primary only (snapshots inside backup mode): `pending` is "backup" from the
# snapshot call until pg_backup_stop's results are written on every member, then "none"; a
# set with a member still pending is incomplete. `backup_label` is base64 (BackupLabel.encode).
BACKUP_PROPS = ["pending", "backup_label"]
PENDING_BACKUP = "backup"
# What `missing` names for a set whose backup mode never ended (zsnap died in between).
BACKUP_END = "backup end (pg_backup_stop)"
# On the control-file *dataset* (not its snapshots): the cluster whose sets it heads, so that
# set selection reads one snapshot a set instead of every member (Catalog.heads).
SETS_OF = PREFIX + "sets_of"
# Written after the set exists, and read from the control-file member: `complete` goes only
# there, the others to every member.
LATER_PROPS = ["complete", "pause_ms", "verification", "verified_at", "verify_outcome",
               "verify_failed_check", "rto_s"]
# A verification's outcome in one property (zsnap.verify.Verification.properties); sets
# verified by an older zsnap have the four separate ones after it in LATER_PROPS.
VERIFICATION = PREFIX + "verification"


def new_set_id(now: datetime) -> str:
    return now.astimezone(UTC).strftime(ID_FORMAT)


def is_set_id(text: str) -> bool:
    return _ID.match(text) is not None


def snapshot_name(set_id: str) -> str:
    return f"{SNAP_PREFIX}{set_id}"


class SnapshotSet(BaseModel):
    id: str
    cluster: str
    created: datetime
    timeline: int
    redo_lsn: str
    checkpoint_lsn: str
    consistent_lsn: str
    replay_lsn: str
    replay_timestamp: datetime | None
    system_identifier: int
    server_version: int
    wal_segment_size: int
    block_size: int
    data_checksums: bool
    datasets: list[str]
    layout: str
    complete: bool
    missing: list[str]
    # The backup label of a set taken from a primary in backup mode; a clone starts from it.
    backup_label: str | None = None
    pause_ms: int | None = None
    verified_at: datetime | None = None
    verify_outcome: str | None = None
    verify_failed_check: str | None = None
    rto_s: float | None = None
    # The standby's configuration files when postgresql.conf is outside PGDATA.
    config_file: str | None = None
    hba_file: str | None = None
    ident_file: str | None = None

    @property
    def config_files(self) -> ConfigFiles | None:
        if self.config_file is None or self.hba_file is None or self.ident_file is None:
            return None
        return ConfigFiles(self.config_file, self.hba_file, self.ident_file)

    @property
    def snapshots(self) -> list[str]:
        return [f"{ds}@{snapshot_name(self.id)}" for ds in self.datasets]

    @property
    def consistent_at(self) -> datetime:
        """The earliest time a recovery target may name: the last commit replayed into the set,
        or, when the standby had replayed no commit since it started, the set's creation (later
        than any commit in it, so never too early)."""
        return self.replay_timestamp or self.created

    @property
    def parsed_layout(self) -> Layout:
        return Layout.from_json(self.layout)

    @property
    def redo(self) -> Lsn:
        return Lsn.parse(self.redo_lsn)

    @property
    def consistent(self) -> Lsn:
        return Lsn.parse(self.consistent_lsn)

    def holds_before(self, lsn: int) -> bool:
        """Whether a record that starts at `lsn` comes after everything replayed into this
        set, so that a recovery from it can stop just before that record: the consistency
        point is the end of the last record the set holds, where the next one starts."""
        return self.consistent.value <= lsn

    @property
    def min_replay_bytes(self) -> int | None:
        """The WAL from the redo point to the consistency point, which every clone of the set
        replays before it can stop at any target; None while a primary's set is pending."""
        try:
            return max(self.consistent - self.redo, 0)
        except ValueError:
            return None


def properties(record: Mapping[str, str]) -> dict[str, str]:
    """The set-level metadata as `zsnap:` user properties (CONFIG_PROPS where present)."""
    keys = SET_PROPS + [key for key in CONFIG_PROPS if key in record]
    return {PREFIX + key: record[key] for key in keys}


def _opt(value: str | None) -> str | None:
    return None if value in (None, UNSET, NONE, "") else value


def _label(value: str | None, missing: list[str]) -> str | None:
    """The decoded backup label; one that cannot be decoded makes the set unusable."""
    if value is None:
        return None
    try:
        return BackupLabel.decode(value).text
    except ZsnapError:
        missing.append("backup label (unreadable)")
        return None


def under(dataset: str, parent: str) -> bool:
    return dataset == parent or dataset.startswith(parent + "/")


@dataclass(frozen=True)
class Scope:
    """Which snapshots on this host are this catalog's sets. A standby's host: its own datasets,
    not the copies that `zsnap replicate` receives on this host (`exclude`, its target). A
    receiving host: only what arrived under `root`, where member DATASET is ROOT/DATASET; the
    sets' metadata still names the standby's datasets, and is read back with local names."""

    root: str = ""
    exclude: str = ""

    def owns(self, name: str) -> bool:
        dataset = name.split("@", 1)[0]
        if self.root:
            return dataset.startswith(self.root + "/")
        return not (self.exclude and under(dataset, self.exclude))

    def local(self, dataset: str) -> str:
        return f"{self.root}/{dataset}" if self.root and dataset else dataset

    def layout(self, text: str) -> str:
        if not self.root:
            return text
        places = Layout.from_json(text).places
        return Layout(tuple(Place(p.role, p.path, self.local(p.dataset), p.subpath, p.oid)
                            for p in places)).to_json()


def scope_of(config: Config) -> Scope:
    r = config.replicate
    # A target on this host (no command to reach another) holds copies of this host's sets.
    return Scope(root=config.catalog.root, exclude=r.target if not r.command else "")


def catalog_of(config: Config, zfs: Zfs) -> Catalog:
    return Catalog(zfs, config.snapshot.cluster, scope_of(config))


class Catalog:
    def __init__(self, zfs: Zfs, cluster: str, scope: Scope | None = None):
        self.zfs = zfs
        self.cluster = cluster
        self.scope = scope or Scope()

    def sets(self) -> list[SnapshotSet]:
        """Every set of this cluster, oldest first; one `zfs list` call however many sets."""
        return self._sets(self.zfs.list_snapshots(self._props()))

    def heads(self, listed: Sequence[Mapping[str, str]] | None = None) -> list[SnapshotSet] | None:
        """Every set as its control-file member alone tells it (members on other datasets not
        looked at: on zfs-fuse every snapshot listed costs about half a millisecond, whatever
        is asked of it), for choosing a set: what is chosen is then `read` whole. None when no
        dataset is marked as this cluster's (sets of an older zsnap): use `sets`. `listed`:
        the host's filesystems with SETS_OF, when the caller has listed them already."""
        if listed is None:
            listed = self.zfs.list_filesystems([SETS_OF])
        marked = [row["name"] for row in listed
                  if row[SETS_OF] == self.cluster and self.scope.owns(row["name"])]
        if not marked:
            return None
        return self._sets(self.zfs.list_snapshots(self._props(), marked), listed=set(marked))

    def _sets(
        self, found: list[dict[str, str]], listed: set[str] | None = None
    ) -> list[SnapshotSet]:
        by_set: dict[str, dict[str, dict[str, str]]] = {}
        for row in found:
            set_id = row[PREFIX + "set"]
            if (set_id == UNSET or row[PREFIX + "cluster"] != self.cluster
                    or not self.scope.owns(row["name"])):
                continue
            if self.scope.root:
                self._received(row)
            by_set.setdefault(set_id, {})[row["name"]] = row
        result = [self._build(set_id, rows, listed) for set_id, rows in by_set.items()]
        return sorted(result, key=lambda s: s.id)

    def _received(self, row: dict[str, str]) -> None:
        """Under a receiving root, member DATASET arrived as ROOT/DATASET: a snapshot of the
        cluster's that is not (the standby's own, under a root set to its pool) says the root
        is wrong, and every set read there would name datasets that do not exist."""
        dataset = row["name"].split("@", 1)[0]
        members = (_opt(row.get(PREFIX + "members")) or "").split(",")
        if dataset not in {self.scope.local(m) for m in members}:
            raise ConfigError(
                f"[catalog] root {self.scope.root} holds {dataset}, a member of cluster "
                f"{self.cluster}'s sets itself, not a copy received under it: set [catalog] "
                "root to the [replicate] target that sets arrive under")

    def read(self, set_id: str, snapshots: list[str]) -> SnapshotSet:
        """One set from its members' names (one `zfs get`, however many sets there are)."""
        values = self.zfs.get(snapshots, self._props())
        return self._build(set_id, {name: {"name": name, **v} for name, v in values.items()})

    @staticmethod
    def _props() -> list[str]:
        return [PREFIX + k for k in SET_PROPS + CONFIG_PROPS + BACKUP_PROPS + LATER_PROPS]

    def get(self, set_id: str) -> SnapshotSet:
        """One set, read from every member: found through `heads` where it can be, else (and
        when a member is gone, to say which) from every snapshot on the host."""
        head = next((s for s in self.heads() or [] if s.id == set_id), None)
        if head is not None:
            with contextlib.suppress(DatasetNotFound):
                return self.read(set_id, head.snapshots)
        for s in self.sets():
            if s.id == set_id:
                return s
        raise NotFoundError(f"no snapshot set {set_id} for cluster {self.cluster}")

    def _build(
        self, set_id: str, rows: dict[str, dict[str, str]], listed: set[str] | None = None
    ) -> SnapshotSet:
        """`listed`: the datasets whose snapshots `rows` came from, when not all of them."""
        # Every member carries the set's metadata; read it from the first one present.
        first = next(iter(rows.values()))

        def prop(key: str) -> str | None:
            return _opt(first.get(PREFIX + key))

        members = [self.scope.local(m) for m in (prop("members") or "").split(",")]
        expected = [f"{ds}@{snapshot_name(set_id)}" for ds in members]
        missing = [name for name in expected if name not in rows
                   and (listed is None or name.split("@")[0] in listed)]
        # Every member, not just the first: zsnap may have died while writing them.
        if any(_opt(row.get(PREFIX + "pending")) is not None for row in rows.values()):
            missing.append(BACKUP_END)
        label = _label(prop("backup_label"), missing)
        later = {key: _opt(first.get(PREFIX + key)) for key in LATER_PROPS}
        # Later properties go to every member; the control-file member is the reference.
        control = rows.get(expected[0]) if expected else None
        if control is not None:
            later = {key: _opt(control.get(PREFIX + key)) for key in LATER_PROPS}
        if later["verification"]:
            parts = [_opt(p) for p in later["verification"].split("|")]
            if len(parts) == 4:
                for key, value in zip(LATER_PROPS[3:], parts, strict=True):
                    later[key] = value
        fmt = prop("format")
        if fmt == "2" and later["complete"] != COMPLETE:
            missing.append(UNPROVEN)

        def read(key: str, parse: Callable[[str], T], default: T) -> T:
            """A property that says what the set is: one that cannot be read (edited by
            hand, say) makes this set incomplete, never chosen, and hides no other set."""
            value = prop(key)
            if value is None:
                return default
            try:
                return parse(value)
            except (ValueError, TypeError):
                missing.append(f"{PREFIX}{key} (unreadable: {value[:40]!r})")
                return default

        def later_value(key: str, parse: Callable[[str], T]) -> T | None:
            """What verification added later: an unreadable one is as if not there."""
            value = later[key]
            with contextlib.suppress(ValueError, TypeError):
                return parse(value) if value else None
            return None

        def lsn(text: str) -> str:
            Lsn.parse(text)
            return text

        def layout(text: str) -> str:
            Layout.from_json(text)
            return self.scope.layout(text)

        built = SnapshotSet(
            id=set_id,
            cluster=prop("cluster") or "",
            created=read("created", datetime.fromisoformat, datetime.fromtimestamp(0, UTC)),
            timeline=read("timeline", int, 0),
            redo_lsn=read("redo_lsn", lsn, "0/0"),
            checkpoint_lsn=read("checkpoint_lsn", lsn, "0/0"),
            consistent_lsn=read("consistent_lsn", lsn, "0/0"),
            replay_lsn=read("replay_lsn", lsn, "0/0"),
            replay_timestamp=read("replay_timestamp", datetime.fromisoformat, None),
            system_identifier=read("system_identifier", int, 0),
            server_version=read("server_version", int, 0),
            wal_segment_size=read("wal_segment_size", int, 0),
            block_size=read("block_size", int, 0),
            data_checksums=prop("data_checksums") == "on",
            datasets=members,
            layout=read("layout", layout, "[]"),
            complete=False,
            missing=missing,
            backup_label=label,
            pause_ms=later_value("pause_ms", int),
            verified_at=later_value("verified_at", datetime.fromisoformat),
            verify_outcome=later["verify_outcome"],
            verify_failed_check=later["verify_failed_check"],
            rto_s=later_value("rto_s", float),
            config_file=prop("config_file"),
            hba_file=prop("hba_file"),
            ident_file=prop("ident_file"),
        )
        built.complete = not missing and fmt in FORMATS
        return built
