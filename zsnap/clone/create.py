"""`zsnap clone`: a flashback instance at a target, from the newest snapshot set that can reach
it. ZFS clones of every member (each in its origin's pool), the data directory rewired, then
PostgreSQL replays the archived WAL to the target, pauses there, and is promoted."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from zsnap.catalog import SETS_OF, SnapshotSet, catalog_of
from zsnap.clone import durability, registry
from zsnap.clone.destroy import Teardown
from zsnap.clone.instance import Instance, ReplayState, ServerStopped
from zsnap.clone.local_wal import move_wal
from zsnap.clone.naming import CLONES_DATASET, ClonePaths, check_name, default_name, hold_tag
from zsnap.clone.recovery import (
    DataDir,
    instance_settings,
    prefetch_helps,
    prepare,
    replay_settings,
)
from zsnap.clone.request import CloneRequest, CloneResult, Wait
from zsnap.clone.select import TargetOutOfRange, candidates
from zsnap.clone.serverlog import Cause, consistent_at, phases
from zsnap.clone.target import Kind, Target
from zsnap.clone.wal_needs import CloneWal
from zsnap.config import Config, config_path
from zsnap.errors import (
    ConfigError,
    DatasetExists,
    DatasetNotFound,
    LockBusy,
    NotFoundError,
    RecoveryFailed,
    UsageError,
    ZsnapError,
)
from zsnap.lock import locked
from zsnap.pg.binaries import PgTools
from zsnap.pg.connection import database_name, instance_conninfo
from zsnap.ports import port_free
from zsnap.runner import os_user_entry
from zsnap.wal import archives
from zsnap.zfs import Zfs, mounts, pool_of

log = logging.getLogger(__name__)

CLONE_LOCK = "clone"
LOCK_WAIT_S = 300.0


@dataclass(frozen=True)
class ClonePlan:
    name: str
    set: SnapshotSet
    port: int
    paths: ClonePaths
    datasets: list[str]  # the clones, in set member order
    target: Target
    existing: frozenset[str] = frozenset()  # the host's filesystems when planned


class Stopwatch:
    def __init__(self, since: float):
        self.last = since
        self.laps: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.laps[step] = round(now - self.last, 3)
        self.last = now


class _BeforeConsistent(Exception):
    """PostgreSQL found the stop point before the set's consistency point: try an older set."""


class _NotAfterSet(Exception):
    """Recovery from the set replayed all the WAL there is without meeting the transaction or
    restore point: it may lie before the set, so try an older set."""


@dataclass
class CreateClone:
    config: Config
    zfs: Zfs
    on_progress: Callable[[ReplayState], None] | None = None
    # The configuration file the durability worker is started with; else the default's.
    config_path: Path | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def pg(self) -> PgTools:
        return PgTools.of(self.config, self.zfs.runner)

    # --- planning (read-only) ------------------------------------------------------------

    def plan(
        self, request: CloneRequest, chosen: SnapshotSet | None = None,
        listed: Sequence[Mapping[str, str]] | None = None,
    ) -> ClonePlan:
        """What `run` would make: the set, the name, the port, the datasets. Changes nothing.
        `listed`: the host's filesystems as `_filesystems` reads them, when already read."""
        if not archives.restore_command(self.config, self.zfs.runner):
            raise ConfigError("archive.restore_command is empty: a flashback instance fetches "
                              "the WAL after its set with it")
        if listed is None:
            listed = self._filesystems()
        if chosen is None:
            chosen = self._next_whole(self.candidates(request, listed), [])
        # Every cluster's clones (ports are shared), and what datasets exist.
        clones, existing = registry.listing(self.zfs, sizes=False, listed=listed)
        if request.name is not None:
            name = check_name(request.name)
            paths = ClonePaths(name, self.config.clones.mount_root)
            self._check_name_free(name, paths, clones, existing, chosen)
        else:
            name, paths = self._default_name(clones, existing, chosen)
        paths.check()
        port = self._port(request.port, {c.port for c in clones})
        datasets = [paths.dataset(i, d) for i, d in enumerate(chosen.datasets)]
        return ClonePlan(name, chosen, port, paths, datasets, request.target, frozenset(existing))

    def _filesystems(self) -> list[dict[str, str]]:
        """The host's filesystems with what choosing a set (the catalog's marks), a name and a
        port (the clone registry) and the pools' free space need to know: one `zfs list`
        (each costs a transaction group's wait on a busy pool). Free space only where `zfs
        list` prints bytes (OpenZFS); elsewhere `refuse_full` asks for it."""
        parsable = self.zfs.capabilities.list_parsable
        return self.zfs.list_filesystems(
            [SETS_OF, *registry.COLUMNS, *(("used", "available") if parsable else ())],
            parsable=parsable)

    def candidates(
        self, request: CloneRequest, listed: Sequence[Mapping[str, str]] | None = None
    ) -> list[SnapshotSet]:
        """The sets to try, best first, each read whole before it is used (`confirmed`).
        Chosen from one snapshot a set where the catalog can (Catalog.heads), else, and
        whenever that finds no set for the target, from every member of every set."""
        catalog = catalog_of(self.config, self.zfs)
        heads = catalog.heads(listed)
        if heads is not None:
            with contextlib.suppress(ZsnapError):
                return self._before_commit(
                    candidates(heads, request.target, self.now(), request.set_id), request)
        return self._before_commit(
            candidates(catalog.sets(), request.target, self.now(), request.set_id), request)

    @staticmethod
    def _before_commit(sets: list[SnapshotSet], request: CloneRequest) -> list[SnapshotSet]:
        if request.commit is None:
            return sets
        before = [s for s in sets if s.holds_before(request.commit.lsn.value)]
        if not before:
            raise TargetOutOfRange(
                f"{_describe(request.target)} committed at {request.commit.lsn}, before "
                + (f"set {request.set_id} is" if request.set_id else "any set is")
                + " consistent: nothing to flash back from")
        return before

    def confirmed(self, s: SnapshotSet) -> SnapshotSet | None:
        """`s` read from every member; None if one is gone (destroyed by hand)."""
        try:
            whole = catalog_of(self.config, self.zfs).read(s.id, s.snapshots)
        except DatasetNotFound:
            whole = None
        if whole is None or not whole.complete:
            log.warning("set %s is incomplete (a member is gone): skipped", s.id)
            return None
        return whole

    def _default_name(
        self, clones: list[registry.Clone], existing: set[str], s: SnapshotSet
    ) -> tuple[str, ClonePaths]:
        """clone-<local time>, with a suffix when another clone got that name this second."""
        base = default_name(self.now().astimezone())
        for n in range(1, 100):
            name = base if n == 1 else f"{base}-{n}"
            paths = ClonePaths(name, self.config.clones.mount_root)
            try:
                self._check_name_free(name, paths, clones, existing, s)
            except UsageError:
                continue
            return name, paths
        raise UsageError(f"no free clone name like {base}: give one with --name")

    def _check_name_free(
        self, name: str, paths: ClonePaths, clones: list[registry.Clone], existing: set[str],
        s: SnapshotSet,
    ) -> None:
        if any(c.name == name for c in clones):
            raise UsageError(f"a flashback instance named {name} exists (zsnap destroy {name})")
        for dataset in s.datasets:
            parent = paths.parent_dataset(dataset)
            if parent in existing:
                raise UsageError(f"clone name {name} is taken: dataset {parent} exists")
        if paths.dir.exists():
            raise UsageError(f"clone name {name} is taken: {paths.dir} exists")

    def _port(self, wanted: int | None, claimed: set[int]) -> int:
        if wanted is not None:
            if not 1024 <= wanted <= 65535:
                raise UsageError(f"port {wanted} is out of range 1024-65535")
            if wanted in claimed or not port_free(wanted):
                raise UsageError(f"port {wanted} is in use")
            return wanted
        low, high = self.config.clones.port_range
        for port in range(low, high + 1):
            # A stopped clone keeps its port: it must be able to start again.
            if port not in claimed and port_free(port):
                return port
        raise UsageError(f"no free port in [clones] port_range {low}-{high}")

    # --- making --------------------------------------------------------------------------

    def run(self, request: CloneRequest) -> CloneResult:
        started = time.monotonic()
        sets: list[SnapshotSet] | None = None
        tried: list[str] = []
        while True:
            with self._allocation_lock():
                # Read under the lock, as the names and ports claimed must be; the first
                # attempt also chooses its sets from this listing.
                listed = self._filesystems()
                if sets is None:
                    sets = self.candidates(request, listed)
                s = self._next_whole(sets, tried)
                plan, teardown = self._claim(request, s, listed)
            try:
                result = self._recover(request, plan, teardown, self.pg, started)
            except (_BeforeConsistent, _NotAfterSet) as e:
                self._undo(teardown, self.pg)
                tried.append(s.id)
                if s.id != sets[-1].id:
                    log.warning("target %s is not after set %s; trying an older set",
                                request.target, s.id)
                    continue
                if isinstance(e, _NotAfterSet):
                    raise NotFoundError(
                        f"{_describe(request.target)} was not found in the WAL after set {s.id}"
                        + (", the oldest" if request.set_id is None else "")
                        + ": it lies before it, never happened, or is not archived yet"
                    ) from None
                raise RecoveryFailed(
                    f"target {request.target} is before the consistency point of set {s.id}"
                    + (", and there is no older set" if request.set_id is None else "")
                ) from None
            except BaseException:
                self._undo(teardown, self.pg)
                raise
            return replace(result, fell_back_from=tried)

    def _next_whole(self, sets: list[SnapshotSet], tried: list[str]) -> SnapshotSet:
        """The first of `sets` after those tried that is whole; those found incomplete are
        added to `tried`."""
        done = set(tried)
        for head in sets:
            if head.id in done:
                continue
            s = self.confirmed(head)
            if s is not None:
                return s
            tried.append(head.id)
        raise NotFoundError("every snapshot set that could serve the target is incomplete "
                            f"(a member is gone: {', '.join(tried)})")

    def _claim(
        self, request: CloneRequest, s: SnapshotSet, listed: Sequence[Mapping[str, str]]
    ) -> tuple[ClonePlan, Teardown]:
        """The clone's name, port and datasets, made (under the allocation lock); undone if
        making them fails."""
        self.zfs.refuse_full(s.datasets, self.config.check.pool_free_critical_pct, "a clone",
                             listed)
        plan = self.plan(request, s, listed)
        teardown = Teardown(plan.name)
        try:
            self._make(plan, teardown, os_user_entry(self.config.standby.os_user), request)
        except BaseException:
            self._undo(teardown, self.pg)
            raise
        return plan, teardown

    @contextlib.contextmanager
    def _allocation_lock(self) -> Iterator[None]:
        """Held while a name and port are chosen and the datasets that claim them are made
        (seconds), so that two clones never pick the same; a second clone waits its turn."""
        deadline = time.monotonic() + LOCK_WAIT_S
        with contextlib.ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(locked(self.config.state.dir, CLONE_LOCK))
                    break
                except LockBusy:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield

    def _undo(self, teardown: Teardown, pg: PgTools) -> None:
        """Remove a clone that failed; the failure itself is what the user must see, so a
        problem here is logged (with how to finish the job) rather than raised over it."""
        try:
            teardown.run(self.zfs, pg)
        except ZsnapError as e:
            log.error("could not remove the failed clone %s (%s): run zsnap destroy %s",
                      teardown.name, e, teardown.name)

    def _make(
        self, plan: ClonePlan, teardown: Teardown, owner: pwd.struct_passwd,
        request: CloneRequest,
    ) -> None:
        """Directories, holds and clones; each recorded in `teardown` as soon as it exists."""
        paths = plan.paths
        paths.mount_root.mkdir(parents=True, exist_ok=True)
        paths.dir.mkdir(mode=0o750)
        teardown.dir = paths.dir
        s = plan.set
        data = self._data_dir(plan)
        # Everything the clone is to have, recorded before any of it exists: a failure, or a
        # kill, at any later step is undone from this (releasing an absent hold, destroying
        # an absent dataset are no errors).
        teardown.cluster, teardown.set = self.config.snapshot.cluster, s.id
        teardown.held.extend(s.snapshots)
        teardown.datasets.extend(plan.datasets)
        teardown.pgdata = data.pgdata
        teardown.record()
        os.chown(paths.dir, owner.pw_uid, owner.pw_gid)
        paths.socket_dir.mkdir(mode=0o700)
        os.chown(paths.socket_dir, owner.pw_uid, owner.pw_gid)
        # One call for all (`zfs hold` takes several snapshots, zfs-fuse's too).
        self.zfs.hold(hold_tag(plan.name), s.snapshots)
        props = {
            registry.NAME: plan.name,
            registry.CLUSTER: self.config.snapshot.cluster,
            registry.SET: s.id,
            registry.TARGET: str(plan.target),
            registry.PORT: str(plan.port),
            registry.CREATED: self.now().isoformat(timespec="seconds"),
            registry.DIR: str(paths.dir),
            registry.PGDATA: str(data.pgdata),
            registry.DURABLE: (durability.SKIPPED if request.durability is Wait.SKIP
                               else durability.PENDING),
        }
        if request.ttl is not None:
            props[registry.EXPIRES] = (self.now() + request.ttl).isoformat(timespec="seconds")
        if request.commit is not None and request.commit.database is not None:
            props[registry.DATABASE] = str(request.commit.database)
        parents = set(plan.existing)  # and those made here: asked about once per pool
        for member, (origin, snapshot, clone) in enumerate(
            zip(s.datasets, s.snapshots, plan.datasets, strict=True)
        ):
            parents.add(self._clones_parent(origin, parents))
            self.zfs.clone(snapshot, clone, {
                "mountpoint": str(paths.mountpoint(member)),
                **props,
                registry.MEMBER: str(member),
            })

    def _clones_parent(self, origin: str, existing: set[str]) -> str:
        """`<pool>/zsnap-clones`, never mounted itself, so its children mount only where told;
        made when it is not in `existing`. Returns its name."""
        parent = f"{pool_of(origin)}/{CLONES_DATASET}"
        if parent not in existing and not self.zfs.exists(parent):
            with contextlib.suppress(DatasetExists):  # made meanwhile by another clone
                self.zfs.create(parent, {"mountpoint": "none"})
        return parent

    def _data_dir(self, plan: ClonePlan) -> DataDir:
        mountpoints = [plan.paths.mountpoint(i) for i in range(len(plan.datasets))]
        return DataDir(plan.set.parsed_layout, plan.set.datasets, mountpoints)

    def _recover(
        self, request: CloneRequest, plan: ClonePlan, teardown: Teardown, pg: PgTools,
        started: float,
    ) -> CloneResult:
        cfg = self.config
        data = self._data_dir(plan)
        source = archives.known(cfg, self.zfs.runner)
        wal = CloneWal(plan.set, source, data.pgdata / "pg_wal")
        target = plan.target if request.pause else wal.recovery_target(plan.target)
        extra = {**cfg.clones.settings, **request.settings}
        settings = instance_settings(
            name=plan.name, port=plan.port, listen_addresses=cfg.clones.listen_addresses,
            socket_dir=plan.paths.socket_dir,
            restore_command=wal.restore_command(
                archives.restore_command(cfg, self.zfs.runner), target),
            target=target, fast=request.fast_recovery, extra=extra,
            prefetch=prefetch_helps(data.mountpoints, mounts()),
        )
        replay = replay_settings(fast=request.fast_recovery, extra=extra)
        prepare(data, settings, cfg.standby.os_user, plan.set.backup_label,
                plan.set.config_files, replay)
        move_wal(data.pgdata, plan.paths.wal_dir, wal.from_set,
                 os_user_entry(cfg.standby.os_user), wal.cut(target))
        wal.check(plan.target)
        instance = Instance(pg, data.pgdata, plan.paths.log, self._conninfo(plan, public=False),
                            env=source.recovery_env(data.pgdata) if source else {})
        steps = Stopwatch(started)
        steps.lap("clone")
        try:
            instance.start()
            if not request.pause:
                instance.request_promotion()
            steps.lap("consistent")
            state = instance.wait_for_target(self.on_progress, request.timeout_s,
                                             wal.goal(plan.target))
            steps.lap("target")
            promoted = False
            if not request.pause:
                if state.pause_state == "paused":
                    instance.end_recovery()
                instance.wait_promoted()
                promoted = True
                steps.lap("promote")
        except ServerStopped as e:
            error = self._explain(e, plan, wal)
            if not isinstance(error, (_BeforeConsistent, _NotAfterSet)):
                kept = self._keep_log(plan)
                error.args = (f"{error} (server log kept in {kept})",)
            raise error from None
        durable = self._durability(request, plan, steps)
        text = plan.paths.log.read_text(errors="replace")
        server = phases(text)
        # PostgreSQL's own account of the replay where its log has timestamps; else ours.
        replay_s = server.replay_s if server else steps.laps["consistent"] + steps.laps["target"]
        replayed = max(state.replay_lsn - plan.set.redo, 0) if state.replay_lsn else None
        database = None
        if request.commit is not None and request.commit.database is not None:
            database = database_name(self._conninfo(plan, public=False),
                                     request.commit.database)
        return CloneResult(
            name=plan.name, set_id=plan.set.id, port=plan.port,
            dsn=self._conninfo(plan, public=True, dbname=database), target=plan.target,
            recovered_to=state.replay_time, replay_lsn=state.replay_lsn,
            consistent_lsn=consistent_at(text), promoted=promoted,
            elapsed_s=time.monotonic() - started, pgdata=data.pgdata, log=plan.paths.log,
            datasets=plan.datasets, steps_s=steps.laps, durability=durable,
            wal_replayed_bytes=replayed, replay_s=replay_s, server=server, database=database,
        )

    def _durability(self, request: CloneRequest, plan: ClonePlan, steps: Stopwatch) -> str:
        """Made durable here (`--durable`), by a worker of its own, or (verification) never."""
        if request.durability is Wait.SKIP:
            return durability.Durability.SKIPPED.value
        if request.durability is Wait.WAIT:
            durability.MakeDurable(self.config, self.zfs).run(plan.name)
            steps.lap("durable")
            return durability.Durability.DURABLE.value
        path = self.config_path or config_path(None)
        durability.start_worker(self.zfs.runner, path.resolve(), plan.paths.dir, plan.name)
        return durability.Durability.IN_PROGRESS.value

    def _keep_log(self, plan: ClonePlan) -> Path:
        """The server log of a failed clone outlives the clone, for whoever investigates."""
        kept = self.config.state.dir / "failed-clones" / f"{plan.name}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        if plan.paths.log.exists():
            shutil.copyfile(plan.paths.log, kept)
        return kept

    def _conninfo(self, plan: ClonePlan, *, public: bool, dbname: str | None = None) -> str:
        return instance_conninfo(self.config.standby.conninfo, str(plan.paths.socket_dir),
                                 plan.port, dbname, public=public)

    def _explain(self, e: ServerStopped, plan: ClonePlan, wal: CloneWal) -> Exception:
        cause = e.failure.cause
        if cause is Cause.BEFORE_CONSISTENT:
            return _BeforeConsistent()
        if cause is Cause.PORT_IN_USE:
            return UsageError(f"port {plan.port} is in use ({e.failure.line})")
        if cause is Cause.NO_SPACE:
            pools = ", ".join(sorted({pool_of(d) for d in plan.datasets}))
            return RecoveryFailed(f"no space left on the clone's datasets (pools {pools}): "
                                  f"{e.failure.line}")
        if cause is Cause.TARGET_NOT_REACHED:
            searched = plan.target.kind in (Kind.XID, Kind.NAME)
            if searched and wal.first_gap() is None:
                return _NotAfterSet()
            return wal.missing(plan.target, plan.paths.log.read_text(errors="replace"))
        if wal.first_gap() is not None and "archive file" in e.failure.line:
            # The server read a file the archive check had found damaged ("has wrong size"):
            # named as zsnap named it.
            return wal.missing(plan.target, plan.paths.log.read_text(errors="replace"))
        return e


def _describe(target: Target) -> str:
    if target.kind is Kind.XID:
        return f"transaction {target.value}"
    return f"restore point {target.value!r}"
