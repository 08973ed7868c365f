"""The PostgreSQL major versions zsnap drives, and those its test suite runs on."""

from __future__ import annotations

from zsnap.errors import UsageError
from zsnap.pg.connection import Connection, scalar

# 15 for pg_backup_start/stop, pg_get_wal_replay_pause_state and the pg_checkpoint role; the
# newest is the newest release zsnap knows the recovery and control functions of.
OLDEST, NEWEST = 15, 18
# `make test`: the whole suite on 15, the version-dependent part on 18 (docs/install.md).
TESTED = (15, 18)


def server_version(conn: Connection) -> int:
    """server_version_num, e.g. 180006."""
    return int(scalar(conn, "SELECT current_setting('server_version_num')::int"))


def describe(version_num: int) -> str:
    major = version_num // 10000
    tested = "tested" if major in TESTED else "supported, not in zsnap's test suite"
    return f"PostgreSQL {major}.{version_num % 10000} ({tested})"


def refuse_unsupported(version_num: int) -> None:
    major = version_num // 10000
    if not OLDEST <= major <= NEWEST:
        raise UsageError(f"PostgreSQL {major} is not supported: zsnap drives {OLDEST} to "
                         f"{NEWEST}")
