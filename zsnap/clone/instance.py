"""A flashback instance's server: start, wait for the target with progress, promote, make
durable, stop. Failures are read from its server log."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import psycopg

from zsnap import interrupt
from zsnap.clone.recovery import REPLAY_CONF, REPLAY_DONE
from zsnap.clone.serverlog import Failure, failure
from zsnap.errors import PostgresError, RecoveryFailed, first_line
from zsnap.files import write_durably
from zsnap.lsn import Lsn
from zsnap.pg.binaries import PgTools
from zsnap.pg.connection import Connection, conninfo_for
from zsnap.runner import Runner, os_user_entry

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
# A clean shutdown writes a checkpoint first (pg_ctl stop's own default wait is 60 s).
STOP_TIMEOUT_S = 120
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
            interrupt.check()
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
            if self._wait_exit(10):
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
                interrupt.check()
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
        """Ask for promotion as soon as the instance accepts connections, long before the
        target: recovery ends at the target all the same, with an end-of-recovery record
        rather than the full checkpoint of recovery_target_action 'promote'. A recovery that
        is not a standby's looks for the request only where it pauses (recovery_target_action
        is always 'pause'), so replay still runs to the target.

        Asked the way `pg_ctl promote` asks (the promote file, then a signal to the
        postmaster), not with pg_promote(): that function needs a grant which zsnap's
        least-privilege role does not have and should not get, since on the standby it would
        promote production."""
        result = self.pg.run("pg_ctl", "-D", str(self.pgdata), "-W", "promote",
                             timeout=30, check=False)
        if result.returncode != 0:
            if not self.running():
                self._wait_exit(LOST_WAIT_S)
                raise ServerStopped(self.failure())
            # "not in standby mode": recovery ended already (at the end of the WAL at hand).
            log.debug("pg_ctl promote: %s", result.stderr.strip())

    def end_recovery(self) -> None:
        """Paused at the target before the promotion request was seen (a target reached with
        consistency, before connections were accepted): PostgreSQL's pause loop looks for a
        request only once a second, a resume wakes it at once. Resumed at a paused target,
        recovery ends there with a full checkpoint instead of the end-of-recovery record;
        small here, where the replay ended at consistency, and unsynced under fast recovery.
        pg_wal_replay_resume() is granted to zsnap's role for the snapshot protocol."""
        # Refused while promoting already (the request was seen meanwhile), or promoted.
        with self._session() as conn, suppress(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("SELECT pg_wal_replay_resume()")

    def wait_promoted(self, timeout_s: float = PROMOTE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        with self._session() as conn:
            while conn.execute("SELECT pg_is_in_recovery()").fetchone() != (False,):
                if time.monotonic() > deadline:
                    raise RecoveryFailed("the flashback instance did not promote")
                interrupt.check()
                time.sleep(FAST_POLL_S)

    def make_durable(self, mountpoints: Sequence[Path], runner: Runner) -> None:
        """Undo the replay-only settings (fsync back on) where fast recovery set them,
        checkpoint, and flush the clone's filesystems: pages written while fsync was off,
        before a restartpoint forgot their sync requests, reach disk too. Nothing here needs
        more than zsnap's least-privilege role: the settings go with their file (REPLAY_CONF)
        and a reload by signal, and pg_checkpoint is granted for the snapshot protocol."""
        with self._session() as conn:
            source = fsync_off(conn)
        if _by_us(source):
            owner = os_user_entry(self.pg.os_user)
            write_durably(self.pgdata / REPLAY_CONF, REPLAY_DONE, mode=0o600,
                          owner=(owner.pw_uid, owner.pw_gid), parents=False)
            self.pg.run("pg_ctl", "-D", str(self.pgdata), "reload", timeout=30)
            source = self._wait_for_fsync()
        if source is not None:
            # Set elsewhere (the cluster's own configuration, or postgresql.auto.conf by an
            # older zsnap): never recorded as durable.
            raise RecoveryFailed(f"fsync is off ({source or 'not from a file'}): "
                                 "the instance cannot be made durable")
        with self._session() as conn:
            conn.execute("CHECKPOINT")
        for mountpoint in mountpoints:
            runner.run(["sync", "-f", str(mountpoint)], timeout=600)

    def _wait_for_fsync(self) -> str | None:
        """Until a new session no longer sees fsync off from REPLAY_CONF: it forked from a
        postmaster that has reloaded, and so has signalled the checkpointer, whose CHECKPOINT
        then syncs what fsync = off left unsynced. Returns where fsync is off then, if it
        still is (fsync_off)."""
        deadline = time.monotonic() + 30
        while True:
            with self._session() as conn:
                source = fsync_off(conn)
            if not _by_us(source):
                return source
            if time.monotonic() > deadline:
                raise RecoveryFailed("fsync is still off 30 s after the flashback instance "
                                     "was asked to reload its configuration")
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
        if isinstance(error, psycopg.OperationalError) and self._wait_exit(LOST_WAIT_S):
            return ServerStopped(self.failure())
        return PostgresError(f"flashback instance: {first_line(error)}")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown (pg_checksums needs one); `immediate` where the data is
        thrown away next (no shutdown checkpoint writing out what replay dirtied). Returns
        once the postmaster is gone: what `pg_ctl stop -w` does, reading postmaster.pid as
        it does, but every FAST_POLL_S instead of every 100 ms (an immediate stop takes a few
        milliseconds)."""
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
        result = self.pg.run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-W", "stop",
                             check=False)
        if self.pg.runner.dry_run:
            return  # nothing was asked to stop
        if result.returncode == 0 and self._wait_exit(STOP_TIMEOUT_S):
            return
        if self.running():
            self.pg.run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop",
                        timeout=150, check=False)

    def _wait_exit(self, seconds: float) -> bool:
        """Whether the postmaster is gone within `seconds`: it removes its pid file as it
        exits (a crashed one leaves it behind, naming no live process); while it stops, it
        rewrites its status line there."""
        deadline = time.monotonic() + seconds
        while True:
            state = postmaster_state(self.pgdata)
            if state is None and not (self.pgdata / "postmaster.pid").exists():
                return True
            if state is not None and not _alive(state[0]):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(FAST_POLL_S)


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


def fsync_off(conn: Connection) -> str | None:
    """Where fsync is turned off (its configuration file; "" if not from a file), or None if
    it is on."""
    row = conn.execute(
        "SELECT setting, sourcefile FROM pg_settings WHERE name = 'fsync'"
    ).fetchone()
    return None if row is None or row[0] != "off" else str(row[1] or "")


def _by_us(source: str | None) -> bool:
    """Off from REPLAY_CONF, where fast recovery puts it (and nobody else would: it is what
    tells a fast-recovered instance from one that is not)."""
    return source is not None and source.endswith(f"/{REPLAY_CONF}")


def owns_pid_file(pgdata: Path) -> bool:
    """Whether postmaster.pid in `pgdata` was written by a server of this data directory: its
    second line is the data directory the postmaster was started on."""
    try:
        lines = (pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
    except OSError:
        return False
    return len(lines) > 1 and os.path.realpath(lines[1]) == os.path.realpath(pgdata)
