"""Small files zsnap's next run must find whole after a crash (the replay-pause marker, the
reinit plan)."""

from __future__ import annotations

import os
from pathlib import Path


def write_durably(path: Path, text: str) -> None:
    """Written beside, fsynced, then renamed into place: `path` holds the old text or the
    new, never part of it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.rename(path)
