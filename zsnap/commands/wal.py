"""`zsnap wal check` and `zsnap wal prune`: the WAL archive (a directory, a pgBackRest
stanza or a Barman server)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from zsnap.commands import Context, dry_run_option, json_option, pass_ctx
from zsnap.errors import EXIT_FAILURE, EXIT_NOT_FOUND
from zsnap.jobs import Job
from zsnap.lsn import Lsn
from zsnap.output import console, emit, err_console, error_line, escape, table

if TYPE_CHECKING:
    from zsnap.changes.find import FindResult


@click.group()
def wal() -> None:
    """The WAL archive ([archive] path, pgbackrest_stanza or barman_server): gaps, cleanup,
    and what changed when."""


@wal.command("check")
@json_option
@pass_ctx
def wal_check(obj: Context, as_json: bool) -> None:
    """Report missing and damaged segments per timeline, from the oldest set's redo segment on.

    Exits 1 when there is a gap, a damaged file or a timeline problem."""
    from zsnap.wal.check import WalCheck

    result = WalCheck(obj.config, obj.catalog()).run()
    report = result.report
    data = {
        "archive": result.archive,
        "oldest_set": result.oldest_set,
        "ok": result.ok,
        "start": report.start if report else None,
        "newest": report.newest if report else None,
        "latest_timeline": report.latest_timeline if report else None,
        "checked": report.checked if report else 0,
        "missing": report.missing if report else 0,
        "gaps": [vars(g) for g in report.gaps] if report else [],
        "problems": report.problems if report else [],
        "damaged": report.damaged if report else {},
        "unusable_sets": result.unusable_sets,
        "partials": result.partials,
    }

    def human() -> None:
        if report is None:
            console.print(f"{result.archive}: no complete snapshot set to check from")
            return
        console.print(
            f"{result.archive}: {report.checked} segments from {report.start} (set "
            f"{result.oldest_set}) to {report.newest}, latest timeline {report.latest_timeline}",
            highlight=False,
        )
        if report.gaps:
            table("gaps", ["timeline", "first missing", "last missing", "segments"],
                  [[g.timeline, g.first, g.last, g.count] for g in report.gaps])
        for problem in report.problems:
            console.print(f"[red]problem:[/] {escape(problem)}", highlight=False)
        for name, why in report.damaged.items():
            console.print(f"[red]damaged:[/] {name}: {escape(why)}", highlight=False)
        if result.unusable_sets:
            console.print(f"[red]sets missing their own WAL:[/] {', '.join(result.unusable_sets)}",
                          highlight=False)
        if result.ok:
            console.print("[green]no gap[/]")

    emit(data, as_json, human)
    if not result.ok:
        sys.exit(EXIT_FAILURE)


@wal.command("prune")
@dry_run_option
@json_option
@pass_ctx
def wal_prune(obj: Context, dry_run: bool, as_json: bool) -> None:
    """Remove archived WAL older than the oldest set's redo segment (pg_archivecleanup
    semantics: .history and .backup files stay). A pgBackRest repository is left to
    `pgbackrest expire`, a Barman server to its retention policy."""
    from zsnap.wal.prune import WalPrune

    cfg = obj.config
    op = WalPrune(cfg, obj.catalog(), dry_run=dry_run)
    if dry_run:
        result = op.run()
    else:
        result = Job("wal-prune", op.run, lambda r: {
            "detail": f"{len(r.removed)} file(s) removed before {r.cutoff}"}).run(
            cfg.state.dir).value()
    data = vars(result)

    def human() -> None:
        verb = "would remove" if dry_run else "removed"
        if result.cutoff is None or result.note:
            console.print(f"{result.archive}: nothing removed: {result.note}", highlight=False)
            return
        console.print(
            f"{result.archive}: {verb} {len(result.removed)} file(s) before {result.cutoff} "
            f"(redo segment of set {result.oldest_set}); {result.kept} kept", highlight=False,
        )
        for name in result.removed:
            console.print(f"  {name}", highlight=False)

    emit(data, as_json, human)


@wal.command("find")
@click.option("--table", "tables", multiple=True, metavar="NAME",
              help="schema.name or name (public); several allowed. Default: every table.")
@click.option("--db", "database", metavar="NAME", help="Only this database.")
@click.option("--since", metavar="TIME", help="Committed at or after (ISO 8601).")
@click.option("--until", metavar="TIME", help="Committed at or before (ISO 8601).")
@click.option("--kind", "kinds", metavar="KINDS",
              help="Comma-separated: insert, update, delete, truncate, drop.")
@click.option("--min-rows", type=click.IntRange(min=0), default=0,
              help="Only transactions that changed at least this many rows (of --kind).")
@json_option
@pass_ctx
def wal_find(obj: Context, tables: tuple[str, ...], database: str | None, since: str | None,
             until: str | None, kinds: str | None, min_rows: int, as_json: bool) -> None:
    """Find the transactions that changed tables in the archived WAL: when each committed
    (to the microsecond), its commit LSN, and the rows it inserted, updated, deleted per
    table; truncations and drops; restore points. Default range: the recovery window.

    Exits 4 when nothing matches."""
    from zsnap.changes.find import FindChanges, FindRequest, parse_kinds, tables_of
    from zsnap.clone.target import Target

    request = FindRequest(
        tables=tables_of(tables), database=database,
        since=Target.at_time(since).time if since else None,
        until=Target.at_time(until).time if until else None,
        kinds=parse_kinds(kinds), min_rows=min_rows)
    cfg = obj.config
    with _segment_progress(err_console.is_terminal and not as_json) as progress:
        result = FindChanges(cfg, obj.zfs(), progress=progress).run(request)
    emit(result.to_json(), as_json, lambda: _print_found(result))
    if not result.transactions:
        if not as_json:
            error_line("no transaction matches" + (
                f" (read {result.first_segment} to {result.last_segment})"
                if result.first_segment else ""))
        sys.exit(EXIT_NOT_FOUND)


@contextmanager
def _segment_progress(show: bool) -> Iterator[Callable[[int, int, int], None] | None]:
    if not show:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("reading WAL"), BarColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err_console.rich, transient=True) as bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, read: int) -> None:
            of = f"/{total}" if total else ""
            bar.update(task, total=total or None, completed=done,
                       description=f"{done}{of} segments, {read / 2**20:.0f} MB read")

        yield update


def _print_found(result: FindResult) -> None:
    rows = []
    for t in result.transactions:
        for name, c in t.tables.items():
            what = ", ".join(w for w, on in (("truncated", c.truncated), ("dropped", c.dropped),
                                              ("rewritten", c.rewritten)) if on)
            rows.append([t.xid, t.committed_at.isoformat(sep=" "), str(t.commit_lsn), t.timeline,
                         t.database or "", name, c.inserted, c.updated, c.deleted, what])
    if rows:
        table("transactions", ["xid", "committed at (UTC)", "commit lsn", "tli", "database",
                               "table", "inserted", "updated", "deleted", "also"], rows)
    if result.restore_points:
        table("restore points", ["name", "lsn", "timeline", "after the commit of"],
              [[p.name, str(Lsn(p.lsn)), p.timeline,
                p.after.isoformat(sep=" ") if p.after else ""]
               for p in result.restore_points])
    cached = f", {result.cached} from the cache" if result.cached else ""
    console.print(f"read {result.segments} segments ({result.first_segment} to "
                  f"{result.last_segment}{cached}, {result.bytes_read / 2**20:.0f} MB of WAL) "
                  f"in {result.seconds:.1f} s", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
