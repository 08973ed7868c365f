"""`zsnap check`: health checks for people, machines (--json), Nagios and Prometheus."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from zsnap.commands import Context, json_option, pass_ctx
from zsnap.errors import described
from zsnap.history import History
from zsnap.output import console, emit, error_line, escape, table, to_json

log = logging.getLogger(__name__)

STYLE = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "UNKNOWN": "magenta"}


@click.command()
@json_option
@click.option("--nagios", is_flag=True, help="Print one Nagios plugin line with perfdata.")
@click.option(
    "--prometheus", "prometheus", type=click.Path(path_type=Path), default=None,
    help="Also write a node_exporter textfile here (default: [check] prometheus_textfile).",
)
@pass_ctx
def check(obj: Context, as_json: bool, nagios: bool, prometheus: Path | None) -> None:
    """Check the newest set, verification, replay, WAL archive, pools and the daemon.

    Exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the Nagios plugin codes)."""
    from zsnap.checks import Status, overall
    from zsnap.health import (
        Health,
        check_textfile,
        nagios_line,
        prometheus_text,
        write_textfile,
    )

    started = datetime.now(UTC)
    try:
        cfg = obj.config
        target = prometheus if prometheus is not None else cfg.check.prometheus_textfile
        if target is not None:
            check_textfile(target)
        results = Health(cfg, obj.zfs()).run()
        state = overall(results)
        if target is not None:
            write_textfile(target, prometheus_text(results, cfg.snapshot.cluster, started))
    except Exception as e:
        # Whatever stops the checks, monitoring must read UNKNOWN (3), never WARNING (1).
        message, _ = described(e)
        if nagios:
            print(f"ZSNAP UNKNOWN - {message}")
        elif as_json:
            print(to_json({"status": "UNKNOWN", "error": message, "checks": []}))
        else:
            error_line(message)
        sys.exit(int(Status.UNKNOWN))
    # Monitoring runs this every few minutes: the history keeps changes of state only. A
    # state dir that cannot be written to changes nothing of what the checks found.
    try:
        history = History(cfg.state.dir)
        last = history.last("check")
        if last is None or last.outcome != state.name.lower():
            bad = [f"{r.name} {r.status.name}" for r in results if r.status != Status.OK]
            history.record(
                "check", state.name.lower(), started=started,
                duration_s=(datetime.now(UTC) - started).total_seconds(),
                detail=", ".join(bad) or "all OK",
            )
    except OSError as e:
        log.warning("check not recorded in the history: %s", described(e)[0])

    if nagios:
        print(nagios_line(results))
    else:
        def human() -> None:
            table(f"zsnap check: {state.name}", ["check", "state", "summary", "hint"], [
                [r.name, f"[{STYLE[r.status.name]}]{r.status.name}[/]", escape(r.summary),
                 escape(r.hint)]
                for r in results
            ])
            if target is not None:
                console.print(f"metrics written to {target}", highlight=False)

        emit({"status": state.name, "checks": [r.to_json() for r in results]}, as_json, human)
    sys.exit(int(state))
