"""`zsnap replicate`: send complete sets to [replicate] target."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from zsnap.commands import Context, dry_run_option, json_option, pass_ctx
from zsnap.jobs import Job, replicate_summary
from zsnap.output import console, emit, err_console, table

if TYPE_CHECKING:
    from zsnap.replicate import Progress, ReplicateResult


def _bar() -> Progress:
    """Bytes and rate of each member's send, on the terminal (none when piped)."""
    from rich.progress import (
        DownloadColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    from zsnap.replicate import Member, SetTransfer
    from zsnap.replicate import Progress as Watcher

    class Bar(Watcher):
        def __init__(self) -> None:
            self.bar = RichProgress(TextColumn("{task.description}"), DownloadColumn(),
                                    TransferSpeedColumn(), TimeElapsedColumn(),
                                    console=err_console.rich, transient=True)
            self.task: TaskID | None = None

        def member(self, transfer: SetTransfer, member: Member) -> None:
            kind = "resuming" if member.resume else "incremental" if member.base else "full"
            self.task = self.bar.add_task(f"set {transfer.set.id} {member.snapshot} ({kind})",
                                          total=None)
            self.bar.start()

        def bytes(self, passed: int) -> None:
            if self.task is not None:
                self.bar.update(self.task, completed=passed)

        def done(self, member: Member) -> None:
            self.bar.stop()
            self.task = None

    return Bar()


@click.command()
@dry_run_option
@json_option
@pass_ctx
def replicate(obj: Context, dry_run: bool, as_json: bool) -> None:
    """Send every complete set not yet on [replicate] target, oldest first, each set whole."""
    from zsnap.replicate import Progress, Replicate

    cfg = obj.config
    watch = _bar() if not as_json and err_console.is_terminal else Progress()
    op = Replicate(cfg, obj.zfs(dry_run=dry_run), dry_run=dry_run, progress=watch)
    if dry_run:
        result = op.run()
    else:
        result = Job("replicate", op.run, replicate_summary).run(cfg.state.dir).value()
    emit(result.to_json(), as_json, lambda: _human(result))


def _human(result: ReplicateResult) -> None:
    verb = "would send" if result.dry_run else "sent"
    if not result.transfers:
        console.print(f"{result.target} holds every complete set (newest {result.newest_before})",
                      highlight=False)
        return
    rows = []
    for t in result.transfers:
        for m in t.members:
            how = ("already there" if not m.sent else "resumed" if m.resume
                   else f"incremental from {m.base.split('@')[1]}" if m.base else "full")
            rows.append([t.set.id, m.snapshot, m.target, how,
                         "" if result.dry_run or not m.sent else f"{m.bytes / 1e6:.1f} MB",
                         "" if result.dry_run or not m.sent else f"{m.seconds:.1f} s"])
    table(f"{verb} to {result.target}", ["set", "snapshot", "as", "send", "size", "time"], rows)
    sys.stdout.flush()
