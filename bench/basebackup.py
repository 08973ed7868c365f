"""The manual way: a pg_basebackup in tar format at the same moment, restored by extracting it
into a fresh directory (tablespace_map rewritten) and recovered with the lab's archive."""

from __future__ import annotations

from pathlib import Path

from bench.dest import OS_USER, owned_dir, owned_file
from zsnap.lab import LabInfo
from zsnap.pg.binaries import PgTools
from zsnap.runner import Runner


class BaseBackup:
    def __init__(self, info: LabInfo, runner: Runner, home: Path):
        self.info = info
        self.runner = runner
        self.home = home
        self.pg = PgTools(runner, info.pg_bin, OS_USER)

    def take(self) -> None:
        target = self.home
        if target.exists():
            self.runner.run(["rm", "-rf", str(target)], timeout=600)
        owned_dir(target.parent)
        self.pg.run(
            "pg_basebackup", "-h", str(self.info.socket_dir), "-p", str(self.info.primary_port),
            "-U", "postgres", "-D", str(target), "-F", "t", "-X", "stream", "-c", "fast",
            timeout=7200,
        )

    def restore(self, data: Path, tablespaces: Path) -> None:
        """Extract the copy: base.tar into `data`, each <oid>.tar into tablespaces/<oid>, WAL
        into pg_wal, and point tablespace_map (read at recovery start) at the new places."""
        self._untar(self.home / "base.tar", data)
        self._untar(self.home / "pg_wal.tar", data / "pg_wal")
        lines = []
        for tar in sorted(self.home.glob("*.tar")):
            if tar.stem.isdigit():
                place = owned_dir(tablespaces / tar.stem)
                self._untar(tar, place)
                lines.append(f"{tar.stem} {place}\n")
        owned_file(data / "tablespace_map", "".join(lines))
        owned_file(data / "recovery.signal", "")

    def _untar(self, tar: Path, into: Path) -> None:
        owned_dir(into)
        self.runner.run(["tar", "-xf", str(tar), "-C", str(into)], user=OS_USER, timeout=7200,
                        cwd="/")
