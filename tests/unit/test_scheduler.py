"""The daemon's scheduling, in process, with a stand-in job that records when it ran (the real
jobs run against a lab in tests/integration/test_ops_daemon.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED

from zsnap import daemon as daemon_module
from zsnap.daemon import Daemon, plan
from zsnap.history import History
from zsnap.jobs import Job


def write_config(path: Path, schedule: str) -> Path:
    path.write_text(f'[state]\ndir = "{path.parent / "state"}"\n[schedule]\n{schedule}\n')
    return path


@pytest.fixture
def fired(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    times: list[datetime] = []
    monkeypatch.setattr(daemon_module, "JOBS", {"snapshot": recorder(times, 0),
                                                "prune": recorder([], 0, "prune")})
    yield times


def recorder(times: list[datetime], seconds: float,
             what: str = "snapshot") -> Callable[[Any], Job[None]]:
    def work() -> None:
        times.append(datetime.now(UTC))
        time.sleep(seconds)

    return lambda cfg: Job(what, work, lambda _: {"detail": "ran"})


def run_for(d: Daemon, seconds: float) -> None:
    d.start()
    try:
        time.sleep(seconds)
    finally:
        d.stop()


def test_jobs_fire_at_their_cron_times(tmp_path: Path, fired: list[datetime]) -> None:
    # A grace of one second: no run to catch up at start (see the catch-up test).
    cfg = write_config(tmp_path / "z.toml",
                       'snapshot = "*/2 * * * * *"\nprune = "off"\nmisfire_grace = "1s"')
    d = Daemon(cfg)
    scheduled: list[datetime] = []
    d.scheduler.add_listener(lambda e: scheduled.append(e.scheduled_run_time), EVENT_JOB_EXECUTED)
    run_for(d, 5.2)
    assert len(fired) >= 2
    # Every run was due on an even second, as the cron string says. (When it really started
    # depends on the machine's load, so that is not asserted.)
    assert len(scheduled) == len(fired)
    assert all(t.second % 2 == 0 and t.microsecond == 0 for t in scheduled), scheduled
    entries = History(tmp_path / "state").entries("snapshot")
    assert len(entries) == len(fired)
    assert all(e.outcome == "ok" and e.origin == "daemon" and e.detail == "ran" for e in entries)
    beat = (tmp_path / "state" / "daemon.json").read_text()
    assert '"state": "stopped"' in beat


def test_one_instance_at_a_time_and_stop_waits(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    times: list[datetime] = []
    done = threading.Event()

    def work() -> None:
        times.append(datetime.now(UTC))
        time.sleep(2.5)
        done.set()

    def slow(cfg: Any) -> Job[None]:
        return Job("snapshot", work, lambda _: {})

    monkeypatch.setattr(daemon_module, "JOBS", {"snapshot": slow})
    cfg = write_config(tmp_path / "z.toml", 'snapshot = "* * * * * *"\nprune = "off"')
    d = Daemon(cfg)
    d.start()
    time.sleep(1.5)
    d.stop()  # a run is going: stop returns only when it is done
    assert done.is_set()
    assert len(times) == 1
    outcomes = [e.outcome for e in History(tmp_path / "state").entries("snapshot")]
    assert "busy" in outcomes and outcomes[-1] == "ok"


def test_a_run_due_while_no_daemon_ran_is_caught_up(tmp_path: Path,
                                                   fired: list[datetime]) -> None:
    # Daily at midnight, with a grace of two days: the last midnight is within it.
    cfg = write_config(tmp_path / "z.toml",
                       'snapshot = "0 0 * * *"\nprune = "off"\nmisfire_grace = "2d"')
    run_for(Daemon(cfg), 1.0)
    assert len(fired) == 1
    # It ran since: the next start has nothing to catch up.
    run_for(Daemon(cfg), 1.0)
    assert len(fired) == 1


def test_plan_lists_next_runs_of_every_job(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "z.toml",
                       'snapshot = "0 3 * * 0"\nverify = "@weekly"\ntimezone = "UTC"')
    from zsnap import config

    now = datetime(2026, 11, 21, tzinfo=UTC)  # Saturday
    jobs = {p.job: p for p in plan(config.load(cfg), now, 2)}
    assert [t.isoformat() for t in jobs["snapshot"].next_runs] == [
        "2026-11-22T03:00:00+00:00", "2026-11-29T03:00:00+00:00"]
    assert jobs["prune"].next_runs[0] - now == timedelta(minutes=30)  # the default: hourly
    assert [t.weekday() for t in jobs["verify"].next_runs] == [6, 6]  # @weekly: Sundays


def test_a_run_the_scheduler_could_not_start_within_the_grace_is_recorded_as_missed(
        tmp_path: Path, fired: list[datetime]) -> None:
    # A machine suspended, or a scheduler starved, past a run's time: the late run is not
    # silently dropped, it is logged and recorded as missed (the catch-up covers no daemon).
    cfg = write_config(tmp_path / "z.toml",
                       'snapshot = "*/5 * * * * *"\nprune = "off"\nmisfire_grace = "1s"')
    d = Daemon(cfg)
    d.start()
    try:
        d.scheduler.pause()  # stands in for the stall
        now = datetime.now(UTC)
        due = now.replace(microsecond=0) + timedelta(seconds=5 - now.second % 5)
        time.sleep((due - now).total_seconds() + 2.5)  # due, and now more than the grace late
        d.scheduler.resume()
        time.sleep(1.0)
    finally:
        d.stop()
    assert due not in [t.replace(microsecond=0) for t in fired]
    missed = [e for e in History(tmp_path / "state").entries("snapshot") if e.outcome == "missed"]
    assert [datetime.fromisoformat(e.started) for e in missed] == [due], missed
    assert "misfire grace" in missed[0].detail
