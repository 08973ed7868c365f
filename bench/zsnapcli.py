"""zsnap as a user runs it: the real command line in a child process, through the runner, so
that the benchmark depends on zsnap's interface and not on its internals."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from zsnap.runner import Runner

# The runner's own record of a `zfs` call (`--debug`), with or without arguments; not the
# lines of a command's output it logs (zfs's usage text says "run: zfs set|get").
ZFS_CALL = re.compile(r"zsnap\.runner: run: zfs(?: |$)")


def zfs_calls(stderr: str) -> int:
    return sum(1 for line in stderr.splitlines() if ZFS_CALL.search(line))


@dataclass(frozen=True)
class Timed:
    seconds: float
    data: Any
    zfs_calls: int


class ZsnapCli:
    def __init__(self, config: Path, runner: Runner):
        self.config = config
        self.runner = runner

    def timed(self, *args: str, debug: bool = False, timeout: float = 7200) -> Timed:
        argv = [sys.executable, "-m", "zsnap", "--config", str(self.config)]
        if debug:
            argv.append("--debug")
        started = time.monotonic()
        result = self.runner.run([*argv, *args, "--json"], timeout=timeout)
        seconds = time.monotonic() - started
        return Timed(seconds, json.loads(result.stdout), zfs_calls(result.stderr))

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = self.timed("snapshot").data
        return data

    def clone(self, at: datetime, set_id: str | None = None, *extra: str) -> Timed:
        args = ["clone", "--at", at.isoformat()]
        if set_id is not None:
            args += ["--set", set_id]
        return self.timed(*args, *extra)

    def destroy(self, name: str) -> None:
        self.timed("destroy", name, timeout=600)
