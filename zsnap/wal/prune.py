"""`zsnap wal prune`: archived WAL no complete set needs, removed from a directory archive as
pg_archivecleanup would: WAL segments (and `.partial` ones) before the cutoff segment go,
whatever their timeline; `.history` and `.backup` files stay. An archive another tool keeps
(pgBackRest, Barman, the tool behind a restore_command) is left to it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zsnap.catalog import Catalog
from zsnap.config import Config
from zsnap.lsn import Segment
from zsnap.wal.archives import DirectoryArchive, required
from zsnap.wal.check import oldest_complete
from zsnap.wal.names import PARTIAL, SEGMENT, split_suffix

log = logging.getLogger(__name__)


def cleanup_names(names: Iterable[str], cutoff: Segment) -> list[str]:
    """pg_archivecleanup's choice: WAL and .partial files whose log/segment part is before the
    cutoff's, on any timeline. History, backup history and unknown files are never chosen."""
    limit = cutoff.name[8:]
    chosen = []
    for name in names:
        plain, _ = split_suffix(name)
        m = SEGMENT.match(plain) or PARTIAL.match(plain)
        if m and m.group(2) < limit:
            chosen.append(name)
    return sorted(chosen)


def remove_files(directory: Path, names: Sequence[str]) -> None:
    """Unlink, then fsync the directory so that the removal itself is durable."""
    for name in names:
        (directory / name).unlink(missing_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class WalPruneResult:
    archive: str
    cutoff: str | None
    oldest_set: str | None
    removed: list[str]
    kept: int
    dry_run: bool
    note: str = ""


@dataclass
class WalPrune:
    config: Config
    catalog: Catalog
    dry_run: bool = False

    def run(self) -> WalPruneResult:
        source = required(self.config, self.catalog.zfs.runner)
        names = source.names()
        oldest = oldest_complete(self.catalog.sets())
        if oldest is None:
            return WalPruneResult(source.where, None, None, [], len(names), self.dry_run,
                                  "no complete snapshot set: nothing tells which WAL is needed")
        cutoff = oldest.redo.segment(oldest.timeline, oldest.wal_segment_size)
        if source.managed_by is not None:
            # Its tool keeps its own catalogue of the WAL; a file removed behind its back
            # would be a gap it does not know of.
            return WalPruneResult(
                source.where, cutoff.name, oldest.id, [], len(names), self.dry_run,
                f"{source.managed_by} removes WAL from this archive, not zsnap: the sets need "
                f"it from {cutoff.name} on, so keep the archive retention at least that long")
        assert isinstance(source, DirectoryArchive)
        chosen = cleanup_names(names, cutoff)
        if not self.dry_run:
            remove_files(source.path, chosen)
            log.info("removed %d archived WAL files before %s", len(chosen), cutoff.name)
        return WalPruneResult(source.where, cutoff.name, oldest.id, chosen,
                              len(names) - len(chosen), self.dry_run)
