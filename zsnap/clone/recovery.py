"""Turning a cloned standby data directory into a flashback instance's: signal files, tablespace
symlinks pointing into the clone, and the settings that make it recover to the target, fast,
and never touch the production cluster (no archiving into the real archive, no streaming from
the primary, no shared pid file, its own port and socket)."""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from zsnap.clone.target import Target
from zsnap.errors import UsageError
from zsnap.files import write_durably
from zsnap.pg.config_files import (
    HBA_COPY,
    IDENT_COPY,
    ConfigFiles,
    auth_file,
    clone_postgresql_conf,
)
from zsnap.pg.layout import ROLE_PG_WAL, ROLE_POLAR, ROLE_TABLESPACE, Layout
from zsnap.runner import os_user_entry
from zsnap.units import GB, MB
from zsnap.zfs import Mount

# Files of the standby that a flashback instance must not have: a stale pid file, the
# standby's signal (it would stream forever instead of stopping at the target), its options.
REMOVE = ("postmaster.pid", "standby.signal", "postmaster.opts")

# Recovery settings of the standby that mean nothing, or harm, in a flashback instance.
STANDBY_ONLY = (
    "primary_conninfo", "primary_slot_name", "promote_trigger_file", "archive_cleanup_command",
    "recovery_end_command", "recovery_min_apply_delay", "recovery_target", "recovery_target_time",
    "recovery_target_lsn", "recovery_target_xid", "recovery_target_name",
    "recovery_target_inclusive", "recovery_target_timeline", "recovery_target_action",
)
# Only one recovery target may be set: the others are cleared, in case postgresql.conf sets one.
TARGET_KEYS = ("recovery_target", "recovery_target_time", "recovery_target_lsn",
               "recovery_target_xid", "recovery_target_name")

# What keeps a clone apart from production and on its target: [clones] settings may not
# change these.
PROTECTED = frozenset({
    "port", "listen_addresses", "unix_socket_directories", "cluster_name", "external_pid_file",
    "archive_mode", "archive_command", "archive_library", "restore_command", "hot_standby",
    "data_directory", "hba_file", "ident_file", "config_file", *STANDBY_ONLY, "recovery_target",
})

# Settings for the replay only, put back to the cluster's own once the instance is handed over.
FAST_ONLY = ("fsync", "synchronous_commit", "max_wal_size", "checkpoint_timeout")
# They live in a file of their own in PGDATA, included at the end of the clone's
# postgresql.conf, so that making the instance durable is emptying it and a reload (`pg_ctl
# reload`): ALTER SYSTEM and pg_reload_conf() need grants that zsnap's least-privilege role
# does not have, and should not get on production. Not in postgresql.auto.conf: ALTER SYSTEM
# would copy an included file's settings into it.
REPLAY_CONF = "zsnap.replay.conf"
REPLAY_DONE = "# zsnap: replay-only settings, emptied once the instance was made durable\n"

_SETTING = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?")
_DATA_DIRECTORY = re.compile(r"^\s*data_directory\s*=", re.MULTILINE)


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fast_settings(memory: int, *, prefetch: bool = True) -> dict[str, str]:
    """Replay tuned for a throwaway instance (DOMAIN.md section 2: 50 s became 16 s): a buffer
    cache that holds the working set (with 128 MB, replay took 6 times longer: `python -m
    bench knobs`), no fsync while replaying (the instance can always be cloned again; fsync
    is turned back on and a checkpoint taken once it is handed over), and no restartpoints
    forced by WAL volume or time. `prefetch` off where the clone's filesystem is FUSE
    (zfs-fuse): recovery_prefetch's read-ahead advice made replay 2.1 times slower there."""
    buffers = min(max(memory // 8, 128 * MB), 4 * GB)
    return {
        "shared_buffers": f"{buffers // MB}MB",
        "fsync": "off",
        "synchronous_commit": "off",
        "max_wal_size": "16GB",
        "checkpoint_timeout": "1d",
        "recovery_prefetch": "try" if prefetch else "off",
    }


def prefetch_helps(mountpoints: Sequence[Path], table: Iterable[Mount]) -> bool:
    """False where a clone's dataset is mounted through FUSE (zfs-fuse)."""
    types = {m.mountpoint: m.fstype for m in table}
    return not any(types.get(p, "").startswith("fuse") for p in mountpoints)


def instance_settings(
    *,
    name: str,
    port: int,
    listen_addresses: str,
    socket_dir: Path,
    restore_command: str,
    target: Target,
    fast: bool,
    extra: Mapping[str, str] | None = None,
    prefetch: bool = True,
) -> dict[str, str]:
    settings = {
        "port": str(port),
        "listen_addresses": listen_addresses,
        "unix_socket_directories": str(socket_dir),
        "cluster_name": f"zsnap-{name}",
        # Not the standby's: an external pid file set in postgresql.conf would be overwritten.
        "external_pid_file": str(socket_dir / "postmaster.pid"),
        # The server log goes to the file pg_ctl -l names, where zsnap reads it.
        "logging_collector": "off",
        "log_destination": "stderr",
        "archive_mode": "off",
        "primary_conninfo": "",
        "primary_slot_name": "",
        "restore_command": restore_command,
        "hot_standby": "on",
        "recovery_target_timeline": "latest",
        # Always pause at the target, where the promotion asked for at the start is read
        # (Instance.request_promotion): it ends recovery with an end-of-recovery record
        # instead of waiting for a full checkpoint.
        "recovery_target_action": "pause",
    }
    # PostgreSQL refuses a second target while one is set, in the order it reads them; only
    # the last line of a key counts, so the other keys cleared first, ours last, always work.
    chosen = target.settings()
    settings.update({key: "" for key in TARGET_KEYS if key not in chosen})
    settings["recovery_target_inclusive"] = "true"
    settings.update(chosen)
    if fast:
        fast_ones = fast_settings(machine_memory(), prefetch=prefetch)
        settings.update({k: v for k, v in fast_ones.items() if k not in FAST_ONLY})
    settings.update(extra or {})
    return settings


def replay_settings(*, fast: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What fast recovery sets for the replay only (REPLAY_CONF), except what `[clones]
    settings` (`extra`) sets: that stays, in postgresql.auto.conf."""
    if not fast:
        return {}
    return {k: v for k, v in fast_settings(machine_memory()).items()
            if k in FAST_ONLY and k not in (extra or {})}


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def rewrite_auto_conf(text: str, settings: Mapping[str, str], also: Iterable[str] = ()) -> str:
    """The standby's postgresql.auto.conf without its recovery settings or any key we set
    (here, or `also` elsewhere: read before this file, they would be overridden), then ours:
    one line per key, so nothing is left for a later line to override."""
    drop = {k.lower() for k in (*settings, *STANDBY_ONLY, *also)}
    kept = []
    for line in text.splitlines():
        m = _SETTING.match(line)
        if m and not line.lstrip().startswith("#") and m.group(1).lower() in drop:
            continue
        kept.append(line)
    ours = [f"{key} = {quote(value)}" for key, value in settings.items()]
    return "\n".join([*kept, "# zsnap flashback instance", *ours]) + "\n"


@dataclass(frozen=True)
class DataDir:
    """Where the clone's places are: each set member's clone is mounted at `mountpoints[i]`."""

    layout: Layout
    members: list[str]
    mountpoints: list[Path]

    def path_of(self, dataset: str, subpath: str) -> Path:
        base = self.mountpoints[self.members.index(dataset)]
        return base if subpath in ("", ".") else base / subpath

    @property
    def pgdata(self) -> Path:
        place = self.layout.pgdata
        return self.path_of(place.dataset, place.subpath)


def prepare(
    data: DataDir,
    settings: dict[str, str],
    os_user: str,
    backup_label: str | None = None,
    config_files: ConfigFiles | None = None,
    replay: Mapping[str, str] | None = None,
) -> None:
    """Rewire the cloned PGDATA. Runs as root; what it creates is given to the cluster's owner.
    `replay`: the settings for the replay only (REPLAY_CONF).
    A set taken from a primary in backup mode brings its `backup_label`: recovery then starts
    at the backup's checkpoint and is consistent only past the backup's end. (No
    `tablespace_map`: it would point the clone at the primary's tablespaces; the symlinks in
    pg_tblspc are repointed into the clone instead.) A set whose standby kept postgresql.conf
    outside PGDATA brings `config_files`: the clone gets a postgresql.conf of its own."""
    pgdata = data.pgdata
    # First of all: the cloned postmaster.pid holds the pid of the standby's running
    # postmaster, and if anything below refuses, the teardown's `pg_ctl stop` on this
    # directory would stop the standby.
    for name in REMOVE:
        (pgdata / name).unlink(missing_ok=True)
    if not (pgdata / "global" / "pg_control").is_file():
        raise UsageError(f"the clone has no {pgdata}/global/pg_control: is the set's layout right?")
    owner = os_user_entry(os_user)
    # Everything else that can refuse is read before anything in the clone changes.
    outside = None if config_files is None else _outside_config(data, config_files)
    settings = dict(settings)
    conf = pgdata / "postgresql.conf"
    conf_text = ""
    if outside is not None:
        settings.update(outside.settings)
    elif conf.is_file():
        conf_text = conf.read_text(errors="replace")
        if _DATA_DIRECTORY.search(conf_text):
            raise UsageError(
                f"{conf} sets data_directory: a clone would start on the standby's own files"
            )
    for place in data.layout.places:
        where = data.path_of(place.dataset, place.subpath)
        if place.role == ROLE_TABLESPACE:
            _relink(pgdata / "pg_tblspc" / str(place.oid), where, owner)
        elif place.role == ROLE_PG_WAL:
            _relink(pgdata / "pg_wal", where, owner)
        elif place.role == ROLE_POLAR:
            settings["polar_datadir"] = str(where)
    if outside is not None:
        for path, text in outside.files.items():
            _write_private(path, text, owner)
        conf_text = outside.files[conf]
    if replay:
        _write_private(pgdata / REPLAY_CONF, replay_conf(replay), owner)
        # Replaced, not appended to: the standby's postgresql.conf may be a symlink.
        _write_private(conf, with_replay_include(conf_text), owner)
    signal = pgdata / "recovery.signal"
    signal.touch(mode=0o600)
    os.chown(signal, owner.pw_uid, owner.pw_gid)
    if backup_label is not None:
        _write_private(pgdata / "backup_label", backup_label, owner)
    auto = pgdata / "postgresql.auto.conf"
    old = auto.read_text(errors="replace") if auto.exists() else ""
    _write_private(auto, rewrite_auto_conf(old, settings, also=replay or ()), owner)


def replay_conf(replay: Mapping[str, str]) -> str:
    lines = [f"{key} = {quote(value)}" for key, value in replay.items()]
    return "\n".join(["# zsnap: settings for the replay only, emptied once the instance is "
                      "durable", *lines]) + "\n"


def with_replay_include(conf_text: str) -> str:
    """postgresql.conf with REPLAY_CONF included last: over the standby's settings, under
    postgresql.auto.conf (read after this file)."""
    ending = "" if not conf_text or conf_text.endswith("\n") else "\n"
    return f"{conf_text}{ending}include_if_exists = {quote(REPLAY_CONF)}\n"


@dataclass(frozen=True)
class OutsideConfig:
    files: dict[Path, str]  # written into the clone
    settings: dict[str, str]  # for postgresql.auto.conf


def _outside_config(data: DataDir, files: ConfigFiles) -> OutsideConfig:
    """For a standby whose postgresql.conf is outside PGDATA: a postgresql.conf that includes
    the standby's current one and then names the clone's data directory, and the clone's own
    authentication files: copies of the standby's as they are now (those outside PGDATA; the
    others came with the clone), named in postgresql.auto.conf, which is read last."""
    pgdata = data.pgdata
    standby_pgdata = data.layout.pgdata.path
    _readable(Path(files.config_file), "configuration file")
    written = {pgdata / "postgresql.conf": clone_postgresql_conf(files.config_file, pgdata)}
    settings = {}
    for standby_file, copy_name, key in (
        (files.hba_file, HBA_COPY, "hba_file"),
        (files.ident_file, IDENT_COPY, "ident_file"),
    ):
        where = auth_file(standby_file, standby_pgdata, pgdata, copy_name)
        if where.copy_from is not None:
            written[where.path] = _readable(where.copy_from, key)
        settings[key] = str(where.path)
    return OutsideConfig(written, settings)


def _readable(path: Path, what: str) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as e:
        raise UsageError(
            f"the standby's {what} {path}, which the set names, cannot be read ({e.strerror}):"
            " a clone of a cluster with its configuration outside PGDATA reads it at clone time"
        ) from None


def _write_private(path: Path, text: str, owner: pwd.struct_passwd) -> None:
    """`path` replaced whole (written aside, then renamed), mode 0600, owned by `owner`."""
    write_durably(path, text, mode=0o600, owner=(owner.pw_uid, owner.pw_gid), parents=False)


def _relink(link: Path, target: Path, owner: pwd.struct_passwd) -> None:
    if not target.is_dir():
        raise UsageError(f"{link} should point at {target}, which the clone does not have")
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
    os.lchown(link, owner.pw_uid, owner.pw_gid)
