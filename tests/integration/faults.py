"""Faults injected for real: a `zfs` on PATH that runs the real one except where a test wants
it to hang or do something first."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.conftest import alive
from zsnap.lab import LabInfo
from zsnap.runner import Runner

WRAPPER = """#!/bin/sh
# A zfs that misbehaves where the test says, and is the real one otherwise.
{body}
exec {real} "$@"
"""


def wrapped_zfs(tmp_path: Path, body: str) -> dict[str, str]:
    """An environment whose `zfs` runs shell `body` first (with "$@" the zfs arguments and
    $PPID the caller), then the real zfs."""
    real = shutil.which("zfs")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "zfs"
    wrapper.write_text(WRAPPER.format(body=body, real=real))
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def replay_state(info: LabInfo) -> str:
    """The lab standby's pg_get_wal_replay_pause_state()."""
    with psycopg.connect(info.conninfo("standby"), autocommit=True) as conn:
        row = conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
    assert row is not None
    return str(row[0])


def zsnap_snapshots(pools: list[str]) -> set[str]:
    """Every zsnap snapshot on the lab's pools."""
    out = Runner().run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name"], mutates=False)
    return {n for n in out.stdout.split() if n.split("/")[0] in pools and "@zsnap_" in n}


WRAPPED = ("zfs", "runuser", "sync")
STALL = """#!/bin/sh
# Counts this zsnap run's calls (under a lock: some are made at once); the one numbered
# $(cat {nth}) stalls.
exec 9>>{count}.lock
flock 9
n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}
exec 9>&-
if [ "$n" = "$(cat {nth} 2>/dev/null)" ]; then
    echo "$(basename "$0") $*" > {pid}.argv; echo $$ > {pid}; exec sleep 3600
fi
exec {real} "$@"
"""


class Stalling:
    """The environment of a zsnap run whose Nth external command stalls."""

    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.count, self.nth, self.pid = root / "count", root / "nth", root / "stalled.pid"
        for name in WRAPPED:
            real = shutil.which(name)
            assert real is not None, name
            wrapper = self.bin / name
            wrapper.write_text(STALL.format(count=self.count, nth=self.nth, pid=self.pid,
                                            real=real))
            wrapper.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def arm(self, nth: int) -> None:
        self.count.unlink(missing_ok=True)
        self.pid.unlink(missing_ok=True)
        self.nth.write_text(str(nth))

    def calls(self) -> int:
        return int(self.count.read_text()) if self.count.exists() else 0

    def stalled(self) -> str:
        """The command line of the stalled call."""
        return (self.root / "stalled.pid.argv").read_text().strip()

    def killed_at(self, argv: list[str], nth: int) -> str:
        """Run `argv` with its `nth` external call stalled, SIGKILL it there, and wait until
        that call is gone too (children die with zsnap). The stalled command line, or "" when
        the run ended before making `nth` calls."""
        self.arm(nth)
        proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: self.pid.exists() or proc.poll() is not None,
                     f"call {nth} never came", 300)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        if not self.pid.exists():
            return ""
        pid, stalled = int(self.pid.read_text()), self.stalled()
        wait_for(lambda: not alive(pid), f"call {nth} ({stalled}) outlived its zsnap", 10)
        return stalled
