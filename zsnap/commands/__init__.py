"""The command line's pieces: shared plumbing here, one module per group of commands."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from zsnap.pg.replay import MARKER

if TYPE_CHECKING:
    from zsnap.catalog import Catalog
    from zsnap.config import Config
    from zsnap.zfs import Zfs


class Context:
    """What every command may need, each loaded only when it does (zsnap's start-up time is
    every command's: `zsnap --help` loads neither pydantic nor psycopg)."""

    def __init__(self, config_path: Path | None, debug: bool):
        self.config_path = config_path
        self.debug = debug
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from zsnap.config import load
            from zsnap.statedir import claim

            self._config = load(self.config_path)
            claim(self._config.state.dir, self._config.snapshot.cluster)
            # Whatever command runs, replay left paused by a zsnap that died is resumed first
            # (psycopg is loaded only when there is a marker to look at).
            if (self._config.state.dir / MARKER).exists():
                from zsnap.pg.replay import resume_abandoned

                resume_abandoned(self._config.state.dir)
        return self._config

    def zfs(self, dry_run: bool = False) -> Zfs:
        from zsnap.runner import Runner
        from zsnap.zfs import Zfs

        return Zfs(Runner(dry_run=dry_run))

    def catalog(self) -> Catalog:
        from zsnap.catalog import catalog_of

        return catalog_of(self.config, self.zfs())


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Say what would change, and change nothing."
)
pass_ctx = click.make_pass_decorator(Context)


def seconds_above_zero(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    """For a --timeout: a finite number of seconds above 0 (nan and inf compare as neither)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value:g} is not a number of seconds above 0")
    return value
