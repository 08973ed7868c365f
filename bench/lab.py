"""A lab of its own for one benchmark: up for the `with` block, down after it unless kept."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
