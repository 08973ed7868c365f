"""`zsnap doctor`: the layout zsnap finds, and whether everything a snapshot set needs is in
place."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from zsnap.checks import Status
from zsnap.commands import Context, json_option, pass_ctx
from zsnap.errors import EXIT_FAILURE
from zsnap.output import console, emit

if TYPE_CHECKING:
    from zsnap.doctor import Report

STYLE = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "bold red",
         Status.UNKNOWN: "dim"}


@click.command()
@json_option
@pass_ctx
def doctor(obj: Context, as_json: bool) -> None:
    """Check the standby, its datasets, privileges and archive; exit 1 if any check fails."""
    # Loaded without Context.config's automatic resume: the replay-marker check reports a
    # replay left paused by a dead zsnap (and resumes it) instead of hiding it.
    from zsnap.config import load
    from zsnap.doctor import Doctor
    from zsnap.runner import Runner
    from zsnap.zfs import Zfs

    cfg = load(obj.config_path)
    runner = Runner()
    report = Doctor(cfg, Zfs(runner), runner).run()
    emit(report.to_dict(), as_json, lambda: _human(report))
    if report.failed:
        sys.exit(EXIT_FAILURE)


def _human(report: Report) -> None:
    from rich.table import Table
    from rich.text import Text

    places = Table(title="layout")
    for column in ("role", "path", "dataset", "control file"):
        places.add_column(column)
    for p in report.places:
        places.add_row(
            p.role + (f" {p.oid}" if p.oid is not None else ""), Text(p.path),
            Text(p.dataset) if p.dataset else Text("not on ZFS", style="bold red"),
            "yes" if p.control else "",
        )
    console.print(places)
    checks = Table(title="checks")
    for column in ("check", "status", "summary", "hint"):
        checks.add_column(column)
    for c in report.checks:
        # Text, not markup: "[verify] amcheck" must print as written.
        checks.add_row(c.name, Text(c.status.name, style=STYLE[c.status]), Text(c.summary),
                       Text(c.hint))
    console.print(checks)
    verdict = "some checks FAILED" if report.failed else "all checks passed"
    console.print(verdict, style="bold red" if report.failed else "bold green")
