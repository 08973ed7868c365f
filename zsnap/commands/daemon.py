"""`zsnap daemon`, `zsnap schedule`, `zsnap history`: running unattended."""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import UTC, datetime

import click

from zsnap.commands import Context, json_option, pass_ctx
from zsnap.output import console, emit, fmt_time, table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Log one JSON object per line.")
@pass_ctx
def daemon(obj: Context, as_json: bool) -> None:
    """Run the [schedule] jobs until SIGTERM (SIGHUP reloads the config)."""
    from zsnap.daemon import Daemon, setup_logging

    setup_logging(obj.debug, as_json)
    sys.exit(Daemon(obj.config_path, obj.debug).run())


@click.command()
@click.option("--count", type=click.IntRange(min=1), default=3, show_default=True,
              help="Next runs to show per job.")
@json_option
@pass_ctx
def schedule(obj: Context, count: int, as_json: bool) -> None:
    """Print the next run times of each job, and what the daemon reports."""
    from zsnap import heartbeat
    from zsnap.daemon import plan

    cfg = obj.config
    planned = plan(cfg, datetime.now(UTC), count)
    beat = heartbeat.read(cfg.state.dir)
    data = {
        "jobs": [
            {"job": p.job, "cron": p.cron,
             "next_runs": [t.isoformat() for t in p.next_runs]}
            for p in planned
        ],
        "daemon": beat,
    }

    def human() -> None:
        rows = []
        for p in planned:
            runs = ", ".join(fmt_time(t) for t in p.next_runs) or "-"
            rows.append([p.job, p.cron, runs])
        table("schedule", ["job", "cron", "next runs"], rows)
        if beat is None:
            console.print("daemon: no heartbeat (never ran with this state dir)")
        else:
            console.print(f"daemon: pid {beat.get('pid')} {beat.get('state')}, "
                          f"heartbeat {beat.get('updated')}", highlight=False)

    emit(data, as_json, human)


@click.command()
@click.option("--job", "what", default=None, help="Only this job (snapshot, prune, check...).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Newest entries to show.")
@json_option
@pass_ctx
def history(obj: Context, what: str | None, limit: int, as_json: bool) -> None:
    """The run history: what ran, when, how it ended, how long it took."""
    from zsnap.history import History

    entries = History(obj.config.state.dir).entries(what)[-limit:]
    emit(
        [asdict(e) for e in entries], as_json,
        lambda: table("run history", ["started", "what", "origin", "outcome", "s", "detail"], [
            [fmt_time(e.started_at), e.what, e.origin, e.outcome, f"{e.duration_s:.1f}", e.detail]
            for e in entries
        ]),
    )
