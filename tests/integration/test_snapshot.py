"""Snapshot sets on the real lab: the frozen-replay protocol under concurrent writes to both
pools, the catalog read back from ZFS, the lock, a kill -9 while replay is paused, a partial
set cleaned up, and a tablespace off ZFS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.faults import wrapped_zfs
from zsnap.catalog import new_set_id, snapshot_name
from zsnap.lab import Lab, LabInfo, LoadWriter
from zsnap.lock import SNAPSHOT_LOCK, locked
from zsnap.lsn import Lsn
from zsnap.pg.replay import MARKER
from zsnap.runner import Runner
from zsnap.zfs import Zfs, pool_of


def standby(info: LabInfo) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(info.conninfo("standby"), autocommit=True)


def one(conn: psycopg.Connection[tuple[Any, ...]], sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def replay_state(info: LabInfo) -> str:
    with standby(info) as conn:
        return str(one(conn, "SELECT pg_get_wal_replay_pause_state()"))


def zfs_prop(name: str, prop: str) -> str:
    argv = ["zfs", "get", "-H", "-o", "value", prop, name]
    return Runner().run(argv, mutates=False).stdout.strip()


def wide_list(info: LabInfo, *args: str) -> str:
    """`zsnap list` for people, on a terminal wide enough that rich truncates no column."""
    return subprocess.run(
        [sys.executable, "-m", "zsnap", "--config", str(info.config_file), "list", *args],
        capture_output=True, text=True, timeout=300, check=True,
        env={**os.environ, "COLUMNS": "250"},
    ).stdout


def destroy_set(info: LabInfo, set_id: str) -> None:
    zfs = Zfs(Runner())
    for dataset in info.datasets:
        name = f"{dataset}@{snapshot_name(set_id)}"
        if zfs.exists(name):
            zfs.destroy(name)


@pytest.fixture(scope="module")
def sets_under_load(lab: LabInfo) -> Iterator[list[dict[str, Any]]]:
    """Three sets taken by the real CLI while rows are committed into both pools."""
    writer = LoadWriter(lab.conninfo("primary")).start()
    taken: list[dict[str, Any]] = []
    try:
        time.sleep(1)
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, "-m", "zsnap", "--config", str(lab.config_file), "snapshot",
                 "--json"], capture_output=True, text=True, timeout=300, check=True,
            ).stdout
            taken.append(json.loads(out))
            time.sleep(1)
    finally:
        committed = writer.stop()
    assert committed > 0
    yield taken


def test_sets_under_load_are_complete_and_ordered(
    lab: LabInfo, sets_under_load: list[dict[str, Any]]
) -> None:
    control = f"{lab.pools[0]}/pgdata"
    for s in sets_under_load:
        assert s["complete"] is True and s["missing"] == []
        assert s["datasets"][0] == control
        assert sorted(s["datasets"]) == sorted(lab.datasets)
        # One run of datasets per pool: one zfs snapshot call per pool, control pool first.
        pools = [pool_of(d) for d in s["datasets"]]
        assert pools == sorted(pools, key=pools.index)
        assert pools[0] == pool_of(control)
    ids = [s["id"] for s in sets_under_load]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_set_metadata_is_sane(lab: LabInfo, sets_under_load: list[dict[str, Any]]) -> None:
    with standby(lab) as conn:
        sysid = int(one(conn, "SELECT system_identifier FROM pg_control_system()"))
        timeline = int(one(conn, "SELECT timeline_id FROM pg_control_checkpoint()"))
        replayed = Lsn.parse(str(one(conn, "SELECT pg_last_wal_replay_lsn()::text")))
        assert one(conn, "SELECT pg_get_wal_replay_pause_state()") == "not paused"
    previous = Lsn(0)
    for s in sets_under_load:
        redo, checkpoint = Lsn.parse(s["redo_lsn"]), Lsn.parse(s["checkpoint_lsn"])
        consistent = Lsn.parse(s["consistent_lsn"])
        assert redo <= checkpoint <= consistent <= replayed
        assert consistent >= previous  # later sets are consistent later
        previous = consistent
        assert s["timeline"] == timeline
        assert s["system_identifier"] == sysid
        assert isinstance(s["pause_ms"], int) and s["pause_ms"] >= 0
        # Rows were committed on the primary meanwhile: a commit was replayed into each set.
        stamp = datetime.fromisoformat(s["replay_timestamp"])
        assert stamp.utcoffset() is not None
        created = datetime.fromisoformat(s["created"])
        assert created.utcoffset() is not None
        assert stamp <= created + timedelta(seconds=1)


def test_list_and_show_read_back_from_zfs(
    lab: LabInfo, cli: Any, sets_under_load: list[dict[str, Any]]
) -> None:
    listed = {s["id"]: s for s in cli.json("list")["sets"]}
    keys = ["created", "timeline", "redo_lsn", "checkpoint_lsn", "consistent_lsn",
            "replay_timestamp", "system_identifier", "datasets", "pause_ms", "complete"]
    for s in sets_under_load:
        assert {k: listed[s["id"]][k] for k in keys} == {k: s[k] for k in keys}
        shown = cli.json("show", s["id"])
        assert {k: shown[k] for k in keys} == {k: s[k] for k in keys}
        assert next(p["dataset"] for p in shown["layout"]) == s["datasets"][0]
        # The metadata lives on the snapshots themselves.
        for dataset in s["datasets"]:
            snap = f"{dataset}@{snapshot_name(s['id'])}"
            assert zfs_prop(snap, "zsnap:consistent_lsn") == s["consistent_lsn"]
            assert zfs_prop(snap, "zsnap:members") == ",".join(s["datasets"])
            assert zfs_prop(snap, "zsnap:pause_ms") == str(s["pause_ms"])
    human = wide_list(lab)
    assert all(s["id"] in human for s in sets_under_load)


def test_a_set_missing_a_member_is_incomplete(lab: LabInfo, cli: Any) -> None:
    s = cli.json("snapshot")
    victim = f"{s['datasets'][-1]}@{snapshot_name(s['id'])}"
    try:
        Zfs(Runner()).destroy(victim)
        # `list` reads a set from its control-file member; --all-members looks at them all.
        listed = {x["id"]: x for x in cli.json("list", "--all-members")["sets"]}[s["id"]]
        assert listed["complete"] is False
        assert listed["missing"] == [victim]
        assert cli.json("show", s["id"])["complete"] is False
        assert "INCOMPLETE (1 missing)" in wide_list(lab, "--all-members")
        # Never chosen: a clone of it would skip it.
        with_it = cli("clone", "--set", s["id"], "--dry-run", check=False)
        assert with_it.returncode != 0 and "incomplete" in with_it.stderr, with_it.stderr
    finally:
        destroy_set(lab, s["id"])


def test_dry_run_pauses_nothing_and_takes_nothing(lab: LabInfo, cli: Any) -> None:
    before = {s["id"] for s in cli.json("list")["sets"]}
    plan = cli.json("snapshot", "--dry-run")
    assert plan["dry_run"] is True and plan["pause_replay"] is True
    assert plan["datasets"][0] == f"{lab.pools[0]}/pgdata"
    assert [n for call in plan["calls"] for n in call] == [
        f"{d}@{snapshot_name(plan['id'])}" for d in plan["datasets"]
    ]
    assert {s["id"] for s in cli.json("list")["sets"]} == before
    assert not any(Zfs(Runner()).exists(n) for call in plan["calls"] for n in call)
    assert not (lab.root / "state" / MARKER).exists()


def test_a_second_run_gets_lock_busy(lab: LabInfo, cli: Any) -> None:
    with locked(lab.root / "state", SNAPSHOT_LOCK):
        proc = cli("snapshot", check=False)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"another zsnap snapshot is running (pid {os.getpid()})" in lines[0]
    assert replay_state(lab) == "not paused"


def test_an_operators_pause_is_kept(lab: LabInfo, cli: Any) -> None:
    """Issue 10, item 1: a DBA froze replay (to keep a DROP from being replayed, say); a set
    is taken where replay stands, and replay stays paused, by `snapshot` and every command."""
    with standby(lab) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            proc = cli("snapshot", "--json", check=False)
            assert proc.returncode == 0, proc.stderr
            s = json.loads(proc.stdout)
            assert s["complete"] is True
            assert "already paused (not by this zsnap)" in proc.stderr
            assert one(conn, "SELECT pg_get_wal_replay_pause_state()") == "paused"
            assert Lsn.parse(s["consistent_lsn"]) == Lsn.parse(
                one(conn, "SELECT pg_last_wal_replay_lsn()::text"))
            cli("list")
            cli("doctor", check=False)
            assert one(conn, "SELECT pg_get_wal_replay_pause_state()") == "paused"
            assert not (lab.root / "state" / MARKER).exists()
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")


def test_one_set_at_a_time_per_standby_whatever_the_state_dir(
    lab: LabInfo, cli: Any, tmp_path: Any
) -> None:
    """Issue 10, item 1: another zsnap with another [state] dir on the same standby is held
    off by the standby itself (an advisory lock), not only by the state dir's lock file."""
    key = 0x7A736E6170
    with standby(lab) as conn:
        assert one(conn, f"SELECT pg_try_advisory_lock({key})") is True
        try:
            proc = cli("snapshot", check=False)
        finally:
            conn.execute(f"SELECT pg_advisory_unlock({key})")
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "another zsnap is taking a snapshot set of this standby" in \
        lines[0], lines
    assert replay_state(lab) == "not paused"


def test_kill_9_while_paused_then_next_command_resumes(lab: LabInfo, cli: Any) -> None:
    """SIGKILL a real `zsnap snapshot` inside its paused window; the next command resumes."""
    marker = lab.root / "state" / MARKER
    writer = LoadWriter(lab.conninfo("primary")).start()
    landed = 0
    try:
        with standby(lab) as conn:
            for _attempt in range(6):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "zsnap", "--config", str(lab.config_file), "snapshot"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                paused = False
                while proc.poll() is None:
                    if one(conn, "SELECT pg_get_wal_replay_pause_state()") == "paused":
                        proc.send_signal(signal.SIGKILL)
                        paused = True
                        break
                    time.sleep(0.002)
                proc.wait(timeout=60)
                if not paused or proc.returncode != -signal.SIGKILL:
                    cli("list")  # the run finished first; make sure nothing is left paused
                    continue
                landed += 1
                # Nobody resumed it: the kill came inside the window.
                time.sleep(0.5)
                assert one(conn, "SELECT pg_get_wal_replay_pause_state()") == "paused"
                assert marker.exists()
                assert json.loads(marker.read_text())["pid"] == proc.pid
                cli("list")
                assert one(conn, "SELECT pg_get_wal_replay_pause_state()") == "not paused"
                assert not marker.exists()
                if landed >= 2:
                    break
    finally:
        writer.stop()
    assert landed >= 1, "the kill never landed while replay was paused"


def test_the_calls_after_the_control_file_one_are_made_together(
    lab: LabInfo, cli: Any, tmp_path: Path
) -> None:
    """On a busy pool each `zfs snapshot` waits for a transaction group: after the control-file
    dataset's call, the others run at once (docs/protocol.md, step 5). Each call is held half
    a second here and says when it began and ended."""
    real = shutil.which("zfs")
    calls = tmp_path / "calls"
    env = wrapped_zfs(tmp_path, f"""if [ "$1" = snapshot ]; then
    began=$(date +%s.%N); sleep 0.5; {real} "$@"; rc=$?
    for last in "$@"; do :; done
    echo "$began $(date +%s.%N) $last" >> {calls}; exit $rc
fi""")
    taken = cli.json("snapshot", env=env)
    assert taken["complete"] is True
    spans = {line.split()[2].split("@")[0]: (float(line.split()[0]), float(line.split()[1]))
             for line in calls.read_text().splitlines()}
    control, *others = taken["datasets"]
    assert set(spans) == {control, *others} and len(others) == 2
    assert all(spans[control][1] <= spans[d][0] for d in others)  # the control-file one first
    assert max(spans[d][0] for d in others) < min(spans[d][1] for d in others)  # overlapping
    destroy_set(lab, taken["id"])


def test_failure_on_a_later_pool_removes_only_what_this_run_took(
    lab: LabInfo, cli: Any
) -> None:
    """Snapshot names already taken on the second pool (made here for the next seconds) make
    that pool's call fail after the first pool's succeeded."""
    zfs = Zfs(Runner())
    other = f"{lab.pools[1]}/ts2"
    start = datetime.now(UTC)
    blockers = [
        f"{other}@{snapshot_name(new_set_id(start + timedelta(seconds=i)))}" for i in range(40)
    ]
    try:
        for name in blockers:
            zfs.run("snapshot", name, mutates=True)
        before = {s["id"] for s in cli.json("list")["sets"]}
        proc = cli("snapshot", check=False)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "already exists" in lines[0] and "removed the 2 member(s) already taken" in lines[0]
        set_id = lines[0].split("snapshot set ")[1].split()[0]
        assert f"{other}@{snapshot_name(set_id)}" in blockers
        for dataset in lab.datasets:
            if dataset != other:
                assert not zfs.exists(f"{dataset}@{snapshot_name(set_id)}")
        assert all(zfs.exists(name) for name in blockers)  # not ours: left alone
        assert {s["id"] for s in cli.json("list")["sets"]} == before
        assert replay_state(lab) == "not paused"
        assert not (lab.root / "state" / MARKER).exists()
    finally:
        for name in blockers:
            if zfs.exists(name):
                zfs.destroy(name)


def test_tablespace_off_zfs_is_one_clear_error(fresh_lab: LabInfo, cli: Any) -> None:
    """Move one of the standby's tablespaces onto the root filesystem (repointing its
    pg_tblspc link, as a DBA might): snapshot refuses in one line; doctor names it and still
    runs its other checks."""
    info = fresh_lab
    the_lab = Lab(info.name, base=info.root.parent)
    with psycopg.connect(info.conninfo("standby"), autocommit=True) as conn:
        oid = int(one(conn, "SELECT oid FROM pg_tablespace WHERE spcname = 'ts2'"))
    the_lab.stop(info, "standby")
    off_zfs = info.root / "offzfs" / "ts2"
    off_zfs.parent.mkdir()
    link = info.standby_data / "pg_tblspc" / str(oid)
    # `cp -a` keeps the postgres owner across filesystems (shutil.move would not).
    subprocess.run(["cp", "-a", os.path.realpath(link), str(off_zfs)], check=True)
    shutil.rmtree(os.path.realpath(link))
    link.unlink()
    link.symlink_to(off_zfs)
    the_lab.start(info, "standby")

    cli = replace(cli, config=info.config_file)
    proc = cli("snapshot", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"tablespace {oid} at {off_zfs} is not on a ZFS dataset" in lines[0]
    assert cli.json("list")["sets"] == []

    proc = cli("doctor", "--json", check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["layout on ZFS"]["status"] == "CRITICAL"
    assert f"tablespace {oid}" in checks["layout on ZFS"]["summary"]
    assert checks["recordsize"]["status"] == "OK"
    assert checks["restore_command"]["status"] == "OK"
    places = {p["path"]: p for p in report["layout"]}
    assert places[str(off_zfs)]["dataset"] is None
    assert sum(1 for p in report["layout"] if p["dataset"]) == 2


def test_a_pool_below_the_critical_free_space_is_refused(
    lab: LabInfo, cli: Any, tmp_path: Any
) -> None:
    """Issue 10, item 9: zfs-fuse dies when a pool fills up, taking every mount with it."""
    from tests.conftest import Cli

    before = cli.json("list")["sets"]
    config = tmp_path / "zsnap.toml"
    config.write_text(lab.config_file.read_text() + "\n[check]\npool_free_critical_pct = 99.9\n")
    strict = Cli(config)
    for args in (("snapshot",), ("clone", "--immediate", "--name", "full")):
        proc = strict(*args, check=False)
        message = proc.stderr.strip()
        assert proc.returncode == 1 and message.count("\n") == 0, message
        assert "below [check] pool_free_critical_pct (99.9%)" in message, message
    assert replay_state(lab) == "not paused"
    assert cli.json("list")["sets"] == before and cli.json("clones") == []
