"""Targets that recovery searches the WAL for (a restore point, a transaction id) cannot be
placed before a set from the catalog: a clone starts from the newest set and, when recovery
from it never meets the target, falls back to older sets until one does."""

from __future__ import annotations

import subprocess
import uuid

import psycopg

from tests.conftest import Cli, archive_all, replicated, sql
from zsnap.lab import LabInfo


def clone_datasets(info: LabInfo) -> list[str]:
    out = subprocess.run(["zfs", "list", "-H", "-o", "name"], capture_output=True, text=True,
                         check=True).stdout.split()
    return [d for d in out if d.split("/")[0] in info.pools and "/zsnap-clones/" in d]


def test_a_restore_point_before_the_newest_set_is_served_from_an_older_one(
    lab: LabInfo, cli: Cli
) -> None:
    older = cli.json("snapshot")["id"]
    point = f"rp-{uuid.uuid4().hex[:8]}"
    before = sql(lab, "primary", "INSERT INTO lab_a (payload) VALUES ('before') RETURNING id")
    sql(lab, "primary", f"SELECT pg_create_restore_point('{point}')::text")
    after = sql(lab, "primary", "INSERT INTO lab_b (payload) VALUES ('after') RETURNING id")
    replicated(lab)
    newer = cli.json("snapshot")["id"]
    archive_all(lab.conninfo("primary"), lab.archive)

    result = cli.json("clone", "--restore-point", point, "--name", point)
    try:
        assert newer in result["fell_back_from"]
        assert older <= result["set"] < newer
        with psycopg.connect(result["dsn"], autocommit=True) as conn:
            a = conn.execute("SELECT count(*) FROM lab_a WHERE id = %s", (before,)).fetchone()
            b = conn.execute("SELECT count(*) FROM lab_b WHERE id = %s", (after,)).fetchone()
        assert a == (1,) and b == (0,)
    finally:
        cli("destroy", result["name"])
    assert clone_datasets(lab) == []


def test_a_restore_point_recovery_never_meets_is_one_clear_line(lab: LabInfo, cli: Cli) -> None:
    newest = cli.json("snapshot")["id"]
    sql(lab, "primary", "INSERT INTO lab_a (payload) VALUES ('past the set')")
    archive_all(lab.conninfo("primary"), lab.archive)
    proc = cli("clone", "--restore-point", "never-created", "--set", newest, check=False)
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        f"zsnap: restore point 'never-created' was not found in the WAL after set {newest}:"
    ), lines[0]
    assert clone_datasets(lab) == []
