"""Where PostgreSQL's programs are, and running them as the cluster's OS user."""

from __future__ import annotations

import functools
import glob
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zsnap.errors import ConfigError
from zsnap.runner import DEFAULT_TIMEOUT, Result, Runner

if TYPE_CHECKING:
    from zsnap.config import Config


@functools.cache
def find_bindir(configured: Path | None) -> Path:
    """`pg_bin` from the config, else pg_config's BINDIR, else the newest Debian layout
    (found once per process)."""
    if configured is not None:
        if not (configured / "pg_ctl").is_file():
            raise ConfigError(f"standby.pg_bin: no pg_ctl in {configured}")
        return configured
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Runner().run([pg_config, "--bindir"], mutates=False).stdout.strip()
        if (Path(bindir) / "pg_ctl").is_file():
            return Path(bindir)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise ConfigError("PostgreSQL binaries not found: set standby.pg_bin")


def _version_key(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class PgTools:
    """PostgreSQL programs, run as the cluster's owner from a directory that user can read."""

    def __init__(self, runner: Runner, bindir: Path, os_user: str):
        self.runner = runner
        self.bindir = bindir
        self.os_user = os_user

    @classmethod
    def of(cls, config: Config, runner: Runner) -> PgTools:
        """The standby's programs: `[standby] pg_bin`, else found (zsnap.pg.binaries)."""
        return cls(runner, find_bindir(config.standby.pg_bin), config.standby.os_user)

    def path(self, program: str) -> Path:
        return self.bindir / program

    def run(
        self,
        program: str,
        *args: str,
        timeout: float = DEFAULT_TIMEOUT,
        mutates: bool = True,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        return self.runner.run(
            [str(self.bindir / program), *args],
            user=self.os_user,
            timeout=timeout,
            mutates=mutates,
            env=env,
            check=check,
            cwd="/",
        )
