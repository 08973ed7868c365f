"""`zsnap replicate`: send complete sets to [replicate] target."""

from __future__ import annotations

import sys

import click
from rich.progress import (
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from zsnap.commands import Context, dry_run_option, json_option, pass_ctx
from zsnap.history import History
from zsnap.output import console, emit, err_console, table
from zsnap.replicate import Member, Replicate, ReplicateResult, SetTransfer
from zsnap.replicate import Progress as Watcher


class Bar(Watcher):
    """Bytes and rate of each member's send, on the terminal (none when piped)."""

    def __init__(self) -> None:
        self.bar = Progress(TextColumn("{task.description}"), DownloadColumn(),
                            TransferSpeedColumn(), TimeElapsedColumn(), console=err_console,
                            transient=True)
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


@click.command()
@dry_run_option
@json_option
@pass_ctx
def replicate(obj: Context, dry_run: bool, as_json: bool) -> None:
    """Send every complete set not yet on [replicate] target, oldest first, each set whole."""
    cfg = obj.config
    watch = Bar() if not as_json and err_console.is_terminal else Watcher()
    op = Replicate(cfg, obj.zfs(dry_run=dry_run), dry_run=dry_run, progress=watch)
    if dry_run:
        result = op.run()
    else:
        with History(cfg.state.dir).run("replicate") as info:
            result = op.run()
            info.update(detail=f"{len(result.done)} set(s) replicated", sets=result.done)
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
