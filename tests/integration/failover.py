"""A failover of a lab's primary to another replica, which the ZFS standby then follows onto
timeline 2 (shared by the tests of flashbacks and of the WAL across a timeline switch)."""

from __future__ import annotations

import os
import pwd
import time
from typing import Any

import psycopg

from zsnap.lab import LabInfo
from zsnap.lsn import Lsn
from zsnap.pg.binaries import PgTools
from zsnap.ports import port_free
from zsnap.runner import Runner


def _one(conninfo: str, sql: str) -> Any:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def free_port(start: int) -> int:
    return next(p for p in range(start, start + 1000) if port_free(p))


def fail_over(info: LabInfo) -> str:
    """A second replica of the primary on local disk (archiving into the same archive once
    promoted: its configuration is the primary's, copied by pg_basebackup) is promoted after
    the primary shut down with everything replicated; the ZFS standby follows it. Returns the
    new primary's conninfo."""
    pg = PgTools(Runner(), info.pg_bin, "postgres")
    owner = pwd.getpwnam("postgres")
    replica = info.root / "replica2"
    replica.mkdir(mode=0o700)
    os.chown(replica, owner.pw_uid, owner.pw_gid)
    mapping = []
    for ts in ("ts1", "ts2"):
        d = info.root / "replica2_ts" / ts
        d.mkdir(parents=True, mode=0o700)
        os.chown(d, owner.pw_uid, owner.pw_gid)
        os.chown(d.parent, owner.pw_uid, owner.pw_gid)
        mapping += ["-T", f"{info.root / 'primary_ts' / ts}={d}"]
    pg.run("pg_basebackup", "-h", str(info.socket_dir), "-p", str(info.primary_port),
           "-U", "postgres", "-D", str(replica), "-R", "-X", "stream", "-c", "fast", *mapping,
           timeout=600)
    port2 = free_port(info.primary_port + 2)
    with (replica / "postgresql.auto.conf").open("a") as f:
        f.write(f"port = {port2}\n")
    pg.run("pg_ctl", "-D", str(replica), "-l", str(info.log_dir / "replica2.log"), "-w",
           "start", timeout=300)
    new_primary = f"host={info.socket_dir} port={port2} user=postgres dbname=postgres"

    # Both replicas have all of timeline 1 once the old primary has shut down.
    end = Lsn.parse(_one(info.conninfo("primary"), "SELECT pg_current_wal_lsn()::text"))
    for conninfo in (new_primary, info.conninfo("standby")):
        deadline = time.monotonic() + 60
        while Lsn.parse(_one(conninfo, "SELECT pg_last_wal_replay_lsn()::text")) < end:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    pg.run("pg_ctl", "-D", str(info.primary_data), "-m", "fast", "-w", "stop", timeout=120)
    pg.run("pg_ctl", "-D", str(replica), "-w", "promote", timeout=120)
    with psycopg.connect(info.conninfo("standby"), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET primary_conninfo = '{new_primary}'")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 120
    while _one(info.conninfo("standby"),
               "SELECT coalesce(max(received_tli), 0) FROM pg_stat_wal_receiver") != 2:
        assert time.monotonic() < deadline, "the standby did not follow timeline 2"
        time.sleep(0.2)
    return new_primary
