"""A state directory is one cluster's: its daemon's heartbeat, its history (what `zsnap check`
reports on), its replay marker and its caches. Two clusters' configurations naming the same
directory would each read the other's heartbeat and last runs as its own, so the first zsnap
to use a directory writes its cluster's name there, and another cluster is refused."""

from __future__ import annotations

import contextlib
from pathlib import Path

from zsnap.errors import ConfigError
from zsnap.files import write_durably

OWNER = "cluster"


def claim(state_dir: Path, cluster: str) -> None:
    path = state_dir / OWNER
    try:
        owner = path.read_text().strip()
    except FileNotFoundError:
        # Claimed once it exists (a command that only reads makes no directory); not
        # writable: whatever writes there says so, `zsnap doctor` too.
        with contextlib.suppress(OSError):
            write_durably(path, cluster + "\n", parents=False)
        return
    except (OSError, UnicodeDecodeError):
        return
    if owner and owner != cluster:
        raise ConfigError(
            f"[state] dir {state_dir} holds the state of cluster {owner!r}, not {cluster!r}: "
            f"give each cluster a [state] dir of its own (or, for the same cluster renamed, "
            f"write its new name into {path})")
