"""Small files zsnap's next run must find whole after a crash (the replay-pause marker, the
reinit plan, what was found in the WAL)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_durably(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Written beside (mode `mode` from its creation: 0600 where a secret may be in it),
    fsynced, renamed into place, and the directory fsynced: `path` holds the old text or the
    new, never part of it. The parent directory is made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # whatever the umask took away or an old file had
        tmp.rename(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
