"""What is asked of a flashback instance (CloneRequest) and what making it answers
(CloneResult): apart from zsnap.clone.create, so that a caller that only names them (a kept
instance of `zsnap query`, answered without making one) does not load what makes one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsnap.clone.target import Target
from zsnap.lsn import Lsn
from zsnap.units import MB

if TYPE_CHECKING:
    from zsnap.clone.serverlog import Phases


@dataclass(frozen=True)
class Commit:
    """Where an xid target's transaction committed in the WAL, and the database it changed
    (a transaction writes in one database, besides the shared catalogs)."""

    lsn: Lsn
    database: int | None = None  # its OID; None: shared catalogs only, or not seen


class Wait(Enum):
    """When a clone becomes durable (zsnap.clone.durability)."""

    BACKGROUND = "background"  # after `zsnap clone` returns, by a worker of its own
    WAIT = "wait"  # before it returns (`--durable`)
    SKIP = "skip"  # never: a verification instance, removed after its checks


@dataclass(frozen=True)
class CloneRequest:
    target: Target
    name: str | None = None
    port: int | None = None
    pause: bool = False  # stay paused at the target (read-only) instead of promoting
    set_id: str | None = None  # use this set, no fallback
    fast_recovery: bool = True  # replay with the throwaway-instance settings
    timeout_s: float | None = None  # for reaching the target once the instance is consistent
    durability: Wait = Wait.BACKGROUND
    # How long it may live: past that, `zsnap destroy --expired` (and the daemon) remove it.
    # None: until destroyed (`zsnap clone` gives [clones] ttl when --ttl is not given).
    ttl: timedelta | None = None
    # The target transaction's commit, when it was looked up in the WAL: only sets consistent
    # before it can stop at (or just before) it.
    commit: Commit | None = None
    # PostgreSQL settings of this instance only, after [clones] settings.
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CloneResult:
    name: str
    set_id: str
    port: int
    dsn: str
    target: Target
    recovered_to: datetime | None  # the last replayed commit's timestamp
    replay_lsn: Lsn | None
    consistent_lsn: Lsn | None  # where the instance's log says it became consistent
    promoted: bool
    elapsed_s: float
    pgdata: Path
    log: Path
    datasets: list[str]
    fell_back_from: list[str] = field(default_factory=list)
    # Seconds each step took, in order: clone (everything before the server starts; for the
    # first attempt also choosing the set), consistent, target, promote, and durable where
    # the caller waited for it.
    steps_s: dict[str, float] = field(default_factory=dict)
    durability: str = "durable"  # a zsnap.clone.durability.Durability value
    # The WAL replayed, from the set's redo point to where replay stopped, and the seconds
    # from the server's start until it stopped there.
    wal_replayed_bytes: int | None = None
    replay_s: float | None = None
    server: Phases | None = None  # from the server log: its start, its replay
    # The database an xid target's transaction changed, by its name in the instance (`dsn`
    # names it); None: the one the standby's conninfo names.
    database: str | None = None

    @property
    def replay_mb_s(self) -> float | None:
        if self.wal_replayed_bytes is None or not self.replay_s:
            return None
        return self.wal_replayed_bytes / MB / self.replay_s

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "set": self.set_id,
            "port": self.port,
            "dsn": self.dsn,
            "database": self.database,
            "target": str(self.target),
            "target_note": self.target.note,
            "recovered_to": self.recovered_to.isoformat() if self.recovered_to else None,
            "replay_lsn": str(self.replay_lsn) if self.replay_lsn else None,
            "consistent_lsn": str(self.consistent_lsn) if self.consistent_lsn else None,
            "state": "promoted" if self.promoted else "paused",
            "elapsed_s": round(self.elapsed_s, 3),
            "pgdata": str(self.pgdata),
            "log": str(self.log),
            "datasets": self.datasets,
            "fell_back_from": self.fell_back_from,
            "steps_s": self.steps_s,
            "durability": self.durability,
            "wal_replayed_bytes": self.wal_replayed_bytes,
            "replay_s": self.replay_s,
            "replay_mb_s": round(self.replay_mb_s, 1) if self.replay_mb_s is not None else None,
            # The floor (PostgreSQL's start and its replay to the target) and what zsnap adds.
            "limit_s": self.server.limit_s if self.server else None,
            "overhead_s": (round(self.elapsed_s - self.server.limit_s, 3) if self.server
                           else None),
        }
