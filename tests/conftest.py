"""Shared fixtures. Integration tests build real labs: file-backed pools, a PostgreSQL primary
with a WAL archive and a streaming standby on ZFS. Nothing of ZFS or PostgreSQL is mocked."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from zsnap.lab import Lab, LabInfo
from zsnap.ports import port_free

TEST_BASE = Path("/var/tmp/zsnap-test")
# The PostgreSQL the labs run: one setting for the whole suite (`make test` runs it once more
# with PostgreSQL 18's bin directory here); unset, the newest Debian layout.
PG_BIN = Path(os.environ["ZSNAP_TEST_PG_BIN"]) if os.environ.get("ZSNAP_TEST_PG_BIN") else None


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port_block(size: int = 64) -> int:
    """A base port such that base..base+size are free on loopback now."""
    for _ in range(200):
        base = random.randrange(20000, 40000, size)
        if all(port_free(p) for p in (base, base + 1, *range(base + 10, base + 61))):
            return base
    raise RuntimeError("no free port block")


_counter = 0


def make_lab(prefix: str = "t") -> Lab:
    global _counter
    _counter += 1
    return Lab(
        f"{prefix}{os.getpid() % 100000}x{_counter}",
        base=TEST_BASE,
        port=free_port_block(),
        pool_size="2G",
        pg_bin=PG_BIN,
    )


@dataclass
class Cli:
    """Runs the real `zsnap` command in a child process, as a user would."""

    config: Path

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 900,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "zsnap", "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"zsnap {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return json.loads(self(*args, "--json", env=env).stdout)


@contextmanager
def running_lab(prefix: str = "t") -> Iterator[LabInfo]:
    """A lab that is up for the `with` block and removed after it, whatever happened."""
    the_lab = make_lab(prefix)
    info = the_lab.up()
    try:
        yield info
    finally:
        the_lab.down()


@pytest.fixture(scope="session")
def lab() -> Iterator[LabInfo]:
    """One lab for the session, for tests that do not change its primary or standby."""
    with running_lab() as info:
        yield info


@pytest.fixture
def fresh_lab() -> Iterator[LabInfo]:
    """A lab of its own, for a test that promotes, breaks or reconfigures servers."""
    with running_lab("f") as info:
        yield info


@pytest.fixture
def cli(lab: LabInfo) -> Cli:
    return Cli(lab.config_file)


def with_setting(source: Path, dest: Path, section: str, setting: str) -> Path:
    """`source`'s configuration written to `dest` (which may be `source`), with `setting`
    first in `[section]`."""
    text = source.read_text()
    header = f"[{section}]\n"
    assert header in text
    dest.write_text(text.replace(header, f"{header}{setting}\n", 1))
    return dest


def sql(info: LabInfo, which: str, statement: str) -> Any:
    """One statement on the lab's primary or standby; the first column of its row, if any."""
    with psycopg.connect(info.conninfo(which), autocommit=True) as conn:
        cur = conn.execute(statement)
        row = cur.fetchone() if cur.description else None
    return None if row is None else row[0]


def replicated(info: LabInfo) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    written = sql(info, "primary", "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + 120
    while not sql(info, "standby", f"SELECT pg_last_wal_replay_lsn() >= '{written}'::pg_lsn"):
        assert time.monotonic() < deadline, "the standby did not replay"
        time.sleep(0.1)


def archive_all(primary: str, archive: Path) -> None:
    """Switch to a new WAL segment and wait until the finished one is archived: a flashback
    reads the WAL up to its target from the archive."""
    with psycopg.connect(primary, autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert row is not None
    deadline = time.monotonic() + 120
    # Whole: the lab's archive_command is a plain cp, and a file appears before it is full.
    while not ((archive / row[0]).exists() and (archive / row[0]).stat().st_size == 16 << 20):
        assert time.monotonic() < deadline, f"{row[0]} was not archived"
        time.sleep(0.2)


def archive_copy(info: LabInfo, name: str, state: Path) -> tuple[Path, Path]:
    """The lab's archive copied to `info.root/name` (where the restore_command's user may read
    it, owned by it), and a config that reads it, fetches from it and keeps its state in
    `state`: a test may damage the copy and never the lab's own archive."""
    copy = info.root / name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(info.archive, copy)
    for path in [copy, *copy.iterdir()]:
        shutil.chown(path, "postgres", "postgres")
    config = state.parent / f"{name}.toml"
    config.write_text(info.config_file.read_text().replace(
        f'path = "{info.archive}"', f'path = "{copy}"').replace(
        f"cp {info.archive}/%f %p", f"cp {copy}/%f %p").replace(
        f'dir = "{info.root / "state"}"', f'dir = "{state}"'))
    return copy, config

