"""A self-contained sandbox: file-backed pools, a primary on local disk with a WAL archive, and a
streaming standby whose PGDATA and two tablespaces live on three datasets across two pools.
For newcomers, tests and benchmarks; `down` removes everything `up` made."""

from __future__ import annotations

import errno
import json
import logging
import os
import pwd
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zsnap.errors import CommandError, UsageError, ZsnapError
from zsnap.pg.binaries import PgTools, find_bindir
from zsnap.ports import port_free
from zsnap.runner import Runner
from zsnap.zfs import Zfs, mounts

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/var/tmp/zsnap-lab")
OS_USER = "postgres"


@dataclass(frozen=True)
class LabInfo:
    """What `up` made, saved as lab.json so that `down` and `status` find it again."""

    name: str
    root: Path
    pg_bin: Path
    primary_port: int
    standby_port: int
    pools: list[str]
    pool_images: list[Path]
    datasets: dict[str, str]  # dataset -> mountpoint

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def primary_data(self) -> Path:
        return self.root / "primary"

    @property
    def standby_data(self) -> Path:
        return self.root / "mnt" / "pgdata" / "data"

    @property
    def config_file(self) -> Path:
        return self.root / "zsnap.toml"

    @property
    def clone_root(self) -> Path:
        return self.root / "clones"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def conninfo(self, which: str = "primary") -> str:
        port = self.primary_port if which == "primary" else self.standby_port
        return f"host={self.socket_dir} port={port} user=postgres dbname=postgres"

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, default=str, indent=2)

    @classmethod
    def from_json(cls, text: str) -> LabInfo:
        data: dict[str, Any] = json.loads(text)
        return cls(
            name=data["name"],
            root=Path(data["root"]),
            pg_bin=Path(data["pg_bin"]),
            primary_port=data["primary_port"],
            standby_port=data["standby_port"],
            pools=list(data["pools"]),
            pool_images=[Path(p) for p in data["pool_images"]],
            datasets=dict(data["datasets"]),
        )


def lab_root(name: str, base: Path = DEFAULT_ROOT) -> Path:
    return base / name


def load_info(root: Path) -> LabInfo:
    path = root / "lab.json"
    if not path.is_file():
        raise UsageError(f"no lab at {root} (run `zsnap lab up` first)")
    return LabInfo.from_json(path.read_text())


ZFS_FUSE_PID_FILE = Path("/run/zfs-fuse.pid")


def zfs_fuse_running(proc: Path = Path("/proc")) -> bool:
    """Whether a zfs-fuse daemon runs, whoever started it (its init script, a lab, an operator)."""
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # "pid (comm) state ...": a zombie (Z) is a daemon that is already gone.
        name, _, rest = text.partition("(")[2].rpartition(")")
        if name == "zfs-fuse" and rest.split()[:1] != ["Z"]:
            return True
    return False


def ensure_zfs(runner: Runner) -> None:
    """Make `zpool` answer: nothing to do with kernel ZFS; start zfs-fuse when that is what
    this machine has.

    A daemon just started, by us or by its init script, needs a moment to answer; one that is
    shutting down has to be replaced once it is gone."""
    started = False
    deadline = time.monotonic() + 60
    while runner.run(["zpool", "list"], mutates=False, check=False, timeout=30).returncode != 0:
        if Path("/dev/zfs").exists() or not shutil.which("zfs-fuse"):
            raise ZsnapError(
                "ZFS is not available: install OpenZFS or zfs-fuse (apt-get install zfs-fuse)"
            )
        if not zfs_fuse_running():
            if started:
                raise ZsnapError("zfs-fuse stopped right after it started (see syslog)")
            _start_zfs_fuse(runner)
            started = True
        if time.monotonic() > deadline:
            raise ZsnapError("zfs-fuse runs but `zpool list` does not answer after 60 s")
        time.sleep(0.5)


def destroy_pool(runner: Runner, pool: str) -> None:
    """Destroy a pool a lab or a test made, if it is imported."""
    listed = runner.run(["zpool", "list", "-H", "-o", "name"], check=False, mutates=False)
    if pool not in listed.stdout.split():
        return
    # A mount a process released a moment ago can still be busy on zfs-fuse.
    for attempt in range(20):
        try:
            runner.run(["zpool", "destroy", "-f", pool], timeout=120)
            return
        except CommandError:
            if attempt == 19:
                raise
            time.sleep(0.5)


def _start_zfs_fuse(runner: Runner) -> None:
    # zfs-fuse exits 1 without a word while its pid file exists, even when the process it
    # names is long gone: /run survives on machines restored from a disk image.
    ZFS_FUSE_PID_FILE.unlink(missing_ok=True)
    log.info("starting zfs-fuse")
    try:
        runner.run(["zfs-fuse", "--pidfile", str(ZFS_FUSE_PID_FILE)], timeout=60)
    except CommandError as e:
        raise ZsnapError(f"{e} (zfs-fuse needs /dev/fuse)") from None


class Lab:
    def __init__(
        self,
        name: str = "zlab",
        base: Path = DEFAULT_ROOT,
        port: int = 54320,
        pool_size: str = "4G",
        pg_bin: Path | None = None,
        runner: Runner | None = None,
    ):
        # It names pools and datasets: letters, digits and _ as zpool takes them, ASCII only.
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,19}", name):
            raise UsageError(f"lab name must be up to 20 ASCII letters, digits or _, starting "
                             f"with a letter; got {name!r}")
        self.name = name
        self.root = lab_root(name, base)
        self.port = port
        self.pool_size = pool_size
        self.pg_bin = pg_bin
        self.runner = runner or Runner()
        self.zfs = Zfs(self.runner)

    # --- up ------------------------------------------------------------------------------

    def up(self) -> LabInfo:
        if (self.root / "lab.json").exists():
            raise UsageError(f"lab {self.name} is already up at {self.root} (zsnap lab down)")
        if os.geteuid() != 0:
            raise UsageError("zsnap lab needs root (it creates pools and runs PostgreSQL)")
        for port in (self.port, self.port + 1):
            if not port_free(port):
                raise UsageError(f"port {port} is in use: choose another with --port")
        ensure_zfs(self.runner)
        info = LabInfo(
            name=self.name,
            root=self.root,
            pg_bin=find_bindir(self.pg_bin),
            primary_port=self.port,
            standby_port=self.port + 1,
            pools=[f"{self.name}_a", f"{self.name}_b"],
            pool_images=[self.root / "pools" / "a.img", self.root / "pools" / "b.img"],
            datasets={
                f"{self.name}_a/pgdata": str(self.root / "mnt" / "pgdata"),
                f"{self.name}_a/ts1": str(self.root / "mnt" / "ts1"),
                f"{self.name}_b/ts2": str(self.root / "mnt" / "ts2"),
            },
        )
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        (self.root / "lab.json").write_text(info.to_json())
        try:
            self._make_pools(info)
            self._make_primary(info)
            self._make_standby(info)
            self._write_config(info)
        except BaseException:
            log.error("lab up failed; removing what was made")
            self.down()
            raise
        return info

    def _make_pools(self, info: LabInfo) -> None:
        for pool, image in zip(info.pools, info.pool_images, strict=True):
            image.parent.mkdir(parents=True, exist_ok=True)
            self.runner.run(["truncate", "-s", self.pool_size, str(image)])
            self.runner.run(["zpool", "create", "-m", "none", pool, str(image)], timeout=120)
        for dataset, mountpoint in info.datasets.items():
            self.zfs.create(dataset, {"mountpoint": mountpoint})

    def _pg(self, info: LabInfo) -> PgTools:
        return PgTools(self.runner, info.pg_bin, OS_USER)

    def _make_primary(self, info: LabInfo) -> None:
        owner = pwd.getpwnam(OS_USER)
        for d in (info.socket_dir, info.archive, info.log_dir, self.root / "primary_ts"):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, owner.pw_uid, owner.pw_gid)
        private = (info.primary_data, *(self.root / "primary_ts" / ts for ts in ("ts1", "ts2")))
        for d in private:
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, owner.pw_uid, owner.pw_gid)
        pg = self._pg(info)
        pg.run(
            "initdb", "-D", str(info.primary_data), "--auth=trust", "--data-checksums",
            "-U", "postgres", "--no-instructions", "--encoding=UTF8", "--locale=C", timeout=300,
        )
        settings = {
            "port": info.primary_port,
            "listen_addresses": "'localhost'",
            "unix_socket_directories": f"'{info.socket_dir}'",
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"'test ! -f {info.archive}/%f && cp %p {info.archive}/%f'",
            "archive_timeout": "60",
            "track_commit_timestamp": "on",
            "max_wal_senders": "10",
            "wal_keep_size": "'512MB'",
            "hot_standby": "on",
            "shared_buffers": "'128MB'",
            "max_wal_size": "'1GB'",
            "log_line_prefix": "'%m [%p] '",
        }
        with (info.primary_data / "postgresql.conf").open("a") as f:
            f.write("\n# zsnap lab\n")
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.start(info, "primary")
        import psycopg  # loaded when a lab is used, not for its --help

        with psycopg.connect(info.conninfo("primary"), autocommit=True) as conn:
            for ts in ("ts1", "ts2"):
                conn.execute(
                    f"CREATE TABLESPACE {ts} LOCATION '{self.root / 'primary_ts' / ts}'"
                )
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            for table, ts in (("lab_a", "ts1"), ("lab_b", "ts2")):
                conn.execute(
                    f"CREATE TABLE {table} (id bigserial PRIMARY KEY, "
                    f"written_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                    f"payload text NOT NULL) TABLESPACE {ts}"
                )
                conn.execute(f"CREATE INDEX ON {table} (written_at) TABLESPACE {ts}")

    def _make_standby(self, info: LabInfo) -> None:
        owner = pwd.getpwnam(OS_USER)
        targets = {
            "pgdata": info.standby_data,
            "ts1": self.root / "mnt" / "ts1" / "ts",
            "ts2": self.root / "mnt" / "ts2" / "ts",
        }
        for d in targets.values():
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, owner.pw_uid, owner.pw_gid)
        pg = self._pg(info)
        pg.run(
            "pg_basebackup", "-h", str(info.socket_dir), "-p", str(info.primary_port),
            "-U", "postgres", "-D", str(info.standby_data), "-R", "-X", "stream",
            "-c", "fast",
            "-T", f"{self.root / 'primary_ts' / 'ts1'}={targets['ts1']}",
            "-T", f"{self.root / 'primary_ts' / 'ts2'}={targets['ts2']}",
            timeout=600,
        )
        with (info.standby_data / "postgresql.auto.conf").open("a") as f:
            f.write(f"port = {info.standby_port}\n")
            f.write(f"restore_command = 'cp {info.archive}/%f %p'\n")
            f.write("hot_standby = on\n")
        self.start(info, "standby")

    def _write_config(self, info: LabInfo) -> None:
        low = info.primary_port + 10
        info.config_file.write_text(
            f"""# written by `zsnap lab up`: a ready zsnap configuration for lab {info.name}
[standby]
conninfo = "{info.conninfo('standby')}"
os_user = "{OS_USER}"
pg_bin = "{info.pg_bin}"

[archive]
restore_command = "cp {info.archive}/%f %p"
path = "{info.archive}"

[clones]
mount_root = "{info.clone_root}"
port_range = [{low}, {low + 50}]

[snapshot]
cluster = "{info.name}"
# Uncomment to CHECKPOINT the primary before each set (docs/configuration.md):
# primary_checkpoint = "{info.conninfo('primary')}"

[state]
dir = "{self.root / 'state'}"
"""
        )

    # --- processes -----------------------------------------------------------------------

    def data_dir(self, info: LabInfo, which: str) -> Path:
        return info.primary_data if which == "primary" else info.standby_data

    def start(self, info: LabInfo, which: str) -> None:
        self._pg(info).run(
            "pg_ctl", "-D", str(self.data_dir(info, which)), "-l",
            str(info.log_dir / f"{which}.log"), "-w", "-t", "300", "start", timeout=330,
        )

    def stop(self, info: LabInfo, which: str, mode: str = "fast") -> None:
        self._stop_dir(info, self.data_dir(info, which), mode)

    def _stop_dir(self, info: LabInfo, data: Path, mode: str) -> None:
        if (data / "postmaster.pid").exists():
            self._pg(info).run(
                "pg_ctl", "-D", str(data), "-m", mode, "-w", "stop", check=False, timeout=120
            )

    def running(self, info: LabInfo, which: str) -> bool:
        data = self.data_dir(info, which)
        if not data.exists():
            return False
        result = self._pg(info).run("pg_ctl", "-D", str(data), "status", check=False, mutates=False)
        return result.returncode == 0

    # --- down ----------------------------------------------------------------------------

    def down_plan(self) -> dict[str, Any]:
        """What `down` would remove, found the same way (`zsnap lab down --dry-run`)."""
        path = self.root / "lab.json"
        info = LabInfo.from_json(path.read_text()) if path.exists() else None
        running = sorted(self.root.rglob("postmaster.pid")) if self.root.exists() else []
        listed = self.runner.run(["zpool", "list", "-H", "-o", "name"], check=False,
                                 mutates=False).stdout.split()
        return {
            "servers": [str(p.parent) for p in running],
            "pools": [p for p in (info.pools if info else []) if p in listed],
            "directory": str(self.root) if self.root.exists() else None,
        }

    def down(self) -> None:
        """Remove everything `up` made, whatever state it is in. Flashback instances and
        clones made inside the lab's pools go with it."""
        path = self.root / "lab.json"
        if not path.exists():
            if self.root.exists():
                shutil.rmtree(self.root, ignore_errors=True)
            return
        info = LabInfo.from_json(path.read_text())
        self._unmount_stale()
        for pid_file in self._pid_files():
            self._stop_dir(info, pid_file.parent, "immediate")
        self.stop(info, "standby", "immediate")
        self.stop(info, "primary", "immediate")
        for pool in info.pools:
            destroy_pool(self.runner, pool)
        shutil.rmtree(self.root, ignore_errors=True)

    def _unmount_stale(self) -> None:
        """A zfs-fuse that died leaves its mounts behind, answering every access with "Transport
        endpoint is not connected": unmount those under the lab (lazily), so that it can go."""
        for mount in mounts():
            if self.root not in mount.mountpoint.parents:
                continue
            try:
                os.stat(mount.mountpoint)
            except OSError as e:
                if e.errno == errno.ENOTCONN:
                    self.runner.run(["umount", "-l", str(mount.mountpoint)], check=False)

    def _pid_files(self) -> list[Path]:
        """Every postmaster.pid under the lab; a directory that cannot be read is skipped."""
        found = []
        for top, _dirs, files in os.walk(self.root, onerror=lambda _e: None):
            if "postmaster.pid" in files:
                found.append(Path(top) / "postmaster.pid")
        return sorted(found)

    # --- status and load -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        info = load_info(self.root)
        result: dict[str, Any] = {
            "name": info.name,
            "root": str(info.root),
            "config": str(info.config_file),
            "primary": {"port": info.primary_port, "running": self.running(info, "primary")},
            "standby": {"port": info.standby_port, "running": self.running(info, "standby")},
            "pools": info.pools,
            "datasets": info.datasets,
            "archived_segments": sum(1 for p in info.archive.iterdir() if len(p.name) == 24),
        }
        if result["standby"]["running"]:
            import psycopg  # loaded when a lab is used, not for its --help

            try:
                with psycopg.connect(info.conninfo("standby"), autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                        "extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
                    ).fetchone()
                assert row is not None
                result["standby"].update(
                    in_recovery=row[0], replay_lsn=row[1],
                    replay_lag_s=None if row[2] is None else float(row[2]),
                )
            except psycopg.Error as e:
                result["standby"]["error"] = str(e).strip()
        return result


class LoadWriter:
    """A small write load on the primary: one writer per tablespace table, each committing one
    row per transaction, so that both pools change while sets are taken."""

    def __init__(self, conninfo: str, tables: tuple[str, ...] = ("lab_a", "lab_b")):
        self.conninfo = conninfo
        self.tables = tables
        self.committed = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    def _write(self, table: str) -> None:
        try:
            import psycopg  # loaded when a lab is used, not for its --help

            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                while not self._stop.is_set():
                    conn.execute(
                        f"INSERT INTO {table} (payload) VALUES (repeat(md5(random()::text), 8))"
                    )
                    with self._lock:
                        self.committed += 1
                    time.sleep(0.002)
        except BaseException as e:
            self._errors.append(e)

    def start(self) -> LoadWriter:
        for table in self.tables:
            t = threading.Thread(target=self._write, args=(table,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> int:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        if self._errors:
            raise ZsnapError(f"load writer failed: {self._errors[0]}")
        return self.committed

    def run_for(self, seconds: float) -> int:
        self.start()
        time.sleep(seconds)
        return self.stop()
