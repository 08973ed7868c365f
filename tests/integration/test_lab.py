"""`zsnap lab`: status reports the real servers and pools; `down --dry-run` removes nothing;
`down` gets past the stale mounts a dead FUSE daemon leaves."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_BASE
from zsnap.lab import Lab, LabInfo
from zsnap.pg.binaries import find_bindir


def lab_cli(info: LabInfo, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "zsnap", "lab", *args, "--name", info.name,
         "--base", str(TEST_BASE), "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def pools() -> list[str]:
    out = subprocess.run(["zpool", "list", "-H", "-o", "name"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def test_status_and_a_dry_run_down(lab: LabInfo) -> None:
    status = lab_cli(lab, "status")
    assert status["primary"] == {"port": lab.primary_port, "running": True}
    standby = status["standby"]
    assert isinstance(standby, dict) and standby["running"] and standby["in_recovery"]
    assert status["pools"] == lab.pools

    plan = lab_cli(lab, "down", "--dry-run")
    assert plan["pools"] == lab.pools
    assert str(lab.standby_data) in plan["servers"] and str(lab.primary_data) in plan["servers"]
    assert set(lab.pools) <= set(pools())
    assert lab_cli(lab, "status")["standby"]["running"] is True  # type: ignore[index]


# A FUSE filesystem of nothing, served until its process is killed: what a zfs-fuse that died
# leaves is the same, a mount that answers "Transport endpoint is not connected".
FUSE_DAEMON = """
import sys
from fuse import FUSE, Operations
FUSE(Operations(), sys.argv[1], foreground=True)
"""


def test_down_unmounts_the_stale_mounts_a_dead_fuse_daemon_leaves(tmp_path: Path) -> None:
    the_lab = Lab("stale", base=tmp_path)
    root = the_lab.root
    mountpoint = root / "mnt" / "pgdata"
    mountpoint.mkdir(parents=True)
    info = LabInfo(name="stale", root=root, pg_bin=find_bindir(None), primary_port=1,
                   standby_port=2, pools=[], pool_images=[], datasets={})
    (root / "lab.json").write_text(info.to_json())
    daemon = subprocess.Popen([sys.executable, "-c", FUSE_DAEMON, str(mountpoint)])
    try:
        deadline = time.monotonic() + 30
        while str(mountpoint) not in Path("/proc/mounts").read_text():
            assert time.monotonic() < deadline and daemon.poll() is None, "not mounted"
            time.sleep(0.05)
    finally:
        daemon.kill()
        daemon.wait()
    with pytest.raises(OSError) as stale:
        os.stat(mountpoint)
    assert stale.value.errno == errno.ENOTCONN
    the_lab.down()
    assert not root.exists()
    assert str(mountpoint) not in Path("/proc/mounts").read_text()
