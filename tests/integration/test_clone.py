"""Flashback instances on real labs, judged by the primary's commit timestamps
(track_commit_timestamp = on): a clone at target T must hold exactly the rows whose
transaction committed at or before T, in both tables (tablespaces on two pools), with intact
indexes. Targets sit in quiet gaps of the write load, or on a commit with no other within
100 ms, because commit timestamps are not monotonic in WAL order (DOMAIN.md section 2)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import Cli, archive_all
from tests.integration.failover import fail_over
from tests.integration.faults import wrapped_zfs
from zsnap.lab import LabInfo, LoadWriter
from zsnap.lsn import Lsn, Segment
from zsnap.runner import Runner

Conn = psycopg.Connection[tuple[Any, ...]]
TABLES = ("lab_a", "lab_b")
QUIET_S = 0.1


def connect(conninfo: str) -> Conn:
    return psycopg.connect(conninfo, autocommit=True)


def one(conn: Conn, sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


class Load:
    """The lab's write load on both pools, which can hold still for a moment so that a target
    has no commit within QUIET_S of it."""

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self.writer: LoadWriter | None = LoadWriter(conninfo).start()

    def quiet(self, action: Callable[[Conn], Any]) -> Any:
        self.stop()
        time.sleep(QUIET_S)
        with connect(self.conninfo) as conn:
            result = action(conn)
        time.sleep(QUIET_S)
        self.writer = LoadWriter(self.conninfo).start()
        return result

    def point(self) -> datetime:
        """A moment with no commit near it."""
        return self.quiet(lambda conn: one(conn, "SELECT clock_timestamp()"))  # type: ignore[no-any-return]

    def commit(self) -> tuple[datetime, str]:
        """One transaction writing into both pools, alone in its gap: its commit timestamp and
        transaction id."""

        def write(conn: Conn) -> tuple[datetime, str]:
            with conn.transaction():
                xid = str(one(conn, "INSERT INTO lab_a (payload) VALUES ('marker') RETURNING xmin"))
                conn.execute("INSERT INTO lab_b (payload) VALUES ('marker')")
            ts = one(conn, "SELECT pg_xact_commit_timestamp(%s::text::xid)", (xid,))
            return ts, xid

        return self.quiet(write)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.stop()
            self.writer = None


def committed(primary: str, target: datetime) -> dict[str, set[int]]:
    """The oracle: rows whose transaction committed at or before `target`."""
    with connect(primary) as conn:
        return {t: {r[0] for r in conn.execute(
            f"SELECT id FROM {t} WHERE pg_xact_commit_timestamp(xmin) <= %s", (target,))}
            for t in TABLES}


def rows(dsn: str) -> dict[str, set[int]]:
    with connect(dsn) as conn:
        return {t: {r[0] for r in conn.execute(f"SELECT id FROM {t}")} for t in TABLES}


def amcheck(dsn: str) -> None:
    with connect(dsn) as conn:
        indexes = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree'"
            " AND i.indrelid IN ('lab_a'::regclass, 'lab_b'::regclass)")]
        assert len(indexes) == 4
        for index in indexes:
            conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))


def check_clone(result: dict[str, Any], primary: str, target: datetime) -> None:
    expected = committed(primary, target)
    got = rows(result["dsn"])
    for table in TABLES:
        assert expected[table], f"{table}: the oracle is empty"
        assert got[table] == expected[table], (
            f"{table}: {len(got[table] - expected[table])} rows too many, "
            f"{len(expected[table] - got[table])} missing")
    amcheck(result["dsn"])


def clone_datasets() -> list[str]:
    out = Runner().run(["zfs", "list", "-H", "-o", "name", "-t", "all"], mutates=False).stdout
    return [line for line in out.splitlines() if "/zsnap-clones/" in line]


def assert_gone(info: LabInfo, name: str) -> None:
    """No dataset, mount directory or process of clone `name` is left."""
    assert not [d for d in clone_datasets()
                if d.split("/")[2:3] == [name] and d.startswith(tuple(info.pools))]
    assert not (info.clone_root / name).exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert f"{info.clone_root / name}/" not in ps.stdout
    assert f" durable {name} --worker" not in ps.stdout


def userrefs(snapshot: str) -> int:
    out = Runner().run(["zfs", "get", "-H", "-p", "-o", "value", "userrefs", snapshot],
                       mutates=False).stdout
    return int(out.strip())


def fails(cli: Cli, *args: str) -> tuple[int, str]:
    proc = cli(*args, check=False)
    assert proc.returncode != 0, proc.stdout
    message = proc.stderr.strip()
    assert message.count("\n") == 0, f"more than one line: {message}"
    assert "Traceback" not in message
    return proc.returncode, message


# --- the main job: exact to the commit ----------------------------------------------------


def test_flashback_targets_hold_exactly_the_rows_committed_by_then(
    fresh_lab: LabInfo, tmp_path: Path
) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    primary = info.conninfo("primary")
    load = Load(primary)
    try:
        time.sleep(1)
        s1 = cli.json("snapshot")
        time.sleep(0.5)
        between = load.point()
        marker_ts, marker_xid = load.commit()
        time.sleep(0.5)
        s2 = cli.json("snapshot")
        time.sleep(0.5)
        exact, _ = load.commit()
        time.sleep(0.5)
        after = load.point()
        time.sleep(0.3)
    finally:
        load.stop()
    archive_all(primary, info.archive)

    plan = cli.json("clone", "--at", between.isoformat(), "--name", "between", "--dry-run")
    assert plan["dry_run"] is True and plan["set"] == s1["id"] and len(plan["datasets"]) == 3
    assert_gone(info, "between")

    # Between two sets, given as local time without an offset: served from the older set.
    local = between.astimezone().replace(tzinfo=None).isoformat()
    r = cli.json("clone", "--at", local, "--name", "between")
    assert r["set"] == s1["id"] and r["fell_back_from"] == []
    assert r["target_note"] and "local time" in r["target_note"]
    assert datetime.fromisoformat(r["target"].removeprefix("time:")) == between
    assert r["state"] == "promoted" and r["elapsed_s"] > 0
    assert r["durability"] == "in progress" and "durable" not in r["steps_s"]
    assert r["wal_replayed_bytes"] > 0 and r["replay_mb_s"] > 0
    check_clone(r, primary, between)
    with connect(r["dsn"]) as conn:
        assert one(conn, "SELECT pg_is_in_recovery()") is False
    # Durability went on in the background; `zsnap durable` waits for it.
    d = cli.json("durable", "between")
    assert d["durable"] is True and d["durable_since"]
    with connect(r["dsn"]) as conn:
        assert one(conn, "SHOW fsync") == "on"

    # Exactly at one commit's timestamp: that commit is in, the next one is not. The host's
    # filesystems are listed once (set, name, port and free space all read from it), each
    # listing being a wait for a transaction group on a busy pool; the calls of the
    # background durability worker (`--worker`) are not the clone's.
    calls = tmp_path / "zfs-calls"
    wrapped = wrapped_zfs(
        tmp_path, f'grep -qa -- --worker /proc/$PPID/cmdline || echo "$*" >> {calls}')
    r = cli.json("clone", "--at", exact.isoformat(), "--name", "exact", env=wrapped)
    listings = [c for c in calls.read_text().splitlines()
                if c.startswith("list ") and " filesystem " in c]
    assert len(listings) == 1, listings
    assert r["set"] == s2["id"]
    assert datetime.fromisoformat(r["recovered_to"]) == exact
    check_clone(r, primary, exact)
    with connect(r["dsn"]) as conn:
        assert one(conn, "SELECT count(*) FROM lab_b WHERE payload = 'marker'") == 2

    # After the last set, paused at the target instead of promoted: read-only, still exact,
    # and (--durable) durable when `clone` returns.
    r = cli.json("clone", "--at", after.isoformat(), "--name", "paused", "--pause", "--durable")
    assert r["set"] == s2["id"] and r["state"] == "paused"
    assert r["durability"] == "durable" and r["steps_s"]["durable"] >= 0
    check_clone(r, primary, after)
    with connect(r["dsn"]) as conn:
        assert one(conn, "SELECT pg_get_wal_replay_pause_state()") == "paused"
        assert one(conn, "SHOW fsync") == "on"

    # A transaction id committed before s2 is consistent: zsnap finds its commit in the
    # archived WAL and starts from s1, the newest set before it.
    r = cli.json("clone", "--xid", marker_xid, "--name", "byxid")
    assert r["set"] == s1["id"] and r["fell_back_from"] == []
    check_clone(r, primary, marker_ts)
    # Where the archive cannot be listed (restore_command only), recovery from s2 refuses to
    # stop there ("requested recovery stop point is before consistent recovery point"), and
    # zsnap falls back to s1 by itself.
    unlisted = info.root / "restore-command-only.toml"
    unlisted.write_text(info.config_file.read_text().replace(f'path = "{info.archive}"\n', ""))
    r = Cli(unlisted).json("clone", "--xid", marker_xid, "--name", "byxid2")
    assert r["set"] == s1["id"] and r["fell_back_from"] == [s2["id"]]
    check_clone(r, primary, marker_ts)

    listed = {c["name"]: c for c in cli.json("clones")}
    assert set(listed) == {"between", "exact", "paused", "byxid", "byxid2"}
    assert all(c["state"] == "running" for c in listed.values())
    assert listed["paused"]["set"] == s2["id"] and listed["paused"]["used_bytes"] > 0
    assert listed["paused"]["durability"] == "durable" and listed["between"]["durable"] is True
    s1_snapshots = [f"{d}@zsnap_{s1['id']}" for d in s1["datasets"]]
    # Held by "between", "byxid" and "byxid2": the set cannot be pruned under them.
    assert [userrefs(s) for s in s1_snapshots] == [3, 3, 3]

    dry = cli.json("destroy", "exact", "--dry-run")
    assert dry["dry_run"] is True and len(dry["datasets"]) == 3
    assert (info.clone_root / "exact").exists()
    for name in ("between", "exact", "paused", "byxid", "byxid2"):
        assert cli.json("destroy", name)["destroyed"] is True
        assert_gone(info, name)
    assert [userrefs(s) for s in s1_snapshots] == [0, 0, 0]
    assert cli.json("clones") == []


def test_consistent_lsn_is_where_postgres_finds_the_clone_consistent(fresh_lab: LabInfo) -> None:
    """Issue 2, item 8: under writes to both pools, the consistent_lsn a set records is the
    LSN a clone of it logs as 'consistent recovery state reached at'."""
    info = fresh_lab
    cli = Cli(info.config_file)
    load = Load(info.conninfo("primary"))
    try:
        sets = []
        for _ in range(3):
            time.sleep(1)
            sets.append(cli.json("snapshot"))
    finally:
        load.stop()
    for i, s in enumerate(sets):
        r = cli.json("clone", "--set", s["id"], "--immediate", "--name", f"cons{i}")
        text = Path(r["log"]).read_text()
        line = next(x for x in text.splitlines() if "consistent recovery state reached at" in x)
        assert Lsn.parse(line.rsplit(" ", 1)[1]) == Lsn.parse(s["consistent_lsn"]), line
        assert r["consistent_lsn"] == s["consistent_lsn"]
        cli("destroy", f"cons{i}")
        assert_gone(info, f"cons{i}")


# --- failures: one line, non-zero, nothing left behind --------------------------------------


def test_failures_are_one_clear_line_and_leave_nothing(fresh_lab: LabInfo) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    primary = info.conninfo("primary")
    load = Load(primary)
    try:
        time.sleep(1)
        s1 = cli.json("snapshot")
        with connect(primary) as conn:
            for _ in range(3):  # several segments archived after the set
                time.sleep(0.3)
                conn.execute("SELECT pg_switch_wal()")
            # Pages for the clone's checkpoint to write, more than the quota below allows.
            conn.execute("INSERT INTO lab_a (payload) SELECT repeat('x', 200) "
                         "FROM generate_series(1, 100000)")
        time.sleep(0.3)
        target = load.point()
        time.sleep(0.3)  # commits after the target: recovery stops at the first of them
    finally:
        load.stop()
    archive_all(primary, info.archive)

    consistent_at = datetime.fromisoformat(s1["consistent_at"])
    code, msg = fails(cli, "clone", "--at", (consistent_at - timedelta(hours=1)).isoformat(),
                      "--name", "early")
    assert code == 2 and "before the oldest set" in msg, msg
    assert_gone(info, "early")

    code, msg = fails(cli, "clone", "--at", (datetime.now().astimezone() + timedelta(hours=1))
                      .isoformat(), "--name", "future")
    assert code == 2 and "in the future" in msg, msg
    assert_gone(info, "future")

    kept = cli.json("clone", "--immediate", "--name", "taken")
    code, msg = fails(cli, "clone", "--immediate", "--name", "taken")
    assert code == 2 and "taken" in msg, msg
    with connect(kept["dsn"]) as conn:  # the existing clone is untouched
        assert one(conn, "SELECT count(*) FROM lab_a") > 0
    cli("destroy", "taken")
    assert_gone(info, "taken")

    # No space: a quota on the pool's parent of clones stands in for a full pool; replay
    # extends the relation files the INSERT above grew (test_durability: a checkpoint that
    # finds no space, once the instance is handed over).
    parent = f"{info.pools[0]}/zsnap-clones"
    Runner().run(["zfs", "set", "quota=4M", parent])
    try:
        code, msg = fails(cli, "clone", "--at", target.isoformat(), "--name", "nospace")
    finally:
        Runner().run(["zfs", "set", "quota=none", parent])
    assert code == 1 and "no space left" in msg and info.pools[0] in msg, msg
    assert_gone(info, "nospace")

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, msg = fails(cli, "clone", "--immediate", "--name", "busyport", "--port", str(port))
    assert code == 2 and f"port {port} is in use" in msg, msg
    assert_gone(info, "busyport")

    # A segment after the set's consistency point goes missing from the archive.
    size = int(s1["wal_segment_size"])
    replayed = Lsn.parse(s1["replay_lsn"]).segment(int(s1["timeline"]), size)
    archived = sorted(Segment.parse(p.name, size) for p in info.archive.iterdir()
                      if len(p.name) == 24 and p.name.isalnum())
    victim = next(s for s in archived if s.number > replayed.number + 1)
    away = info.root / victim.name
    shutil.move(info.archive / victim.name, away)
    try:
        code, msg = fails(cli, "clone", "--at", target.isoformat(), "--name", "nowal")
        assert code == 4 and victim.name in msg and "missing from the archive" in msg, msg
        assert_gone(info, "nowal")
    finally:
        shutil.move(away, info.archive / victim.name)
    r = cli.json("clone", "--at", target.isoformat(), "--name", "nowal")
    check_clone(r, primary, target)

    cli("destroy", "nowal")
    assert_gone(info, "nowal")
    code, msg = fails(cli, "destroy", "taken")
    assert code == 4 and "no flashback instance named taken" in msg, msg


def test_a_clone_stopped_half_way_leaves_nothing(fresh_lab: LabInfo) -> None:
    """SIGTERM while the instance replays: the half-made clone is removed as on any failure."""
    info = fresh_lab
    cli = Cli(info.config_file)
    primary = info.conninfo("primary")
    cli.json("snapshot")
    with connect(primary) as conn:  # enough WAL for replay to take a while
        conn.execute("INSERT INTO lab_a (payload) SELECT repeat('x', 200) "
                     "FROM generate_series(1, 400000)")
    load = Load(primary)
    try:
        target = load.point()
        time.sleep(0.3)
    finally:
        load.stop()
    archive_all(primary, info.archive)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zsnap", "--config", str(info.config_file), "clone", "--at",
         target.isoformat(), "--name", "halfway"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = info.clone_root / "halfway" / "postgresql.log"
    deadline = time.monotonic() + 120
    while "ready to accept read-only connections" not in (log.read_text() if log.exists()
                                                              else ""):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and err.strip().endswith("interrupted"), err
    assert_gone(info, "halfway")
    assert cli.json("clones") == []


# --- a timeline switch --------------------------------------------------------------------


def test_clone_after_a_timeline_switch(fresh_lab: LabInfo) -> None:
    """The primary fails over to another replica; the ZFS standby follows it onto timeline 2
    and sets continue. A clone from the set before the switch replays across it, and one
    from a set after it starts on timeline 2; both hold exactly what the new primary says."""
    info = fresh_lab
    cli = Cli(info.config_file)
    load = Load(info.conninfo("primary"))
    try:
        time.sleep(1)
        s1 = cli.json("snapshot")
        time.sleep(0.5)
    finally:
        load.stop()

    new_primary = fail_over(info)

    load = Load(new_primary)
    try:
        time.sleep(0.5)
        switched = load.point()
        time.sleep(0.5)
        s2 = cli.json("snapshot")
        assert (s1["timeline"], s2["timeline"]) == (1, 2)
        time.sleep(0.5)
        after, _ = load.commit()
        time.sleep(0.3)
    finally:
        load.stop()
    archive_all(new_primary, info.archive)
    assert (info.archive / "00000002.history").exists()

    r = cli.json("clone", "--at", switched.isoformat(), "--name", "across")
    assert r["set"] == s1["id"]
    check_clone(r, new_primary, switched)
    r = cli.json("clone", "--at", after.isoformat(), "--name", "ontl2")
    assert r["set"] == s2["id"]
    check_clone(r, new_primary, after)
    for name in ("across", "ontl2"):
        cli("destroy", name)
        assert_gone(info, name)
