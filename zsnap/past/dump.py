"""`zsnap dump`: pg_dump of some tables (definition and data) as they were at a target, from an
instance paused there, restorable with psql or pg_restore into any database. The instance is
destroyed afterwards; nothing is written to the primary or the standby."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from zsnap.clone.request import CloneRequest
from zsnap.config import Config
from zsnap.errors import CommandError, NotFoundError, PostgresError, first_line
from zsnap.past.instance import PastInstance, past_instance
from zsnap.pg.binaries import PgTools
from zsnap.pg.connection import conninfo_for
from zsnap.runner import os_user_entry
from zsnap.zfs import Zfs

DUMP_TIMEOUT_S = 24 * 3600.0
FORMATS = {"plain": "p", "custom": "c"}


def pattern(qualified: str) -> str:
    """`schema.name` as a pg_dump pattern that matches that table only (quoted: no wildcard,
    case kept)."""
    schema, _, name = qualified.partition(".")
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))


@dataclass(frozen=True)
class DumpResult:
    instance: str
    set_id: str
    target: str
    database: str
    tables: list[str]
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"instance": self.instance, "set": self.set_id, "target": self.target,
                "database": self.database, "tables": self.tables, "bytes": self.bytes}


@dataclass
class DumpPast:
    config: Config
    zfs: Zfs

    def run(self, request: CloneRequest, tables: list[str], database: str | None,
            fmt: str, out: Callable[[bytes], object]) -> DumpResult:
        with past_instance(self.config, self.zfs, request, purpose="dump") as inst:
            db = database or inst.database or self._default_db(inst)
            self._check_tables(inst, db, tables)
            written = 0

            def count(chunk: bytes) -> None:
                nonlocal written
                written += len(chunk)
                out(chunk)

            self._pg_dump(inst, db, tables, fmt, count)
            return DumpResult(inst.name, inst.set_id, str(inst.target), db, tables, written)

    def _default_db(self, inst: PastInstance) -> str:
        params = conninfo_to_dict(inst.conninfo())
        return str(params.get("dbname") or params.get("user") or "postgres")

    def _check_tables(self, inst: PastInstance, db: str, tables: list[str]) -> None:
        """Each table exists at the target: one line naming the first that does not."""
        try:
            with psycopg.connect(conninfo_for(inst.conninfo(db)), autocommit=True) as conn:
                for table in tables:
                    row = conn.execute(
                        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                        tuple(table.split(".", 1))).fetchone()
                    if row is None or row[0] not in ("r", "p", "m"):
                        raise NotFoundError(f"no table {table} in database {db} at "
                                            f"{inst.target}")
        except psycopg.Error as e:
            raise PostgresError(f"instance {inst.name} ({db}): {first_line(e)}") from None

    def _pg_dump(self, inst: PastInstance, db: str, tables: list[str], fmt: str,
                 out: Callable[[bytes], object]) -> None:
        params = {k: v for k, v in conninfo_to_dict(inst.conninfo(db)).items() if v is not None}
        # Never on pg_dump's command line: the password goes in its environment.
        password = params.pop("password", None)
        env = {**os.environ, "PGPASSWORD": str(password)} if password else dict(os.environ)
        user = self.config.standby.os_user
        os_user_entry(user)
        argv = [str(PgTools.of(self.config, self.zfs.runner).path("pg_dump")),
                "--dbname", _conninfo(params), f"--format={FORMATS[fmt]}", "--no-owner",
                "--no-privileges", *(f"--table={pattern(t)}" for t in tables)]
        try:
            self.zfs.runner.stream(argv, out, timeout=DUMP_TIMEOUT_S, user=user, env=env)
        except CommandError as e:
            raise PostgresError(f"pg_dump at {inst.target}: {failure(e.stderr) or e}") from None


def failure(stderr: str) -> str:
    """pg_dump's own line for what went wrong: its "error:" line, not the "detail:" or
    "hint:" lines that follow it (the query that failed), else the last line."""
    lines = stderr.splitlines()
    return next((line for line in lines if ": error: " in line), lines[-1] if lines else "")


def _conninfo(params: dict[str, Any]) -> str:
    return make_conninfo("", **params)
