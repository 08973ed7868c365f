"""Where a restore path writes its copy: a directory on local disk, or a ZFS dataset of the
lab's pool (to compare with the clone on the same filesystem)."""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.machine import filesystem
from zsnap.zfs import Zfs

OS_USER = "postgres"


def owned_dir(path: Path) -> Path:
    owner = pwd.getpwnam(OS_USER)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chmod(path, 0o700)
    return path


def owned_file(path: Path, text: str) -> Path:
    owner = pwd.getpwnam(OS_USER)
    path.write_text(text)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


class Destination(Protocol):
    root: Path

    def prepare(self) -> Path:
        """An empty directory owned by the cluster's OS user, for data and tablespaces."""
        ...

    def discard(self) -> None: ...

    def filesystem(self) -> str: ...


@dataclass
class LocalDir:
    root: Path

    def prepare(self) -> Path:
        self.discard()
        return owned_dir(self.root)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def filesystem(self) -> str:
        return filesystem(self.root)


@dataclass
class ZfsDataset:
    zfs: Zfs
    dataset: str
    root: Path

    def prepare(self) -> Path:
        self.discard()
        self.zfs.create(self.dataset, {"mountpoint": str(self.root)})
        return owned_dir(self.root)

    def discard(self) -> None:
        if self.zfs.exists(self.dataset):
            self.zfs.destroy(self.dataset, recursive=True)

    def filesystem(self) -> str:
        return f"zfs-fuse ({self.dataset})" if self.zfs.exists(self.dataset) else "zfs"
