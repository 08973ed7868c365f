"""The restore paths compared: each takes a recovery target and ends with a promoted instance
that answers a query, times that, checks what it recovered, and cleans up after itself."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from bench.basebackup import BaseBackup
from bench.dest import Destination, owned_dir
from bench.instance import Instance, wait_ready
from bench.machine import filesystem
from bench.pgbackrest import PgBackRest
from bench.zsnapcli import ZsnapCli
from zsnap.pg.binaries import PgTools

# What a restore recovered, for a cross-check between paths (same target, same rows).
ORACLE_SQL = """
SELECT (SELECT count(*) FROM pgbench_history),
       (SELECT timestamp FROM pg_last_committed_xact())
"""


@dataclass(frozen=True)
class Start:
    """The common starting point of one experiment: the set and the backups taken together."""

    set_id: str | None
    backup_label: str | None


@dataclass(frozen=True)
class Outcome:
    path: str
    target: datetime
    total_s: float  # from the first command to a promoted instance that answers a query
    copy_s: float | None  # restore or clone step (None where the tool does not say)
    recover_s: float | None  # start of PostgreSQL to ready
    filesystem: str
    history_rows: int
    recovered_to: datetime | None
    detail: dict[str, Any] = field(default_factory=dict)


class RestorePath(Protocol):
    key: str

    def restore(self, target: datetime, start: Start) -> Outcome: ...


def oracle(dsn: str) -> tuple[int, datetime | None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(ORACLE_SQL).fetchone()
    assert row is not None
    return int(row[0]), row[1]


@dataclass
class ZsnapPath:
    """`zsnap clone --at T` (with `--set` for a common start, else zsnap's own choice)."""

    cli: ZsnapCli
    force_set: bool
    key: str = "zsnap"
    extra: tuple[str, ...] = ()

    def restore(self, target: datetime, start: Start) -> Outcome:
        set_id = start.set_id if self.force_set else None
        timed = self.cli.clone(target, set_id, *self.extra)
        returned = time.monotonic()
        data = timed.data
        try:
            # The clone returns once promoted (or paused at the target); confirm as for the
            # other paths (not timed).
            if "--pause" not in self.extra:
                wait_ready(str(data["dsn"]), timeout_s=60)
            rows, recovered = oracle(str(data["dsn"]))
            fs = filesystem(Path(data["pgdata"]))
            # Durability goes on in the background; waited for here (not timed), so that no
            # run's checkpoint overlaps the next run.
            self.cli.timed("durable", str(data["name"]), timeout=3600)
            durable_after = time.monotonic() - returned
        finally:
            self.cli.destroy(str(data["name"]))
        return Outcome(
            path=self.key, target=target, total_s=timed.seconds, copy_s=None,
            recover_s=None, filesystem=fs, history_rows=rows,
            recovered_to=recovered,
            detail={k: data.get(k) for k in ("set", "elapsed_s", "recovered_to", "name")}
            | {"clone": data, "durable_after_s": round(durable_after, 2)},
        )


@dataclass
class CopyPath:
    """A restore that copies the database into `dest`, then starts and recovers it."""

    key: str
    dest: Destination
    pg: PgTools
    port: int
    socket_dir: Path
    log: Path
    pgbackrest: PgBackRest | None = None
    basebackup: BaseBackup | None = None
    archive: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)

    def restore(self, target: datetime, start: Start) -> Outcome:
        root = self.dest.prepare()
        data = owned_dir(root / "data")
        tablespaces = owned_dir(root / "ts")
        instance = Instance(self.pg, data, self.port, self.socket_dir, self.log)
        fs = self.dest.filesystem()
        try:
            began = time.monotonic()
            recovery = self._copy(data, tablespaces, target, start)
            instance.settings(recovery | self.settings)
            copied = time.monotonic()
            instance.start()
            instance.wait_ready()
            ready = time.monotonic()
            rows, recovered = oracle(instance.dsn)
        finally:
            instance.stop()
            self.dest.discard()
        return Outcome(
            path=self.key, target=target, total_s=ready - began, copy_s=copied - began,
            recover_s=ready - copied, filesystem=fs, history_rows=rows, recovered_to=recovered,
        )

    def _copy(
        self, data: Path, tablespaces: Path, target: datetime, start: Start
    ) -> dict[str, str]:
        """Copy the database; return the recovery settings bench still has to add."""
        if self.pgbackrest is not None:
            assert start.backup_label is not None
            # pgBackRest writes restore_command, the target and the action itself.
            self.pgbackrest.restore(data, tablespaces, start.backup_label, target)
            return {}
        assert self.basebackup is not None and self.archive is not None
        self.basebackup.restore(data, tablespaces)
        return {
            "restore_command": f"'cp {self.archive}/%f %p'",
            "recovery_target_time": f"'{target.isoformat(sep=' ')}'",
            "recovery_target_action": "'promote'",
        }
