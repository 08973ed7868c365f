"""A clone made from a running standby's snapshot carries the standby's postmaster.pid until it
is prepared; stopping such a clone must never signal the standby."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from zsnap.clone.instance import Instance, owns_pid_file
from zsnap.errors import RecoveryFailed
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


def test_promotion_is_asked_of_this_data_directorys_postmaster_only(tmp_path: Path) -> None:
    """The promotion asked for while the clone starts (a `promote` file, SIGUSR1 to the
    postmaster) goes to the process its own postmaster.pid names, never to one named by a pid
    file of another data directory."""
    for own in (False, True):
        postmaster = subprocess.Popen(["sleep", "60"])  # SIGUSR1 ends it
        clone = tmp_path / f"clone-{own}"
        write_pid_file(clone, postmaster.pid, clone if own else tmp_path / "standby")
        pg = PgTools(Runner(), find_bindir(None), "postgres")
        instance = Instance(pg, clone, clone / "postmaster.log", "")
        try:
            if own:
                instance._ask_promotion(postmaster.pid)
                assert postmaster.wait(5) == -signal.SIGUSR1
            else:
                with pytest.raises(RecoveryFailed, match="another data directory"):
                    instance._ask_promotion(postmaster.pid)
                with pytest.raises(subprocess.TimeoutExpired):
                    postmaster.wait(0.5)
            assert (clone / "promote").exists() is own
        finally:
            postmaster.kill()
            postmaster.wait()


FAKE_PG_CTL = """#!/bin/sh
# pg_ctl -D DIR -l LOG -W start: a "postmaster" whose pid file already says "ready", as a small
# clone's does when it is consistent before the first poll.
sleep 60 </dev/null >/dev/null 2>&1 &
printf '%s\\n%s\\n1700000000\\n5432\\n/tmp\\nlocalhost\\n 1 1\\nready   \\n' "$!" "$2" \\
    > "$2/postmaster.pid"
"""


def test_promotion_is_asked_of_a_server_first_seen_accepting_connections() -> None:
    owner = pwd.getpwnam("postgres")
    base = Path(tempfile.mkdtemp(prefix="zsnap-promote-", dir="/var/tmp"))
    try:
        bindir, pgdata = base / "bin", base / "data"
        bindir.mkdir()
        (bindir / "pg_ctl").write_text(FAKE_PG_CTL)
        (bindir / "pg_ctl").chmod(0o755)
        pgdata.mkdir(mode=0o700)
        for path in (base, pgdata):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        base.chmod(0o755)
        pg = PgTools(Runner(), bindir, "postgres")
        Instance(pg, pgdata, base / "postmaster.log", "").start(promote=True)
        assert (pgdata / "promote").stat().st_uid == owner.pw_uid
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        deadline = time.monotonic() + 5
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(pid), "the postmaster was not signalled"
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((pgdata / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(base)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False
