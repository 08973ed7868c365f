"""Configuration files kept outside PGDATA, as Debian and Ubuntu package clusters do
(/etc/postgresql/<version>/<cluster>/, the server started with `-c config_file=...`): a
snapshot of PGDATA then holds no postgresql.conf. A set records where the standby's files
are; a clone of it gets a postgresql.conf of its own that includes the standby's current one
and then points everything that names a place at the clone (a later line wins)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zsnap.errors import PostgresError
from zsnap.pg.connection import Connection

PATHS_SQL = (
    "SELECT current_setting('config_file'), current_setting('hba_file'),"
    " current_setting('ident_file')"
)

# What the clone's copies of the standby's authentication files are called in its PGDATA.
HBA_COPY = "pg_hba.conf"
IDENT_COPY = "pg_ident.conf"


def inside(path: str, directory: str) -> bool:
    """Whether `path` lies in `directory`, symlinks resolved (/var/lib/postgresql may be one)."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory))


@dataclass(frozen=True)
class ConfigFiles:
    """The standby's configuration file, outside its PGDATA, and its authentication files
    (inside or outside)."""

    config_file: str
    hba_file: str
    ident_file: str

    def record(self) -> dict[str, str]:
        return {"config_file": self.config_file, "hba_file": self.hba_file,
                "ident_file": self.ident_file}


def outside_pgdata(conn: Connection, data_directory: str) -> ConfigFiles | None:
    """The running server's configuration files when its postgresql.conf is outside
    `data_directory`; None when it is inside (a clone then has its own copy)."""
    row = conn.execute(PATHS_SQL).fetchone()
    if row is None:
        raise PostgresError("could not read the standby's config_file, hba_file, ident_file")
    files = ConfigFiles(*(str(value) for value in row))
    return None if inside(files.config_file, data_directory) else files


@dataclass(frozen=True)
class AuthFile:
    """Where the clone reads one authentication file from: its own copy of the standby's
    current file when that lies outside PGDATA, else the file at the same place in its PGDATA
    (cloned with it)."""

    path: Path  # in the clone's PGDATA
    copy_from: Path | None  # the standby's file to copy there first


def auth_file(standby_file: str, standby_pgdata: str, pgdata: Path, copy_name: str) -> AuthFile:
    if inside(standby_file, standby_pgdata):
        relative = Path(os.path.realpath(standby_file)).relative_to(
            os.path.realpath(standby_pgdata))
        return AuthFile(pgdata / relative, None)
    return AuthFile(pgdata / copy_name, Path(standby_file))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def clone_postgresql_conf(config_file: str, pgdata: Path) -> str:
    """The clone's postgresql.conf: the standby's file included by absolute path (so that its
    own relative include_dir keeps resolving next to it, and its settings carry over), then
    the clone's data directory over the standby's, which the included file names: PostgreSQL
    keeps the last line of a setting, and reads an include where it stands. The clone's
    postgresql.auto.conf, read after this file, holds zsnap's other settings (authentication
    files, port, sockets, external_pid_file, recovery)."""
    lines = [
        "# zsnap flashback instance: the standby's configuration, read where it is now,",
        "# then this clone's data directory instead of the standby's.",
        f"include {_quote(config_file)}",
        f"data_directory = {_quote(str(pgdata))}",
    ]
    return "\n".join(lines) + "\n"
