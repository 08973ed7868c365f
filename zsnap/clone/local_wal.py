"""A clone's pg_wal lives beside its mountpoints, on the local disk under `[clones]
mount_root`, not in its ZFS clone. Recovery copies every segment it restores from the archive
into pg_wal and reads it back: on zfs-fuse that copy alone cost 50 ms a segment (`python -m
bench knobs`: 1.8 s against 2.6 s of replay for 0.5 GB of WAL), and the clone's own WAL after
promotion is small. The set's pg_wal stays in the clone, renamed, as the snapshot had it; only
what recovery cannot fetch from the archive (the standby's newest segments) and the timeline
history files are copied over."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Callable
from pathlib import Path

# Where the set's own pg_wal goes inside the clone's PGDATA (PostgreSQL ignores it).
SET_WAL = "pg_wal.zsnap-set"


def move_wal(
    pgdata: Path, local: Path, wanted: Callable[[str], bool], owner: pwd.struct_passwd,
    cut: tuple[str, int] | None = None,
) -> list[str]:
    """Point `pgdata/pg_wal` at `local`, a new directory, with the files of the set's pg_wal
    that `wanted` names (and every history file) copied in, and `cut` (a segment's name and
    an offset) applied to its copy: zeros from there on read as the end of the WAL. Returns
    what was copied."""
    link = pgdata / "pg_wal"
    source = link.resolve()
    local.mkdir(mode=0o700)
    (local / "archive_status").mkdir(mode=0o700)
    for path in (local, local / "archive_status"):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    copied = []
    for entry in sorted(source.iterdir()):
        if entry.is_file() and (entry.name.endswith(".history") or wanted(entry.name)):
            shutil.copy2(entry, local / entry.name)
            os.chown(local / entry.name, owner.pw_uid, owner.pw_gid)
            copied.append(entry.name)
    if cut is not None and cut[0] in copied:
        name, offset = cut
        _cut(local / name, offset)
        if not offset:
            copied.remove(name)
    if link.is_symlink():
        link.unlink()  # pg_wal on a dataset of its own: that clone keeps the set's files
    else:
        link.rename(pgdata / SET_WAL)
    link.symlink_to(local)
    os.lchown(link, owner.pw_uid, owner.pw_gid)
    return copied


def _cut(segment: Path, offset: int) -> None:
    """Zeros from `offset` to the end of the segment's file (none of it when at its start)."""
    if not offset:
        segment.unlink()
        return
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.seek(offset)
        f.write(bytes(max(size - offset, 0)))
