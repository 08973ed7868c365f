"""`zsnap check`: named health checks, each OK, WARNING, CRITICAL or UNKNOWN with a hint, as
monitoring wants them (Nagios exit codes and perfdata, a Prometheus textfile)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from zsnap import heartbeat
from zsnap.catalog import SnapshotSet, catalog_of
from zsnap.checks import Check, Metric, Status, overall
from zsnap.clone import durability, registry
from zsnap.clone.destroy import half_made
from zsnap.config import Config
from zsnap.duration import format_duration
from zsnap.errors import LockBusy, UsageError, ZsnapError
from zsnap.files import write_durably
from zsnap.history import BUSY, FAILED, MISSED, History
from zsnap.lock import SNAPSHOT_LOCK, locked
from zsnap.pg.connection import connected, scalar
from zsnap.pg.layout import discover
from zsnap.pg.replay import marker_path, pause_state
from zsnap.wal.archives import configured, not_listed
from zsnap.wal.check import WalCheck
from zsnap.zfs import Zfs, pool_of

log = logging.getLogger(__name__)

# What a verification may record as a pass; anything else is a failure.
GOOD_OUTCOMES = {"ok", "passed", "pass", "success"}
SCHEDULED_JOBS = ("snapshot", "prune", "verify", "replicate")


def grade(value: float, warn: timedelta | None, crit: timedelta | None) -> Status:
    if crit is not None and value > crit.total_seconds():
        return Status.CRITICAL
    if warn is not None and value > warn.total_seconds():
        return Status.WARNING
    return Status.OK


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def age_text(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds)))


@dataclass
class Health:
    config: Config
    zfs: Zfs
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    _sets: list[SnapshotSet] | None = None

    @property
    def sets(self) -> list[SnapshotSet]:
        if self._sets is None:
            self._sets = catalog_of(self.config, self.zfs).sets()
        return self._sets

    def checks(self) -> list[tuple[str, Callable[[], Check]]]:
        standby = [] if self.config.receiving else [
            ("replay_lag", self.replay_lag),
            ("replay_paused", self.replay_paused),
        ]
        replicating = [("replication", self.replication)] if self.config.replicate.target else []
        return [
            ("newest_set", self.newest_set),
            ("incomplete_sets", self.incomplete_sets),
            ("verification", self.verification),
            *standby,
            *replicating,
            ("wal_archive", self.wal_archive),
            ("recovery_window", self.recovery_window),
            ("pool_free", self.pool_free),
            ("clones", self.clones),
            ("scheduler", self.scheduler),
            ("last_runs", self.last_runs),
        ]

    def run(self) -> list[Check]:
        results = []
        for name, check in self.checks():
            try:
                results.append(check())
            except ZsnapError as e:
                results.append(Check(name, Status.UNKNOWN, str(e),
                                           "fix what the message names, then check again"))
        return results

    # --- the checks ----------------------------------------------------------------------

    def newest_set(self) -> Check:
        c = self.config.check
        complete = [s for s in self.sets if s.complete]
        if not complete:
            return Check("newest_set", Status.CRITICAL, "no complete snapshot set",
                               "take one with `zsnap snapshot`, or start `zsnap daemon`")
        newest = complete[-1]
        age = (self.now - newest.created).total_seconds()
        status = grade(age, c.set_age_warning, c.set_age_critical)
        hint = "" if status == Status.OK else (
            "snapshots stopped: see `zsnap history` and the daemon's journal")
        return Check(
            "newest_set", status, f"newest set {newest.id} is {age_text(age)} old", hint,
            [Metric("newest_set_age_seconds", age, _seconds(c.set_age_warning),
                    _seconds(c.set_age_critical)),
             Metric("sets", float(len(complete))),
             # How long replay stood still for it (its commits waited that long, if the
             # standby is synchronous with remote_apply).
             *([Metric("newest_set_pause_seconds", newest.pause_ms / 1000)]
               if newest.pause_ms is not None else [])],
        )

    def incomplete_sets(self) -> Check:
        complete = [s for s in self.sets if s.complete]
        newest = complete[-1].created if complete else None
        # One newer than every complete set may still be being taken.
        stale = [s for s in self.sets if not s.complete and newest and s.created < newest]
        metric = [Metric("incomplete_sets", float(len(stale)))]
        if not stale:
            return Check("incomplete_sets", Status.OK, "no incomplete set", "", metric)
        ids = ", ".join(s.id for s in stale[:5])
        return Check(
            "incomplete_sets", Status.WARNING,
            f"{len(stale)} incomplete set(s), never restorable: {ids}",
            "a snapshot call failed part-way or a member was destroyed by hand; "
            "`zsnap prune` removes them", metric,
        )

    def verification(self) -> Check:
        c = self.config.check
        if c.verify_age_warning is None and c.verify_age_critical is None:
            return Check("verification", Status.OK, "not monitored (thresholds off)")
        verified = [s for s in self.sets if s.verified_at is not None]
        if not verified:
            return Check(
                "verification", Status.WARNING, "no snapshot set has been verified",
                "a set proves restorable only by restoring it: schedule [schedule] verify",
            )
        last = max(verified, key=lambda s: s.verified_at or self.now)
        assert last.verified_at is not None
        age = (self.now - last.verified_at).total_seconds()
        outcome = (last.verify_outcome or "unknown").lower()
        metrics = [Metric("verification_age_seconds", age, _seconds(c.verify_age_warning),
                          _seconds(c.verify_age_critical)),
                   Metric("verification_passed", float(outcome in GOOD_OUTCOMES))]
        if outcome not in GOOD_OUTCOMES:
            failed = f" ({last.verify_failed_check})" if last.verify_failed_check else ""
            return Check(
                "verification", Status.CRITICAL,
                f"set {last.id} failed verification {age_text(age)} ago: {outcome}{failed}",
                "see `zsnap show` for the set and the verify run in `zsnap history`", metrics,
            )
        status = grade(age, c.verify_age_warning, c.verify_age_critical)
        return Check(
            "verification", status, f"set {last.id} verified {outcome} {age_text(age)} ago",
            "" if status == Status.OK else "verification runs stopped: see `zsnap history`",
            metrics,
        )

    def replay_lag(self) -> Check:
        c = self.config.check
        try:
            with connected(self.config.standby.conninfo) as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), "
                    "pg_last_wal_receive_lsn() IS NULL "
                    " OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), "
                    "extract(epoch FROM now() - pg_last_xact_replay_timestamp()), "
                    "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
                ).fetchone()
        except ZsnapError as e:
            return Check("replay_lag", Status.CRITICAL, str(e),
                               "is the standby running? see its log")
        assert row is not None
        in_recovery, caught_up, since_commit, behind = row
        if not in_recovery:
            status = Status.OK if self.config.standby.allow_primary else Status.CRITICAL
            return Check("replay_lag", status, "the server is not in recovery",
                               "" if status == Status.OK else
                               "the standby was promoted: point [standby] conninfo at a standby")
        # An idle primary commits nothing: with nothing left to replay, the lag is zero.
        lag = 0.0 if caught_up or since_commit is None else float(since_commit)
        status = grade(lag, c.replay_lag_warning, c.replay_lag_critical)
        return Check(
            "replay_lag", status,
            f"replay lag {age_text(lag)}, {int(behind or 0)} bytes received but not replayed",
            "" if status == Status.OK else "replay is slow or stuck: see the standby's log",
            [Metric("replay_lag_seconds", lag, _seconds(c.replay_lag_warning),
                    _seconds(c.replay_lag_critical)),
             Metric("replay_lag_bytes", float(behind or 0))],
        )

    def replay_paused(self) -> Check:
        state_dir = self.config.state.dir
        with connected(self.config.standby.conninfo) as conn:
            if not scalar(conn, "SELECT pg_is_in_recovery()"):
                return Check("replay_paused", Status.OK, "not in recovery")
            state = pause_state(conn)
        if state == "not paused":
            return Check("replay_paused", Status.OK, "replay is running")
        try:
            with locked(state_dir, SNAPSHOT_LOCK):
                pass
        except LockBusy as e:
            return Check("replay_paused", Status.OK,
                               f"replay {state} by a running zsnap snapshot ({e})")
        if marker_path(state_dir).exists():
            return Check(
                "replay_paused", Status.CRITICAL,
                f"replay {state}, left so by a zsnap that died",
                "any zsnap command resumes it; so does SELECT pg_wal_replay_resume()",
            )
        return Check(
            "replay_paused", Status.CRITICAL, f"replay {state}, and no zsnap paused it",
            "someone ran pg_wal_replay_pause(): SELECT pg_wal_replay_resume() on the standby",
        )

    def replication(self) -> Check:
        """How far the [replicate] target is behind: the age of its newest complete set, and
        the sets here that it does not have yet."""
        from zsnap.replicate import target_catalog, target_zfs

        c = self.config.check
        target = self.config.replicate.target
        arrived = [s for s in target_catalog(self.config, target_zfs(self.config)).sets()
                   if s.complete]
        newest = arrived[-1] if arrived else None
        pending = [s for s in self.sets if s.complete and (newest is None or s.id > newest.id)]
        metrics = [Metric("replication_pending_sets", float(len(pending)))]
        if newest is None:
            return Check("replication", Status.CRITICAL, f"no complete set on {target}",
                               "run `zsnap replicate`, or schedule [schedule] replicate",
                               metrics)
        age = (self.now - newest.created).total_seconds()
        metrics.insert(0, Metric("replication_lag_seconds", age,
                                 _seconds(c.replication_lag_warning),
                                 _seconds(c.replication_lag_critical)))
        status = grade(age, c.replication_lag_warning, c.replication_lag_critical)
        return Check(
            "replication", status,
            f"newest set on {target} is {newest.id}, {age_text(age)} old; "
            f"{len(pending)} set(s) not sent yet",
            "" if status == Status.OK else
            "replication stopped: see `zsnap history replicate` and `zsnap replicate --dry-run`",
            metrics,
        )

    def wal_archive(self) -> Check:
        if configured(self.config, self.zfs.runner) is None:
            return Check("wal_archive", Status.OK, f"not checked: {not_listed(self.config)}")
        result = WalCheck(self.config, catalog_of(self.config, self.zfs)).run()
        report = result.report
        if report is None:
            return Check("wal_archive", Status.WARNING, "no complete set to check from",
                               "take a snapshot set first")
        metrics = [Metric("wal_missing_segments", float(report.missing)),
                   Metric("wal_checked_segments", float(report.checked)),
                   Metric("wal_damaged_files", float(len(report.damaged)))]
        problems = [
            f"{g.count} missing on timeline {g.timeline}: {g.first}..{g.last}" for g in report.gaps
        ] + report.problems + [f"{name} damaged: {why}" for name, why in report.damaged.items()]
        if result.unusable_sets:
            problems.append(f"sets without their own WAL: {', '.join(result.unusable_sets)}")
        if problems:
            return Check(
                "wal_archive", Status.CRITICAL, "; ".join(problems),
                "recovery cannot pass a gap: check archive_command and pg_stat_archiver on "
                "the primary; `zsnap wal check` lists the gaps", metrics,
            )
        return Check(
            "wal_archive", Status.OK,
            f"{report.checked} segments from {report.start} to {report.newest}, no gap",
            "", metrics,
        )

    def recovery_window(self) -> Check:
        """From when to when a flashback is possible here; WARNING where missing WAL splits
        it (a time inside a hole, or after it without a newer set, cannot be reached)."""
        from zsnap.wal.window import recovery_window

        found = recovery_window(self.config, self.sets, self.zfs.runner)
        if not found.windows:
            return Check("recovery_window", Status.WARNING, found.summary(),
                               "take a set, and check the WAL archive (`zsnap wal check`)")
        oldest, newest = found.windows[0].start, found.windows[-1].end
        metrics = [
            Metric("recovery_window_reach_seconds", (self.now - oldest).total_seconds()),
            Metric("recovery_window_end_age_seconds", (self.now - newest).total_seconds()),
            Metric("recovery_windows", float(len(found.windows))),
        ]
        holes = [w for w in found.windows if w.missing]
        if holes:
            return Check(
                "recovery_window", Status.WARNING, found.summary(),
                "missing WAL splits the window: " + "; ".join(w.ends for w in holes), metrics)
        return Check("recovery_window", Status.OK, found.summary(), "", metrics)

    def _pools(self) -> list[str]:
        datasets: set[str] = {d for s in self.sets for d in s.datasets}
        if self.config.receiving:
            return sorted({pool_of(self.config.catalog.root), *map(pool_of, datasets)})
        try:
            with connected(self.config.standby.conninfo) as conn:
                datasets.update(discover(conn, self.zfs).datasets)
        except ZsnapError as e:
            log.debug("layout not discovered (%s); pools from the sets only", e)
        return sorted({pool_of(d) for d in datasets if d})

    def pool_free(self) -> Check:
        c = self.config.check
        pools = self._pools()
        if not pools:
            return Check("pool_free", Status.UNKNOWN, "no pool known: no set, no standby")
        free = self.zfs.free_percent(pools)
        status = Status.OK
        parts = []
        metrics = []
        for pool in pools:
            pct = free[pool]
            metrics.append(Metric("pool_free_percent", round(pct, 2), c.pool_free_warning_pct,
                                  c.pool_free_critical_pct, (("pool", pool),)))
            parts.append(f"{pool} {pct:.1f}% free")
            if pct < c.pool_free_critical_pct:
                status = Status.CRITICAL
            elif pct < c.pool_free_warning_pct and status == Status.OK:
                status = Status.WARNING
        hint = "" if status == Status.OK else (
            "a full pool stops the standby: prune sets (zsnap prune) or grow the pool")
        return Check("pool_free", status, ", ".join(parts), hint, metrics)

    def clones(self) -> Check:
        """Flashback instances of this cluster, and those a killed zsnap left half-made (they
        hold their set against pruning until destroyed)."""
        cfg = self.config
        found = registry.read(self.zfs, cfg.snapshot.cluster, sizes=False)
        pending = sum(1 for c in found if durability.status(c).state not in (
            durability.Durability.DURABLE, durability.Durability.SKIPPED))
        half = half_made(cfg.clones.mount_root, cfg.snapshot.cluster, {c.name for c in found})
        metrics = [Metric("clones", float(len(found))),
                   Metric("clones_not_durable", float(pending)),
                   Metric("clones_half_made", float(len(half)))]
        summary = f"{len(found)} flashback instance(s), {pending} not durable yet"
        limit = cfg.check.clone_age_warning
        old = [c for c in found if limit is not None and c.created is not None
               and self.now - c.created > limit]
        metrics.append(Metric("clones_old", float(len(old)),
                              None if limit is None else limit.total_seconds()))
        if half:
            names = ", ".join(t.name for t in half)
            return Check("clones", Status.WARNING, f"{summary}; half-made: {names}",
                               f"a zsnap was killed making them: zsnap destroy {half[0].name}",
                               metrics)
        if old:
            names = ", ".join(c.name for c in old)
            return Check(
                "clones", Status.WARNING, f"{summary}; older than "
                f"{format_duration(limit) if limit else ''}: {names}",
                "each pins its set and the space it writes: zsnap destroy NAME, or give clones "
                "an expiry (--ttl, [clones] ttl)", metrics)
        return Check("clones", Status.OK, summary, "", metrics)

    def scheduler(self) -> Check:
        limit = self.config.check.heartbeat_age_critical
        if limit is None:
            return Check("scheduler", Status.OK, "not monitored (threshold off)")
        beat = heartbeat.read(self.config.state.dir)
        if beat is None:
            return Check("scheduler", Status.CRITICAL, "no heartbeat: zsnap daemon never ran",
                               "systemctl enable --now zsnap (see deploy/)")
        updated = datetime.fromisoformat(str(beat["updated"]))
        age = (self.now - updated).total_seconds()
        metrics = [Metric("heartbeat_age_seconds", age, None, limit.total_seconds())]
        state = beat.get("state")
        if state == "stopped":
            return Check("scheduler", Status.CRITICAL,
                               f"zsnap daemon stopped {age_text(age)} ago",
                               "systemctl start zsnap", metrics)
        if age > limit.total_seconds():
            return Check("scheduler", Status.CRITICAL,
                               f"no heartbeat for {age_text(age)} (pid {beat.get('pid')})",
                               "the daemon died or hangs: systemctl status zsnap", metrics)
        return Check("scheduler", Status.OK,
                           f"zsnap daemon pid {beat.get('pid')} {state}, "
                           f"heartbeat {age_text(age)} ago", "", metrics)

    def last_runs(self) -> Check:
        history = History(self.config.state.dir)
        bad = []
        for job in SCHEDULED_JOBS:
            entry = history.last(job)
            if entry is not None and entry.outcome in (FAILED, MISSED, BUSY):
                bad.append(f"{job} {entry.outcome} at {entry.started[:19]}: {entry.detail}")
        if bad:
            return Check("last_runs", Status.WARNING, "; ".join(bad),
                               "see `zsnap history` and the daemon's journal")
        return Check("last_runs", Status.OK, "the last run of every job succeeded")


# --- renderings --------------------------------------------------------------------------------


def nagios_line(results: list[Check]) -> str:
    state = overall(results)
    bad = [r for r in results if r.status != Status.OK]
    text = "; ".join(f"{r.name}: {r.summary}" for r in bad) or f"{len(results)} checks OK"
    perf = []
    for r in results:
        for m in r.metrics:
            label = m.name + "".join(f"_{v}" for _, v in m.labels)
            thresholds = ";".join("" if t is None else f"{t:g}" for t in (m.warn, m.crit))
            perf.append(f"'{label}'={m.value:g};{thresholds}")
    line = f"ZSNAP {state.name} - {text}".replace("|", "/")
    return f"{line} | {' '.join(perf)}" if perf else line


# Every metric of the textfile, all gauges with a `cluster` label (docs/operations.md lists
# them from here; deploy/grafana-dashboard.json charts them).
METRICS = {
    "check_status": "State of each check (label check): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    "newest_set_age_seconds": "Age of the newest complete snapshot set.",
    "newest_set_pause_seconds": "How long WAL replay stood paused for the newest set.",
    "sets": "Complete snapshot sets.",
    "incomplete_sets": "Incomplete sets older than the newest complete one (never used).",
    "verification_age_seconds": "Time since the last verification run of a set.",
    "verification_passed": "1 if the last verified set passed, 0 if it failed.",
    "replay_lag_seconds": "Standby replay lag (0 when all received WAL is replayed).",
    "replay_lag_bytes": "WAL received by the standby but not replayed yet.",
    "wal_missing_segments": "Segments missing from the WAL archive after the oldest set.",
    "wal_damaged_files": "Files in the WAL archive that are not the segment they name.",
    "wal_checked_segments": "Segments of the WAL archive checked.",
    "recovery_window_reach_seconds": "How far back a flashback can go: the age of the "
                                     "window's start.",
    "recovery_window_end_age_seconds": "Age of the latest time a flashback can reach (the last "
                                       "archived commit).",
    "recovery_windows": "Windows the recovery window is split into (missing WAL, timelines).",
    "pool_free_percent": "Free space of each pool (label pool) holding the standby's data.",
    "clones": "Flashback instances of the cluster.",
    "clones_not_durable": "Flashback instances not durable yet.",
    "clones_half_made": "Clones a killed zsnap left half-made (zsnap destroy removes them).",
    "clones_old": "Flashback instances older than [check] clone_age_warning.",
    "replication_lag_seconds": "Age of the newest complete set on [replicate] target.",
    "replication_pending_sets": "Complete sets here that [replicate] target lacks.",
    "heartbeat_age_seconds": "Age of the zsnap daemon's heartbeat.",
    "check_timestamp_seconds": "When zsnap check wrote this file (Unix time).",
}


def prometheus_text(results: list[Check], cluster: str, now: datetime) -> str:
    base = f'cluster="{cluster}"'
    samples: dict[str, list[str]] = {
        "check_status": [f'{{{base},check="{r.name}"}} {int(r.status)}' for r in results]}
    for r in results:
        for m in r.metrics:
            labels = base + "".join(f',{k}="{v}"' for k, v in m.labels)
            samples.setdefault(m.name, []).append(f"{{{labels}}} {m.value:g}")
    samples["check_timestamp_seconds"] = [f"{{{base}}} {now.timestamp():.0f}"]
    lines = []
    for name, values in samples.items():
        full = f"zsnap_{name}"
        lines += [f"# HELP {full} {METRICS[name]}", f"# TYPE {full} gauge",
                  *(full + v for v in values)]
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Atomically, as node_exporter's textfile collector wants: never a half-written file."""
    check_textfile(path)
    write_durably(path, text, parents=False, sync=False)


def check_textfile(path: Path) -> None:
    """A file in a directory that exists (the collector's: zsnap makes none)."""
    if not path.name or path.is_dir():
        raise UsageError(f"the Prometheus textfile {str(path)!r} must name a file, not a "
                         "directory")
    if not path.parent.is_dir():
        raise UsageError(f"the Prometheus textfile's directory {path.parent} does not exist")
