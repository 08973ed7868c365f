"""`zsnap lab`: status reports the real servers and pools; `down --dry-run` removes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import TEST_BASE
from zsnap.lab import LabInfo


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
