"""Sets of a primary (standby.allow_primary): snapshots taken in backup mode, the backup label
carried by the set and written into each clone. The lab's primary is on local disk, so the
lab's standby (PGDATA and two tablespaces on three datasets in two pools) is promoted and
snapshotted as a primary while it takes writes on both pools. It archives into the lab's
archive (its postgresql.conf is the primary's, copied by pg_basebackup), on timeline 2."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from tests.conftest import Cli, archive_all, sql, with_setting
from tests.integration.test_clone import Load, amcheck, check_clone, committed, fails, rows
from zsnap.lab import LabInfo
from zsnap.lsn import Lsn
from zsnap.pg.binaries import PgTools
from zsnap.runner import Runner


def promote(info: LabInfo) -> str:
    """The standby promoted; the old primary stopped, so that only one server writes WAL
    into the archive. The new primary's conninfo."""
    assert sql(info, "standby", "SELECT pg_promote(wait => true)") is True
    PgTools(Runner(), info.pg_bin, "postgres").run(
        "pg_ctl", "-D", str(info.primary_data), "-m", "fast", "-w", "stop", timeout=120)
    server = info.conninfo("standby")
    assert sql(info, "standby", "SHOW archive_mode") == "on"
    assert str(info.archive) in sql(info, "standby", "SHOW archive_command")
    return server


def allowing_primary(info: LabInfo) -> Cli:
    path = info.root / "zsnap-primary.toml"
    return Cli(with_setting(info.config_file, path, "standby", "allow_primary = true"))


def prop(snapshot: str, name: str) -> str:
    out = Runner().run(["zfs", "get", "-H", "-o", "value", name, snapshot], mutates=False)
    return out.stdout.strip()


def consistency_logged(log: str) -> Lsn:
    text = Path(log).read_text()
    line = next(x for x in text.splitlines() if "consistent recovery state reached at" in x)
    return Lsn.parse(line.rsplit(" ", 1)[1])


def test_a_primary_is_snapshotted_in_backup_mode(fresh_lab: LabInfo) -> None:
    info = fresh_lab
    server = promote(info)

    # (a) Not allowed: refused in one line, nothing taken.
    code, message = fails(Cli(info.config_file), "snapshot")
    assert code == 2 and "not a standby" in message and "allow_primary" in message
    assert Cli(info.config_file).json("list")["sets"] == []

    cli = allowing_primary(info)
    load = Load(server)
    try:
        time.sleep(1)
        s = cli.json("snapshot")
        time.sleep(0.5)
        after = load.point()
        time.sleep(0.3)
    finally:
        load.stop()
    archive_all(server, info.archive)

    # (b) The set is complete and carries pg_backup_stop's label and end.
    assert s["complete"] is True and s["missing"] == [] and len(s["datasets"]) == 3
    label = s["backup_label"]
    assert label and "BACKUP FROM: primary" in label and "START TIMELINE: 2" in label
    assert f"START WAL LOCATION: {s['redo_lsn']} " in label
    assert f"CHECKPOINT LOCATION: {s['checkpoint_lsn']}\n" in label
    assert s["timeline"] == 2
    assert Lsn.parse(s["consistent_lsn"]) > Lsn.parse(s["checkpoint_lsn"])
    for member in s["datasets"]:
        snapshot = f"{member}@zsnap_{s['id']}"
        assert prop(snapshot, "zsnap:pending") == "none"
        assert prop(snapshot, "zsnap:consistent_lsn") == s["consistent_lsn"]

    # A clone stops at the set's consistency point: the backup end pg_backup_stop returned,
    # which is where PostgreSQL, starting from the label, says it is consistent.
    r = cli.json("clone", "--set", s["id"], "--immediate", "--name", "imm")
    assert consistency_logged(r["log"]) == Lsn.parse(s["consistent_lsn"])
    assert r["consistent_lsn"] == s["consistent_lsn"]
    assert Path(r["pgdata"], "backup_label.old").is_file()  # recovery read the label
    amcheck(r["dsn"])
    # Every commit in the clone precedes the backup end, so none is after the time recorded
    # right after pg_backup_stop (the earliest time a target may name).
    got = rows(r["dsn"])
    by_end = committed(server, datetime.fromisoformat(s["consistent_at"]))
    for table in got:
        assert got[table] and got[table] <= by_end[table]
    cli("destroy", "imm")

    # (c) A time after the set: exactly the rows committed by then, on both pools.
    r = cli.json("clone", "--at", after.isoformat(), "--name", "after")
    assert r["set"] == s["id"] and r["fell_back_from"] == []
    check_clone(r, server, after)
    cli("destroy", "after")

    # Backup mode that cannot end (its WAL is never archived) times out: the set's members
    # are removed again, in one line, and the server is left out of backup mode.
    sql(info, "standby", "ALTER SYSTEM SET archive_command = 'false'")
    sql(info, "standby", "SELECT pg_reload_conf()")
    stuck = with_setting(cli.config, info.root / "zsnap-stuck.toml", "standby",
                         "checkpoint_timeout_s = 3")
    _, message = fails(Cli(stuck), "snapshot")
    assert "pg_backup_stop failed" in message and "removed the 3 member(s)" in message
    assert [x["id"] for x in cli.json("list")["sets"]] == [s["id"]]
    sql(info, "standby", "ALTER SYSTEM RESET archive_command")
    sql(info, "standby", "SELECT pg_reload_conf()")
    assert cli.json("snapshot")["complete"] is True
