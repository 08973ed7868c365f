"""`zsnap reinit`: rebuild a damaged standby from a snapshot set, in the time ZFS takes to
clone and rename, plus the catch-up of replay. Each of the standby's datasets is replaced by a
clone of the set's snapshot of it, promoted, under the dataset's own name and mountpoint; the
damaged dataset is renamed aside and kept until the user discards it. Never `zfs rollback -r`,
which would destroy every newer snapshot.

What `zfs promote` does to the sets: the promoted dataset takes the snapshots up to and
including the set's (so those sets keep their names), and the newer ones stay with the
damaged dataset, renamed aside: their members are rewritten to say where they are now, and
they stay listed and usable.

A plan (`reinit.json` in the state directory) is written before anything is touched; every
step is idempotent and found from what ZFS shows, so `zsnap reinit` run again after a kill
finishes the plan.

Called by a cluster manager (Patroni's `create_replica_methods`, which passes --scope, --role,
--datadir and --connstring), zsnap only replaces the datasets: the manager has stopped the
server, and writes its recovery settings and starts it itself."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from zsnap.catalog import (
    PREFIX,
    SETS_OF,
    SnapshotSet,
    catalog_of,
    new_set_id,
    snapshot_name,
)
from zsnap.clone import registry
from zsnap.config import Config
from zsnap.errors import (
    CommandError,
    NotFoundError,
    PostgresError,
    UsageError,
    WalMissing,
    ZsnapError,
)
from zsnap.files import write_durably
from zsnap.lock import SNAPSHOT_LOCK, locked
from zsnap.pg.binaries import PgTools
from zsnap.pg.connection import connected, scalar
from zsnap.pg.layout import Layout, Place
from zsnap.runner import os_user_entry
from zsnap.wal import available as segments
from zsnap.wal.archives import configured
from zsnap.zfs import UNSET, Zfs

log = logging.getLogger(__name__)

PLAN_FILE = "reinit.json"
INCOMING = "_zsnap_reinit"
STOP_TIMEOUT_S = 120
START_TIMEOUT_S = 3600
POLL_S = 0.5


@dataclass(frozen=True)
class Replacement:
    dataset: str  # the standby's
    snapshot: str  # the set's snapshot of it
    incoming: str  # the clone that takes its place
    aside: str  # where the damaged dataset goes
    mountpoint: str


@dataclass
class ReinitPlan:
    set_id: str
    pgdata: str
    config_dir: str  # what pg_ctl -D takes: PGDATA, or the directory of postgresql.conf
    replacements: list[Replacement]
    moved_sets: list[str]  # newer sets, which stay with the damaged datasets
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ReinitPlan:
        data = json.loads(text)
        data["replacements"] = [Replacement(**r) for r in data["replacements"]]
        return cls(**data)

    @property
    def renamed(self) -> dict[str, str]:
        return {r.dataset: r.aside for r in self.replacements}


@dataclass(frozen=True)
class ManagerCall:
    """What a cluster manager's create-replica call says: the data directory it wants
    rebuilt, and the member role (Patroni always passes `replica`)."""

    datadir: str
    role: str = "replica"
    scope: str | None = None


@dataclass
class ReinitResult:
    plan: ReinitPlan
    dry_run: bool
    resumed: bool = False
    running_s: float | None = None  # until the standby accepted connections
    caught_up_s: float | None = None  # until it streamed from the primary again
    to_discard: list[str] = field(default_factory=list)  # with --discard, said before
    discarded: list[str] = field(default_factory=list)


def aside_name(dataset: str, stamp: str) -> str:
    """Where a reinit at time STAMP puts the damaged DATASET (unique per reinit)."""
    return f"{dataset}_damaged_{stamp}"


def in_place(s: SnapshotSet, mountpoints: dict[str, str]) -> bool:
    """Whether the set's datasets are mounted where the standby's places were when it was
    taken: not a set an earlier reinit left on datasets moved aside."""
    for p in s.parsed_layout.places:
        base = mountpoints.get(p.dataset, "")
        if str(Path(base) / p.subpath if p.subpath not in ("", ".") else Path(base)) != p.path:
            return False
    return True


def moved_members(members: str, layout: str, renamed: dict[str, str]) -> tuple[str, str]:
    """A newer set's `members` and `layout` once its snapshots live on the renamed datasets."""
    moved = ",".join(renamed.get(d, d) for d in members.split(","))
    places = tuple(Place(p.role, p.path, renamed.get(p.dataset, p.dataset), p.subpath, p.oid)
                   for p in Layout.from_json(layout).places)
    return moved, Layout(places).to_json()


def patroni_running() -> bool:
    """A Patroni on this host manages the standby: it would restart or rebuild it meanwhile."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(Path(a.decode(errors="replace")).name.startswith("patroni") for a in argv[:2]):
            return True
    return False


@dataclass
class ReinitStandby:
    config: Config
    zfs: Zfs
    on_progress: Callable[[str], None] = lambda message: None

    def __post_init__(self) -> None:
        self.config.require_standby("zsnap reinit")

    @property
    def _plan_path(self) -> Path:
        return self.config.state.dir / PLAN_FILE

    @property
    def _pg(self) -> PgTools:
        return PgTools.of(self.config, self.zfs.runner)

    def run(self, set_id: str | None, *, dry_run: bool = False, discard: bool = False,
            force: bool = False, timeout_s: float = START_TIMEOUT_S,
            manager: ManagerCall | None = None) -> ReinitResult:
        if manager is not None and manager.role != "replica":
            raise UsageError(f"zsnap reinit builds replicas only, not a {manager.role}")
        with locked(self.config.state.dir, SNAPSHOT_LOCK):
            if self._plan_path.exists():
                plan = ReinitPlan.from_json(self._plan_path.read_text())
                if set_id is not None and set_id != plan.set_id:
                    raise UsageError(f"a reinit from set {plan.set_id} is unfinished: run "
                                     "zsnap reinit without --set to finish it first")
                resumed = True
            else:
                plan = self.plan(set_id, force=force, manager=manager)
                resumed = False
            if manager is not None:
                self._check_datadir(plan, manager)
            result = ReinitResult(plan, dry_run, resumed)
            if discard:
                # Said, and refused if it cannot be done, before anything is touched.
                self._check_discard(plan)
                result.to_discard = [r.aside for r in plan.replacements]
            if dry_run:
                return result
            if not resumed:
                self._save(plan)
            began = time.monotonic()
            self._stop(plan)
            for r in plan.replacements:
                self._replace(r)
            self._follow(plan)
            # The set was taken from a running server: its pid file is stale.
            Path(plan.pgdata, "postmaster.pid").unlink(missing_ok=True)
            if manager is None:
                log_from = self._start(plan)
                result.running_s = time.monotonic() - began
                self._wait_streaming(timeout_s, log_from)
                result.caught_up_s = time.monotonic() - began
            self._plan_path.unlink()
            if discard:
                result.discarded = self._discard(plan)
                kept = [a for a in result.to_discard if a not in result.discarded]
                if kept:
                    raise ZsnapError(f"the standby is rebuilt from set {plan.set_id}, but "
                                     f"{', '.join(kept)} could not be destroyed (see the "
                                     "warnings above): they are kept")
            return result

    # --- before anything is touched --------------------------------------------------------

    def plan(self, set_id: str | None, *, force: bool,
             manager: ManagerCall | None = None) -> ReinitPlan:
        cfg = self.config
        catalog = catalog_of(cfg, self.zfs)
        sets = catalog.sets()
        mountpoints = self.zfs.filesystems()
        if set_id is None:
            usable = [s for s in sets if s.complete and in_place(s, mountpoints)]
            if not usable:
                raise NotFoundError("no complete snapshot set of the standby's datasets to "
                                    "rebuild it from")
            chosen = usable[-1]
        else:
            found = [s for s in sets if s.id == set_id]
            if not found:
                raise NotFoundError(f"no snapshot set {set_id} (zsnap list shows them)")
            chosen = found[0]
        if not chosen.complete:
            raise UsageError(f"set {chosen.id} is incomplete ({', '.join(chosen.missing)}): "
                             "choose a complete one")
        if not in_place(chosen, mountpoints):
            raise UsageError(f"set {chosen.id} is on datasets an earlier reinit moved aside "
                             f"({', '.join(chosen.datasets)}): clone it, or choose another")
        if chosen.backup_label is not None:
            raise UsageError(f"set {chosen.id} was taken from a primary: it cannot become a "
                             "standby")
        if manager is None and patroni_running() and not force:
            raise UsageError("a Patroni runs on this host and manages the standby: let it "
                             "rebuild it (docs/reinit.md), or pass --force")
        # A manager rebuilds a member it has stopped and demoted: its pg_control may still
        # say "in production" (a former primary), which is no reason to refuse.
        self._check_instance(chosen, demoted=manager is not None)
        self._check_wal(chosen)
        # Clones of the standby's own snapshots; not those of copies received on this host.
        clones = [c for c in registry.read(self.zfs, cfg.snapshot.cluster, sizes=False)
                  if any(o.split("@")[0] in chosen.datasets for o in c.origins)]
        if clones:
            raise UsageError(f"flashback instance {clones[0].name} depends on the datasets to "
                             f"be replaced: zsnap destroy {clones[0].name} first")
        nested = [(a, b) for a in chosen.datasets for b in mountpoints if b.startswith(a + "/")]
        if nested:
            # A rename moves a dataset's children with it: they would go aside with the
            # damaged parent, and the rebuilt standby would lack them.
            raise UsageError(f"{nested[0][1]} is inside {nested[0][0]}: zsnap reinit replaces "
                             "only datasets without children")
        layout = chosen.parsed_layout
        stamp = new_set_id(datetime.now(UTC))
        replacements = [
            Replacement(d, f"{d}@{snapshot_name(chosen.id)}", d + INCOMING,
                        aside_name(d, stamp), mountpoints[d])
            for d in chosen.datasets
        ]
        moved = [s.id for s in sets if s.id > chosen.id and set(s.datasets) & set(chosen.datasets)]
        config_dir = Path(chosen.config_file).parent if chosen.config_file else None
        return ReinitPlan(chosen.id, layout.pgdata.path,
                          str(config_dir or layout.pgdata.path), replacements, moved)

    def _check_datadir(self, plan: ReinitPlan, manager: ManagerCall) -> None:
        if Path(manager.datadir).resolve() != Path(plan.pgdata).resolve():
            raise UsageError(f"the data directory to rebuild, {manager.datadir}, is not the "
                             f"one of set {plan.set_id} ({plan.pgdata})")

    def _check_instance(self, s: SnapshotSet, *, demoted: bool = False) -> None:
        """The standby, if it answers, is a standby of the set's cluster; if it does not, its
        pg_control (when still readable) says the same."""
        try:
            with connected(self.config.standby.conninfo) as conn:
                in_recovery = bool(scalar(conn, "SELECT pg_is_in_recovery()"))
                system = int(scalar(conn, "SELECT system_identifier FROM pg_control_system()"))
        except ZsnapError:
            self._check_control_file(s, demoted=demoted)
            return
        if not in_recovery:
            raise UsageError("the server at [standby] conninfo is a primary: zsnap reinit "
                             "rebuilds only a standby")
        if system != s.system_identifier:
            raise UsageError(f"the standby is of another cluster (system identifier {system}, "
                             f"set {s.id} has {s.system_identifier})")

    def _check_control_file(self, s: SnapshotSet, *, demoted: bool) -> None:
        pgdata = s.parsed_layout.pgdata.path
        result = self._pg.run("pg_controldata", "-D", pgdata, mutates=False, check=False)
        if result.returncode != 0:
            log.info("pg_control of %s is unreadable (%s): damaged, rebuilding", pgdata,
                     result.stderr.strip().splitlines()[-1:] or "")
            return
        fields = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
        state = fields.get("Database cluster state", "").strip()
        system = fields.get("Database system identifier", "").strip()
        if state == "in production" and not demoted:
            raise UsageError(f"the cluster in {pgdata} is a primary (pg_control: in "
                             "production): zsnap reinit rebuilds only a standby")
        if system.isdigit() and int(system) != s.system_identifier:
            raise UsageError(f"{pgdata} holds another cluster (system identifier {system}, set "
                             f"{s.id} has {s.system_identifier})")

    def _check_wal(self, s: SnapshotSet) -> None:
        """Replay after the rebuild starts at the set's redo point: the archive must hold the
        WAL from there on (the primary's pg_wal may have recycled it long ago)."""
        archive = configured(self.config, self.zfs.runner)
        if archive is None:
            return
        start = s.redo.segment(s.timeline, s.wal_segment_size)
        found = segments.available(archive.listing(s.wal_segment_size))
        # A hole below the newest archived segment, or no segment archived on the timeline.
        gap = segments.first_gap(found, start)
        if gap is not None:
            raise WalMissing(f"WAL segment {gap.name} is missing from the archive "
                             f"{archive.where}: the standby could not replay past it from set "
                             f"{s.id}")

    def _save(self, plan: ReinitPlan) -> None:
        self.config.state.dir.mkdir(parents=True, exist_ok=True)
        write_durably(self._plan_path, plan.to_json())

    # --- the steps, each idempotent ----------------------------------------------------------

    def _stop(self, plan: ReinitPlan) -> None:
        """Fast, then immediate; a standby that is down already is fine, and so is one whose
        data directory is unmounted (a reinit killed after it stopped the server)."""
        pgdata = plan.config_dir
        if not Path(plan.pgdata).is_dir():
            return
        for mode in ("fast", "immediate"):
            result = self._pg.run("pg_ctl", "-D", pgdata, "-m", mode, "-w", "-t",
                                  str(STOP_TIMEOUT_S), "stop", timeout=STOP_TIMEOUT_S + 30,
                                  check=False)
            # Down already: no pid file, or a stale one (the set's, once it is in place).
            if result.returncode == 0 or any(
                    m in result.stderr for m in ("Is server running?", "No such process")):
                return
        raise PostgresError(f"the standby in {pgdata} did not stop: {result.stderr.strip()}")

    def _replace(self, r: Replacement) -> None:
        zfs = self.zfs
        if not zfs.exists(r.aside):
            if not zfs.exists(r.incoming):
                self.on_progress(f"cloning {r.snapshot}")
                zfs.clone(r.snapshot, r.incoming, {"mountpoint": "none"})
            self.on_progress(f"moving the damaged {r.dataset} aside to {r.aside}")
            zfs.set([r.dataset], {"mountpoint": "none"})
            zfs.rename(r.dataset, r.aside)
        if not zfs.exists(r.dataset):
            zfs.rename(r.incoming, r.dataset)
        zfs.set([r.dataset], {"mountpoint": r.mountpoint})
        if zfs.origin(r.dataset) is not None:
            self.on_progress(f"promoting {r.dataset}")
            zfs.promote(r.dataset)
        marked = zfs.get([r.aside], [SETS_OF])[r.aside].get(SETS_OF)
        if marked and marked != "-":
            zfs.set([r.dataset], {SETS_OF: marked})

    def _follow(self, plan: ReinitPlan) -> None:
        """The newer sets' snapshots now live on the renamed datasets: say so on each (one by
        one, so that a kill half-way leaves each snapshot either rewritten or not)."""
        renamed = plan.renamed
        props = [PREFIX + "members", PREFIX + "layout"]
        for set_id in plan.moved_sets:
            names = [f"{aside}@{snapshot_name(set_id)}" for aside in renamed.values()]
            present = [n for n in names if self.zfs.exists(n)]
            for name, values in (self.zfs.get(present, props) if present else {}).items():
                members, layout = moved_members(values[props[0]], values[props[1]], renamed)
                if members != values[props[0]]:
                    self.zfs.set([name], {props[1]: layout, props[0]: members})

    @property
    def _log_file(self) -> Path:
        return self.config.state.dir / "reinit-standby.log"

    def _start(self, plan: ReinitPlan) -> int:
        """Starts the standby; returns where in its log file this start begins."""
        log_file = self._log_file
        log_file.touch()
        owner = os_user_entry(self.config.standby.os_user)
        os.chown(log_file, owner.pw_uid, owner.pw_gid)  # the server writes it
        begins = log_file.stat().st_size  # pg_ctl -l appends
        self.on_progress("starting the standby")
        self._pg.run("pg_ctl", "-D", plan.config_dir, "-l", str(log_file), "-w", "-t",
                     str(START_TIMEOUT_S), "start", timeout=START_TIMEOUT_S + 30)
        return begins

    def _wait_streaming(self, timeout_s: float, log_from: int) -> None:
        """Until the standby's WAL receiver streams. Its status is shown only to superusers
        and pg_read_all_stats (which also shows every session's query: not in zsnap's
        least-privilege role); to others, that it runs, and then the server log says it."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.config.standby.conninfo, autocommit=True,
                                     connect_timeout=5) as conn:
                    row = conn.execute(
                        "SELECT status, flushed_lsn::text, pg_last_wal_replay_lsn()::text "
                        "FROM pg_stat_wal_receiver").fetchone()
                if row is not None and row[0] == "streaming":
                    self.on_progress(f"streaming: received {row[1]}, replayed {row[2]}")
                    return
                if row is not None and row[0] is None and logs_streaming(self._log_file,
                                                                         log_from):
                    self.on_progress("streaming (its server log says so)")
                    return
            except psycopg.Error as e:
                log.debug("standby not ready yet: %s", e)
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"the standby did not stream from the primary within {timeout_s:g} s: "
                    f"see {self._log_file} (a role that is not a superuser sees the WAL "
                    "receiver's status only with pg_read_all_stats; without it, zsnap reads "
                    "\"started streaming WAL\" in that log, where the server writes unless "
                    "logging_collector is on)")
            time.sleep(POLL_S)

    def _check_discard(self, plan: ReinitPlan) -> None:
        """The newer sets go with the damaged datasets: none may be the origin of a clone
        or held (the base of the next `zsnap replicate`, a user's hold)."""
        if not plan.moved_sets:
            return
        # Their snapshots are on the dataset still, or on it moved aside (a resumed reinit).
        homes = [r.aside if self.zfs.exists(r.aside) else r.dataset for r in plan.replacements]
        moved = {snapshot_name(set_id) for set_id in plan.moved_sets}
        # One listing of those datasets' snapshots, with their holds counted.
        present = {row["name"]: row["userrefs"]
                   for row in self.zfs.list_snapshots(["userrefs"], homes)
                   if row["name"].split("@", 1)[1] in moved}
        for name, userrefs in present.items():
            if userrefs not in ("0", UNSET, ""):
                raise UsageError(
                    f"--discard would destroy {name}, which is held (by `zsnap replicate`, the "
                    "base of its next send, or by hand): reinit without --discard, or release "
                    "the hold first")
        origins = {o for c in registry.read(self.zfs, self.config.snapshot.cluster, sizes=False)
                   for o in c.origins}
        for name in present:
            if name in origins:
                raise UsageError(f"--discard would destroy {name}, the origin of a flashback "
                                 "instance: zsnap destroy it first, or reinit without --discard")

    def _discard(self, plan: ReinitPlan) -> list[str]:
        self.on_progress("discarding " + ", ".join(r.aside for r in plan.replacements))
        gone = []
        for r in plan.replacements:
            try:
                self.zfs.destroy(r.aside, recursive=True)
            except CommandError as e:
                log.warning("kept %s: %s", r.aside, e)
                continue
            gone.append(r.aside)
        return gone


# What PostgreSQL logs once its WAL receiver streams (in English: lc_messages elsewhere).
STREAMING = "started streaming WAL from primary"


def logs_streaming(log_file: Path, start: int) -> bool:
    """Whether the server log says, after byte `start`, that replication streams."""
    try:
        with log_file.open("rb") as f:
            f.seek(start)
            return STREAMING.encode() in f.read()
    except OSError:
        return False
