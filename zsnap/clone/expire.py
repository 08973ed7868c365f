"""`zsnap destroy --expired` (and the daemon's `expire` job): flashback instances whose expiry
has passed are destroyed, one after another, each whole or not at all. A clone without an
expiry is never touched: only `--ttl`, `[clones] ttl`, `zsnap query --keep` and the instances
zsnap makes for one question give one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from zsnap.clone import registry
from zsnap.clone.destroy import DestroyClone
from zsnap.config import Config
from zsnap.errors import ZsnapError
from zsnap.zfs import Zfs

log = logging.getLogger(__name__)


@dataclass
class ExpiredResult:
    destroyed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        return {"destroyed": self.destroyed, "failed": self.failed, "dry_run": self.dry_run}

    def summary(self) -> str:
        text = f"{len(self.destroyed)} expired flashback instance(s) destroyed"
        if self.failed:
            text += f", {len(self.failed)} failed: " + "; ".join(
                f"{n} ({why})" for n, why in self.failed.items())
        return text


@dataclass
class DestroyExpired:
    config: Config
    zfs: Zfs
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def run(self, *, dry_run: bool = False) -> ExpiredResult:
        result = ExpiredResult(dry_run=dry_run)
        now = self.now()
        for clone in registry.read(self.zfs, self.config.snapshot.cluster, sizes=False):
            if not registry.expired(clone, now):
                continue
            try:
                DestroyClone(self.config, self.zfs).run(clone.name, dry_run=dry_run)
            except ZsnapError as e:
                log.warning("expired flashback instance %s not destroyed: %s", clone.name, e)
                result.failed[clone.name] = str(e)
                continue
            result.destroyed.append(clone.name)
        return result
