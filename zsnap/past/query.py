"""`zsnap query`: SQL answered by the database as it was at a target, in a read-only instance
recovered to it (zsnap.past.instance), destroyed afterwards or kept for `--keep`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors

from zsnap.clone.request import CloneRequest
from zsnap.config import Config
from zsnap.errors import PostgresError, UsageError, first_line
from zsnap.past.instance import past_instance
from zsnap.pg.connection import conninfo_for
from zsnap.zfs import Zfs


class WritingQuery(UsageError):
    """The statement tried to write: an instance of the past is read-only."""


@dataclass
class QueryResult:
    instance: str
    set_id: str
    target: str
    database: str | None
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    status: str = ""  # the command tag, for a statement that returns no rows
    reused: bool = False
    kept_until: datetime | None = None
    seconds: float = 0.0  # to the answer
    # Where the time went in making the instance (none when a kept one answered): the clone's
    # steps, the WAL it replayed, and the floor (PostgreSQL's start and replay).
    instance_s: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns,
                "rows": [dict(zip(self.columns, row, strict=True)) for row in self.rows],
                "status": self.status, "instance": self.instance, "set": self.set_id,
                "target": self.target, "database": self.database, "reused": self.reused,
                "kept_until": self.kept_until.isoformat() if self.kept_until else None,
                "seconds": round(self.seconds, 3), "instance_made": self.instance_s or None}


@dataclass
class QueryPast:
    config: Config
    zfs: Zfs

    def run(self, request: CloneRequest, sql: str, database: str | None,
            keep: timedelta | None = None,
            answer: Callable[[QueryResult], None] = lambda result: None) -> QueryResult:
        """`answer` is told the result as soon as there is one, before the instance goes."""
        if not sql.strip():
            raise UsageError("give the SQL to run")
        started = time.monotonic()
        with past_instance(self.config, self.zfs, request, keep=keep, purpose="query") as inst:
            database = database or inst.database
            result = QueryResult(inst.name, inst.set_id, str(inst.target), database,
                                 reused=inst.reused,
                                 kept_until=inst.expires_at if keep is not None else None)
            if inst.made is not None:
                made = inst.made.to_json()
                result.instance_s = {k: made[k] for k in (
                    "elapsed_s", "steps_s", "wal_replayed_bytes", "replay_s", "limit_s",
                    "overhead_s")}
            try:
                with psycopg.connect(conninfo_for(inst.conninfo(database)),
                                     autocommit=True) as conn:
                    cur = conn.execute(sql.encode())
                    if cur.description is not None:
                        result.columns = [c.name for c in cur.description]
                        result.rows = cur.fetchall()
                    result.status = cur.statusmessage or ""
            except errors.ReadOnlySqlTransaction:
                raise WritingQuery(
                    f"the instance at {inst.target} ({inst.name}) is read-only: nothing is "
                    "written to the past") from None
            except psycopg.OperationalError as e:
                raise PostgresError(f"instance {inst.name}: {first_line(e)}") from None
            except psycopg.Error as e:
                raise UsageError(f"query failed at {inst.target}: {first_line(e)}") from None
            result.seconds = time.monotonic() - started
            answer(result)
        return result
