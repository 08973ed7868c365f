"""`zsnap snapshot`: one consistent snapshot set of the standby, by the frozen-replay protocol.

0. optionally (snapshot.primary_checkpoint) CHECKPOINT the primary and wait for the standby to
   replay it, so that the set's redo point is recent (zsnap/pg/fresh_redo.py);
1. pause replay and wait until it is paused;
2. CHECKPOINT: a restartpoint flushes every dirty buffer, or a skipped one forces
   minRecoveryPoint up to the replay position; either way, while replay stays paused, no page
   newer than pg_control's minRecoveryPoint can reach disk;
3. record what recovery needs;
4. snapshot the control-file dataset first, then the rest at once, one call per pool (atomic
   within the pool where zfs allows it), the metadata written as user properties in the same
   call;
5. resume replay in `finally` (and on the next start of zsnap if this process dies).

A primary (standby.allow_primary) has no replay to freeze: its snapshots are taken between
pg_backup_start and pg_backup_stop on the same session, and the set carries the backup label
(docs/protocol.md, "Sets of a primary").
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

from zsnap.catalog import (
    COMPLETE,
    FORMAT,
    NONE,
    PENDING_BACKUP,
    PREFIX,
    SETS_OF,
    SnapshotSet,
    catalog_of,
    new_set_id,
    properties,
    snapshot_name,
)
from zsnap.config import Config
from zsnap.errors import (
    LockBusy,
    NotInRecovery,
    PostgresError,
    ReplayResumed,
    SnapshotFailed,
    UsageError,
    ZsnapError,
)
from zsnap.lock import SNAPSHOT_LOCK, locked
from zsnap.pg.backup_mode import BackupEnd, BackupMode
from zsnap.pg.config_files import outside_pgdata
from zsnap.pg.connection import Connection, connected, execute, scalar
from zsnap.pg.fresh_redo import FreshRedo
from zsnap.pg.layout import Layout, discover
from zsnap.pg.replay import ReplayPause, pause_state
from zsnap.pg.versions import refuse_unsupported, server_version
from zsnap.runner import together
from zsnap.units import GB, KB, MB
from zsnap.zfs import Zfs, pool_of

log = logging.getLogger(__name__)

RECORD_SQL = """
SELECT pg_last_wal_replay_lsn()::text,
       pg_last_xact_replay_timestamp(),
       c.redo_lsn::text, c.checkpoint_lsn::text, c.timeline_id,
       r.min_recovery_end_lsn::text, r.min_recovery_end_timeline,
       s.system_identifier,
       current_setting('server_version_num')::int,
       current_setting('wal_segment_size', true),
       current_setting('block_size')::int,
       current_setting('data_checksums')
  FROM pg_control_checkpoint() c, pg_control_recovery() r, pg_control_system() s
"""

UNITS = {"B": 1, "kB": KB, "MB": MB, "GB": GB}


def parse_size(text: str) -> int:
    """'16MB' -> bytes, as SHOW prints sizes."""
    for unit in ("kB", "MB", "GB", "B"):
        if text.endswith(unit):
            return int(text[: -len(unit)]) * UNITS[unit]
    return int(text)


def order_for_snapshot(layout: Layout) -> list[str]:
    """The control-file dataset first, then the rest of its pool, then each other pool's
    datasets together, so that one call per pool keeps the control dataset first."""
    datasets = layout.datasets
    pools = list(dict.fromkeys(pool_of(d) for d in datasets))
    return [d for pool in pools for d in datasets if pool_of(d) == pool]


def pool_groups(datasets: list[str]) -> list[list[str]]:
    """Consecutive datasets of one pool, in order: one `zfs snapshot` call each."""
    return [list(group) for _, group in groupby(datasets, key=pool_of)]


def snapshot_calls(datasets: list[str], set_id: str, atomic: bool) -> list[list[str]]:
    """The snapshot names each `zfs snapshot` call takes, in order: one call per pool where
    zfs snapshots several datasets atomically, else one call per dataset."""
    names = [[f"{d}@{snapshot_name(set_id)}" for d in group] for group in pool_groups(datasets)]
    return names if atomic else [[n] for group in names for n in group]


@dataclass(frozen=True)
class Plan:
    """What a snapshot run would do (`zsnap snapshot --dry-run`)."""

    id: str
    datasets: list[str]
    calls: list[list[str]]
    pause_replay: bool
    primary_checkpoint: bool  # CHECKPOINT the primary first (snapshot.primary_checkpoint)


FROZEN_SQL = """
SELECT pg_last_wal_replay_lsn()::text, pg_postmaster_start_time(), pg_is_in_recovery()
"""


@dataclass(frozen=True)
class Frozen:
    """Where replay stood when the set was recorded, and on which postmaster."""

    replay_lsn: str
    postmaster_start: datetime

    @classmethod
    def read(cls, conn: Connection) -> Frozen:
        row = conn.execute(FROZEN_SQL).fetchone()
        assert row is not None
        return cls(str(row[0]), row[1])

    def confirm(self, conn: Connection) -> None:
        """After the last member exists: still paused, at the same position, on the same
        postmaster, else the members may hold pages from after the recorded point."""
        now = Frozen.read(conn)
        state = pause_state(conn)
        if state != "paused" or now != self:
            resumed = state != "paused" and now.postmaster_start == self.postmaster_start
            raise (ReplayResumed if resumed else SnapshotFailed)(
                f"replay did not stay frozen while the set was taken (paused: {state}, "
                f"replay {self.replay_lsn} -> {now.replay_lsn}, postmaster started "
                f"{self.postmaster_start.isoformat()} -> {now.postmaster_start.isoformat()}): "
                "the set is not consistent"
            )


# How often a set is tried when someone else resumed replay while it was taken.
ATTEMPTS = 3

# pg_try_advisory_lock's key for "a zsnap takes a set of this server" ('zsnap' in ASCII).
ADVISORY_KEY = 0x7A736E6170


def standby_lock(conn: Connection) -> None:
    """One set at a time per standby, whatever host or [state] dir the other zsnap has: a
    session-level advisory lock on the standby itself (advisory locks work on a hot standby),
    released when this session ends, even by a crash of either side."""
    if not scalar(conn, f"SELECT pg_try_advisory_lock({ADVISORY_KEY})"):
        raise LockBusy("another zsnap is taking a snapshot set of this standby (pid "
                       f"{_lock_holder(conn)}); try again when it is done")


def _lock_holder(conn: Connection) -> str:
    """The backend pid holding it (a bigint key is classid = high, objid = low 32 bits)."""
    row = conn.execute(
        "SELECT string_agg(pid::text, ', ') FROM pg_locks WHERE locktype = 'advisory' "
        "AND granted AND classid = %s AND objid = %s",
        (ADVISORY_KEY >> 32, ADVISORY_KEY & 0xFFFFFFFF),
    ).fetchone()
    return str(row[0]) if row and row[0] else "unknown"


@dataclass
class TakeSnapshot:
    config: Config
    zfs: Zfs

    def __post_init__(self) -> None:
        self.config.require_standby("zsnap snapshot")

    def plan(self) -> Plan:
        """What `run` would snapshot, found the same way, without pausing replay."""
        with connected(self.config.standby.conninfo) as conn:
            self._check_standby(conn)
            datasets = order_for_snapshot(discover(conn, self.zfs))
            set_id = self._free_id(datasets[0])
            in_recovery = bool(scalar(conn, "SELECT pg_is_in_recovery()"))
        calls = snapshot_calls(datasets, set_id, self.zfs.capabilities.atomic_snapshots)
        return Plan(
            set_id, datasets, calls, pause_replay=in_recovery,
            primary_checkpoint=in_recovery and bool(self.config.snapshot.primary_checkpoint),
        )

    def run(self) -> SnapshotSet:
        """One set. Patroni's HA loop resumes a paused replay on PostgreSQL 14+ (it takes the
        pause for one caused by too low settings): a set whose pause someone else lifted is
        removed, and taken again, a few times at most."""
        attempt = 1
        while True:
            try:
                return self._take()
            except ReplayResumed as e:
                if attempt == ATTEMPTS:
                    raise
                attempt += 1
                log.warning("%s; taking the set again (attempt %d of %d)", e, attempt, ATTEMPTS)

    def _take(self) -> SnapshotSet:
        cfg = self.config
        with locked(cfg.state.dir, SNAPSHOT_LOCK), connected(cfg.standby.conninfo) as conn:
            self._check_standby(conn)
            standby_lock(conn)
            layout = discover(conn, self.zfs)
            datasets = order_for_snapshot(layout)
            self.zfs.refuse_full(datasets, cfg.check.pool_free_critical_pct, "a new set")
            set_id = self._free_id(datasets[0])
            replay = ReplayPause(
                conn, cfg.standby.conninfo, cfg.state.dir, cfg.standby.pause_timeout_s
            )
            calls = snapshot_calls(datasets, set_id, self.zfs.capabilities.atomic_snapshots)
            # Every snapshot this run made, so that a failure removes exactly these.
            created: list[str] = []
            in_recovery = bool(scalar(conn, "SELECT pg_is_in_recovery()"))
            timeout_ms = int(cfg.standby.checkpoint_timeout_s * 1000)
            execute(conn, f"SET statement_timeout = {timeout_ms}")
            if in_recovery and cfg.snapshot.primary_checkpoint:
                FreshRedo(
                    cfg.snapshot.primary_checkpoint,
                    cfg.snapshot.primary_checkpoint_wait_s,
                    cfg.standby.checkpoint_timeout_s,
                ).run(conn)
            if in_recovery:
                # A restartpoint while replay still runs flushes most dirty buffers, so the
                # CHECKPOINT inside the pause has little left to write: a shorter pause.
                execute(conn, "CHECKPOINT")
            started = time.monotonic()
            # A primary (allow_primary) has no replay to freeze: its snapshots are taken in
            # backup mode instead, and the set is finished only once backup mode has ended.
            backup = None if in_recovery else BackupMode(conn)
            # A set is complete only once proven consistent: on a standby, replay still frozen
            # where it was recorded, on the same postmaster, after the last member exists; on
            # a primary, backup mode ended and its results on every member.
            proven = False
            try:
                try:
                    # Inside the try: a pause that times out is still resumed below.
                    if in_recovery:
                        replay.pause()
                    if backup is None:
                        execute(conn, "CHECKPOINT")
                        record = self._record(conn, set_id, layout, datasets)
                        frozen = Frozen.read(conn)
                    else:
                        # pg_backup_start's fast checkpoint is the set's redo point.
                        start = backup.start(f"zsnap {cfg.snapshot.cluster} {set_id}")
                        record = self._record_primary(conn, set_id, layout, datasets, start)
                    self._snapshot(calls, record, created)
                    if backup is not None:
                        self._finish_backup(created, backup.stop())
                    else:
                        frozen.confirm(conn)
                    proven = True
                finally:
                    if in_recovery:
                        replay.resume()
                    if backup is not None:
                        backup.abort()
                    # Replay runs again from here: what comes after (marking the set
                    # complete) is not part of the pause.
                    ended = time.monotonic()
            except BaseException as e:
                # Still under the lock: no other run can see the unproven set. A proven set
                # stays whole even if resuming failed (the marker stays, and the next zsnap
                # command resumes replay).
                if proven:
                    self._mark_complete(created[0])
                elif created:
                    self._remove_partial(set_id, created, e)
                raise
            self._mark_complete(created[0])
            pause_ms = round((ended - started) * 1000)
        self._write_pause(created, pause_ms)
        log.info("snapshot set %s taken, %s for %d ms", set_id,
                 "replay paused" if in_recovery else "in backup mode", pause_ms)
        taken = catalog_of(cfg, self.zfs).read(set_id, created)
        # The measured window is the answer even if writing it onto a member failed.
        return taken.model_copy(update={"pause_ms": pause_ms})

    def _snapshot(self, calls: list[list[str]], record: dict[str, str],
                  created: list[str]) -> None:
        """The control-file call first (the old rule, and a safety margin), then the others
        at once: with replay frozen their order does not matter, and on a busy pool each call
        waits for a transaction group, which calls made together share. What each made is in
        `created` when this returns or raises, even when interrupted."""
        first, *rest = calls
        self.zfs.snapshot(first, record)
        created.extend(first)

        def take(names: list[str]) -> None:
            self.zfs.snapshot(names, record)
            created.extend(names)

        together([functools.partial(take, names) for names in rest])

    def _mark_complete(self, control: str) -> None:
        """Written last, on the control-file member: what makes the set usable. Its dataset
        is marked as heading this cluster's sets, for set selection (Catalog.heads)."""
        self.zfs.set([control], {PREFIX + "complete": COMPLETE})
        try:
            self.zfs.set([control.split("@")[0]], {SETS_OF: self.config.snapshot.cluster})
        except ZsnapError as e:  # selection then reads every member, as before
            log.warning("could not mark %s: %s", control.split("@")[0], e)

    def _finish_backup(self, names: list[str], end: BackupEnd) -> None:
        """What only pg_backup_stop knows, on every member; `pending` is cleared last on
        each, so that a set read meanwhile (or left by a zsnap that died) is incomplete."""
        label = end.label
        done = {
            PREFIX + "timeline": str(label.timeline),
            PREFIX + "checkpoint_lsn": label.checkpoint_lsn,
            # Recovery from the label is consistent once it has replayed the backup end.
            PREFIX + "consistent_lsn": end.lsn,
            PREFIX + "replay_timestamp": end.finished.isoformat(),
            PREFIX + "backup_label": label.encode(),
            PREFIX + "pending": NONE,
        }
        self.zfs.set(names, done)

    def _remove_partial(self, set_id: str, created: list[str], error: BaseException) -> None:
        """Destroy the members this run took before a later one failed, and say so in one
        line. A KeyboardInterrupt stays one after the clean-up."""
        left: list[str] = []
        for name in reversed(created):
            try:
                self.zfs.destroy(name)
            except ZsnapError as e:
                log.error("could not remove %s: %s", name, e)
                left.append(name)
        if not isinstance(error, Exception):
            return
        cleaned = f"removed the {len(created) - len(left)} member(s) already taken"
        if left:
            cleaned += f"; could NOT remove {', '.join(left)}: destroy them by hand"
        # Taken again (TakeSnapshot.run) only once nothing of this try is left.
        kind = ReplayResumed if isinstance(error, ReplayResumed) and not left else SnapshotFailed
        raise kind(f"snapshot set {set_id} failed: {error}; {cleaned}") from error

    def _write_pause(self, names: list[str], pause_ms: int) -> None:
        """pause_ms is measured after the snapshots exist, so it is written afterwards, on
        every member; a failure here loses a statistic, never the set."""
        try:
            self.zfs.set(names, {PREFIX + "pause_ms": str(pause_ms)})
        except ZsnapError as e:
            log.warning("could not record pause_ms on %s: %s", ", ".join(names), e)

    def _check_standby(self, conn: Connection) -> None:
        refuse_unsupported(server_version(conn))
        if not scalar(conn, "SELECT pg_is_in_recovery()"):
            if not self.config.standby.allow_primary:
                raise NotInRecovery(
                    "the server is not a standby (pg_is_in_recovery() is false); "
                    "set standby.allow_primary = true to snapshot a primary"
                )
        elif scalar(conn, "SELECT current_setting('hot_standby')") != "on":
            raise UsageError("the standby needs hot_standby = on for zsnap to pause its replay")

    def _free_id(self, control_dataset: str) -> str:
        """A new set id; sets are named to the second, so wait out a same-second collision."""
        while True:
            set_id = new_set_id(datetime.now(UTC))
            if not self.zfs.exists(f"{control_dataset}@{snapshot_name(set_id)}"):
                return set_id
            time.sleep(0.2)

    def _record(
        self, conn: Connection, set_id: str, layout: Layout, datasets: list[str]
    ) -> dict[str, str]:
        row = conn.execute(RECORD_SQL).fetchone()
        if row is None:
            raise PostgresError("could not read the standby's control data")
        (replay_lsn, replay_ts, redo, checkpoint, ckpt_tli, min_rec, min_rec_tli, sysid,
         version, seg_size, block_size, checksums) = row
        # After the CHECKPOINT with replay paused, minRecoveryPoint bounds every page on disk:
        # a clone of this set is consistent once its replay reaches it.
        consistent = min_rec if min_rec and min_rec != "0/0" else replay_lsn
        record = {
            "format": FORMAT,
            "set": set_id,
            "cluster": self.config.snapshot.cluster,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "members": ",".join(datasets),
            "layout": layout.to_json(),
            "timeline": str(min_rec_tli or ckpt_tli),
            "redo_lsn": str(redo),
            "checkpoint_lsn": str(checkpoint),
            "consistent_lsn": str(consistent),
            "replay_lsn": str(replay_lsn),
            "replay_timestamp": replay_ts.isoformat() if replay_ts else NONE,
            "system_identifier": str(sysid),
            "server_version": str(version),
            "wal_segment_size": str(parse_size(str(seg_size or "16MB"))),
            "block_size": str(block_size),
            "data_checksums": str(checksums),
        }
        # A postgresql.conf outside PGDATA (Debian's /etc/postgresql) is not in the snapshot:
        # a clone of the set includes it from where it is (zsnap/pg/config_files.py).
        files = outside_pgdata(conn, layout.pgdata.path)
        if files is not None:
            record.update(files.record())
        return properties(record)

    def _record_primary(
        self, conn: Connection, set_id: str, layout: Layout, datasets: list[str], start: str
    ) -> dict[str, str]:
        """A primary's set as far as it is known before the snapshots: recovery starts at
        backup mode's checkpoint (`start`); the consistency point, the checkpoint record and
        the label come from pg_backup_stop and are written by `_finish_backup`. `replay_lsn`
        is the WAL flushed before the snapshots: the PGDATA snapshot's pg_wal holds it."""
        record = self._record(conn, set_id, layout, datasets)
        flushed = str(scalar(conn, "SELECT pg_current_wal_flush_lsn()::text"))
        record.update({
            PREFIX + "redo_lsn": start,
            PREFIX + "checkpoint_lsn": NONE,
            PREFIX + "consistent_lsn": NONE,
            PREFIX + "replay_lsn": flushed,
            PREFIX + "replay_timestamp": NONE,
            PREFIX + "pending": PENDING_BACKUP,
        })
        return record
