"""Faults injected for real: a `zfs` on PATH that runs the real one except where a test wants
it to hang or do something first."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

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
