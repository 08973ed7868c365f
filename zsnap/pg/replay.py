"""Pausing and resuming WAL replay on the standby, with a marker on disk so that replay left
paused by a zsnap that died is resumed by the next zsnap command."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from zsnap.errors import LockBusy, PostgresError
from zsnap.files import write_durably
from zsnap.lock import SNAPSHOT_LOCK, locked
from zsnap.pg.connection import Connection, connected, scalar

log = logging.getLogger(__name__)

MARKER = "replay-paused.json"


def marker_path(state_dir: Path) -> Path:
    return state_dir / MARKER


def pause_state(conn: Connection) -> str:
    """'not paused', 'pause requested' or 'paused'."""
    return str(scalar(conn, "SELECT pg_get_wal_replay_pause_state()"))


@dataclass
class ReplayPause:
    conn: Connection
    conninfo: str
    state_dir: Path
    timeout_s: float
    # Whether this run made the pause. An operator's pause (say, to keep a DROP from being
    # replayed) is theirs: the set is taken where replay stands, and it is never resumed.
    ours: bool = False

    def pause(self) -> None:
        """Leave the marker first: if we die after the pause, the next run must know."""
        if pause_state(self.conn) != "not paused":
            log.warning("WAL replay was already paused (not by this zsnap): the set is taken "
                        "where replay stands, and replay stays paused")
            self._wait_paused()
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_durably(marker_path(self.state_dir), json.dumps(
            {"pid": os.getpid(), "conninfo": self.conninfo, "at": time.time()}))
        self.ours = True
        scalar(self.conn, "SELECT pg_wal_replay_pause()")
        self._wait_paused()

    def _wait_paused(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while (state := pause_state(self.conn)) != "paused":
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"replay did not pause within {self.timeout_s:g} s (state: {state})"
                )
            time.sleep(0.01)

    def resume(self) -> None:
        """Only a pause this run made."""
        if not self.ours:
            return
        if scalar(self.conn, "SELECT pg_is_in_recovery()"):
            scalar(self.conn, "SELECT pg_wal_replay_resume()")
        marker_path(self.state_dir).unlink(missing_ok=True)
        self.ours = False


def resume_abandoned(state_dir: Path) -> bool:
    """Resume replay that a dead zsnap left paused. True if it did.

    The snapshot lock tells a dead owner from a live one: whoever pauses holds it until replay
    is resumed, and the kernel releases it when that process dies."""
    path = marker_path(state_dir)
    if not path.exists():
        return False
    try:
        with locked(state_dir, SNAPSHOT_LOCK):
            try:
                data = json.loads(path.read_text())
                pid, conninfo = int(data["pid"]), str(data["conninfo"])
            except (ValueError, KeyError, OSError):
                log.warning("unreadable replay marker %s removed", path)
                path.unlink(missing_ok=True)
                return False
            with connected(conninfo) as conn:
                if scalar(conn, "SELECT pg_is_in_recovery()"):
                    scalar(conn, "SELECT pg_wal_replay_resume()")
            path.unlink(missing_ok=True)
    except LockBusy:
        return False  # a running zsnap owns the pause
    log.warning("resumed WAL replay left paused by zsnap pid %d, which died", pid)
    return True
