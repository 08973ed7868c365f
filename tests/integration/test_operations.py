"""Running unattended, on a real lab: prune and WAL prune, `zsnap check` for real conditions,
and the real `zsnap daemon` process (cron firing, SIGHUP, SIGTERM during a snapshot).

Each test uses a cluster name of its own, so sets of one never count in another."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, running_lab, sql
from tests.integration.faults import wrapped_zfs
from zsnap.lab import LabInfo

ZERO_RETENTION = {"hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "min_sets": 1}
QUIET_CHECKS = {"verify_age_warning": "off", "verify_age_critical": "off",
                "heartbeat_age_critical": "off"}


@pytest.fixture(scope="module")
def ops_lab() -> Iterator[LabInfo]:
    with running_lab("o") as info:
        yield info


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(info: LabInfo, path: Path, cluster: str,
                 **sections: dict[str, object]) -> Path:
    """The lab's config with a cluster and state directory of its own, plus `sections`."""
    data: dict[str, dict[str, Any]] = tomllib.loads(info.config_file.read_text())
    data["snapshot"]["cluster"] = cluster
    data["state"]["dir"] = str(path.parent / "state")
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
        for name, values in data.items()
    ))
    return path


def primary_sql(info: LabInfo, statement: str) -> Any:
    return sql(info, "primary", statement)


def standby_sql(info: LabInfo, statement: str) -> Any:
    return sql(info, "standby", statement)


def advance_wal(info: LabInfo) -> None:
    """A checkpoint and a segment switch on the primary, replayed by the standby, so that the
    next set has a later redo segment and the archive a new segment."""
    primary_sql(info, "INSERT INTO lab_a (payload) VALUES ('x')")
    primary_sql(info, "CHECKPOINT")
    target = primary_sql(info, "SELECT pg_switch_wal()::text")
    deadline = time.monotonic() + 120
    while standby_sql(info, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") is not True:
        assert time.monotonic() < deadline, "standby did not replay"
        time.sleep(0.1)
    segment = primary_sql(info, f"SELECT pg_walfile_name('{target}'::pg_lsn)")
    while not (info.archive / segment).exists():
        assert time.monotonic() < deadline, f"{segment} not archived"
        time.sleep(0.1)


def snapshots_of(set_id: str) -> list[str]:
    out = subprocess.run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name"],
                         capture_output=True, text=True, check=True).stdout
    return [n for n in out.split() if n.endswith(f"@zsnap_{set_id}")]


# --- prune and WAL prune -----------------------------------------------------------------------


def test_prune_whole_sets_then_wal_prune(ops_lab: LabInfo, tmp_path: Path) -> None:
    cli = Cli(write_config(ops_lab, tmp_path / "zsnap.toml", "opsprune",
                           retention=ZERO_RETENTION))
    ids = []
    for _ in range(4):
        advance_wal(ops_lab)
        ids.append(cli.json("snapshot")["id"])
    s0, s1, s2, s3 = ids
    members = {i: snapshots_of(i) for i in ids}
    assert all(len(m) == 3 for m in members.values())
    # s1 is held (as a clone holds its origin); s0 loses a member by hand.
    held = members[s1][1]
    subprocess.run(["zfs", "hold", "zsnap-clone-test", held], check=True)
    subprocess.run(["zfs", "destroy", members[s0][2]], check=True)
    try:
        plan = {s["id"]: s for s in cli.json("prune", "--dry-run")["sets"]}
        assert {i for i, s in plan.items() if not s["keep"]} == {s0, s2}
        assert "incomplete" in plan[s0]["reasons"][0]
        assert plan[s1]["reasons"][0].startswith("protected: 1 hold(s)")
        assert "newest set" in plan[s3]["reasons"]
        assert all(snapshots_of(i) for i in ids), "a dry run destroys nothing"
        human = cli("prune", "--dry-run").stdout
        assert "would" in human and "outside" in human  # (rich wraps at 80 columns)

        result = {s["id"]: s for s in cli.json("prune")["sets"]}
        assert sorted(result[s2]["destroyed"]) == sorted(members[s2])
        assert snapshots_of(s0) == [] and snapshots_of(s2) == []
        assert sorted(snapshots_of(s1)) == sorted(members[s1])
        assert sorted(snapshots_of(s3)) == sorted(members[s3])
        assert [s["id"] for s in cli.json("list")["sets"]] == [s1, s3]
    finally:
        subprocess.run(["zfs", "release", "zsnap-clone-test", held], check=True)
    last = cli.json("history", "--job", "prune")[-1]
    assert last["outcome"] == "ok" and last["data"]["pruned"] == [s0, s2]

    # WAL: everything before s1's redo segment goes, except history and backup files.
    s1_set = cli.json("show", s1)
    cutoff = primary_sql(ops_lab, f"SELECT pg_walfile_name('{s1_set['redo_lsn']}'::pg_lsn)")
    history = ops_lab.archive / "00000001.history"  # never requested by the standby
    history.write_text("")
    partial = ops_lab.archive / "000000010000000000000001.partial"
    partial.write_text("")
    try:
        names = sorted(p.name for p in ops_lab.archive.iterdir())
        old = [n for n in names if len(n) >= 24 and n[8:24] < cutoff[8:]
               and not n.endswith(".backup")]
        backups = [n for n in names if n.endswith(".backup")]
        assert old and backups
        dry = cli.json("wal", "prune", "--dry-run")
        assert dry["cutoff"] == cutoff and sorted(dry["removed"]) == old
        assert all((ops_lab.archive / n).exists() for n in old)
        done = cli.json("wal", "prune")
        assert sorted(done["removed"]) == old
        left = {p.name for p in ops_lab.archive.iterdir()}
        assert not left & set(old)
        assert history.name in left and set(backups) <= left
        assert cutoff in left
        check = cli.json("wal", "check")
        assert check["ok"] and check["start"] == cutoff
    finally:
        history.unlink(missing_ok=True)


# --- zsnap check ---------------------------------------------------------------------------------


def test_check_reports_real_conditions(ops_lab: LabInfo, tmp_path: Path) -> None:
    config = tmp_path / "zsnap.toml"
    cli = Cli(write_config(ops_lab, config, "opscheck", check=QUIET_CHECKS))
    advance_wal(ops_lab)
    first = cli.json("snapshot")
    for _ in range(2):
        advance_wal(ops_lab)
    cli("snapshot")

    prom = tmp_path / "metrics" / "zsnap.prom"
    prom.parent.mkdir()  # node_exporter's textfile directory: zsnap makes none
    ok = cli("check", "--nagios", "--prometheus", str(prom), check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ZSNAP OK - 11 checks OK | ")
    assert "'newest_set_age_seconds'=" in ok.stdout
    text = prom.read_text()
    assert 'zsnap_check_status{cluster="opscheck",check="wal_archive"} 0' in text
    assert "zsnap_pool_free_percent{" in text
    # What the Grafana dashboard charts, but for what this config does not monitor.
    from tests.unit.test_dashboard import dashboard_metrics
    written = set(re.findall(r"^zsnap_([a-z_]+)\{", text, re.MULTILINE))
    assert dashboard_metrics() - written == {
        "verification_age_seconds", "verification_passed", "heartbeat_age_seconds"}

    # A stale set: the newest is older than a one-second threshold.
    time.sleep(1.5)
    stale = Cli(write_config(ops_lab, tmp_path / "stale" / "zsnap.toml", "opscheck",
                             check={**QUIET_CHECKS, "set_age_critical": "1s"}))
    proc = stale("check", "--nagios", check=False)
    assert proc.returncode == 2 and proc.stdout.startswith("ZSNAP CRITICAL - newest_set: newest")
    human = stale("check", check=False)
    assert human.returncode == 2 and "CRITICAL" in human.stdout

    # Replay paused by hand: no zsnap holds the snapshot lock.
    standby_sql(ops_lab, "SELECT pg_wal_replay_pause()")
    try:
        proc = cli("check", "--json", check=False)
        checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
        assert proc.returncode == 2
        assert checks["replay_paused"]["status"] == "CRITICAL"
        assert "no zsnap paused it" in checks["replay_paused"]["summary"]
        assert "pg_wal_replay_resume()" in checks["replay_paused"]["hint"]
    finally:
        standby_sql(ops_lab, "SELECT pg_wal_replay_resume()")
    assert cli("check", check=False).returncode == 0

    # A WAL gap: an archived segment between the oldest set's redo and the newest one.
    start = primary_sql(ops_lab, f"SELECT pg_walfile_name('{first['redo_lsn']}'::pg_lsn)")
    segments = sorted(p.name for p in ops_lab.archive.iterdir()
                      if len(p.name) == 24 and p.name >= start)
    victim = segments[1]
    moved = tmp_path / victim
    (ops_lab.archive / victim).rename(moved)
    try:
        gap = cli("wal", "check", "--json", check=False)
        assert gap.returncode == 1
        report = json.loads(gap.stdout)
        assert report["gaps"] == [{"timeline": 1, "first": victim, "last": victim, "count": 1}]
        proc = cli("check", "--nagios", check=False)
        assert proc.returncode == 2
        assert f"wal_archive: 1 missing on timeline 1: {victim}" in proc.stdout
        assert "'wal_missing_segments'=1;;" in proc.stdout
    finally:
        moved.rename(ops_lab.archive / victim)
    assert cli("wal", "check", check=False).returncode == 0
    entries = cli.json("history", "--job", "check")
    assert [e["outcome"] for e in entries][:2] == ["ok", "critical"]


# --- the daemon process --------------------------------------------------------------------------


def wait_for(what: str, predicate: Any, timeout: float = 120, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


def history_of(state: Path, job: str) -> list[dict[str, Any]]:
    path = state / "history.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["what"] == job]


def heartbeat(state: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state / "daemon.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def check_results(cli: Cli) -> dict[str, dict[str, Any]]:
    proc = cli("check", "--json", check=False)
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


def test_daemon_fires_reloads_and_stops_cleanly(ops_lab: LabInfo, tmp_path: Path) -> None:
    config = tmp_path / "zsnap.toml"
    state = tmp_path / "state"
    frequent = {"snapshot": "*/4 * * * * *", "prune": "off", "heartbeat_interval": "1s"}
    checks = {"verify_age_warning": "off", "verify_age_critical": "off"}
    write_config(ops_lab, config, "opsdaemon", schedule=frequent, check=checks)
    cli = Cli(config)
    log_path = tmp_path / "daemon.log"
    # Once `slow` exists, each `zfs snapshot` takes a second: the window in which SIGTERM
    # finds a snapshot running (replay paused) is wide and not a race with a fast machine.
    slow = tmp_path / "slow"
    env = {**wrapped_zfs(tmp_path, f'[ "$1" = snapshot ] && [ -e {slow} ] && sleep 1'),
           "JOURNAL_STREAM": "8:12345"}
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zsnap", "--config", str(config), "daemon"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
    try:
        # With no run in the history, the run due last (within the misfire grace) is caught
        # up at once; then jobs fire at their cron times: every fourth second.
        def ok_runs() -> list[dict[str, Any]]:
            runs = [r for r in history_of(state, "snapshot") if r["outcome"] == "ok"]
            return runs if len(runs) >= 3 else []

        runs = wait_for("three snapshots", ok_runs)
        assert "did not happen (no daemon running); running it now" in log_path.read_text()
        for r in runs[1:3]:
            assert datetime.fromisoformat(r["started"]).second % 4 == 0, r
            assert r["origin"] == "daemon" and r["detail"].startswith("set ")
        status = check_results(cli)
        assert status["scheduler"]["status"] == "OK", status["scheduler"]
        assert wait_for("heartbeat", lambda: heartbeat(state).get("jobs", {}).get("snapshot"))
        second = cli("daemon", check=False, timeout=60)
        assert second.returncode == 3 and "another zsnap daemon is running" in second.stderr
        # Logging for the journal: syslog priorities, no timestamps.
        assert "<6>zsnap.daemon: job snapshot scheduled: */4 * * * * *" in log_path.read_text()

        # SIGHUP with a broken config: refused, the jobs stay as they were.
        config.write_text(config.read_text().replace('"*/4 * * * * *"', '"not a cron"'))
        proc.send_signal(signal.SIGHUP)
        wait_for("refusal", lambda: "config not reloaded" in log_path.read_text())
        assert proc.poll() is None

        # SIGHUP with a new schedule: snapshots once a year, prune every third second.
        write_config(ops_lab, config, "opsdaemon", check=checks, retention=ZERO_RETENTION,
                     schedule={"snapshot": "0 0 1 1 *", "prune": "*/3 * * * * *",
                               "heartbeat_interval": "1s"})
        proc.send_signal(signal.SIGHUP)
        next_year = f"{datetime.now().year + 1}-01-01T00:00:00"
        wait_for("rebuilt jobs", lambda: (heartbeat(state).get("jobs", {}).get("snapshot", {})
                                          .get("next_run") or "").startswith(next_year))
        pruned = wait_for("a prune", lambda: [
            r for r in history_of(state, "prune") if r["outcome"] == "ok" and r["data"]["pruned"]])
        assert pruned[0]["origin"] == "daemon"
        assert len(cli.json("list")["sets"]) == 1, "pruned to the newest set, each set whole"

        # SIGTERM while replay is paused for a snapshot: the snapshot finishes first.
        write_config(ops_lab, config, "opsdaemon", schedule=frequent, check=checks)
        proc.send_signal(signal.SIGHUP)
        marker = state / "replay-paused.json"
        slow.touch()
        wait_for("a paused replay window", marker.exists, timeout=60, step=0.005)
        terminated = datetime.now(UTC)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_text = log_path.read_text()
    assert "waiting for running jobs to finish: snapshot" in log_text
    last = history_of(state, "snapshot")[-1]
    finished = datetime.fromisoformat(last["started"]) + timedelta(seconds=last["duration_s"])
    assert last["outcome"] == "ok" and finished > terminated
    assert not marker.exists()
    assert standby_sql(ops_lab, "SELECT pg_get_wal_replay_pause_state()") == "not paused"
    assert heartbeat(state)["state"] == "stopped"
    status = check_results(cli)
    assert status["scheduler"]["status"] == "CRITICAL"
    assert "stopped" in status["scheduler"]["summary"]


def test_the_prune_job_prunes_the_wal_archive_too(ops_lab: LabInfo, tmp_path: Path) -> None:
    # The daemon's prune job, as the scheduler runs it, with [retention] prune_wal = true.
    from zsnap import config
    from zsnap.daemon import prune_job

    path = write_config(ops_lab, tmp_path / "zsnap.toml", "opsprunewal",
                        retention={**ZERO_RETENTION, "prune_wal": True})
    ids = []
    for _ in range(2):
        advance_wal(ops_lab)
        ids.append(Cli(path).json("snapshot")["id"])
    redo = Cli(path).json("show", ids[1])["redo_lsn"]
    cutoff = primary_sql(ops_lab, f"SELECT pg_walfile_name('{redo}'::pg_lsn)")
    before = [p.name for p in ops_lab.archive.iterdir() if len(p.name) == 24]
    assert any(n < cutoff for n in before)

    cfg = config.load(path)
    outcome = prune_job(cfg).run(cfg.state.dir, origin="daemon")
    assert [v.set.id for v in outcome.value().pruned] == [ids[0]]
    left = [p.name for p in ops_lab.archive.iterdir() if len(p.name) == 24]
    assert cutoff in left and not any(n < cutoff for n in left)
    removed = len([n for n in before if n < cutoff])
    assert outcome.detail == f"1 set(s) pruned, {removed} WAL file(s) removed"
    [entry] = Cli(path).json("history", "--job", "prune")
    assert entry["origin"] == "daemon" and entry["data"]["pruned"] == [ids[0]]
