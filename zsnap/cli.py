"""The `zsnap` command line."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from zsnap import CONFIG_ENV_VAR, DEFAULT_CONFIG, __version__
from zsnap.commands import Context
from zsnap.errors import EXIT_USAGE, ZsnapError, described

# Each command's module, imported only when that command runs: `zsnap list` need not load
# psycopg, the clone machinery or the lab (a tenth of a second of every command's start).
COMMANDS = {
    "snapshot": "sets:snapshot", "list": "sets:list_sets", "show": "sets:show",
    "lab": "lab:lab", "doctor": "doctor:doctor", "daemon": "daemon:daemon",
    "schedule": "daemon:schedule", "history": "daemon:history", "prune": "prune:prune",
    "wal": "wal:wal", "check": "check:check", "clone": "clone:clone",
    "clones": "clone:clones", "destroy": "clone:destroy", "durable": "clone:durable",
    "verify": "verify:verify", "reinit": "reinit:reinit", "replicate": "replicate:replicate",
    "query": "past:query", "dump": "past:dump",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, name = where.partition(":")
        command = getattr(importlib.import_module(f"zsnap.commands.{module}"), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help=f"Configuration file (default: ${CONFIG_ENV_VAR}, else {DEFAULT_CONFIG}).",
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


def main() -> None:
    """The one error boundary: whatever a command raises ends as one line on stderr and an
    exit code, never a traceback (--debug logs it)."""
    try:
        code = cli.main(standalone_mode=False)
    except click.UsageError as e:
        # One line, not click's usage block: what is wrong and where to look.
        where = f" ({e.ctx.command_path} --help)" if e.ctx is not None else ""
        fail(f"{e.format_message()}{where}", EXIT_USAGE)
    except (click.exceptions.Abort, KeyboardInterrupt):
        fail("interrupted", 130)
    except click.ClickException as e:
        fail(e.format_message(), e.exit_code)
    except Exception as e:
        if not isinstance(e, ZsnapError | OSError):
            logging.getLogger("zsnap").debug("unexpected error", exc_info=True)
        fail(*described(e))
    sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int) -> NoReturn:
    from zsnap.output import error_line  # rich: loaded only to say something

    error_line(message)
    sys.exit(code)
