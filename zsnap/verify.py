"""`zsnap verify`: prove that a snapshot set restores. The set is cloned into a throwaway
instance that recovers to the set's consistency point (`recovery_target = 'immediate'`) and is
promoted; then named checks run against it, and the outcome is written onto the set's
snapshots. The instance and its datasets are removed whatever happens.

Checks, in order:
- `recovery`: the instance reached consistency and was promoted (its time is the set's RTO);
- `system_identifier`: the instance is the standby's cluster (pg_control_system());
- `amcheck`: every btree index (with heapallindexed) and every heap table in every database;
- `sql[N]`: the user's `[verify] sql` queries, each must return true;
- `checksums`: `pg_checksums --check`, after a clean shutdown of the instance, because
  pg_checksums refuses a cluster that was not shut down cleanly, and a set taken from a
  running standby never was (its pg_control says "in archive recovery")."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg

from zsnap.catalog import NONE, VERIFICATION, SnapshotSet, catalog_of
from zsnap.clone import registry
from zsnap.clone.create import CreateClone
from zsnap.clone.destroy import Teardown
from zsnap.clone.durability import SKIPPED
from zsnap.clone.instance import Instance
from zsnap.clone.naming import ClonePaths
from zsnap.clone.request import CloneRequest, CloneResult, Wait
from zsnap.clone.target import Target
from zsnap.config import Config
from zsnap.errors import (
    NotFoundError,
    PostgresError,
    UsageError,
    ZsnapError,
    first_line,
)
from zsnap.lock import locked
from zsnap.pg import amcheck
from zsnap.pg.binaries import PgTools
from zsnap.pg.connection import Connection, connected, instance_conninfo, system_identifier
from zsnap.zfs import Zfs

log = logging.getLogger(__name__)

VERIFY_LOCK = "verify"
# The longest pg_checksums may read the instance's files.
CHECKSUMS_TIMEOUT_S = 24 * 3600.0
# Problems listed in one check's detail; the rest are counted.
MAX_PROBLEMS = 5
REMOVE_ATTEMPTS = 3
MAX_NAME = 48  # a clone name's length

# Every btree index that can be checked (ready and valid, not another session's temp index),
# system catalogs included; and every heap relation with storage.
INDEXES_SQL = """
SELECT c.oid, c.oid::regclass::text FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
WHERE am.amname = 'btree' AND c.relpersistence <> 't' AND i.indisready AND i.indisvalid
ORDER BY c.oid
"""
TABLES_SQL = """
SELECT c.oid, c.oid::regclass::text FROM pg_class c JOIN pg_am am ON am.oid = c.relam
WHERE am.amname = 'heap' AND c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't'
ORDER BY c.oid
"""


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "outcome": self.outcome.value, "detail": self.detail}


@dataclass
class Verification:
    """The result of verifying one set."""

    set_id: str
    instance: str
    started: datetime
    checks: list[Check] = field(default_factory=list)
    finished: datetime | None = None
    rto_s: float | None = None  # time to a usable (promoted, durable) instance
    replay_lsn: str | None = None
    wal_replayed_bytes: int | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.outcome is Outcome.FAILED]

    @property
    def outcome(self) -> Outcome:
        return Outcome.FAILED if self.failed else Outcome.PASSED

    @property
    def failed_check(self) -> str | None:
        """The first check that failed: the one to look at first."""
        return self.failed[0].name if self.failed else None

    def properties(self) -> dict[str, str]:
        """The outcome as one `zsnap:` user property, so that it is written by one `zfs set`
        and is never half there: `verified_at|outcome|failed check|rto_s` (NONE for none)."""
        finished = self.finished or self.started
        fields = [finished.isoformat(timespec="seconds"), self.outcome.value,
                  self.failed_check or NONE, NONE if self.rto_s is None else f"{self.rto_s:.3f}"]
        return {VERIFICATION: "|".join(fields)}

    def summary(self) -> str:
        if self.failed:
            first = self.failed[0]
            return f"set {self.set_id} failed verification: {first.name} ({first.detail})"
        rto = f"RTO {self.rto_s:.1f} s" if self.rto_s is not None else "no RTO"
        wal = (f", {self.wal_replayed_bytes} bytes of WAL replayed"
               if self.wal_replayed_bytes is not None else "")
        return f"set {self.set_id} passed verification: {rto}{wal}"

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.set_id,
            "instance": self.instance,
            "outcome": self.outcome.value,
            "failed_check": self.failed_check,
            "started": self.started.isoformat(),
            "verified_at": (self.finished or self.started).isoformat(),
            "rto_s": None if self.rto_s is None else round(self.rto_s, 3),
            "replay_lsn": self.replay_lsn,
            "wal_replayed_bytes": self.wal_replayed_bytes,
            "checks": [c.to_json() for c in self.checks],
        }


def failure_line(results: list[Verification]) -> str | None:
    """One line naming every failed set and its failing check, or None when all passed."""
    failed = [v for v in results if v.failed]
    if not failed:
        return None
    if len(failed) == 1:
        return failed[0].summary()
    names = ", ".join(f"{v.set_id} ({v.failed_check})" for v in failed)
    return f"{len(failed)} of {len(results)} sets failed verification: {names}"


@dataclass(frozen=True)
class Selection:
    """Which sets to verify: one by id, every complete set never verified, or (default) the
    newest complete set."""

    set_id: str | None = None
    unverified: bool = False

    def choose(self, sets: list[SnapshotSet]) -> list[SnapshotSet]:
        if self.set_id is not None and self.unverified:
            raise UsageError("give a set ID, --latest or --unverified, not several")
        complete = [s for s in sets if s.complete]
        if self.set_id is not None:
            chosen = next((s for s in sets if s.id == self.set_id), None)
            if chosen is None:
                raise NotFoundError(f"no snapshot set {self.set_id}")
            if not chosen.complete:
                raise UsageError(f"set {chosen.id} is incomplete (missing "
                                 f"{', '.join(chosen.missing)}): it cannot be restored")
            return [chosen]
        if self.unverified:
            return [s for s in complete if s.verified_at is None]
        if not complete:
            raise NotFoundError("there is no complete snapshot set to verify (zsnap snapshot)")
        return [complete[-1]]


def instance_name(cluster: str, set_id: str) -> str:
    """`verify-<cluster>-<set>`: clusters sharing pools and a mount root take sets at the same
    second (same schedule), so the set id alone would collide. The cluster is cut to fit a
    clone name (48 characters)."""
    return f"verify-{cluster[:MAX_NAME - len(set_id) - 8]}-{set_id}"


def sql_check(name: str, value: object) -> Check:
    """A user check passes when its first column of its first row is true."""
    if value is True:
        return Check(name, Outcome.PASSED)
    return Check(name, Outcome.FAILED, f"returned {value!r}, not true")


def checksums_check(returncode: int, stdout: str, stderr: str) -> Check:
    """pg_checksums --check: exit 0 when every block's checksum matches."""
    if returncode == 0:
        scanned = next((line.split(":", 1)[1].strip() for line in stdout.splitlines()
                        if line.startswith("Blocks scanned:")), "?")
        return Check("checksums", Outcome.PASSED, f"{scanned} blocks scanned")
    errors = [line for line in stderr.splitlines() if "error:" in line]
    bad = next((line.split(":", 1)[1].strip() for line in stdout.splitlines()
                if line.startswith("Bad checksums:")), None)
    first = errors[0].split("error:", 1)[1].strip() if errors else f"exit code {returncode}"
    detail = first if bad is None else f"{bad} bad checksum(s); first: {first}"
    return Check("checksums", Outcome.FAILED, detail)


def amcheck_check(problems: list[str], denied: list[str], done: str, checked: int,
                  grant: str) -> Check:
    """Damage fails the check; databases where amcheck was not allowed are named either way,
    and alone only skip it, with the GRANT that allows it: a missing grant is not damage.
    `done`: what was checked, in `checked` databases."""
    if not denied:
        return _problems("amcheck", problems, done)
    where = f"not allowed in {', '.join(denied)}"
    if not problems:
        elsewhere = f" ({done} checked)" if checked else ""
        return Check("amcheck", Outcome.SKIPPED, f"{where}{elsewhere}: {grant}")
    failed = _problems("amcheck", problems, done)
    return Check("amcheck", Outcome.FAILED, f"{failed.detail}; {where}")


def _problems(name: str, problems: list[str], done: str) -> Check:
    if not problems:
        return Check(name, Outcome.PASSED, done)
    more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
    return Check(name, Outcome.FAILED, "; ".join(problems[:MAX_PROBLEMS]) + more)


@dataclass
class VerifySet:
    config: Config
    zfs: Zfs
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def pg(self) -> PgTools:
        return PgTools.of(self.config, self.zfs.runner)

    def select(self, selection: Selection) -> list[SnapshotSet]:
        return selection.choose(catalog_of(self.config, self.zfs).sets())

    def run(self, selection: Selection) -> list[Verification]:
        """Verify the selected sets one after another; one verify run at a time, so that the
        instance names (`verify-<set>`) never collide and a leftover is always a dead run's.
        A set needs no WAL beyond its own consistency point, which its own pg_wal holds where
        the archive does not yet (CloneWal.recovery_target): no set waits for archiving."""
        with locked(self.config.state.dir, VERIFY_LOCK):
            return [self.verify(s) for s in self.select(selection)]

    def verify(self, s: SnapshotSet) -> Verification:
        name = instance_name(s.cluster, s.id)
        self._remove(name, s, leftover=True)
        result = Verification(s.id, name, self.now())
        try:
            self._checks(s, result)
        finally:
            # Also on KeyboardInterrupt; never raised over the error that got us here.
            removal_error = self._remove_quietly(name, s)
        result.finished = self.now()
        # On the control-file member, where the catalog reads what was written after a set.
        self.zfs.set([s.snapshots[0]], result.properties())
        if removal_error is not None:
            raise ZsnapError(f"set {s.id} {result.outcome.value} verification, but its instance "
                             f"was not removed ({removal_error}): run zsnap destroy {name}")
        log.info("%s", result.summary())
        return result

    # --- the checks ----------------------------------------------------------------------

    def _checks(self, s: SnapshotSet, result: Verification) -> None:
        cfg = self.config
        request = CloneRequest(Target.immediate(), name=result.instance, set_id=s.id,
                               durability=Wait.SKIP)
        try:
            clone = CreateClone(cfg, self.zfs).run(request)
        except PostgresError as e:  # includes RecoveryFailed and WalMissing: the set's fault
            result.checks.append(Check("recovery", Outcome.FAILED, first_line(e)))
            return
        result.rto_s = clone.elapsed_s
        if clone.replay_lsn is not None:
            result.replay_lsn = str(clone.replay_lsn)
            result.wal_replayed_bytes = max(clone.replay_lsn - s.redo, 0)
        result.checks.append(Check(
            "recovery", Outcome.PASSED,
            f"consistent and promoted in {clone.elapsed_s:.1f} s, replayed from {s.redo_lsn} "
            f"to {result.replay_lsn}",
        ))
        socket_dir = str(ClonePaths(clone.name, cfg.clones.mount_root).socket_dir)
        conninfo = instance_conninfo(cfg.standby.conninfo, socket_dir, clone.port)
        result.checks.append(self._system_identifier(s, conninfo))
        if cfg.verify.amcheck:
            result.checks.append(self._amcheck(conninfo, socket_dir, clone.port))
        else:
            result.checks.append(Check("amcheck", Outcome.SKIPPED, "[verify] amcheck = false"))
        for index, sql in enumerate(cfg.verify.sql):
            result.checks.append(self._user_sql(f"sql[{index}]", conninfo, sql))
        result.checks.append(self._checksums(s, clone, conninfo))

    def _system_identifier(self, s: SnapshotSet, conninfo: str) -> Check:
        try:
            with connected(conninfo, "verification instance") as conn:
                found = system_identifier(conn)
        except ZsnapError as e:
            return Check("system_identifier", Outcome.FAILED, str(e))
        if found != s.system_identifier:
            return Check("system_identifier", Outcome.FAILED,
                         f"instance {found}, set {s.system_identifier}")
        if self.config.receiving:
            return Check("system_identifier", Outcome.PASSED,
                         f"{found}, as the set's (a receiving host has no standby to compare)")
        try:
            with connected(self.config.standby.conninfo) as conn:
                standby = system_identifier(conn)
        except ZsnapError as e:
            return Check("system_identifier", Outcome.PASSED,
                         f"{found}, as the set's (standby not compared: {e})")
        if standby != found:
            return Check("system_identifier", Outcome.FAILED,
                         f"instance {found}, standby {standby}: the set is of another cluster")
        return Check("system_identifier", Outcome.PASSED, f"{found}, as the set's and standby's")

    def _amcheck(self, conninfo: str, socket_dir: str, port: int) -> Check:
        """bt_index_check(heapallindexed) on every btree index and verify_heapam on every
        table, in every database that accepts connections; the extension is installed where
        missing (the instance is promoted and thrown away afterwards). A database where the
        role may not install or run amcheck is not checked, and says so: a missing grant is
        not damage, and the set does not fail for it (`zsnap doctor` warns of it)."""
        try:
            with connected(conninfo, "verification instance") as conn:
                rows = conn.execute(
                    "SELECT datname, current_user FROM pg_database WHERE datallowconn "
                    "ORDER BY datname").fetchall()
        except (ZsnapError, psycopg.Error) as e:
            return Check("amcheck", Outcome.FAILED, first_line(e))
        databases = [r[0] for r in rows]
        problems: list[str] = []
        denied: list[str] = []
        indexes = tables = 0
        for db in databases:
            db_conninfo = instance_conninfo(self.config.standby.conninfo, socket_dir, port, db)
            try:
                with connected(db_conninfo, f"verification instance ({db})") as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                    n_idx, n_tab = self._amcheck_database(conn, db, problems)
            except psycopg.errors.InsufficientPrivilege:
                denied.append(db)
                continue
            except (ZsnapError, psycopg.Error) as e:
                problems.append(f"database {db}: {first_line(e)}")
                continue
            indexes += n_idx
            tables += n_tab
        checked = len(databases) - len(denied)
        done = f"{indexes} btree indexes and {tables} tables in {checked} databases"
        return amcheck_check(problems, denied, done, checked, amcheck.grant(rows[0][1]))

    @staticmethod
    def _amcheck_database(conn: Connection, db: str, problems: list[str]) -> tuple[int, int]:
        """Not allowed (no grant) raises: it would be so for every relation."""
        indexes = conn.execute(INDEXES_SQL).fetchall()
        tables = conn.execute(TABLES_SQL).fetchall()
        for oid, rel in indexes:
            try:
                conn.execute("SELECT bt_index_check(%s::oid::regclass, true)", (oid,))
            except psycopg.errors.InsufficientPrivilege:
                raise
            except psycopg.Error as e:
                problems.append(f"index {rel} in {db}: {first_line(e)}")
                if conn.closed:
                    raise
        for oid, rel in tables:
            try:
                row = conn.execute(
                    "SELECT blkno, offnum, msg FROM verify_heapam(%s::oid::regclass) LIMIT 1",
                    (oid,)).fetchone()
            except psycopg.errors.InsufficientPrivilege:
                raise
            except psycopg.Error as e:
                problems.append(f"table {rel} in {db}: {first_line(e)}")
                if conn.closed:
                    raise
                continue
            if row is not None:
                problems.append(f"table {rel} in {db}: block {row[0]} item {row[1]}: {row[2]}")
        return len(indexes), len(tables)

    def _user_sql(self, name: str, conninfo: str, sql: str) -> Check:
        try:
            with connected(conninfo, "verification instance") as conn:
                row = conn.execute(sql).fetchone()
        except (ZsnapError, psycopg.Error) as e:
            return Check(name, Outcome.FAILED, first_line(e))
        return sql_check(name, None if row is None or not row else row[0])

    def _checksums(self, s: SnapshotSet, clone: CloneResult, conninfo: str) -> Check:
        """After a clean stop: pg_checksums refuses a cluster not shut down cleanly. Pages the
        instance rewrote carry fresh checksums; every other page is the set's own, as read."""
        if not s.data_checksums:
            return Check("checksums", Outcome.SKIPPED, "data checksums are off in this cluster")
        pg = self.pg
        Instance(pg, clone.pgdata, clone.log, conninfo).stop()
        done = pg.run("pg_checksums", "--check", "-D", str(clone.pgdata), mutates=False,
                      check=False, timeout=CHECKSUMS_TIMEOUT_S)
        return checksums_check(done.returncode, done.stdout, done.stderr)

    # --- removal -------------------------------------------------------------------------

    def _remove(self, name: str, s: SnapshotSet, *, leftover: bool = False) -> None:
        """Whatever exists of instance `name`: its server, datasets, holds, directory; but
        only a verification instance (zsnap marks them: they are never made durable), never
        a user's clone that happens to have the name."""
        paths = ClonePaths(name, self.config.clones.mount_root)
        clones = registry.read(self.zfs, self.config.snapshot.cluster)
        found = next((c for c in clones if c.name == name), None)
        if found is None and not paths.dir.exists():
            return
        if found is not None and found.durable != SKIPPED:
            raise UsageError(
                f"a flashback instance named {name} exists and is not a verification instance:"
                f" zsnap verify will not remove it (zsnap destroy {name}, if it may go)")
        if leftover:
            log.warning("removing %s, left by a verify run that died", name)
        datasets = [paths.dataset(i, d) for i, d in enumerate(s.datasets)]
        teardown = Teardown(name, found.pgdata if found else None, datasets, s.snapshots,
                            paths.dir)
        teardown.run(self.zfs, self.pg)

    def _remove_quietly(self, name: str, s: SnapshotSet) -> str | None:
        """Removal after the checks, retried briefly (a mount just released can be busy); the
        error is returned, not raised, so that it never hides the one that brought us here."""
        error = None
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                self._remove(name, s)
                return None
            except ZsnapError as e:
                log.warning("removing %s (attempt %d): %s", name, attempt + 1, e)
                error = str(e)
                time.sleep(1.0)
        return error
