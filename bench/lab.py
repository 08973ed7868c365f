"""A lab of its own for one benchmark: up for the `with` block, down after it unless kept."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsnap.lab import Lab, LabInfo
from zsnap.runner import Runner


@contextmanager
def bench_lab(name: str, port: int, size_gb: float, pg_bin: Path | None, keep: bool,
              runner: Runner) -> Iterator[LabInfo]:
    """Pools sized for a pgbench database of `size_gb`, its WAL and copy-on-write."""
    lab = Lab(name, port=port, pool_size=f"{max(6, int(size_gb * 10))}G", pg_bin=pg_bin,
              runner=runner)
    info = lab.up()
    try:
        yield info
    finally:
        if not keep:
            lab.down()


@dataclass
class LabBenchmark(ABC):
    """A benchmark on a lab of its own (bench_lab): each sets its own defaults (a lab's name
    and port, so that two never share one) and measures in `_run`."""

    size_gb: float
    name: str
    port: int
    keep: bool = False
    pg_bin: Path | None = None

    def run(self) -> dict[str, Any]:
        runner = Runner()
        with bench_lab(self.name, self.port, self.size_gb, self.pg_bin, self.keep,
                       runner) as info:
            return self._run(info, runner)

    @abstractmethod
    def _run(self, info: LabInfo, runner: Runner) -> dict[str, Any]:
        """What the benchmark measures on `info`, its lab."""
