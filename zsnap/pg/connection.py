"""Connections to PostgreSQL, with errors turned into one line. psycopg (a twentieth of a
second to load) is loaded by the first function that needs it, not by importing this module:
`zsnap list` and `zsnap --help` never need it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

from zsnap.errors import PostgresError, first_line

if TYPE_CHECKING:
    import psycopg

    Connection: TypeAlias = psycopg.Connection[tuple[Any, ...]]
else:
    Connection = Any  # for annotations only


def conninfo_for(base: str, **overrides: Any) -> str:
    from psycopg.conninfo import make_conninfo

    # client_encoding: a SQL_ASCII cluster would otherwise hand us bytes for text.
    defaults: dict[str, Any] = {
        "application_name": "zsnap", "connect_timeout": 5, "client_encoding": "UTF8",
    }
    defaults.update(overrides)
    return make_conninfo(base, **defaults)


def instance_conninfo(
    standby: str, socket_dir: str, port: int, dbname: str | None = None, *, public: bool = False
) -> str:
    """The standby's connection parameters (user, password...) aimed at an instance's socket
    (a clone's, a verification's). `public`: only what psql needs, for output that people see,
    so that no password from the config is printed."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    base = {k: v for k, v in conninfo_to_dict(standby).items() if v is not None}
    for key in ("host", "hostaddr", "port"):
        base.pop(key, None)
    if public:
        base = {k: v for k, v in base.items() if k in ("user", "dbname")}
    if dbname is not None:
        base["dbname"] = dbname
    return make_conninfo("", host=socket_dir, port=port, **base)


def shown(conninfo: str) -> str:
    """A conninfo as it may be printed or logged: without its password."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = {k: v for k, v in conninfo_to_dict(conninfo).items()
                  if v is not None and k != "password"}
    except psycopg.ProgrammingError:
        return "(a conninfo that cannot be parsed)"
    return make_conninfo("", **params)


def database_name(conninfo: str, oid: int) -> str | None:
    """The name of database `oid` where `conninfo` connects; None where it has none, or cannot
    be asked."""
    import psycopg

    try:
        with psycopg.connect(conninfo_for(conninfo), autocommit=True) as conn:
            row = conn.execute("SELECT datname FROM pg_database WHERE oid = %s",
                               (oid,)).fetchone()
    except psycopg.Error:
        return None
    return None if row is None else str(row[0])


def connect(conninfo: str, what: str = "standby") -> Connection:
    import psycopg

    try:
        return psycopg.connect(conninfo_for(conninfo), autocommit=True)
    except psycopg.Error as e:
        raise PostgresError(
            f"cannot connect to the {what} ({shown(conninfo)}): {first_line(e)}"
        ) from None


@contextmanager
def connected(conninfo: str, what: str = "standby") -> Iterator[Connection]:
    conn = connect(conninfo, what)
    try:
        yield conn
    finally:
        conn.close()


def scalar(conn: Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    import psycopg

    try:
        row = conn.execute(sql, params).fetchone()
    except psycopg.Error as e:
        raise PostgresError(f"{sql.split()[0]} failed: {first_line(e)}") from None
    return None if row is None else row[0]


def execute(conn: Connection, sql: str) -> None:
    """A statement that returns no rows (CHECKPOINT, SET)."""
    import psycopg

    try:
        conn.execute(sql)
    except psycopg.Error as e:
        raise PostgresError(f"{sql.split()[0]} failed: {first_line(e)}") from None


def system_identifier(conn: Connection) -> int:
    """The cluster's identity in pg_control: the same on a primary, its standbys and their
    copies, different for any other cluster."""
    return int(scalar(conn, "SELECT system_identifier FROM pg_control_system()"))
