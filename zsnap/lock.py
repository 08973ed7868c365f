"""flock-based locks, one per resource, holding the owner's pid. The kernel drops a lock when
its process dies, so a killed run never leaves a stale lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zsnap.errors import LockBusy, UsageError

# Held from before replay is paused until after it is resumed.
SNAPSHOT_LOCK = "snapshot"


@contextmanager
def locked(state_dir: Path, resource: str) -> Iterator[None]:
    path = state_dir / f"{resource}.lock"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UsageError(f"[state] dir {state_dir}: {e.strerror} (zsnap keeps its locks "
                         "there: create it, or set another)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockBusy(f"another zsnap {resource} is running (pid {owner})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
