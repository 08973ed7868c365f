"""A PostgreSQL instance that bench restored itself (pgBackRest, pg_basebackup): start it and
time it until it is promoted and answers a query, then stop it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from zsnap.errors import ZsnapError
from zsnap.pg.binaries import PgTools

POLL_S = 0.05
STARTUP_GRACE_S = 30
READY_QUERY = "SELECT count(*) FROM pgbench_branches"


class NotReady(ZsnapError):
    """A restored instance died or did not finish recovery in time."""


def conninfo(socket_dir: Path, port: int) -> str:
    return f"host={socket_dir} port={port} user=postgres dbname=postgres connect_timeout=2"


def wait_ready(dsn: str, alive: PgAlive | None = None, timeout_s: float = 3600) -> None:
    """Return once the instance at `dsn` is out of recovery and a query on the pgbench data
    works: the moment a user could start working with it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    conn.execute(READY_QUERY).fetchone()
                    return
        except psycopg.Error:
            if alive is not None and not alive():
                raise NotReady(f"the instance at {dsn} stopped before it was ready") from None
        time.sleep(POLL_S)
    raise NotReady(f"the instance at {dsn} was not ready after {timeout_s:.0f} s")


class PgAlive:
    """Whether the postmaster of a data directory still runs (pg_ctl status)."""

    def __init__(self, pg: PgTools, data: Path):
        self.pg = pg
        self.data = data
        self._created = time.monotonic()
        self._checked = 0.0
        self._seen = False
        self._alive = True

    def __call__(self) -> bool:
        # Checked at most twice a second: pg_ctl is a process start of its own.
        now = time.monotonic()
        if now - self._checked > 0.5:
            self._checked = now
            result = self.pg.run("pg_ctl", "-D", str(self.data), "status", mutates=False,
                                 check=False)
            self._seen = self._seen or result.returncode == 0
            # `pg_ctl start -W` returns before the postmaster has written its pid file: not
            # running yet is not stopped, for a while.
            starting = not self._seen and now - self._created < STARTUP_GRACE_S
            self._alive = result.returncode == 0 or starting
        return self._alive


@dataclass
class Instance:
    """A data directory of bench's own, with its port and log."""

    pg: PgTools
    data: Path
    port: int
    socket_dir: Path
    log: Path

    @property
    def dsn(self) -> str:
        return conninfo(self.socket_dir, self.port)

    def settings(self, extra: dict[str, str]) -> None:
        """Settings that make the copy a private instance beside the lab: its own port, no
        archiving into anybody's archive, local connections only."""
        values = {
            "port": str(self.port),
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "archive_mode": "off",
            "primary_conninfo": "''",
            **extra,
        }
        with (self.data / "postgresql.auto.conf").open("a") as f:
            f.write("\n# bench\n")
            f.writelines(f"{k} = {v}\n" for k, v in values.items())

    def start(self) -> None:
        # -W: do not wait; wait_ready times the recovery itself.
        self.pg.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-W", "start",
                    timeout=120)

    def wait_ready(self, timeout_s: float = 3600) -> None:
        try:
            wait_ready(self.dsn, PgAlive(self.pg, self.data), timeout_s)
        except NotReady as e:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            tail = text.splitlines()[-5:]
            raise NotReady(f"{e}; log: {' | '.join(tail)}") from None

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop",
                        check=False, timeout=120)
