"""A clone is handed over when promoted; its durability goes on in a worker of its own
(issue 9, item 1). The worker is held at its first `zfs` call by a wrapper on PATH that hangs
only for it, so each test meets it "before durable" for certain: destroyed then, killed then,
and the clone's server crashing or stopping then."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import Cli, alive, archive_all
from tests.integration.faults import wait_for, wrapped_zfs
from tests.integration.test_clone import Load, assert_gone, check_clone, connect, one
from zsnap.lab import OS_USER, LabInfo
from zsnap.runner import Runner

HANG = """
if tr '\\0' ' ' < /proc/$PPID/cmdline | grep -q -- ' --worker'; then
    echo $$ > {pid_file}
    exec sleep 3600
fi"""


def hanging_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `zfs` hangs for durability workers; the hung call's pid file."""
    pid_file = tmp_path / "hung.pid"
    return wrapped_zfs(tmp_path, HANG.format(pid_file=pid_file)), pid_file


def durability(cli: Cli, name: str) -> str:
    found = {c["name"]: c for c in cli.json("clones")}
    return str(found[name]["durability"])


def pg_ctl(info: LabInfo, pgdata: str, *args: str) -> None:
    Runner().run([str(info.pg_bin / "pg_ctl"), "-D", pgdata, *args], user=OS_USER, timeout=120)


@pytest.fixture
def target(fresh_lab: LabInfo) -> str:
    """A set, then writes, then a target in a quiet gap, all archived."""
    cli = Cli(fresh_lab.config_file)
    primary = fresh_lab.conninfo("primary")
    load = Load(primary)
    try:
        time.sleep(1)
        cli.json("snapshot")
        time.sleep(1)
        point = load.point()
        time.sleep(0.3)
    finally:
        load.stop()
    archive_all(primary, fresh_lab.archive)
    return point.isoformat()


def test_a_clone_destroyed_before_it_is_durable_leaves_nothing(
    fresh_lab: LabInfo, target: str, tmp_path: Path
) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    env, hung = hanging_path(tmp_path)
    r = cli.json("clone", "--at", target, "--name", "early", env=env)
    assert r["durability"] == "in progress"
    wait_for(hung.exists, "the worker never reached its first zfs call")
    assert durability(cli, "early") == "in progress"
    assert cli.json("destroy", "early")["destroyed"] is True
    assert_gone(info, "early")
    wait_for(lambda: not alive(int(hung.read_text())), "the worker's zfs call outlived it", 10)


def test_a_killed_worker_and_a_crashed_clone_recover_and_become_durable(
    fresh_lab: LabInfo, target: str, tmp_path: Path
) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    env, hung = hanging_path(tmp_path)
    r = cli.json("clone", "--at", target, "--name", "crashy", env=env)
    wait_for(hung.exists, "the worker never reached its first zfs call")
    worker = int((info.clone_root / "crashy" / "durability.pid").read_text())
    os.kill(worker, signal.SIGKILL)
    # Its hung zfs call dies with it, and nothing else carries the work on.
    wait_for(lambda: not alive(int(hung.read_text())), "the worker's zfs call outlived it", 10)
    assert durability(cli, "crashy") == "interrupted"
    with connect(r["dsn"]) as conn:
        assert one(conn, "SHOW fsync") == "off"

    # The clone's server crashes before it is durable: it recovers by itself...
    pg_ctl(info, r["pgdata"], "-m", "immediate", "-w", "restart", "-l", r["log"])
    check_clone(r, info.conninfo("primary"), datetime.fromisoformat(target))
    # ...and stopped for good it is clearly marked.
    pg_ctl(info, r["pgdata"], "-m", "immediate", "-w", "stop")
    proc = cli("durable", "crashy", check=False)
    message = proc.stderr.strip()
    assert proc.returncode == 1 and message.count("\n") == 0 and "stopped before it was durable" \
        in message, message
    assert durability(cli, "crashy") == "stopped"

    pg_ctl(info, r["pgdata"], "-w", "start", "-l", r["log"])
    d = cli.json("durable", "crashy")
    assert d["durable"] is True and d["durability"] == "durable"
    with connect(r["dsn"]) as conn:
        assert one(conn, "SHOW fsync") == "on"
    check_clone(r, info.conninfo("primary"), datetime.fromisoformat(target))
    assert cli.json("durable", "crashy")["durable"] is True  # nothing left to do: at once
    cli("destroy", "crashy")
    assert_gone(info, "crashy")


def test_a_durability_step_that_fails_is_one_line_and_marked(
    fresh_lab: LabInfo, target: str, tmp_path: Path
) -> None:
    """The flush of the clone's filesystems fails (a `sync` that exits 1 stands in for an
    I/O error): the worker records it, `zsnap durable` says it in one line, and once the
    cause is gone it finishes."""
    info = fresh_lab
    cli = Cli(info.config_file)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "sync"
    broken.write_text("#!/bin/sh\necho 'sync: error syncing: Input/output error' >&2\nexit 1\n")
    broken.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cli.json("clone", "--at", target, "--name", "broken", env=env)
    wait_for(lambda: durability(cli, "broken") == "failed", "durability did not fail", 120)
    proc = cli("durable", "broken", check=False, env=env)
    message = proc.stderr.strip()
    assert proc.returncode == 1 and message.count("\n") == 0, message
    assert "not durable" in message and "Input/output error" in message, message
    assert cli.json("durable", "broken")["durable"] is True  # the real sync: it finishes
    cli("destroy", "broken")
    assert_gone(info, "broken")
