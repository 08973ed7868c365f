"""A clone's durability as `zsnap clones` tells it, from its property and its worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from zsnap.clone import durability
from zsnap.clone.durability import Durability, status
from zsnap.clone.registry import Clone
from zsnap.errors import PostgresError


def clone(tmp_path: Path, value: str | None) -> Clone:
    return Clone(name=tmp_path.name, cluster="main", set="S", target="immediate", port=55432,
                 created=None, dir=tmp_path, pgdata=tmp_path / "0" / "data",
                 datasets=["p/zsnap-clones/c/0", "q/zsnap-clones/c/1"], origins=[],
                 mountpoints=[], durable=value)


def test_what_each_value_means(tmp_path: Path) -> None:
    assert status(clone(tmp_path, None)).state is Durability.DURABLE  # made before it existed
    got = status(clone(tmp_path, "2026-12-01T20:00:00+00:00"))
    assert got.durable and got.since is not None and got.since.hour == 20
    assert status(clone(tmp_path, durability.STOPPED)).state is Durability.STOPPED
    assert status(clone(tmp_path, durability.FAILED)).state is Durability.FAILED
    assert status(clone(tmp_path, durability.SKIPPED)).state is Durability.SKIPPED
    # Pending with no live worker: interrupted; with one (a live zsnap), in progress.
    assert status(clone(tmp_path, durability.PENDING)).state is Durability.INTERRUPTED
    (tmp_path / durability.PID_FILE).write_text("999999999\n")
    assert status(clone(tmp_path, durability.PENDING)).state is Durability.INTERRUPTED
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "zsnap"])
    try:
        (tmp_path / durability.PID_FILE).write_text(f"{worker.pid}\n")
        got = status(clone(tmp_path, durability.PENDING))
        assert got.state is Durability.IN_PROGRESS and got.worker == worker.pid
    finally:
        worker.kill()
        worker.wait()
    assert status(clone(tmp_path, durability.PENDING)).state is Durability.INTERRUPTED


def test_a_full_pool_is_named_from_the_server_log(tmp_path: Path) -> None:
    (tmp_path / "postgresql.log").write_text(
        '2026-12-01 21:00:00.000 UTC [1] ERROR:  could not write block 7 of relation '
        'base/5/16394: Disk quota exceeded\n')
    why = durability._why(clone(tmp_path, durability.PENDING),
                          PostgresError("checkpoint request failed"))
    assert why.startswith("no space left on its datasets (pools p, q): ERROR:  could not")
    (tmp_path / "postgresql.log").write_text("")
    assert durability._why(clone(tmp_path, durability.PENDING),
                           PostgresError("checkpoint request failed")) == \
        "checkpoint request failed"
