"""pgBackRest beside the lab: a repository on local disk for the lab's primary (gz, process-max
2), archive-push in the primary's archive_command next to the lab's own archive copy, full
backups, and `restore --type=time` into a fresh directory."""

from __future__ import annotations

import json
import os
import pwd
from datetime import datetime
from pathlib import Path

import psycopg

from bench.dest import OS_USER, owned_dir
from zsnap.errors import ZsnapError
from zsnap.lab import LabInfo
from zsnap.runner import Result, Runner


class PgBackRest:
    def __init__(self, info: LabInfo, runner: Runner, home: Path):
        self.info = info
        self.runner = runner
        self.home = home
        self.stanza = info.name
        self.conf = home / "pgbackrest.conf"

    def run(self, *args: str, timeout: float = 3600) -> Result:
        return self.runner.run(
            ["pgbackrest", f"--config={self.conf}", f"--stanza={self.stanza}", *args],
            user=OS_USER, timeout=timeout, cwd="/",
        )

    def configure(self) -> None:
        """Write the configuration, create the stanza, then make the primary archive into
        both the lab's archive (zsnap's clones read it) and pgBackRest's repository."""
        for sub in ("repo", "log", "lock", "spool"):
            owned_dir(self.home / sub)
        owner = pwd.getpwnam(OS_USER)
        os.chown(self.home, owner.pw_uid, owner.pw_gid)
        self.conf.write_text(
            f"""[global]
repo1-path={self.home / 'repo'}
repo1-retention-full=10
compress-type=gz
process-max=2
start-fast=y
log-path={self.home / 'log'}
lock-path={self.home / 'lock'}
spool-path={self.home / 'spool'}
log-level-console=warn
log-level-file=info

[{self.stanza}]
pg1-path={self.info.primary_data}
pg1-port={self.info.primary_port}
pg1-socket-path={self.info.socket_dir}
"""
        )
        self.run("stanza-create", timeout=300)
        script = self.home / "archive.sh"
        # The lab's own copy first (as `zsnap lab` sets it up), then pgBackRest's; the
        # segment counts as archived only when both have it.
        script.write_text(
            f"""#!/bin/sh
set -e
test -f {self.info.archive}/$2 || cp "$1" {self.info.archive}/$2
exec pgbackrest --config={self.conf} --stanza={self.stanza} archive-push "$1"
"""
        )
        script.chmod(0o755)
        with psycopg.connect(self.info.conninfo("primary"), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET archive_command = '{script} %p %f'")
            conn.execute("SELECT pg_reload_conf()")
        self.run("check", timeout=600)

    def backup(self) -> str:
        """A full backup; returns its label."""
        self.run("backup", "--type=full", timeout=7200)
        info = json.loads(self.run("info", "--output=json").stdout)
        backups = info[0]["backup"] if info else []
        if not backups:
            raise ZsnapError("pgbackrest info shows no backup after a backup")
        return str(backups[-1]["label"])

    def restore(self, data: Path, tablespaces: Path, label: str, target: datetime) -> None:
        self.run(
            "restore", f"--pg1-path={data}", f"--set={label}", "--type=time",
            f"--target={target.isoformat(sep=' ')}", "--target-action=promote",
            f"--tablespace-map-all={tablespaces}", "--archive-mode=off", timeout=7200,
        )
