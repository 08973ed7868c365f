"""Faults injected for real: a `zfs` on PATH that runs the real one except where a test wants
it to hang or do something first."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

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
