"""`zsnap daemon`: runs the jobs of `[schedule]` (APScheduler 3, jobs in memory rebuilt from the
config; the catalog and the run history are the durable state).

- one instance per job, missed runs coalesced, a misfire grace from the config so that a late
  run still happens (and one that cannot is logged and recorded as missed);
- signal handlers only set flags; the main loop acts on them: SIGHUP reloads the config and
  rebuilds the jobs, SIGTERM/SIGINT stop taking new runs and wait for running ones, so a
  paused-replay window is never cut short;
- a heartbeat file in the state directory (read by `zsnap check`), rewritten regularly;
- systemd: READY/RELOADING/STOPPING through $NOTIFY_SOCKET when it is set; log lines carry
  syslog priorities instead of timestamps when stderr goes to the journal.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from zsnap import config as config_module
from zsnap import heartbeat, jobs
from zsnap.config import Config
from zsnap.cron import cron_trigger, is_off, next_times
from zsnap.errors import ConfigError, ZsnapError
from zsnap.history import BUSY, MISSED, History
from zsnap.jobs import Job
from zsnap.lock import locked
from zsnap.pg.replay import resume_abandoned
from zsnap.runner import Runner
from zsnap.statedir import claim
from zsnap.zfs import Zfs

# Each job's operation is loaded when it first runs: `zsnap schedule` needs none of them.
if TYPE_CHECKING:
    from zsnap.catalog import SnapshotSet
    from zsnap.clone.expire import ExpiredResult
    from zsnap.prune import PruneResult
    from zsnap.replicate import ReplicateResult
    from zsnap.verify import Verification

log = logging.getLogger(__name__)

DAEMON_LOCK = "daemon"


def snapshot_job(cfg: Config) -> Job[SnapshotSet]:
    from zsnap.snapshot import TakeSnapshot

    return Job("snapshot", TakeSnapshot(cfg, Zfs(Runner())).run, jobs.snapshot_summary)


def prune_job(cfg: Config) -> Job[PruneResult]:
    from zsnap.prune import Prune

    return Job("prune", Prune(cfg, Zfs(Runner())).run, jobs.prune_summary)


def verify_job(cfg: Config) -> Job[list[Verification]]:
    """`zsnap verify --latest`: the newest set is the one a restore would most likely use."""
    from zsnap.verify import Selection, VerifySet

    return Job("verify", lambda: VerifySet(cfg, Zfs(Runner())).run(Selection()),
               jobs.verify_summary)


def replicate_job(cfg: Config) -> Job[ReplicateResult]:
    from zsnap.replicate import Replicate

    return Job("replicate", Replicate(cfg, Zfs(Runner())).run, jobs.replicate_summary)


def expire_job(cfg: Config) -> Job[ExpiredResult]:
    """`zsnap destroy --expired`: clones past their --ttl / [clones] ttl."""
    from zsnap.clone.expire import DestroyExpired

    return Job("expire", DestroyExpired(cfg, Zfs(Runner())).run, jobs.expire_summary)


# The jobs `[schedule]` can name, each the same operation the command line runs.
JOBS: dict[str, Callable[[Config], Job[Any]]] = {
    "snapshot": snapshot_job,
    "prune": prune_job,
    "verify": verify_job,
    "replicate": replicate_job,
    "expire": expire_job,
}


def schedule_zone(cfg: Config) -> tzinfo:
    if cfg.schedule.timezone:
        return ZoneInfo(cfg.schedule.timezone)
    local = datetime.now().astimezone().tzinfo
    return local or UTC


def crons(cfg: Config) -> dict[str, str]:
    """Every job named in [schedule] and its cron string ("off" for one not scheduled). A
    receiving host ([catalog] root) takes no sets and sends none, whatever [schedule] says."""
    s = cfg.schedule
    if cfg.receiving:
        return {"snapshot": "off", "prune": s.prune, "verify": s.verify, "replicate": "off",
                "expire": s.expire}
    return {"snapshot": s.snapshot, "prune": s.prune, "verify": s.verify,
            "replicate": s.replicate, "expire": s.expire}


@dataclass
class Planned:
    job: str
    cron: str
    next_runs: list[datetime]


def plan(cfg: Config, now: datetime, count: int = 3) -> list[Planned]:
    zone = schedule_zone(cfg)
    result = []
    for job, expr in crons(cfg).items():
        if is_off(expr):
            result.append(Planned(job, "off", []))
            continue
        times = next_times(cron_trigger(expr, zone), now.astimezone(zone), count)
        result.append(Planned(job, expr, times))
    return result


# --- logging and systemd ---------------------------------------------------------------------


SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                   logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """`<N>` syslog priority prefixes, which journald turns into the entry's priority; the
    journal stamps the time itself."""

    def format(self, record: logging.LogRecord) -> str:
        prio = SYSLOG_PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (`zsnap daemon --json`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(debug: bool, as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("sh").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.INFO if debug else logging.WARNING)


def sd_notify(message: str) -> None:
    """The systemd notification protocol, when systemd asked for it (Type=notify)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as e:
        log.warning("could not notify systemd (%s): %s", message, e)


# --- the daemon ------------------------------------------------------------------------------


class Daemon:
    def __init__(self, config_path: Path | None, debug: bool = False):
        self.config_path = config_path
        self.debug = debug
        self.config = config_module.load(config_path)
        claim(self.config.state.dir, self.config.snapshot.cluster)
        self.started = datetime.now(UTC)
        self._stop_signal: int | None = None
        self._reload_requested = False
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self.scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)
        self.scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)

    # Signal handlers only set flags; the main loop acts on them.
    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = signum

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested = True

    def run(self) -> int:
        """Until SIGTERM or SIGINT; SIGHUP reloads."""
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        # One daemon per state directory; a second one exits with LockBusy.
        with locked(self.config.state.dir, DAEMON_LOCK):
            return self._serve()

    def _serve(self) -> int:
        self.start()
        sd_notify("READY=1\nSTATUS=scheduling")
        next_beat = time.monotonic()
        while self._stop_signal is None:
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
                next_beat = time.monotonic()
            if time.monotonic() >= next_beat:
                self._heartbeat("running")
                next_beat += self.config.schedule.heartbeat_interval.total_seconds()
            time.sleep(0.2)
        log.info("%s: stopping", signal.Signals(self._stop_signal).name)
        sd_notify("STOPPING=1")
        self.stop()
        return 0

    def start(self) -> None:
        resume_abandoned(self.config.state.dir)
        self.scheduler.start()
        self._build_jobs(catch_up=True)
        self._heartbeat("running")
        log.info("zsnap daemon started (pid %d, config %s)", os.getpid(),
                 config_module.config_path(self.config_path))

    def stop(self) -> None:
        """Take no new runs, and wait for the running ones: never cut a job short, since a
        snapshot may hold replay paused."""
        log.info("waiting for running jobs to finish: %s", ", ".join(self._running_jobs()) or
                 "none")
        self._heartbeat("stopping")
        self.scheduler.shutdown(wait=True)
        self._heartbeat("stopped")
        log.info("zsnap daemon stopped")

    def _running_jobs(self) -> list[str]:
        with self._running_lock:
            return sorted(self._running)

    def _reload(self) -> None:
        sd_notify("RELOADING=1")
        try:
            config = config_module.load(self.config_path)
            claim(config.state.dir, config.snapshot.cluster)
            self.config = config
        except ConfigError as e:
            log.error("SIGHUP: config not reloaded, keeping the previous one: %s", e)
        else:
            self._build_jobs()
            log.info("SIGHUP: config reloaded")
        sd_notify("READY=1")

    def _build_jobs(self, catch_up: bool = False) -> None:
        """Replace every job by the ones the current config names. A run in progress goes on;
        its job id stays counted, so the rebuilt job still runs one instance at a time.

        With `catch_up` (at start), a job whose run fell due while no daemon was running, less
        than the misfire grace ago and with no run recorded since, runs at once (as anacron
        would): jobs live in memory, so a reboot at 03:00 must not skip the 03:00 snapshot."""
        self.scheduler.remove_all_jobs()
        zone = schedule_zone(self.config)
        grace = self.config.schedule.misfire_grace
        history = History(self.config.state.dir)
        for job, expr in crons(self.config).items():
            if is_off(expr):
                continue
            trigger = cron_trigger(expr, zone)
            options: dict[str, Any] = {}
            if catch_up:
                now = datetime.now(zone)
                since = now - grace
                last = history.last(job)
                if last is not None and last.started_at > since:
                    since = last.started_at
                due = trigger.get_next_fire_time(None, since + timedelta(seconds=1))
                if due is not None and due <= now:
                    log.warning("%s: the run due at %s did not happen (no daemon running); "
                                "running it now", job, due)
                    options["next_run_time"] = now
            self.scheduler.add_job(
                self._run_job, trigger, args=[job], id=job, name=job,
                misfire_grace_time=int(grace.total_seconds()), coalesce=True, max_instances=1,
                replace_existing=True, **options,
            )
            log.info("job %s scheduled: %s", job, expr)

    def _run_job(self, job: str) -> None:
        cfg = self.config
        log.info("%s: started", job)
        t0 = time.monotonic()
        with self._running_lock:
            self._running.add(job)
        try:
            outcome = JOBS[job](cfg).run(cfg.state.dir, origin="daemon")
            outcome.value()
        except ZsnapError as e:
            log.error("%s failed after %.1f s: %s", job, time.monotonic() - t0, e)
            return
        finally:
            with self._running_lock:
                self._running.discard(job)
        log.info("%s: done in %.1f s: %s", job, time.monotonic() - t0, outcome.detail)

    def _on_missed(self, event: JobEvent) -> None:
        late = datetime.now(UTC) - event.scheduled_run_time
        log.warning("%s: the run due at %s was missed (%.0f s late, beyond the misfire grace)",
                    event.job_id, event.scheduled_run_time, late.total_seconds())
        History(self.config.state.dir).record(
            event.job_id, MISSED, started=event.scheduled_run_time, duration_s=0,
            detail=f"not started within the misfire grace ({late.total_seconds():.0f} s late)",
            origin="daemon",
        )

    def _on_max_instances(self, event: JobEvent) -> None:
        log.warning("%s: the previous run is still going; this run is skipped", event.job_id)
        History(self.config.state.dir).record(
            event.job_id, BUSY, started=datetime.now(UTC), duration_s=0,
            detail="the previous run was still going", origin="daemon",
        )

    def _on_error(self, event: JobExecutionEvent) -> None:
        # Expected failures are ZsnapErrors, handled in _run_job; this is a bug.
        log.error("%s crashed: %r\n%s", event.job_id, event.exception, event.traceback)

    def _heartbeat(self, state: str) -> None:
        jobs = {
            job.id: {
                "next_run": job.next_run_time.isoformat() if job.next_run_time else None,
                "trigger": str(job.trigger),
            }
            for job in self.scheduler.get_jobs()
        } if self.scheduler.running else {}
        data = {
            "pid": os.getpid(),
            "state": state,
            "started": self.started.isoformat(),
            "updated": datetime.now(UTC).isoformat(),
            "config": str(config_module.config_path(self.config_path)),
            "jobs": jobs,
            "running": self._running_jobs(),
        }
        state_dir = self.config.state.dir
        try:
            heartbeat.write(state_dir, data)
        except OSError as e:
            log.error("heartbeat not written to %s: %s", state_dir, e)
