"""Backup mode on a primary: `pg_backup_start` / `pg_backup_stop` (PostgreSQL 15+) on one
session, and the backup label that `pg_backup_stop` returns.

A primary's datasets, snapshotted one after another, are several instants: a tablespace
snapshotted later can hold pages newer than the WAL (and the redo point) in the PGDATA snapshot.
Backup mode makes that safe the way a base backup is: recovery starts at the backup's checkpoint
(the label) and is consistent only once it has replayed past the backup's end, by which time
every page any snapshot holds has been rewritten from WAL (full-page writes are forced while
backup mode is on)."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zsnap.errors import PostgresError, first_line
from zsnap.pg.connection import Connection

log = logging.getLogger(__name__)

_LSN = r"([0-9A-Fa-f]+/[0-9A-Fa-f]+)"
_START = re.compile(rf"^START WAL LOCATION: {_LSN}", re.MULTILINE)
_CHECKPOINT = re.compile(rf"^CHECKPOINT LOCATION: {_LSN}", re.MULTILINE)
_TIMELINE = re.compile(r"^START TIMELINE: (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class BackupLabel:
    """The `labelfile` of `pg_backup_stop`, written as `backup_label` into a clone's PGDATA."""

    text: str

    def _field(self, pattern: re.Pattern[str], name: str) -> str:
        m = pattern.search(self.text)
        if m is None:
            raise PostgresError(f"the backup label has no {name} line")
        return m.group(1)

    @property
    def start_lsn(self) -> str:
        return self._field(_START, "START WAL LOCATION")

    @property
    def checkpoint_lsn(self) -> str:
        return self._field(_CHECKPOINT, "CHECKPOINT LOCATION")

    @property
    def timeline(self) -> int:
        return int(self._field(_TIMELINE, "START TIMELINE"))

    def encode(self) -> str:
        """One line for a ZFS user property (`zfs list -H` would split a value with
        newlines or tabs): base64 of the UTF-8 text."""
        return base64.b64encode(self.text.encode()).decode("ascii")

    @classmethod
    def decode(cls, value: str) -> BackupLabel:
        try:
            return cls(base64.b64decode(value.encode("ascii"), validate=True).decode())
        except (binascii.Error, UnicodeError, ValueError):
            raise PostgresError(f"a stored backup label is not valid base64: {value[:40]!r}") \
                from None


@dataclass(frozen=True)
class BackupEnd:
    """What `pg_backup_stop` returns, and the time right after it."""

    lsn: str  # a clone is consistent once its replay passes this
    label: BackupLabel
    # Later than every commit before `lsn` (a commit's timestamp is taken before its record
    # is inserted): the earliest time a recovery target may name.
    finished: datetime


class BackupMode:
    """Non-exclusive backup mode on `conn`. It belongs to the session: if the connection ends
    without `stop`, PostgreSQL aborts it."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.active = False

    def start(self, label: str) -> str:
        """Start backup mode with an immediate checkpoint; the redo LSN of that checkpoint,
        where recovery of the set starts."""
        lsn = self._one("SELECT pg_backup_start(%s, fast => true)::text", (label,))
        self.active = True
        return str(lsn)

    def stop(self) -> BackupEnd:
        """End backup mode, waiting until the WAL up to its end is archived: a clone of the
        set needs that WAL before it is consistent. Not retried by `abort` if it fails:
        either backup mode has ended already, or it ends with the session."""
        self.active = False
        row = self._row(
            "SELECT lsn::text, labelfile, clock_timestamp()"
            " FROM pg_backup_stop(wait_for_archive => true)"
        )
        lsn, labelfile, finished = row
        return BackupEnd(str(lsn), BackupLabel(str(labelfile)), finished)

    def abort(self) -> None:
        """End backup mode after a failure, without waiting for the archive; a problem is
        logged, not raised over the failure being handled."""
        if not self.active:
            return
        import psycopg

        try:
            self.conn.execute("SELECT pg_backup_stop(wait_for_archive => false)")
            self.active = False
        except psycopg.Error as e:
            log.warning("could not end backup mode (it ends with the session): %s",
                        first_line(e))

    def _row(self, sql: str, params: tuple[object, ...] = ()) -> tuple[Any, ...]:
        import psycopg

        try:
            row = self.conn.execute(sql, params).fetchone()
        except psycopg.Error as e:
            name = "pg_backup_start" if "pg_backup_start" in sql else "pg_backup_stop"
            raise PostgresError(f"{name} failed: {first_line(e)}") from None
        if row is None:
            raise PostgresError("backup mode returned no row")
        return tuple(row)

    def _one(self, sql: str, params: tuple[object, ...]) -> object:
        return self._row(sql, params)[0]
