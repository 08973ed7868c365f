"""The one way zsnap writes a small file: whole or not at all. The replay-pause marker, the
reinit plan, a clone's teardown record and configuration, the history, the heartbeat, the
metrics textfile and the caches of what was found in the WAL all go through here."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_durably(
    path: Path, data: str | bytes, *, mode: int = 0o644, owner: tuple[int, int] | None = None,
    parents: bool = True, sync: bool = True,
) -> None:
    """Written beside (mode `mode` from its creation: 0600 where a secret may be in it; owned
    by `owner`, a uid and gid, when given), renamed into place: `path` holds the old content or
    the new, never part of it. With `sync` (not for a cache, which a crash only makes cold)
    the file and then its directory are fsynced, so that the new content survives a crash.
    The parent directory is made if missing, unless `parents` is False."""
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # whatever the umask took away or an old file had
        if owner is not None:
            os.chown(tmp, *owner)
        tmp.rename(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
