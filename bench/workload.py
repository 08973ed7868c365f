"""The pgbench database on the lab's primary and the writes the benchmarks replay: pgbench_accounts
on tablespace ts1 (pool A), the other tables on ts2 (pool B), so that every restore path has
both pools' data to bring back."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

import psycopg

from zsnap.errors import ZsnapError
from zsnap.lab import LabInfo
from zsnap.runner import Runner

log = logging.getLogger(__name__)

# pgbench -i: about 15 MB per scale unit (tables and primary keys).
MB_PER_SCALE = 15.0
CHUNK_S = 3
CLIENTS = 2


def scale_for(size_gb: float) -> int:
    return max(1, round(size_gb * 1024 / MB_PER_SCALE))


class Database:
    def __init__(self, info: LabInfo, runner: Runner):
        self.info = info
        self.runner = runner
        self.dsn = info.conninfo("primary")

    def _sql(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def pgbench(self, *args: str, timeout: float) -> str:
        argv = [str(self.info.pg_bin / "pgbench"), "-h", str(self.info.socket_dir),
                "-p", str(self.info.primary_port), "-U", "postgres", *args, "postgres"]
        return self.runner.run(argv, timeout=timeout).stdout

    def init(self, scale: int) -> None:
        """Tables made empty first so that pgbench_accounts can move to ts1 for free, then
        filled server-side; primary keys beside their tables."""
        log.info("pgbench -i at scale %d", scale)
        self.pgbench("-i", "-q", "-I", "dt", "--tablespace=ts2", timeout=600)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE pgbench_accounts SET TABLESPACE ts1")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_marker "
                "(id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        self.pgbench("-i", "-q", "-I", "Gv", "-s", str(scale), timeout=7200)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for table, column, ts in (("pgbench_accounts", "aid", "ts1"),
                                      ("pgbench_branches", "bid", "ts2"),
                                      ("pgbench_tellers", "tid", "ts2")):
                conn.execute(
                    f"ALTER TABLE {table} ADD PRIMARY KEY ({column}) USING INDEX TABLESPACE {ts}"
                )
            conn.execute("CHECKPOINT")

    def checkpoint(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def size_bytes(self) -> int:
        return int(self._sql("SELECT pg_database_size('postgres')"))

    def lsn(self) -> str:
        return str(self._sql("SELECT pg_current_wal_lsn()::text"))

    def io_methods(self) -> list[str]:
        """PostgreSQL 18's io_method values this build takes (io_uring needs liburing)."""
        found = self._sql("SELECT enumvals FROM pg_settings WHERE name = 'io_method'")
        return list(found or [])

    def wal_since(self, start: str) -> int:
        return int(self._sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (start,)))

    def now(self) -> datetime:
        value = self._sql("SELECT clock_timestamp()")
        assert isinstance(value, datetime)
        return value

    def mark(self) -> datetime:
        """A recovery target: a time with a commit after it, that commit's WAL archived
        (recovery must see a later commit to know it has reached the target)."""
        target = self.now()
        time.sleep(0.01)
        self._sql("INSERT INTO bench_marker DEFAULT VALUES RETURNING id")
        self.archive_all()
        return target

    def archive_all(self) -> None:
        """Switch WAL and wait until the archiver has the segment (both archives: the
        archive_command does the lab copy and pgBackRest's archive-push)."""
        segment = str(self._sql("SELECT pg_walfile_name(pg_switch_wal())"))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            row = self._sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if str(row)[:24] >= segment:
                return
            time.sleep(0.2)
        raise ZsnapError(f"WAL segment {segment} was not archived within 600 s")

    def replay_behind(self, lsn: str) -> int | None:
        """Bytes of WAL up to LSN the standby has not replayed yet (negative once past it;
        None before it has replayed anything). Asked again when replay cancels the query (a
        recovery conflict, likely while the standby catches up)."""
        standby = self.info.conninfo("standby")
        attempts = 0
        while True:
            try:
                with psycopg.connect(standby, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint",
                        (lsn,),
                    ).fetchone()
                return None if row is None or row[0] is None else int(row[0])
            except psycopg.errors.OperationalError:
                attempts += 1
                if attempts == 10:
                    raise
                time.sleep(0.1)

    def wait_standby(self, timeout_s: float = 7200) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = self.lsn()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            behind = self.replay_behind(target)
            if behind is not None and behind <= 0:
                return
            time.sleep(0.5)
        raise ZsnapError(f"the standby did not replay up to {target} within {timeout_s:.0f} s")


class PgbenchLoad:
    """pgbench TPC-B-like writes in a thread, in short runs until stopped (every pgbench goes
    through the runner, which waits for it; short runs keep `stop` prompt)."""

    def __init__(self, db: Database, rate: int | None = None):
        self.db = db
        self.rate = rate
        self.transactions = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                args = ["-n", "-c", str(CLIENTS), "-j", str(CLIENTS), "-T", str(CHUNK_S)]
                if self.rate:
                    args += ["-R", str(self.rate)]
                out = self.db.pgbench(*args, timeout=CHUNK_S + 120)
                for line in out.splitlines():
                    if line.startswith("number of transactions actually processed:"):
                        self.transactions += int(line.split(":")[1].split("/")[0])
        except BaseException as e:
            self._error = e

    def start(self) -> PgbenchLoad:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CHUNK_S + 180)
        if self._error is not None:
            raise ZsnapError(f"pgbench failed: {self._error}")
        return self.transactions
