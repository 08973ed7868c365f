"""`zsnap prune`: destroy the sets the retention policy does not keep, each as one unit."""

from __future__ import annotations

import sys

import click

from zsnap.commands import Context, dry_run_option, json_option, pass_ctx
from zsnap.errors import EXIT_FAILURE
from zsnap.jobs import Job, prune_summary
from zsnap.output import console, emit, escape, fmt_time, table


@click.command()
@dry_run_option
@json_option
@pass_ctx
def prune(obj: Context, dry_run: bool, as_json: bool) -> None:
    """Prune snapshot sets by [retention]; say what goes and why."""
    from zsnap.prune import Prune

    cfg = obj.config
    op = Prune(cfg, obj.zfs(dry_run=dry_run), dry_run=dry_run)
    # Shown whatever it says; a set that could not be pruned exits 1 after (below).
    job = Job("prune", op.run, prune_summary)
    result = op.run() if dry_run else job.run(cfg.state.dir).result
    data = {
        "dry_run": dry_run,
        "policy": result.policy,
        "sets": [v.to_json() for v in result.verdicts],
        "wal": None if result.wal is None else {
            "cutoff": result.wal.cutoff, "removed": result.wal.removed, "kept": result.wal.kept,
            "note": result.wal.note,
        },
    }

    def human() -> None:
        verb = "would prune" if dry_run else "pruned"
        rows = []
        for v in result.verdicts:
            if v.error:
                action = f"[red]KEPT: {escape(v.error)}[/]"
            elif v.decision.keep:
                action = "keep"
            else:
                action = f"[bold]{verb}[/]"
            why = escape("; ".join(v.decision.reasons))
            rows.append([v.set.id, fmt_time(v.set.created), "yes" if v.set.complete else "NO",
                         action, why])
        columns = ["set", "created", "complete", "action", "why"]
        table(escape(f"retention: {result.policy}"), columns, rows)
        if result.wal is not None:
            w = result.wal
            console.print(
                f"WAL: {verb} {len(w.removed)} file(s) before {w.cutoff}, {w.kept} kept"
                + (f" ({w.note})" if w.note else ""), highlight=False,
            )

    emit(data, as_json, human)
    if result.failed:
        sys.exit(EXIT_FAILURE)
