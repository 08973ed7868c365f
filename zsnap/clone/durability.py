"""A flashback instance's durability. Replay runs with fsync off (fast recovery), so until
fsync is back on, a checkpoint has run and the clone's filesystems are flushed, the instance's
pages and WAL may exist only in the page cache: a crash of PostgreSQL alone loses nothing (the
kernel still has it all), a crash of the operating system can leave the instance corrupt.

Nobody needs to wait for that to use the instance, and on a large clone it is the biggest part
of the time (every page replay dirtied is written). So `zsnap clone` hands the instance over as
soon as it is promoted and leaves the rest to a worker of its own (`zsnap durable NAME`, started
detached), which records the outcome in the clone's ZFS properties: `zsnap clones` shows it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from zsnap.clone import registry
from zsnap.clone.instance import Instance
from zsnap.clone.serverlog import Cause, failure
from zsnap.config import Config
from zsnap.errors import RecoveryFailed, UsageError, ZsnapError
from zsnap.files import write_durably
from zsnap.pg.binaries import PgTools
from zsnap.pg.connection import instance_conninfo
from zsnap.runner import Runner
from zsnap.zfs import Zfs, pool_of

log = logging.getLogger(__name__)

# Values of registry.DURABLE besides the time the clone became durable.
PENDING = "pending"  # fast recovery, durability not done yet
STOPPED = "stopped"  # the instance stopped (crashed, or was stopped) before it was durable
SKIPPED = "skipped"  # a verification instance: removed right after its checks
FAILED = "failed"  # the running server refused (a full pool, say): durability.log says why

PID_FILE = "durability.pid"
LOG_FILE = "durability.log"
# A server that restarts after a crash (restart_after_crash) is back within seconds; one that
# stays down this long is down.
DOWN_GRACE_S = 10.0
RETRY_S = 1.0
WAIT_POLL_S = 0.5
# Failures while the server runs (not a restart): something else is wrong; say it.
MAX_FAILURES_RUNNING = 30


class Durability(StrEnum):
    DURABLE = "durable"
    IN_PROGRESS = "in progress"  # a worker is at it
    INTERRUPTED = "interrupted"  # pending, and no worker runs: `zsnap durable NAME`
    STOPPED = "stopped"  # stopped before it was durable: start it, then `zsnap durable NAME`
    FAILED = "failed"  # the server refused: fix the cause, then `zsnap durable NAME`
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Status:
    state: Durability
    since: datetime | None = None  # when it became durable
    worker: int | None = None  # the worker's pid while one runs

    @property
    def durable(self) -> bool:
        return self.state is Durability.DURABLE


def status(clone: registry.Clone) -> Status:
    """The clone's durability, from its property and whether its worker still runs."""
    value = clone.durable
    if value in (None, ""):
        # Made before zsnap recorded durability: `zsnap clone` returned only once durable.
        return Status(Durability.DURABLE)
    if value == SKIPPED:
        return Status(Durability.SKIPPED)
    if value == STOPPED:
        return Status(Durability.STOPPED)
    if value == FAILED:
        return Status(Durability.FAILED)
    if value != PENDING:
        try:
            return Status(Durability.DURABLE, datetime.fromisoformat(value))
        except ValueError:
            return Status(Durability.INTERRUPTED)
    pid = worker_pid(clone.dir)
    if pid is not None:
        return Status(Durability.IN_PROGRESS, worker=pid)
    return Status(Durability.INTERRUPTED)


def describe(s: Status, name: str) -> str:
    if s.state is Durability.DURABLE:
        return "durable" + (f" since {s.since.astimezone().strftime('%H:%M:%S')}"
                            if s.since else "")
    if s.state is Durability.INTERRUPTED:
        return f"NOT DURABLE (zsnap durable {name})"
    if s.state is Durability.STOPPED:
        return f"NOT DURABLE, stopped (start it, zsnap durable {name})"
    if s.state is Durability.FAILED:
        return f"NOT DURABLE, failed ({LOG_FILE}; zsnap durable {name})"
    return s.state.value


def worker_pid(clone_dir: Path) -> int | None:
    """The pid in the clone's pid file if that process is a live zsnap, else None."""
    try:
        pid = int((clone_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_zsnap(pid) else None


def _is_zsnap(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has finished its work; a recycled pid runs another program.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and b"zsnap" in cmdline


def start_worker(runner: Runner, config_path: Path, clone_dir: Path, name: str) -> int:
    """`zsnap durable NAME` detached from this process: it must outlive the `zsnap clone` that
    started it (the pid file is written here, before this returns, so that `zsnap clones`
    never sees a pending clone without its worker)."""
    argv = ["zsnap", "--config", str(config_path), "durable", name, "--worker"]
    pid = runner.spawn_detached(argv, log_file=clone_dir / LOG_FILE)
    _write_pid(clone_dir, pid)
    return pid


def stop_worker(clone_dir: Path, timeout_s: float = 10.0) -> None:
    """Before a clone is torn down: its worker would find its server gone and its datasets
    going; stopped here, it leaves nothing behind."""
    pid = worker_pid(clone_dir)
    if pid is None or pid == os.getpid():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_zsnap(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_zsnap(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _why(clone: registry.Clone, error: Exception) -> str:
    """The server log says more than "checkpoint request failed": a full pool, say."""
    text = clone.paths.log.read_text(errors="replace") if clone.paths.log.exists() else ""
    found = failure(text)
    if found.cause is Cause.NO_SPACE:
        pools = ", ".join(sorted({pool_of(d) for d in clone.datasets}))
        return f"no space left on its datasets (pools {pools}): {found.line}"
    return str(error)


def _write_pid(clone_dir: Path, pid: int) -> None:
    write_durably(clone_dir / PID_FILE, f"{pid}\n", parents=False)


@dataclass
class MakeDurable:
    """`zsnap durable NAME`: fsync back on, a checkpoint, the clone's filesystems flushed; then
    the time recorded on every dataset of the clone. Waits for a worker that is at it already;
    survives a restart of the instance's server meanwhile (it tries again once the server is
    back), and records `stopped` if the server stays down."""

    config: Config
    zfs: Zfs

    def run(self, name: str) -> Status:
        clone = registry.get(self.zfs, name, self.config.snapshot.cluster)
        current = status(clone)
        if current.state is Durability.IN_PROGRESS and current.worker != os.getpid():
            return self._wait_for_worker(name)
        if current.state in (Durability.DURABLE, Durability.SKIPPED):
            return current
        _write_pid(clone.dir, os.getpid())
        try:
            return self._work(clone)
        finally:
            with contextlib.suppress(OSError):
                if worker_pid(clone.dir) == os.getpid():
                    (clone.dir / PID_FILE).unlink()

    def _wait_for_worker(self, name: str) -> Status:
        while True:
            time.sleep(WAIT_POLL_S)
            current = status(registry.get(self.zfs, name, self.config.snapshot.cluster))
            if current.state is not Durability.IN_PROGRESS:
                if current.state is Durability.INTERRUPTED:
                    return self.run(name)  # the worker died: finish its job
                return current

    def _work(self, clone: registry.Clone) -> Status:
        cfg = self.config
        pg = PgTools.of(cfg, self.zfs.runner)
        conninfo = instance_conninfo(cfg.standby.conninfo, str(clone.paths.socket_dir), clone.port)
        instance = Instance(pg, clone.pgdata, clone.paths.log, conninfo)
        down_since: float | None = None
        failures = 0
        while True:
            if not clone.pgdata.is_dir():
                raise UsageError(f"flashback instance {clone.name} is gone")
            try:
                # The clone's datasets, and its pg_wal in its directory on the local disk.
                instance.make_durable([*clone.mountpoints, clone.dir], self.zfs.runner)
                break
            except ZsnapError as e:
                # A server that answers refused (a full pool, say): trying again is no use.
                if instance.accepting():
                    self._record(clone, FAILED)
                    raise RecoveryFailed(
                        f"flashback instance {clone.name} is not durable: {_why(clone, e)}"
                    ) from None
                # Restarting after a crash, or stopped: which one, time tells.
                if instance.running():
                    down_since = None
                    failures += 1
                    if failures > MAX_FAILURES_RUNNING:
                        raise
                else:
                    down_since = down_since or time.monotonic()
                    if time.monotonic() - down_since > DOWN_GRACE_S:
                        self._record(clone, STOPPED)
                        raise RecoveryFailed(
                            f"flashback instance {clone.name} stopped before it was durable "
                            f"({e}): start it (pg_ctl -D {clone.pgdata} start), then run "
                            f"zsnap durable {clone.name}"
                        ) from None
                time.sleep(RETRY_S)
        now = datetime.now(UTC)
        self._record(clone, now.isoformat(timespec="seconds"))
        log.info("flashback instance %s is durable", clone.name)
        return Status(Durability.DURABLE, now)

    def _record(self, clone: registry.Clone, value: str) -> None:
        self.zfs.set(clone.datasets, {registry.DURABLE: value})
