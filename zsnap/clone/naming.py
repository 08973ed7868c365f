"""Where a clone lives: its datasets (one per set member, each in its origin's pool, since a ZFS
clone cannot leave its pool), its mountpoints and files under `[clones] mount_root`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from zsnap.errors import UsageError
from zsnap.zfs import pool_of

CLONES_DATASET = "zsnap-clones"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
# A unix socket path is at most 107 bytes; PostgreSQL adds "/.s.PGSQL.NNNNN.lock".
_MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535.lock")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"bad clone name {name!r}: 1-48 letters, digits, '_', '.', '-', not starting with "
            "a punctuation mark"
        )
    return name


def default_name(now: datetime) -> str:
    return "clone-" + now.strftime("%Y%m%dT%H%M%S")


def hold_tag(name: str) -> str:
    return f"zsnap-clone-{name}"


@dataclass(frozen=True)
class ClonePaths:
    name: str
    mount_root: Path

    @property
    def dir(self) -> Path:
        """Holds the mountpoints, the socket directory and the server log."""
        return self.mount_root / self.name

    @property
    def socket_dir(self) -> Path:
        return self.dir / "run"

    @property
    def wal_dir(self) -> Path:
        """The clone's pg_wal, on the local disk (zsnap.clone.local_wal)."""
        return self.dir / "pg_wal"

    @property
    def log(self) -> Path:
        return self.dir / "postgresql.log"

    def mountpoint(self, member: int) -> Path:
        return self.dir / str(member)

    def parent_dataset(self, origin_dataset: str) -> str:
        return f"{pool_of(origin_dataset)}/{CLONES_DATASET}/{self.name}"

    def dataset(self, member: int, origin_dataset: str) -> str:
        return f"{self.parent_dataset(origin_dataset)}/{member}"

    def check(self) -> None:
        if len(str(self.socket_dir)) > _MAX_SOCKET_DIR:
            raise UsageError(
                f"socket directory {self.socket_dir} is too long for a unix socket: "
                "use a shorter clone name or [clones] mount_root"
            )
