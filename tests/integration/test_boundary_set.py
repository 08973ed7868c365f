"""The set of an idle standby is consistent at the end of all the WAL there is: exactly at a
segment boundary after a WAL switch, with the next segment not written yet (issue 10, item 8),
or inside a segment not archived yet. Such a set verifies, and an --immediate clone of it works
and ends exactly at its consistency point, instead of PostgreSQL ending recovery "before
configured recovery target was reached"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli, archive_all, replicated, running_lab, sql
from tests.integration.test_clone import assert_gone
from zsnap.lab import LabInfo
from zsnap.lsn import Lsn

SEGMENT = 16 << 20


@pytest.fixture(scope="module")
def idle_lab() -> Iterator[LabInfo]:
    with running_lab("i") as info:
        yield info


@pytest.fixture(params=["listed", "restore_command"])
def idle_cli(request: pytest.FixtureRequest, idle_lab: LabInfo, tmp_path: Path) -> Cli:
    """zsnap with the archive directory to list, or with the restore_command alone (WAL-G,
    Barman, a script): a good set verifies and clones to its consistency point either way
    (issue 19, item 1)."""
    if request.param == "listed":
        return Cli(idle_lab.config_file)
    config = tmp_path / "restore-command.toml"
    config.write_text(idle_lab.config_file.read_text().replace(
        f'path = "{idle_lab.archive}"\n', ""))
    assert "cp " in config.read_text() and f'path = "{idle_lab.archive}"' not in \
        config.read_text()
    return Cli(config)


def boundary_set(info: LabInfo, cli: Cli) -> dict[str, Any]:
    """A set whose consistency LSN is a segment boundary (the primary may write a record of
    its own between the switch and the set: then try again)."""
    for _ in range(10):
        sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('before the switch')")
        archive_all(info.conninfo("primary"), info.archive)
        replicated(info)
        s: dict[str, Any] = cli.json("snapshot")
        if Lsn.parse(s["consistent_lsn"]).value % SEGMENT == 0:
            return s
        time.sleep(1)
    raise AssertionError("no set at a segment boundary")


def switch_point(dsn: str) -> Lsn:
    """Where a promoted clone's new timeline branched off: its history file's last entry."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_read_file('pg_wal/' || substr(pg_walfile_name("
                           "pg_current_wal_lsn()), 1, 8) || '.history')").fetchone()
    assert row is not None
    return Lsn.parse(str(row[0]).splitlines()[-1].split("\t")[1])


def clone_ends_at_the_set(info: LabInfo, cli: Cli, s: dict[str, Any], payload: str) -> None:
    """An --immediate clone of set `s` branches off exactly at its consistency point and
    holds the row last written before it."""
    r = cli.json("clone", "--set", s["id"], "--immediate", "--name", "edge")
    assert r["state"] == "promoted"
    assert switch_point(r["dsn"]) == Lsn.parse(s["consistent_lsn"])
    with psycopg.connect(r["dsn"], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM lab_a WHERE payload = %s",
                           (payload,)).fetchone()
    assert row is not None and row[0] >= 1
    cli("destroy", "edge")
    assert_gone(info, "edge")


def test_a_set_at_a_segment_boundary_verifies_and_clones(idle_lab: LabInfo,
                                                          idle_cli: Cli) -> None:
    info, cli = idle_lab, idle_cli
    s = boundary_set(info, cli)
    [result] = cli.json("verify", s["id"])
    assert result["outcome"] == "passed", result
    clone_ends_at_the_set(info, cli, s, "before the switch")


def test_a_set_inside_a_segment_not_archived_yet_verifies_and_clones(
        idle_lab: LabInfo, idle_cli: Cli) -> None:
    """The standby had replayed everything and the primary wrote nothing more: the set's
    consistency point is the end of the WAL, inside a segment that only the set's own pg_wal
    holds. The clone ends exactly there (its new timeline branches off at that LSN)."""
    info, cli = idle_lab, idle_cli
    for _ in range(10):
        sql(info, "primary", "INSERT INTO lab_a (payload) VALUES ('inside a segment')")
        replicated(info)
        s: dict[str, Any] = cli.json("snapshot")
        consistent = Lsn.parse(s["consistent_lsn"])
        if consistent.value % SEGMENT and not (
                info.archive / consistent.segment(s["timeline"]).name).exists():
            break
    else:
        raise AssertionError("no set inside a segment not archived yet")
    [result] = cli.json("verify", s["id"])
    assert result["outcome"] == "passed", result
    clone_ends_at_the_set(info, cli, s, "inside a segment")


def test_a_transaction_committed_right_after_a_set_is_found_and_stopped_before(
        idle_lab: LabInfo) -> None:
    """A transaction in flight while the set was taken, whose commit is the first record after
    it: the commit starts exactly at the set's consistency LSN (the end of what replay had
    applied). It committed after the set, so `wal find` lists it and `query --before-xid`
    answers from that set, without its row."""
    info, cli = idle_lab, Cli(idle_lab.config_file)
    for _ in range(10):
        with psycopg.connect(info.conninfo("primary")) as conn:
            row = conn.execute("INSERT INTO lab_a (payload) VALUES ('in flight') "
                               "RETURNING txid_current()").fetchone()
            assert row is not None
            xid = int(row[0])
            # Its INSERT reaches the standby with the next commit that flushes the WAL.
            sql(info, "primary", "SELECT txid_current()")
            replicated(info)
            s: dict[str, Any] = cli.json("snapshot")
        archive_all(info.conninfo("primary"), info.archive)
        found = cli.json("wal", "find", "--table", "lab_a")["transactions"]
        [t] = [t for t in found if t["xid"] == xid]
        if t["commit_lsn"] == s["consistent_lsn"]:
            break
        time.sleep(1)  # the primary wrote a record of its own in between: again
    else:
        raise AssertionError("no commit right at a set's consistency LSN")
    assert t["tables"]["public.lab_a"]["inserted"] == 1
    answer = cli.json("query", "--before-xid", str(xid),
                      "SELECT count(*) AS n FROM lab_a WHERE payload = 'in flight'")
    assert answer["set"] == s["id"]
    assert answer["rows"] == [{"n": 0}]
