"""A clone made from a running standby's snapshot carries the standby's postmaster.pid until it
is prepared; stopping such a clone must never signal the standby."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from zsnap.clone.instance import Instance, owns_pid_file
from zsnap.pg.binaries import PgTools, find_bindir
from zsnap.runner import Runner


def write_pid_file(pgdata: Path, pid: int, data_directory: Path) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    (pgdata / "postmaster.pid").write_text(f"{pid}\n{data_directory}\n1700000000\n5432\n")


def test_owner_is_the_data_directory_on_line_two(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    write_pid_file(clone, 1, clone)
    assert owns_pid_file(clone)
    write_pid_file(clone, 1, tmp_path / "standby")
    assert not owns_pid_file(clone)
    (clone / "postmaster.pid").unlink()
    assert not owns_pid_file(clone)


def test_stopping_a_clone_with_the_standbys_pid_file_signals_nobody() -> None:
    # Everything as the cluster's owner, as in production: pg_ctl could signal the process.
    owner = pwd.getpwnam("postgres")
    standby = subprocess.Popen(["sleep", "60"], user="postgres")  # the standby's postmaster
    base = Path(tempfile.mkdtemp(prefix="zsnap-pid-", dir="/var/tmp"))
    try:
        clone = base / "clone"
        write_pid_file(clone, standby.pid, base / "standby")
        for path in (base, clone, clone / "postmaster.pid"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        pg = PgTools(Runner(), find_bindir(None), "postgres")
        Instance(pg, clone, clone / "postmaster.log", "").stop()
        assert standby.poll() is None, "the process named in the copied pid file was signalled"
        assert not (clone / "postmaster.pid").exists()
    finally:
        standby.kill()
        standby.wait()
        shutil.rmtree(base)


def test_a_stop_returns_once_the_postmaster_has_removed_its_pid_file() -> None:
    # A pg_ctl that only signals (-W), and a postmaster that rewrites its pid file (seen
    # empty for a moment), then exits and removes it 0.2 s later: not gone before that.
    owner = pwd.getpwnam("postgres")
    postmaster = subprocess.Popen(["sleep", "60"], user="postgres")
    base = Path(tempfile.mkdtemp(prefix="zsnap-stop-", dir="/var/tmp"))
    try:
        bindir, pgdata = base / "bin", base / "data"
        bindir.mkdir()
        write_pid_file(pgdata, postmaster.pid, pgdata)
        pid_file = pgdata / "postmaster.pid"
        (bindir / "pg_ctl").write_text(
            "#!/bin/sh\n"
            f'[ "$*" = "-D {pgdata} -m immediate -W stop" ] || exit 1\n'
            f"pid=$(head -1 {pid_file}); : > {pid_file}\n"
            f"(sleep 0.2; kill $pid; rm {pid_file}) >/dev/null 2>&1 &\n")
        (bindir / "pg_ctl").chmod(0o755)
        for path in (base, bindir, pgdata, pid_file):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        # A dry run stops nothing, so waits for nothing.
        def waited(*_: object) -> None:
            raise TimeoutError("a dry run waited for a stop it never asked for")

        previous = signal.signal(signal.SIGALRM, waited)
        signal.alarm(10)
        try:
            dry = Runner(dry_run=True)
            Instance(PgTools(dry, bindir, "postgres"), pgdata, pgdata / "postmaster.log",
                     "").stop(mode="immediate")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert [argv[-3:] for argv in dry.skipped] == [["immediate", "-W", "stop"]]
        assert postmaster.poll() is None
        pg = PgTools(Runner(), bindir, "postgres")
        Instance(pg, pgdata, pgdata / "postmaster.log", "").stop(mode="immediate")
        assert not pid_file.exists()
        assert postmaster.wait(timeout=5) != 0
    finally:
        postmaster.kill()
        postmaster.wait()
        shutil.rmtree(base)
