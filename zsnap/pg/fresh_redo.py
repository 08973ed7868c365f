"""A recent redo point for the next set: CHECKPOINT the primary, then wait until the standby
has replayed that checkpoint.

A standby can only make a restartpoint at a checkpoint record it has replayed, so a set's redo
point is the primary's last checkpoint: up to checkpoint_timeout (or max_wal_size) of WAL
before the set, which every clone of it replays. pgBackRest's `start-fast` asks the primary for
a checkpoint in the same way when it backs up from a standby. The set stays correct without
one, only slower to clone: anything that goes wrong here is a warning, never a failed set (a
standby is most needed when its primary is gone).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg

from zsnap.errors import ZsnapError, first_line
from zsnap.lsn import Lsn
from zsnap.pg.connection import Connection, connected, execute, scalar, system_identifier

log = logging.getLogger(__name__)

MAY_CHECKPOINT_SQL = """
SELECT rolsuper OR CASE WHEN current_setting('server_version_num')::int >= 150000
                        THEN pg_has_role(current_user, 'pg_checkpoint', 'MEMBER')
                        ELSE false END
  FROM pg_roles WHERE rolname = current_user
"""


def primary_problem(primary: Connection, standby: Connection) -> str | None:
    """Why the server that snapshot.primary_checkpoint reaches must not (or cannot) be asked
    for a checkpoint; None when it can."""
    if scalar(primary, "SELECT pg_is_in_recovery()"):
        return "it reaches a server in recovery, not the primary"
    if system_identifier(primary) != system_identifier(standby):
        return "it reaches a server of another cluster (the system identifier differs)"
    if not scalar(primary, MAY_CHECKPOINT_SQL):
        return "its role may not CHECKPOINT (needs superuser or pg_checkpoint)"
    return None


@dataclass
class FreshRedo:
    primary_conninfo: str
    wait_s: float
    checkpoint_timeout_s: float

    def run(self, standby: Connection) -> None:
        """Until the standby has replayed a checkpoint the primary made now; a warning in the
        log instead when there is none to be had."""
        try:
            checkpoint = self._checkpoint_primary(standby)
        except (ZsnapError, psycopg.Error) as e:
            log.warning("no fresh redo point, the set's is the primary's last checkpoint: %s",
                        first_line(e))
            return
        if checkpoint is None:
            return
        deadline = time.monotonic() + self.wait_s
        while not Lsn.parse(str(scalar(standby, "SELECT pg_last_wal_replay_lsn()::text"))) > (
            checkpoint
        ):
            if time.monotonic() > deadline:
                log.warning("the standby has not replayed the primary's checkpoint at %s within "
                            "%g s: the set's redo point is an older one", checkpoint, self.wait_s)
                return
            time.sleep(0.1)
        log.info("the standby replayed the primary's checkpoint at %s", checkpoint)

    def _checkpoint_primary(self, standby: Connection) -> Lsn | None:
        with connected(self.primary_conninfo, "primary") as primary:
            # Never checkpoint some other server that the conninfo happens to reach.
            problem = primary_problem(primary, standby)
            if problem is not None:
                log.warning("snapshot.primary_checkpoint: %s; no checkpoint asked for", problem)
                return None
            execute(primary, f"SET statement_timeout = {int(self.checkpoint_timeout_s * 1000)}")
            execute(primary, "CHECKPOINT")
            return Lsn.parse(
                str(scalar(primary, "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()"))
            )
