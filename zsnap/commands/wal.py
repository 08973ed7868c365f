"""`zsnap wal check` and `zsnap wal prune`: the WAL archive (a directory or a pgBackRest
stanza)."""

from __future__ import annotations

import sys

import click

from zsnap.commands import Context, dry_run_option, handled, json_option, pass_ctx
from zsnap.errors import EXIT_FAILURE
from zsnap.history import History
from zsnap.output import console, emit, table


@click.group()
def wal() -> None:
    """The WAL archive ([archive] path or pgbackrest_stanza): gaps and cleanup."""


@wal.command("check")
@json_option
@pass_ctx
@handled
def wal_check(obj: Context, as_json: bool) -> None:
    """Report missing segments per timeline, from the oldest set's redo segment on.

    Exits 1 when there is a gap or a timeline problem."""
    from zsnap.wal import WalCheck

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
            console.print(f"[red]problem:[/] {problem}", highlight=False)
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
@handled
def wal_prune(obj: Context, dry_run: bool, as_json: bool) -> None:
    """Remove archived WAL older than the oldest set's redo segment (pg_archivecleanup
    semantics: .history and .backup files stay). A pgBackRest repository is left to
    `pgbackrest expire`."""
    from zsnap.wal import WalPrune

    cfg = obj.config
    op = WalPrune(cfg, obj.catalog(), dry_run=dry_run)
    if dry_run:
        result = op.run()
    else:
        with History(cfg.state.dir).run("wal-prune") as info:
            result = op.run()
            info.update(detail=f"{len(result.removed)} file(s) removed before {result.cutoff}")
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
