"""The `zsnap` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from zsnap import __version__, config
from zsnap.commands import Context
from zsnap.commands.check import check
from zsnap.commands.clone import clone, clones, destroy, durable
from zsnap.commands.daemon import daemon, history, schedule
from zsnap.commands.doctor import doctor
from zsnap.commands.lab import lab
from zsnap.commands.prune import prune
from zsnap.commands.sets import list_sets, show, snapshot
from zsnap.commands.verify import verify
from zsnap.commands.wal import wal
from zsnap.errors import ZsnapError
from zsnap.output import error_line


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help=f"Configuration file (default: ${config.ENV_VAR}, else {config.DEFAULT_PATH}).",
)
@click.option("--debug", is_flag=True, help="Log every external command.")
@click.version_option(__version__, prog_name="zsnap")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """Consistent ZFS snapshot sets of a PostgreSQL standby, and flashback instances."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("sh").setLevel(logging.WARNING)
    ctx.obj = Context(config_path, debug)


for command in (snapshot, list_sets, show, lab, doctor,
                daemon, schedule, history, prune, wal, check):
    cli.add_command(command)
for command in (clone, clones, destroy, durable):
    cli.add_command(command)
cli.add_command(verify)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ZsnapError as e:  # raised outside a command's own handling
        error_line(str(e))
        sys.exit(e.exit_code)
