"""A flashback instance's server: start, wait for the target with progress, promote, make
durable, stop. Failures are read from its server log."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import psycopg

from zsnap.clone.recovery import FAST_ONLY
from zsnap.clone.serverlog import Failure, failure
from zsnap.errors import PostgresError, RecoveryFailed, first_line
from zsnap.lsn import Lsn
from zsnap.pg.binaries import PgTools
from zsnap.pg.connection import Connection, conninfo_for
from zsnap.runner import Runner

log = logging.getLogger(__name__)

POLL_S = 0.2
# Waiting for a state that ends the flashback (consistent, at the target, promoted): every
# poll is a read of a local file or a query on a local socket, and each one saved is time the
# user waits less (pg_ctl -w looks only every 100 ms).
FAST_POLL_S = 0.02
# How long a server whose connection broke may take to exit.
LOST_WAIT_S = 5
PROMOTE_TIMEOUT_S = 3600
# Until the instance is consistent: replay from the set's redo point to its consistency point
# is short (the snapshot's pause window), but the machine may be slow.
START_TIMEOUT_S = 3600
# The postmaster writes its pid file within moments of pg_ctl's return.
PID_FILE_GRACE_S = 30
# postmaster.pid's 8th line once the postmaster accepts connections (read-only in recovery).
ACCEPTING = ("ready", "standby")
# What a server that stops while starting logs last.
DOWN_MARKS = ("database system is shut down", "FATAL:", "PANIC:")


class ServerStopped(RecoveryFailed):
    """The instance's server exited; `failure` says why, from its log."""

    def __init__(self, why: Failure):
        self.failure = why
        super().__init__(f"the flashback instance stopped: {why.line}")


@dataclass(frozen=True)
class ReplayState:
    in_recovery: bool
    pause_state: str
    replay_lsn: Lsn | None
    replay_time: datetime | None  # the last replayed commit's timestamp
    # Where replay can get to at most: an LSN target, else the end of the WAL available.
    goal: Lsn | None = None


STATE_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not paused' END,
       pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()
"""


@dataclass
class Instance:
    pg: PgTools
    pgdata: Path
    log: Path
    conninfo: str  # full, for zsnap's own connections
    # Added to the server's environment at its start (what its restore_command needs).
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        """Start the server and return once it accepts (read-only) connections, i.e. once it
        is consistent: what `pg_ctl start -w` does, reading postmaster.pid as it does, but
        every FAST_POLL_S instead of every 100 ms."""
        result = self.pg.run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-W", "start",
            timeout=120, check=False, env={**os.environ, **self.env} if self.env else None,
        )
        if result.returncode != 0:
            self._wait_exit(10)
            raise ServerStopped(self.failure())
        began = time.monotonic()
        seen = False
        while True:
            state = postmaster_state(self.pgdata)
            if state is not None:
                seen = True
                pid, status = state
                if status in ACCEPTING:
                    return
                if not _alive(pid):
                    raise ServerStopped(self.failure())
            elif seen or self._log_says_down() or time.monotonic() - began > PID_FILE_GRACE_S:
                # Gone again (the postmaster removes it as it exits), or never written.
                raise ServerStopped(self.failure())
            if time.monotonic() - began > START_TIMEOUT_S:
                raise RecoveryFailed(
                    f"the flashback instance was not consistent after {START_TIMEOUT_S} s")
            time.sleep(FAST_POLL_S)

    def _log_says_down(self) -> bool:
        """A server that failed before we saw its pid file says so in its log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return any(mark in text for mark in DOWN_MARKS)

    def failure(self) -> Failure:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return failure(text)

    def running(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        status = self.pg.run("pg_ctl", "-D", str(self.pgdata), "status", mutates=False,
                             check=False)
        return status.returncode == 0

    def _wait_exit(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.running() and time.monotonic() < deadline:
            time.sleep(POLL_S)

    def accepting(self) -> bool:
        """Whether the server takes a connection and answers a query now."""
        try:
            with psycopg.connect(conninfo_for(self.conninfo), autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def connect(self) -> Connection:
        try:
            return psycopg.connect(conninfo_for(self.conninfo), autocommit=True)
        except psycopg.Error as e:
            # Recovery that fails just after consistency takes the server down as we connect.
            self._wait_exit(10)
            if not self.running():
                raise ServerStopped(self.failure()) from None
            raise PostgresError(
                f"cannot connect to the flashback instance: {first_line(e)}"
            ) from None

    def wait_for_target(
        self,
        on_progress: Callable[[ReplayState], None] | None = None,
        timeout_s: float | None = None,
        goal: Lsn | None = None,
    ) -> ReplayState:
        """Poll until replay is paused at the target (recovery_target_action is always pause)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        conn = self.connect()
        try:
            while True:
                try:
                    state = replace(self._state(conn), goal=goal)
                except psycopg.Error:
                    # The server went away under us: recovery failed; its log says why.
                    self._wait_exit(30)
                    raise ServerStopped(self.failure()) from None
                if on_progress is not None:
                    on_progress(state)
                if state.pause_state == "paused" or not state.in_recovery:
                    return state
                if deadline is not None and time.monotonic() > deadline:
                    raise RecoveryFailed(
                        f"the target was not reached within {timeout_s:g} s "
                        f"(replayed up to {state.replay_lsn})"
                    )
                time.sleep(FAST_POLL_S)
        finally:
            conn.close()

    @staticmethod
    def _state(conn: Connection) -> ReplayState:
        row = conn.execute(STATE_SQL).fetchone()
        assert row is not None
        in_recovery, pause_state, lsn, ts = row
        return ReplayState(bool(in_recovery), str(pause_state),
                           Lsn.parse(lsn) if lsn else None, ts)

    def request_promotion(self) -> None:
        """pg_promote() as soon as the instance accepts connections, long before the target:
        recovery ends at the target all the same, with an end-of-recovery record rather than
        the full checkpoint of recovery_target_action 'promote'.

        A recovery that is not a standby's looks for the promotion only where it would pause
        (recovery_target_action is always 'pause'), so replay still runs to the target. Asked
        there instead, once paused, the promotion waits out the 1 s sleep of PostgreSQL's
        pause loop, which only a resume interrupts."""
        conn = self.connect()
        try:
            conn.execute("SELECT pg_promote(false)")
        except psycopg.errors.ObjectNotInPrerequisiteState:
            pass  # "recovery is not in progress": promoted already, by the request at start
        except psycopg.Error as e:
            raise self._lost(e) from None
        finally:
            conn.close()

    def wait_promoted(self, timeout_s: float = PROMOTE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        with self._session() as conn:
            while conn.execute("SELECT pg_is_in_recovery()").fetchone() != (False,):
                if time.monotonic() > deadline:
                    raise RecoveryFailed("the flashback instance did not promote")
                time.sleep(FAST_POLL_S)

    def make_durable(self, mountpoints: Sequence[Path], runner: Runner) -> None:
        """Undo the replay-only settings (fsync back on) where fast recovery set them,
        checkpoint, and flush the clone's filesystems: pages written while fsync was off,
        before a restartpoint forgot their sync requests, reach disk too."""
        with self._session() as conn:
            fast = fsync_off_by_us(conn)
            if fast:
                for key in FAST_ONLY:
                    conn.execute(f"ALTER SYSTEM RESET {key}")
                conn.execute("SELECT pg_reload_conf()")
        if fast:
            self._wait_for_fsync()
        with self._session() as conn:
            conn.execute("CHECKPOINT")
        for mountpoint in mountpoints:
            runner.run(["sync", "-f", str(mountpoint)], timeout=600)

    def _wait_for_fsync(self) -> None:
        """Until a new session no longer sees fsync off from postgresql.auto.conf: it forked
        from a postmaster that has reloaded, and so has signalled the checkpointer, whose
        CHECKPOINT then syncs what fsync = off left unsynced."""
        deadline = time.monotonic() + 30
        while True:
            with self._session() as conn:
                off = fsync_off_by_us(conn)
            if not off or time.monotonic() > deadline:
                return
            time.sleep(POLL_S)

    @contextmanager
    def _session(self) -> Iterator[Connection]:
        """One connection for one step; errors become one line."""
        conn = self.connect()
        try:
            yield conn
        except psycopg.Error as e:
            raise self._lost(e) from None
        finally:
            conn.close()

    def _lost(self, error: psycopg.Error) -> PostgresError:
        """A failed statement: the server's own failure if it went away meanwhile (recovery
        that stops short of its target takes the server down as we talk to it)."""
        if isinstance(error, psycopg.OperationalError):
            self._wait_exit(LOST_WAIT_S)
            if not self.running():
                return ServerStopped(self.failure())
        return PostgresError(f"flashback instance: {first_line(error)}")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown (pg_checksums needs one); `immediate` where the data is
        thrown away next (no shutdown checkpoint writing out what replay dirtied)."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return
        if not owns_pid_file(self.pgdata):
            # The standby's own pid file, cloned with its data directory (zsnap died before
            # preparing the clone): pg_ctl would signal the standby. Nothing runs here.
            log.warning("%s belongs to another data directory; removed, nothing stopped",
                        pid_file)
            pid_file.unlink(missing_ok=True)
            return
        result = self.pg.run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "120",
                             "stop", timeout=150, check=False)
        if result.returncode != 0 and self.running():
            self.pg.run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop",
                        timeout=150, check=False)


def postmaster_state(pgdata: Path) -> tuple[int, str] | None:
    """(pid, status) from postmaster.pid, None while there is none (or half-written)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
        return int(lines[0]), lines[7].strip() if len(lines) > 7 else ""
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_off_by_us(conn: Connection) -> bool:
    """Whether fsync is off from postgresql.auto.conf, where fast recovery puts it (and where
    nobody else would: it is what tells a fast-recovered instance from one that is not)."""
    row = conn.execute(
        "SELECT setting, sourcefile FROM pg_settings WHERE name = 'fsync'"
    ).fetchone()
    return bool(row and row[0] == "off" and (row[1] or "").endswith("postgresql.auto.conf"))


def owns_pid_file(pgdata: Path) -> bool:
    """Whether postmaster.pid in `pgdata` was written by a server of this data directory: its
    second line is the data directory the postmaster was started on."""
    try:
        lines = (pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
    except OSError:
        return False
    return len(lines) > 1 and os.path.realpath(lines[1]) == os.path.realpath(pgdata)
