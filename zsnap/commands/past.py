"""`zsnap query` and `zsnap dump`: the database as it was at a target, answered by an instance
paused there (zsnap.past)."""

from __future__ import annotations

import csv
import io
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zsnap.commands import Context, json_option, pass_ctx
from zsnap.commands.targets import duration_option, target_from, target_options
from zsnap.errors import UsageError
from zsnap.output import console, emit, err_console, table, to_json

if TYPE_CHECKING:
    from zsnap.clone.request import CloneRequest


def _request(at: str | None, before_xid: str | None, xid: str | None, lsn: str | None,
             restore_point: str | None, immediate: bool, set_id: str | None) -> CloneRequest:
    target = target_from(at, before_xid, xid, lsn, restore_point, immediate, set_id)
    from zsnap.clone.request import CloneRequest

    return CloneRequest(target, set_id=set_id)


@click.command()
@target_options
@click.option("--db", "database", metavar="NAME",
              help="Database (default: the one the --before-xid or --xid transaction "
                   "changed, else the one [standby] conninfo names).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header.")
@click.option("--keep", metavar="DURATION",
              help="Keep the instance this long (e.g. 10m): the next query at the same target "
                   "is answered at once.")
@json_option
@click.argument("sql")
@pass_ctx
def query(obj: Context, at: str | None, before_xid: str | None, xid: str | None,
          lsn: str | None, restore_point: str | None, immediate: bool, set_id: str | None,
          database: str | None, as_csv: bool, keep: str | None, as_json: bool,
          sql: str) -> None:
    """Run SQL on the database as it was at a target (read-only), print the result.

    The instance is destroyed afterwards, or kept for --keep."""
    from zsnap.past.query import QueryPast, QueryResult

    if as_csv and as_json:
        raise UsageError("give --json or --csv, not both")
    kept = duration_option(keep, "--keep")
    request = _request(at, before_xid, xid, lsn, restore_point, immediate, set_id)

    def show(result: QueryResult) -> None:
        """Printed as soon as it is there; the instance goes afterwards."""
        if as_csv:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(result.columns)
            writer.writerows([_cell(v) for v in row] for row in result.rows)
            sys.stdout.write(buffer.getvalue())
        elif as_json:
            sys.stdout.write(to_json(result.to_json()) + "\n")
        else:
            if result.columns:
                table(None, result.columns, [[_cell(v) for v in row] for row in result.rows])
            else:
                console.print(result.status, highlight=False)
            kept_note = ("; kept until "
                         f"{result.kept_until.isoformat(sep=' ', timespec='seconds')}"
                         if result.kept_until else "")
            err_console.print(
                f"{len(result.rows)} row(s) at {result.target}"
                f"{' in database ' + result.database if result.database else ''} "
                f"(set {result.set_id}) in "
                f"{result.seconds:.1f} s from {'kept ' if result.reused else ''}instance "
                f"{result.instance}{kept_note}", highlight=False)
        sys.stdout.flush()

    QueryPast(obj.config, obj.zfs()).run(request, sql, database, kept, answer=show)


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return "\\x" + bytes(value).hex()
    return value


@click.command()
@target_options
@click.option("--table", "tables", multiple=True, required=True, metavar="NAME",
              help="schema.name or name (public); several allowed.")
@click.option("--db", "database", metavar="NAME",
              help="Database (default: the one the --before-xid or --xid transaction "
                   "changed, else the one [standby] conninfo names).")
@click.option("--format", "fmt", type=click.Choice(["plain", "custom"]), default="plain",
              show_default=True, help="plain: SQL for psql; custom: for pg_restore.")
@click.option("-f", "--file", "file", metavar="FILE",
              help="Write here (mode 0600); '-' or none: standard output.")
@json_option
@pass_ctx
def dump(obj: Context, at: str | None, before_xid: str | None, xid: str | None,
         lsn: str | None, restore_point: str | None, immediate: bool, set_id: str | None,
         tables: tuple[str, ...], database: str | None, fmt: str, file: str | None,
         as_json: bool) -> None:
    """pg_dump of tables (definition and data) as they were at a target.

    Restore with psql (plain) or pg_restore (custom) into any database. --json prints what
    was dumped (then -f is needed)."""
    from zsnap.changes.find import tables_of
    from zsnap.past.dump import DumpPast

    to_stdout = file in (None, "-")
    if as_json and to_stdout:
        raise UsageError("--json describes the dump: give -f FILE for the dump itself")
    if fmt == "custom" and to_stdout and sys.stdout.isatty():
        raise UsageError("a custom-format dump is binary: give -f FILE or redirect stdout")
    names = list(tables_of(tables))
    request = _request(at, before_xid, xid, lsn, restore_point, immediate, set_id)
    op = DumpPast(obj.config, obj.zfs())
    if to_stdout:
        out = sys.stdout.buffer
        result = op.run(request, names, database, fmt, out.write)
        out.flush()
    else:
        path = Path(str(file))
        tmp = path.with_name(f".{path.name}.zsnap-dump")
        try:
            # Production rows: 0600 from the file's creation, never readable by others.
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                           "wb") as f:
                result = op.run(request, names, database, fmt, f.write)
            tmp.rename(path)
        finally:
            tmp.unlink(missing_ok=True)
    if as_json:
        emit(result.to_json(), True, lambda: None)
    else:
        err_console.print(
            f"dumped {', '.join(result.tables)} of {result.database} at {result.target} "
            f"(set {result.set_id}, {result.bytes} bytes){'' if to_stdout else ' to ' + str(file)}",
            highlight=False)
