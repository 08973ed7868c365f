"""Flashback instances of a standby in the Debian/Ubuntu layout: postgresql.conf, pg_hba.conf
and pg_ident.conf in a directory of their own (/etc/postgresql/<ver>/<cluster>/ there), the
server started on that directory, whose postgresql.conf names the data directory. The clone
must carry the standby's settings over and never start on, or write into, the standby's files."""

from __future__ import annotations

import os
import pwd
import shutil
import time
from pathlib import Path

from tests.conftest import Cli, archive_all, replicated, sql
from tests.integration.test_clone import (
    Load,
    assert_gone,
    check_clone,
    connect,
    fails,
    one,
)
from zsnap.lab import LabInfo
from zsnap.pg.binaries import PgTools
from zsnap.runner import Runner

MOVED = ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")


def debian_layout(info: LabInfo) -> Path:
    """Restart the lab's standby with its configuration in `<root>/etc/main`, as
    pg_createcluster leaves it; that directory."""
    pg = PgTools(Runner(), info.pg_bin, "postgres")
    owner = pwd.getpwnam("postgres")
    data = info.standby_data
    pg.run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", timeout=120)
    etc = info.root / "etc" / "main"
    (etc / "conf.d").mkdir(parents=True)
    for name in MOVED:
        shutil.move(data / name, etc / name)
    with (etc / "postgresql.conf").open("a") as f:
        f.write(f"data_directory = '{data}'\n"
                f"hba_file = '{etc / 'pg_hba.conf'}'\n"
                f"ident_file = '{etc / 'pg_ident.conf'}'\n"
                f"external_pid_file = '{etc / '15-main.pid'}'\n"
                "include_dir = 'conf.d'\n")
    (etc / "conf.d" / "memory.conf").write_text("work_mem = '7MB'\n")
    for path in (etc.parent, etc, etc / "conf.d", *etc.rglob("*")):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    # As Debian's pg_ctlcluster does: the server is started on the configuration directory.
    pg.run("pg_ctl", "-D", str(etc), "-l", str(info.log_dir / "standby.log"), "-w", "-t", "300",
           "start", timeout=330)
    return etc


def postmaster_pid(info: LabInfo) -> str:
    return (info.standby_data / "postmaster.pid").read_text().splitlines()[0]


def test_clones_of_a_standby_with_its_configuration_outside_pgdata(fresh_lab: LabInfo) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    primary = info.conninfo("primary")
    etc = debian_layout(info)
    assert not (info.standby_data / "postgresql.conf").exists()
    assert sql(info, "standby", "SHOW config_file") == str(etc / "postgresql.conf")
    standby_pid = postmaster_pid(info)
    pid_file = etc / "15-main.pid"
    assert pid_file.read_text().split()[0] == standby_pid

    load = Load(primary)
    try:
        time.sleep(1)
        s1 = cli.json("snapshot")
        time.sleep(0.5)
        target = load.point()
        time.sleep(0.5)
        s2 = cli.json("snapshot")
        time.sleep(0.3)
    finally:
        load.stop()
    archive_all(primary, info.archive)
    for s in (s1, s2):
        assert s["config_file"] == str(etc / "postgresql.conf")
        assert s["hba_file"] == str(etc / "pg_hba.conf")
        assert s["ident_file"] == str(etc / "pg_ident.conf")

    at = cli.json("clone", "--at", target.isoformat(), "--name", "etcat")
    assert at["set"] == s1["id"]
    check_clone(at, primary, target)
    immediate = cli.json("clone", "--immediate", "--set", s2["id"], "--name", "etcimm")
    assert immediate["state"] == "promoted"
    for r in (at, immediate):
        pgdata = Path(r["pgdata"])
        with connect(r["dsn"]) as conn:
            assert one(conn, "SHOW data_directory") == str(pgdata)
            assert one(conn, "SHOW config_file") == str(pgdata / "postgresql.conf")
            assert one(conn, "SHOW hba_file") == str(pgdata / "pg_hba.conf")
            assert one(conn, "SHOW ident_file") == str(pgdata / "pg_ident.conf")
            assert one(conn, "SHOW work_mem") == "7MB"  # etc/main/conf.d carried over
            assert one(conn, "SHOW external_pid_file").startswith(str(info.clone_root))
        assert (pgdata / "pg_hba.conf").read_text() == (etc / "pg_hba.conf").read_text()

    # The standby's own files are untouched, and it still runs and replays.
    assert pid_file.read_text().split()[0] == standby_pid == postmaster_pid(info)
    assert sorted(p.name for p in etc.iterdir()) == sorted(["15-main.pid", "conf.d", *MOVED])
    sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('after the clones')")
    replicated(info)

    # Verification recovers to s2's consistency point: it needs a WAL record after it archived.
    archive_all(primary, info.archive)
    [verified] = cli.json("verify", s2["id"])
    assert verified["outcome"] == "passed", verified

    # The standby's configuration gone at clone time: one line, nothing left behind.
    conf = etc / "postgresql.conf"
    conf.rename(etc / "postgresql.conf.away")
    try:
        code, message = fails(cli, "clone", "--immediate", "--name", "etcgone")
        assert code == 2 and str(conf) in message and "cannot be read" in message, message
        assert_gone(info, "etcgone")
        # Its teardown stopped nothing of the standby (the cloned postmaster.pid names it).
        assert postmaster_pid(info) == standby_pid
    finally:
        (etc / "postgresql.conf.away").rename(conf)

    for name in ("etcat", "etcimm"):
        cli("destroy", name)
        assert_gone(info, name)
    assert cli.json("clones") == []
    assert postmaster_pid(info) == standby_pid
