"""`zsnap doctor`: what zsnap finds on this standby, and named checks that each say OK, WARNING,
CRITICAL or UNKNOWN (zsnap.checks) with a hint. One check failing never stops the others: a
tablespace off ZFS is reported beside everything else that is wrong, so a DBA fixes it all in
one round."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg

from zsnap.catalog import catalog_of
from zsnap.checks import Check, Status
from zsnap.config import Config
from zsnap.cron import longest_interval
from zsnap.errors import ConfigError, LockBusy, NotOnZfs, UsageError, ZsnapError, first_line
from zsnap.lock import SNAPSHOT_LOCK, locked
from zsnap.lsn import Lsn, Segment, is_segment_name
from zsnap.pg import amcheck
from zsnap.pg.connection import Connection, connect, connected, scalar
from zsnap.pg.fresh_redo import primary_problem
from zsnap.pg.layout import (
    ROLE_PGDATA,
    ROLE_POLAR,
    ROLE_TABLESPACE,
    Layout,
    Place,
    discover_paths,
    map_to_datasets,
)
from zsnap.pg.replay import marker_path, pause_state, resume_abandoned
from zsnap.pg.versions import NEWEST, OLDEST, describe, refuse_unsupported, server_version
from zsnap.runner import Runner
from zsnap.snapshot import parse_size
from zsnap.statedir import claim
from zsnap.wal.archives import (
    configured,
    expand_restore_command,
    not_listed,
    restore_command,
)
from zsnap.zfs import UNSET, Zfs, pool_of

log = logging.getLogger(__name__)

# How long the restore_command check may take: a remote archive can be slow, never endless.
RESTORE_TIMEOUT_S = 120.0
# What primary_conninfo's application_name defaults to when neither it nor cluster_name is set.
WALRECEIVER = "walreceiver"


@dataclass(frozen=True)
class PlaceReport:
    """One place the cluster keeps files, and the dataset holding it (None when not on ZFS)."""

    role: str
    path: str
    oid: int | None
    dataset: str | None
    control: bool
    problem: str | None


@dataclass
class Report:
    places: list[PlaceReport] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status == Status.CRITICAL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "layout": [
                {"role": p.role, "path": p.path, "oid": p.oid, "dataset": p.dataset,
                 "control_file": p.control, "problem": p.problem}
                for p in self.places
            ],
            "checks": [
                {"name": c.name, "status": c.status.name, "summary": c.summary,
                 "hint": c.hint} for c in self.checks
            ],
        }


def application_name(primary_conninfo: str, cluster_name: str) -> str:
    """The name the standby's WAL receiver reports to the primary, which is what the primary's
    synchronous_standby_names lists."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        name = conninfo_to_dict(primary_conninfo).get("application_name")
    except Exception:  # a conninfo we cannot parse still has the server defaults below
        name = None
    return str(name) if name else (cluster_name or WALRECEIVER)


def guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check that cannot run (a missing privilege, a failing command) is CRITICAL for that
    check alone."""
    try:
        return check()
    except ZsnapError as e:
        return Check(name, Status.CRITICAL, str(e))
    except psycopg.Error as e:
        return Check(name, Status.CRITICAL, f"PostgreSQL: {first_line(e)}")


@dataclass
class Doctor:
    config: Config
    zfs: Zfs
    runner: Runner

    def run(self) -> Report:
        report = Report()
        report.checks.append(self._state_dir())
        if self.config.receiving:
            # No standby here: what this host needs is the sets and a way to the WAL.
            report.checks.append(guarded("received sets", self._received))
            return report
        report.checks.append(self._marker())
        report.checks.append(guarded("wal archive", self._archive))
        if self.config.replicate.target:
            report.checks.append(guarded("replication target", self._target))
        try:
            conn = connect(self.config.standby.conninfo)
        except ZsnapError as e:
            report.checks.append(Check(
                "standby connection", Status.CRITICAL, str(e),
                "check standby.conninfo and that the standby accepts connections",
            ))
            for name in ("server version", "in recovery", "layout on ZFS", "recordsize",
                         "privileges", "verify privileges", "synchronous standby",
                         "restore_command", "primary checkpoint"):
                report.checks.append(Check(name, Status.UNKNOWN, "no connection to the standby"))
            return report
        with conn:
            report.checks.append(Check("standby connection", Status.OK, "connected"))
            report.checks.append(guarded("server version", lambda: self._version(conn)))
            report.checks.append(guarded("in recovery", lambda: self._recovery(conn)))
            layout = Layout(())
            try:
                layout = self._layout(conn, report)
            except ZsnapError as e:
                report.checks.append(Check("layout on ZFS", Status.CRITICAL, str(e)))
            report.checks.append(guarded("recordsize", lambda: self._recordsize(conn, layout)))
            report.checks.append(guarded("privileges", lambda: self._privileges(conn)))
            report.checks.append(guarded("verify privileges", lambda: self._verify(conn)))
            report.checks.append(guarded("synchronous standby", lambda: self._synchronous(conn)))
            report.checks.append(guarded("restore_command", lambda: self._restore(conn)))
            report.checks.append(guarded("primary checkpoint", lambda: self._primary(conn)))
        return report

    # --- without PostgreSQL ----------------------------------------------------------------

    def _state_dir(self) -> Check:
        state = self.config.state.dir
        try:
            state.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=state, prefix=".doctor-"):
                pass
        except OSError as e:
            return Check("state dir writable", Status.CRITICAL, f"{state}: {e.strerror or e}",
                         "zsnap keeps its lock and replay marker there: create it, writable "
                         "by the user running zsnap, or set state.dir")
        try:
            claim(state, self.config.snapshot.cluster)
        except ConfigError as e:
            return Check("state dir writable", Status.CRITICAL, str(e), "set state.dir")
        return Check("state dir writable", Status.OK,
                     f"{state} (cluster {self.config.snapshot.cluster}'s)")

    @cached_property
    def _archive_names(self) -> list[str]:
        """What the archive zsnap looks into holds, listed once for the checks that read it
        (for pgBackRest or Barman a listing is several of the tool's commands); [] without
        one. Raises what listing it raised (not kept: each check then says so itself)."""
        archive = configured(self.config, self.runner)
        return [] if archive is None else archive.names()

    def _archive(self) -> Check:
        """The archive zsnap looks into answers, through its own tool's commands (where the
        restore_command check below only fetches one file)."""
        name = "wal archive"
        archive = configured(self.config, self.runner)
        if archive is None:
            return Check(name, Status.OK, not_listed(self.config))
        try:
            segments = [n for n in self._archive_names if is_segment_name(n)]
        except ZsnapError as e:
            return Check(name, Status.CRITICAL, str(e),
                         f"zsnap runs the archive's commands as {self.config.standby.os_user} "
                         "([standby] os_user): run them by hand as that user")
        newest = f", the newest {segments[-1]}" if segments else ""
        return Check(name, Status.OK, f"{archive.where} lists {len(segments)} segment(s){newest}")

    def _received(self) -> Check:
        root = self.config.catalog.root
        if not self.zfs.exists(root):
            return Check("received sets", Status.CRITICAL, f"no dataset {root}",
                         "run `zsnap replicate` on the standby's host first (docs/replication.md)")
        sets = [s for s in catalog_of(self.config, self.zfs).sets() if s.complete]
        if not sets:
            return Check("received sets", Status.WARNING, f"{root}: no complete set of cluster "
                         f"{self.config.snapshot.cluster}",
                         "is [snapshot] cluster the standby's? has a set arrived whole yet?")
        return Check("received sets", Status.OK,
                     f"{len(sets)} complete set(s) under {root}, newest {sets[-1].id}")

    def _target(self) -> Check:
        """The receiving host answers through [replicate] command, and its pool is there."""
        from zsnap.replicate import standby_datasets, target_overlap, target_zfs

        target = self.config.replicate.target
        remote = target_zfs(self.config)
        where = f"through {' '.join(remote.prefix)}" if remote.prefix else "on this host"
        if not remote.prefix:
            overlap = target_overlap(target, standby_datasets(self.config, self.zfs))
            if overlap is not None:
                return Check("replication target", Status.CRITICAL, overlap)
        if remote.exists(target):
            return Check("replication target", Status.OK, f"{target} exists ({where})")
        if remote.exists(pool_of(target)):
            return Check("replication target", Status.OK,
                         f"pool {pool_of(target)} answers ({where}); {target} is made by the "
                         "first `zsnap replicate`")
        return Check("replication target", Status.CRITICAL, f"no pool {pool_of(target)} {where}",
                     "create the pool on the receiving host, or fix [replicate] target")

    def _marker(self) -> Check:
        state = self.config.state.dir
        path = marker_path(state)
        if not path.exists():
            return Check("replay marker", Status.OK, "no replay left paused by zsnap")
        try:
            with locked(state, SNAPSHOT_LOCK):
                pass
        except LockBusy:
            return Check("replay marker", Status.OK, "a zsnap snapshot is running now")
        except OSError as e:
            return Check("replay marker", Status.CRITICAL, f"cannot take the lock: {e}",
                         "see the state dir check")
        try:
            resumed = resume_abandoned(state)
        except ZsnapError as e:
            return Check("replay marker", Status.CRITICAL,
                         f"stale marker {path}, and replay could not be resumed: {e}",
                         "resume replay by hand: SELECT pg_wal_replay_resume(); then remove "
                         "the marker")
        detail = "a zsnap that died left replay paused; resumed it now" if resumed else \
            "stale marker removed"
        return Check("replay marker", Status.WARNING, detail,
                     "a zsnap snapshot was killed while replay was paused; look for why "
                     "(OOM killer, timeout of a wrapper)")

    # --- PostgreSQL ------------------------------------------------------------------------

    def _version(self, conn: Connection) -> Check:
        version = server_version(conn)
        try:
            refuse_unsupported(version)
        except UsageError as e:
            return Check("server version", Status.CRITICAL, str(e),
                         f"run zsnap with a standby of PostgreSQL {OLDEST} to {NEWEST}")
        return Check("server version", Status.OK, describe(version))

    def _recovery(self, conn: Connection) -> Check:
        if not scalar(conn, "SELECT pg_is_in_recovery()"):
            if self.config.standby.allow_primary:
                return Check("in recovery", Status.WARNING,
                             "the server is a primary: sets are taken in backup mode, and every "
                             "CHECKPOINT and WAL switch of it lands on production",
                             "point standby.conninfo at a streaming standby")
            return Check("in recovery", Status.CRITICAL, "the server is not in recovery",
                         "point standby.conninfo at a streaming standby "
                         "(or set standby.allow_primary = true)")
        if scalar(conn, "SELECT current_setting('hot_standby')") != "on":
            return Check("in recovery", Status.CRITICAL, "hot_standby is off",
                         "set hot_standby = on on the standby and restart it")
        state = pause_state(conn)
        if state != "not paused" and not marker_path(self.config.state.dir).exists():
            return Check("in recovery", Status.WARNING, f"in recovery, but replay is {state}",
                         "someone paused replay by hand; SELECT pg_wal_replay_resume()")
        return Check("in recovery", Status.OK, "in recovery, hot_standby on, replay "
                     f"{state}")

    def _layout(self, conn: Connection, report: Report) -> Layout:
        """Map every place on its own, so that one place off ZFS does not hide the others.
        The report keeps the discovery order (data_directory first)."""
        paths = discover_paths(conn)
        # pg_control lives in polar_datadir on PolarDB, else in data_directory.
        control_role = ROLE_POLAR if any(r == ROLE_POLAR for r, _, _ in paths) else ROLE_PGDATA
        places: list[Place] = []
        for role, path, oid in paths:
            control = role == control_role
            try:
                place = map_to_datasets([(role, path, oid)], self.zfs).places[0]
            except NotOnZfs as e:
                report.places.append(PlaceReport(role, path, oid, None, control, str(e)))
                continue
            places.append(place)
            report.places.append(PlaceReport(role, path, oid, place.dataset, control, None))
        off = [p for p in report.places if p.dataset is None]
        if off:
            names = ", ".join(
                f"tablespace {p.oid} ({p.path})" if p.role == ROLE_TABLESPACE
                else f"{p.role} ({p.path})" for p in off
            )
            report.checks.append(Check(
                "layout on ZFS", Status.CRITICAL, f"not on ZFS: {names}",
                "move each of these onto a ZFS dataset: a set must hold every place",
            ))
            return Layout(tuple(places))
        layout = Layout(tuple(places))
        report.checks.append(Check(
            "layout on ZFS", Status.OK,
            f"{len(places)} places on {len(layout.datasets)} datasets; control file on "
            f"{layout.control.dataset}",
        ))
        return layout

    def _recordsize(self, conn: Connection, layout: Layout) -> Check:
        if not layout.places:
            return Check("recordsize", Status.UNKNOWN, "no place on ZFS")
        block = int(scalar(conn, "SELECT current_setting('block_size')"))
        datasets = list(dict.fromkeys(p.dataset for p in layout.places))
        sizes = self.zfs.get(datasets, ["recordsize"])
        small = {
            ds: int(props["recordsize"]) for ds, props in sizes.items()
            if props.get("recordsize", UNSET) != UNSET and int(props["recordsize"]) < block
        }
        if small:
            listed = ", ".join(f"{ds} ({size})" for ds, size in small.items())
            return Check("recordsize", Status.CRITICAL,
                         f"below the {block} byte block size: {listed}",
                         f"zfs set recordsize={block // 1024}K (or more) on these; a page "
                         "split over two records can be torn inside a snapshot")
        listed = ", ".join(f"{ds}={sizes[ds]['recordsize']}" for ds in datasets)
        return Check("recordsize", Status.OK, f">= {block}: {listed}")

    def _privileges(self, conn: Connection) -> Check:
        row = conn.execute(
            "SELECT current_user, rolsuper, "
            "has_function_privilege('pg_wal_replay_pause()', 'EXECUTE'), "
            "has_function_privilege('pg_wal_replay_resume()', 'EXECUTE'), "
            # pg_checkpoint exists from PostgreSQL 15 on; before, only superusers checkpoint.
            "CASE WHEN current_setting('server_version_num')::int >= 150000 "
            "  THEN pg_has_role('pg_checkpoint', 'MEMBER') ELSE false END, "
            "pg_has_role('pg_read_all_settings', 'MEMBER') "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row is not None  # current_user is always a role
        user, superuser, pause, resume, checkpoint, settings = row
        if superuser:
            return Check("privileges", Status.OK, f"{user} is a superuser")
        missing = [
            what for what, ok in (
                ("EXECUTE on pg_wal_replay_pause()", pause),
                ("EXECUTE on pg_wal_replay_resume()", resume),
                ("the pg_checkpoint role (CHECKPOINT)", checkpoint),
                ("the pg_read_all_settings role (data_directory)", settings),
            ) if not ok
        ]
        if missing:
            return Check("privileges", Status.CRITICAL, f"{user} lacks " + "; ".join(missing),
                         "on the primary: GRANT EXECUTE ON FUNCTION pg_wal_replay_pause(), "
                         f"pg_wal_replay_resume() TO {user}; GRANT pg_checkpoint, "
                         f"pg_read_all_settings TO {user} (see docs/install.md)")
        return Check("privileges", Status.OK,
                     f"{user} may pause/resume replay, CHECKPOINT and read settings")

    def _verify(self, conn: Connection) -> Check:
        """`zsnap verify` runs amcheck in a throwaway instance as this same role: it installs
        the extension where it is missing (a superuser's right) and calls bt_index_check and
        verify_heapam, whose EXECUTE amcheck revokes from PUBLIC."""
        name = "verify privileges"
        if not self.config.verify.amcheck:
            return Check(name, Status.OK, "[verify] amcheck = false: nothing to check")
        row = conn.execute(
            "SELECT current_user, current_database(), rolsuper, "
            "EXISTS (SELECT FROM pg_extension WHERE extname = 'amcheck') "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row is not None  # current_user is always a role
        user, database, superuser, installed = row
        if superuser:
            return Check(name, Status.OK, f"{user} is a superuser: verify can run amcheck")
        hint = amcheck.grant(user)
        if not installed:
            return Check(name, Status.WARNING,
                         f"amcheck is not installed in {database}, and {user} may not install it",
                         hint)
        granted = conn.execute(
            "SELECT has_function_privilege('bt_index_check(regclass, boolean)', 'EXECUTE') "
            "AND has_function_privilege('verify_heapam(regclass, boolean, boolean, text, "
            "bigint, bigint)', 'EXECUTE')"
        ).fetchone()
        if not granted or not granted[0]:
            return Check(name, Status.WARNING,
                         f"{user} may not run amcheck's functions in {database}", hint)
        return Check(name, Status.OK,
                     f"{user} may run amcheck in {database} (verify needs it in every database)")

    def _synchronous(self, conn: Connection) -> Check:
        """A synchronous standby whose primary waits for remote_apply stalls every commit on
        the primary while its replay is paused. Only the primary knows whether this standby
        is synchronous; ask it through the standby's own primary_conninfo when we can."""
        conninfo = str(scalar(conn, "SELECT current_setting('primary_conninfo')") or "")
        cluster = str(scalar(conn, "SELECT current_setting('cluster_name')") or "")
        name = application_name(conninfo, cluster)
        if not conninfo:
            return Check("synchronous standby", Status.WARNING,
                         f"no primary_conninfo (application_name {name}): cannot ask the "
                         "primary", self._sync_hint(name))
        try:
            primary = connect(f"{conninfo} dbname=postgres", "primary")
        except ZsnapError as e:
            return Check("synchronous standby", Status.WARNING,
                         f"cannot ask the primary whether {name} is synchronous: {e}",
                         self._sync_hint(name))
        with primary:
            sync_state = scalar(
                primary,
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s "
                "ORDER BY sync_state = 'async' LIMIT 1",
                (name,),
            )
            commit = str(scalar(primary, "SELECT current_setting('synchronous_commit')"))
            listed = str(scalar(primary, "SELECT current_setting('synchronous_standby_names')"))
        if sync_state in ("sync", "quorum", "potential"):
            if commit == "remote_apply":
                return Check("synchronous standby", Status.CRITICAL,
                             f"{name} is a {sync_state} standby and the primary's "
                             "synchronous_commit is remote_apply: commits stall while replay "
                             "is paused", self._sync_hint(name))
            return Check("synchronous standby", Status.WARNING,
                         f"{name} is a {sync_state} standby (synchronous_standby_names = "
                         f"{listed!r}); synchronous_commit = {commit} does not wait for "
                         "replay, but sessions that set remote_apply will stall",
                         self._sync_hint(name))
        state = sync_state or "not connected"
        return Check("synchronous standby", Status.OK,
                     f"{name} is {state} on the primary: pausing replay delays no commit")

    @staticmethod
    def _sync_hint(name: str) -> str:
        return (f"take snapshots on an asynchronous standby, or make sure the primary's "
                f"synchronous_standby_names does not name {name} while synchronous_commit is "
                "remote_apply")

    def _primary(self, conn: Connection) -> Check:
        """snapshot.primary_checkpoint: a problem only warns, as the snapshot itself does (the
        sets are right without it, their clones replay longer)."""
        name = "primary checkpoint"
        conninfo = self.config.snapshot.primary_checkpoint
        if not conninfo:
            return self._redo_lag(conn)
        hint = "fix snapshot.primary_checkpoint, or empty it to turn this off"
        try:
            with connected(conninfo, "primary") as primary:
                problem = primary_problem(primary, conn)
        except ZsnapError as e:
            return Check(name, Status.WARNING, str(e), hint)
        if problem is not None:
            return Check(name, Status.WARNING, f"snapshot.primary_checkpoint: {problem}", hint)
        return Check(name, Status.OK, "each set starts at a CHECKPOINT asked of the primary")

    def _redo_lag(self, conn: Connection) -> Check:
        """Without primary_checkpoint a set's redo point is the primary's last checkpoint,
        which can lie up to checkpoint_timeout before the set: every clone replays that much.
        The standby's setting stands for the primary's (a base backup copies it)."""
        name = "primary checkpoint"
        # pg_settings gives it in seconds, whatever unit postgresql.conf used.
        timeout = float(scalar(
            conn, "SELECT setting::float FROM pg_settings WHERE name = 'checkpoint_timeout'"))
        interval = longest_interval(self.config.schedule.snapshot, datetime.now(UTC))
        off = "off: a set's redo point is the primary's last checkpoint"
        if interval is None or timeout <= interval.total_seconds():
            return Check(name, Status.OK, f"{off} (checkpoint_timeout {timeout:g} s)")
        return Check(
            name, Status.WARNING,
            f"{off}, and checkpoint_timeout ({timeout:g} s) is longer than the interval between "
            f"sets ({interval.total_seconds():g} s): a clone may replay up to "
            f"{timeout:g} s of WAL before it reaches its set",
            "set snapshot.primary_checkpoint to the primary's conninfo, or lower the primary's "
            "checkpoint_timeout",
        )

    def _restore(self, conn: Connection) -> Check:
        command = restore_command(self.config, self.runner)
        if not command:
            return Check("restore_command", Status.CRITICAL, "archive.restore_command is not set",
                         "clones fetch WAL with it: set it, e.g. cp /archive/%f %p, or set "
                         "[archive] pgbackrest_stanza or barman_server")
        row = conn.execute(
            "SELECT c.redo_lsn::text, c.timeline_id, current_setting('wal_segment_size') "
            "FROM pg_control_checkpoint() c"
        ).fetchone()
        assert row is not None  # pg_control_checkpoint() always returns one row
        redo, timeline, seg_text = row
        redo_segment = Lsn.parse(str(redo)).segment(int(timeline), parse_size(str(seg_text)))
        candidates = self._archived_candidates(int(timeline), redo_segment)
        errors: list[str] = []
        for name in candidates:
            outcome = self._fetch(command, name, redo_segment.name)
            if outcome is None:
                return Check("restore_command", Status.OK, f"fetched {name} as "
                             f"{self.config.standby.os_user}")
            errors.append(f"{name}: {outcome}")
        return Check("restore_command", Status.CRITICAL,
                     "could not fetch " + "; ".join(errors),
                     "run the restore_command by hand as the os_user with %f an archived file "
                     "name and %p a writable path")

    def _archived_candidates(self, timeline: int, redo: Segment) -> list[str]:
        """Files that should be in the archive: what the archive zsnap looks into holds, else
        the segment before the last restartpoint's (finished, so archived unless archiving
        lags) and the restartpoint's own."""
        archive = configured(self.config, self.runner)
        if archive is not None:
            try:
                names = self._archive_names
            except ZsnapError as e:  # the fetch below tells whether the archive works
                log.debug("archive not listed: %s", e)
                names = []
            history = [n for n in names if n.endswith(".history")]
            segments = [n for n in names if is_segment_name(n)]
            picked = history[-1:] + segments[-1:]
            if picked:
                return picked
        found = [redo.name]
        if redo.number > 0:
            found.insert(0, Segment(timeline, redo.number - 1, redo.segment_size).name)
        if timeline > 1:
            found.insert(0, f"{timeline:08X}.history")
        return found

    def _fetch(self, command: str, file_name: str, restart_file: str) -> str | None:
        """Run the restore_command for one file as os_user; None when the file arrived."""
        user = self.config.standby.os_user
        scratch = Path(tempfile.mkdtemp(prefix="zsnap-doctor-"))
        try:
            owner = pwd.getpwnam(user)
            if os.geteuid() == 0:
                os.chown(scratch, owner.pw_uid, owner.pw_gid)
            target = scratch / "RECOVERYXLOG"
            argv = ["sh", "-c", expand_restore_command(command, file_name, str(target),
                                                       restart_file)]
            result = self.runner.run(argv, user=user, timeout=RESTORE_TIMEOUT_S,
                                     mutates=False, check=False, cwd="/")
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
                return f"exit {result.returncode}: {last}"
            if not target.is_file() or target.stat().st_size == 0:
                return "the command succeeded but the file did not arrive at %p"
            return None
        except KeyError:
            return f"no OS user {user}"
        except ZsnapError as e:
            return str(e)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

