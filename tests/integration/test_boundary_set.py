"""A set of an idle standby that had replayed a WAL switch is consistent exactly at a segment
boundary, and the next segment does not exist yet (issue 10, item 8): it verifies, and an
--immediate clone of it works, instead of PostgreSQL ending recovery "before configured
recovery target was reached"."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from tests.conftest import Cli, archive_all, replicated, sql
from tests.integration.test_clone import assert_gone
from zsnap.lab import LabInfo
from zsnap.lsn import Lsn

SEGMENT = 16 << 20


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


def test_a_set_at_a_segment_boundary_verifies_and_clones(fresh_lab: LabInfo) -> None:
    info = fresh_lab
    cli = Cli(info.config_file)
    s = boundary_set(info, cli)
    [result] = cli.json("verify", s["id"])
    assert result["outcome"] == "passed", result
    r = cli.json("clone", "--set", s["id"], "--name", "edge")
    assert r["state"] == "promoted"
    assert Lsn.parse(r["replay_lsn"]) <= Lsn.parse(s["consistent_lsn"])
    with psycopg.connect(r["dsn"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM lab_a WHERE payload = 'before the switch'").fetchone()
    assert row is not None and row[0] >= 1
    cli("destroy", "edge")
    assert_gone(info, "edge")
