"""What the figures were measured on: the machine, the versions, the filesystem of each path."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zsnap.runner import Runner
from zsnap.zfs import mount_of, mounts


def filesystem(path: Path) -> str:
    """'zfs-fuse (pool/ds)', 'zfs (pool/ds)' or e.g. 'ext4 (/dev/vda)': the mount that holds
    `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    mount = mount_of(Path(os.path.realpath(probe)), mounts())
    if mount is None:
        return "unknown"
    if mount.fstype == "fuse.zfs":
        return f"zfs-fuse ({mount.source})"
    return f"{mount.fstype} ({mount.source})"


def _meminfo_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


def _first_line(runner: Runner, argv: list[str]) -> str:
    result = runner.run(argv, mutates=False, check=False, timeout=30)
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe(runner: Runner, pg_bin: Path) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "memory_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "os": _first_line(runner, ["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "postgresql": _first_line(runner, [str(pg_bin / "postgres"), "--version"]),
        "pgbackrest": _first_line(runner, ["pgbackrest", "version"]),
        # dpkg-query prints the one that is installed and fails on the other (check=False).
        "zfs": _first_line(
            runner, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "zfs-fuse",
                     "zfsutils-linux"],
        ),
        "load_average_start": load_average(),
    }
